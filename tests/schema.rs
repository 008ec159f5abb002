//! `tfwatch schema`: every JSON line and report of every command validates against the
//! schemas the binary prints.

use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;

use crate::support::{ChildGuard, Lines, tfwatch, tfwatch_bin, tfwatch_output, workload};

/// The schema `tfwatch schema WHAT` prints, compiled.
pub(crate) fn validator(what: &str) -> jsonschema::Validator {
    let out = tfwatch_output(&["schema", what]);
    assert!(out.status.success(), "{out:?}");
    let schema: Value = serde_json::from_slice(&out.stdout).expect("the schema is JSON");
    assert_eq!(
        schema["$schema"], "https://json-schema.org/draft/2020-12/schema",
        "draft 2020-12"
    );
    jsonschema::draft202012::new(&schema)
        .unwrap_or_else(|e| panic!("tfwatch schema {what} does not compile: {e}"))
}

/// Checks every line of `text` against the event schema; returns their types.
fn check_lines(events: &jsonschema::Validator, text: &str) -> Vec<String> {
    let mut types = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let value: Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON: {line:?}: {e}"));
        let errors: Vec<String> = events.iter_errors(&value).map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "{line}\ndoes not validate: {errors:#?}");
        types.push(value["type"].as_str().expect("a type").to_string());
    }
    types
}

pub(crate) fn check_report(reports: &jsonschema::Validator, text: &str) {
    let value: Value = serde_json::from_str(text).expect("the report is JSON");
    let errors: Vec<String> = reports.iter_errors(&value).map(|e| e.to_string()).collect();
    assert!(
        errors.is_empty(),
        "the report does not validate: {errors:#?}"
    );
}

fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("tfwatch-schema-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn the_schemas_are_printed_and_compile() {
    validator("events");
    validator("report");
    let out = tfwatch_output(&["schema", "nothing"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
}

#[test]
fn attach_lines_validate() {
    let events = validator("events");
    let target = workload(&["--scenario", "deadlock", "--duration", "5s"]);
    let pid = target.pid().to_string();
    let dir = temp_dir("attach");
    let record = dir.join("record.jsonl");
    let record_arg = record.to_string_lossy().to_string();
    let mut command = tfwatch(&[
        "attach",
        &pid,
        "--json",
        "--no-gpu",
        "--hang-after",
        "1s",
        "--interval",
        "250ms",
        "--record",
        &record_arg,
    ]);
    command.stderr(Stdio::inherit());
    let mut attach = ChildGuard::spawn(command);
    let stdout = Lines::new(attach.child.stdout.take().unwrap());
    let seen = stdout.until("the exit line", Duration::from_secs(40), |l| {
        l.contains(r#""type":"exit""#)
    });
    let _ = attach.child.wait();
    let types = check_lines(&events, &seen.join("\n"));
    for wanted in ["sample", "finding", "exit"] {
        assert!(
            types.iter().any(|t| t == wanted),
            "no {wanted} in {types:?}"
        );
    }

    // The recording, replayed.
    let out = tfwatch_output(&["replay", &record_arg, "--json"]);
    assert!(out.status.success(), "{out:?}");
    let types = check_lines(&events, &String::from_utf8_lossy(&out.stdout));
    assert_eq!(
        types.last().map(String::as_str),
        Some("replayed"),
        "{types:?}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn run_lines_and_report_validate() {
    let events = validator("events");
    let reports = validator("report");
    let dir = temp_dir("run");
    let report = dir.join("report.json");
    let report_arg = report.to_string_lossy().to_string();
    let bin = tfwatch_bin().to_string_lossy().to_string();
    let out = tfwatch_output(&[
        "run",
        "--json",
        "--no-gpu",
        "--hang-after",
        "1s",
        "--interval",
        "250ms",
        "--report",
        &report_arg,
        "--listen",
        "127.0.0.1:0",
        "--",
        &bin,
        "run-workload",
        "--scenario",
        "deadlock",
        "--duration",
        "20s",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    let types = check_lines(&events, &err);
    assert_eq!(
        types.first().map(String::as_str),
        Some("listening"),
        "{types:?}"
    );
    for wanted in ["sample", "finding", "diagnosis", "message", "exit"] {
        assert!(
            types.iter().any(|t| t == wanted),
            "no {wanted} in {types:?}"
        );
    }
    check_report(&reports, &std::fs::read_to_string(&report).unwrap());

    // A command that ends at once, and one that cannot start.
    let out = tfwatch_output(&[
        "run",
        "--json",
        "--no-gpu",
        "--report",
        &report_arg,
        "--",
        "true",
    ]);
    let types = check_lines(&events, &String::from_utf8_lossy(&out.stderr));
    assert_eq!(types.last().map(String::as_str), Some("exit"), "{types:?}");
    check_report(&reports, &std::fs::read_to_string(&report).unwrap());
    let out = tfwatch_output(&["run", "--json", "--", "no-such-command-tfwatch-schema"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(check_lines(&events, &err), ["exit"], "{err}");
    let exit: Value = serde_json::from_str(err.trim()).unwrap();
    assert_eq!(
        (exit["outcome"].as_str(), exit["reason"].as_str()),
        (Some("not-started"), Some("not-started"))
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn node_lines_validate() {
    let events = validator("events");
    let target = workload(&["--scenario", "deadlock", "--duration", "6s"]);
    let out = tfwatch_output(&[
        "node",
        "--json",
        "--interval",
        "250ms",
        "--duration",
        "2s",
        "--hang-after",
        "1s",
        "--match",
        "run-workload --scenario deadlock --duration 6s",
    ]);
    assert!(out.status.success(), "{out:?}");
    let types = check_lines(&events, &String::from_utf8_lossy(&out.stdout));
    for wanted in ["job-started", "sample", "exit"] {
        assert!(
            types.iter().any(|t| t == wanted),
            "no {wanted} in {types:?}"
        );
    }
    drop(target);
}

#[test]
fn snapshot_reports_validate() {
    let reports = validator("report");
    let mut sleeper = std::process::Command::new("sleep");
    sleeper.arg("30");
    let child = ChildGuard::spawn(sleeper);
    let pid = child.pid().to_string();
    let out = tfwatch_output(&["snapshot", &pid, "--format", "json", "--window", "200ms"]);
    assert!(out.status.success(), "{out:?}");
    check_report(&reports, &String::from_utf8_lossy(&out.stdout));
}

#[test]
fn every_line_type_is_documented() {
    let out = tfwatch_output(&["schema", "events"]);
    let schema: Value = serde_json::from_slice(&out.stdout).unwrap();
    let types: Vec<&str> = schema["oneOf"]
        .as_array()
        .expect("one schema per type")
        .iter()
        .map(|variant| {
            variant["properties"]["type"]["const"]
                .as_str()
                .expect("each variant fixes its type")
        })
        .collect();
    assert!(types.len() >= 14, "{types:?}");
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let docs = std::fs::read_to_string(root.join("docs/events.md")).unwrap();
    for t in types {
        assert!(
            docs.contains(&format!("`{t}`")) || docs.contains(&format!("\"type\":\"{t}\"")),
            "docs/events.md does not name the {t:?} line"
        );
    }
}
