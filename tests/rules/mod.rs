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
        (
            "fixtures/rules/bad-name.toml",
            "fixtures/rules/bad-name.toml:3:8: invalid rule name \"threads\\n{{ $value }}\": use only letters, digits and _ . : -",
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
    assert!(stderr.contains(
        "cannot read fixtures/rules/missing.toml: No such file or directory (os error 2)\n"
    ));
}

#[test]
fn a_for_beyond_30_days_is_refused_not_a_panic() {
    let (code, _, stderr) = check(&["fixtures/rules/huge-for.toml"]);
    assert_eq!(code, 2, "stderr: {stderr}");
    assert_eq!(
        stderr,
        "fixtures/rules/huge-for.toml:7:7: invalid `for`: 1e20 is longer than the 30 days a \
         rule may wait; `for` must be from 0s to 30d (2592000 seconds)\n"
    );
}

#[test]
fn every_problem_of_a_file_at_once() {
    let (code, _, stderr) = check(&["fixtures/rules/many-problems.toml"]);
    assert_eq!(code, 2, "stderr: {stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 3, "{stderr}");
    assert!(
        lines[0].starts_with("fixtures/rules/many-problems.toml:4:10: unknown metric \"thread\"")
    );
    assert!(lines[1].starts_with(
        "fixtures/rules/many-problems.toml:7:7: invalid `for`: invalid duration \"10 parsecs\""
    ));
    assert!(lines[2].starts_with("fixtures/rules/many-problems.toml:8:1: unknown field `colour`"));
}

/// A file in the temporary directory, unique to this test process, removed on drop.
struct TempFile(std::path::PathBuf);

impl TempFile {
    fn new(name: &str, contents: &[u8]) -> TempFile {
        let path = std::env::temp_dir().join(format!("tfwatch-it-{}-{name}", std::process::id()));
        std::fs::write(&path, contents).unwrap();
        TempFile(path)
    }

    fn path(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[test]
fn binary_and_oversized_files_are_refused() {
    let binary = TempFile::new("binary.toml", b"\x7fELF\x02\x01\x01\x00\xff");
    let (code, _, stderr) = check(&[binary.path()]);
    assert_eq!(code, 2, "stderr: {stderr}");
    assert_eq!(
        stderr,
        format!(
            "{} is not a text file: invalid UTF-8 at byte 8\n",
            binary.path()
        )
    );
    let big = TempFile::new("big.toml", &vec![b'#'; 3 << 20]);
    let (code, _, stderr) = check(&[big.path()]);
    assert_eq!(code, 2, "stderr: {stderr}");
    assert!(
        stderr.starts_with(&format!(
            "{} is 3145728 bytes, over the 1048576 bytes (1.0 MiB) a rules file may have",
            big.path()
        )),
        "{stderr}"
    );
}

#[test]
fn other_commands_print_a_read_error_once() {
    // `attach` loads its rules before it looks at the pid; a bad `--rules` file is a
    // usage error (exit 2).
    let output =
        crate::support::tfwatch_output(&["attach", "--rules", "fixtures/rules/missing.toml", "1"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert_eq!(
        stderr,
        "tfwatch: cannot read fixtures/rules/missing.toml: No such file or directory (os error 2)\n"
    );
}
