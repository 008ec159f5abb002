//! `tfwatch attach --json` against the reference workload.

use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;

use crate::support::{ChildGuard, Lines, tfwatch, tfwatch_output, workload};

const TYPES: [&str; 6] = ["sample", "finding", "alert", "resolved", "stacks", "exit"];

/// Attaches with `args` and reads JSON lines until the `exit` line.
fn attach_until_exit(pid: i32, args: &[&str], timeout: Duration) -> (Vec<Value>, ChildGuard) {
    let pid = pid.to_string();
    let mut all = vec!["attach", pid.as_str(), "--json", "--no-gpu"];
    all.extend_from_slice(args);
    let mut command = tfwatch(&all);
    command.stderr(Stdio::inherit());
    let mut guard = ChildGuard::spawn(command);
    let lines = Lines::new(guard.child.stdout.take().expect("stdout"));
    let seen = lines.until("the exit line", timeout, |l| l.contains(r#""type":"exit""#));
    let events: Vec<Value> = seen
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("invalid JSON line {l:?}: {e}")))
        .collect();
    for e in &events {
        let t = e["type"].as_str().expect("every line has a type");
        assert!(TYPES.contains(&t), "unknown type {t}");
    }
    (events, guard)
}

fn findings<'a>(events: &'a [Value], kind: &str) -> Vec<&'a Value> {
    events
        .iter()
        .filter(|e| e["type"] == "finding" && e["kind"] == kind)
        .collect()
}

#[test]
fn hang_is_reported_and_the_exit_of_the_target_ends_the_stream() {
    let target = workload(&["--scenario", "deadlock", "--duration", "6s"]);
    let (events, mut attach) = attach_until_exit(
        target.pid(),
        &["--hang-after", "2s", "--interval", "500ms"],
        Duration::from_secs(40),
    );
    let hang: Vec<&Value> = events
        .iter()
        .filter(|e| {
            e["type"] == "finding" && (e["kind"] == "no-progress" || e["kind"] == "deadlock")
        })
        .collect();
    assert!(!hang.is_empty(), "no hang finding in {events:#?}");
    let f = hang[0];
    assert_eq!(f["severity"], "error");
    assert!(f["remedy"].as_str().is_some_and(|r| !r.is_empty()));
    assert!(f["evidence"].as_array().is_some_and(|e| !e.is_empty()));
    assert!(
        f["pids"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p == target.pid())
    );
    let samples = events.iter().filter(|e| e["type"] == "sample").count();
    assert!(samples >= 5, "{samples} samples");
    // The hang's stacks, taken once per hang and explained, with the pause.
    let stacks: Vec<&Value> = events.iter().filter(|e| e["type"] == "stacks").collect();
    assert!(!stacks.is_empty(), "no stacks line in {events:#?}");
    let pauses = &stacks[0]["stacks"]["pauses"];
    let unavailable = stacks[0]["stacks"]["unavailable"].to_string();
    if cfg!(feature = "stacks-native") && !unavailable.contains("no ptrace access") {
        assert!(
            pauses.as_array().is_some_and(|p| !p.is_empty()),
            "{:#}",
            stacks[0]
        );
        let evidence = stacks[0]["finding"]["evidence"].to_string();
        assert!(evidence.contains("paused"), "{evidence}");
    }
    let exit = events.last().unwrap();
    assert_eq!(exit["reason"], "target-exited", "{exit}");
    let status = attach.child.wait().unwrap();
    assert!(status.success());
}

#[test]
fn stream_stays_valid_while_threads_come_and_go() {
    let target = workload(&[
        "--scenario",
        "thread-explosion",
        "--duration",
        "4s",
        "--threads",
        "200",
    ]);
    let (events, _attach) = attach_until_exit(
        target.pid(),
        &["--interval", "200ms"],
        Duration::from_secs(40),
    );
    let explosion = findings(&events, "thread-explosion");
    assert!(!explosion.is_empty(), "no thread-explosion finding");
    assert!(explosion[0]["metrics"]["threads"].as_f64().unwrap() > 64.0);
    assert!(
        events
            .iter()
            .any(|e| e["type"] == "alert" && e["rule"] == "too-many-threads"),
        "the default thread rule fires"
    );
    let peak = events
        .iter()
        .filter(|e| e["type"] == "sample")
        .filter_map(|e| e["metrics"]["threads"].as_f64())
        .fold(0.0, f64::max);
    assert!(peak > 150.0, "peak {peak}");
    assert_eq!(events.last().unwrap()["reason"], "target-exited");
}

#[test]
fn record_writes_full_samples_as_json_lines() {
    let dir = std::env::temp_dir().join(format!("tfwatch-record-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("timeline.jsonl");
    let target = workload(&["--scenario", "healthy", "--duration", "3s"]);
    let path = file.to_string_lossy().to_string();
    let (events, _attach) = attach_until_exit(
        target.pid(),
        &["--interval", "500ms", "--record", &path],
        Duration::from_secs(30),
    );
    let samples = events.iter().filter(|e| e["type"] == "sample").count();
    let recorded: Vec<tfwatch::model::Sample> = std::fs::read_to_string(&file)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).expect("a full sample"))
        .collect();
    assert_eq!(recorded.len(), samples);
    assert!(recorded.iter().all(|s| s.root_pid == target.pid()));
    // The first sample may come before the workload started its threads.
    assert!(recorded.iter().any(|s| s.thread_count() >= 2));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn missing_pid_and_bad_rules_are_clear_errors() {
    let out = tfwatch_output(&["attach", "2147483600", "--json"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no process with pid 2147483600"));

    let dir = std::env::temp_dir().join(format!("tfwatch-rules-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("bad.toml");
    std::fs::write(
        &bad,
        "[[rule]]\nname = \"x\"\nmetric = \"threads\"\nop = \">\"\nthreshold = 5\nfor = \"soon\"\n",
    )
    .unwrap();
    let me = std::process::id().to_string();
    let out = tfwatch_output(&["attach", &me, "--json", "--rules", bad.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.toml:6"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}
