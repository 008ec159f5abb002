//! `tfwatch rules check` through the real binary: good files pass, bad files are refused
//! with their file, line and reason.

use crate::support::tfwatch_output;

fn check(files: &[&str]) -> (i32, String, String) {
    let mut args = vec!["rules", "check"];
    args.extend_from_slice(files);
    let output = tfwatch_output(&args);
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn default_rules_pass() {
    let (code, stdout, stderr) = check(&["rules/default.toml"]);
    assert_eq!(code, 0, "stderr: {stderr}");
    assert_eq!(stdout, "rules/default.toml: 11 rules OK\n");
    assert_eq!(stderr, "");
}

#[test]
fn bad_files_are_refused_with_file_line_and_reason() {
    let cases = [
        (
            "fixtures/rules/unknown-metric.toml",
            "fixtures/rules/unknown-metric.toml:3:10: unknown metric \"thread\"",
        ),
        (
            "fixtures/rules/unknown-field.toml",
            "fixtures/rules/unknown-field.toml:5:1: unknown field `treshold`",
        ),
        (
            "fixtures/rules/bad-duration.toml",
            "fixtures/rules/bad-duration.toml:6:7: invalid `for`: invalid duration \"10 parsecs\"",
        ),
        (
            "fixtures/rules/bad-toml.toml",
            "fixtures/rules/bad-toml.toml:3:18: invalid TOML",
        ),
        (
            "fixtures/rules/bad-op.toml",
            "fixtures/rules/bad-op.toml:4:6: invalid op \"=>\"",
        ),
    ];
    for (file, expected) in cases {
        let (code, stdout, stderr) = check(&[file]);
        assert_eq!(code, 2, "{file}: stdout {stdout} stderr {stderr}");
        assert!(stderr.contains(expected), "{file}: stderr was {stderr}");
    }
}

#[test]
fn good_and_bad_files_together() {
    let (code, stdout, stderr) = check(&[
        "fixtures/rules/override.toml",
        "fixtures/rules/several-errors.toml",
        "fixtures/rules/missing.toml",
    ]);
    assert_eq!(code, 2);
    assert_eq!(stdout, "fixtures/rules/override.toml: 2 rules OK\n");
    assert_eq!(stderr.lines().count(), 4, "{stderr}");
    assert!(stderr.contains("several-errors.toml:9:8: rule \"memory\" is defined twice"));
    assert!(stderr.contains("fixtures/rules/missing.toml: cannot read the rules file"));
}
