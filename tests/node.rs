//! `tfwatch node`: two unrelated jobs started separately (a deadlocked one and an
//! oversubscribed one), each found and attributed to its own job; a job that ends during
//! the watch; a bad `--match` is a usage error.

use std::time::Duration;

use serde_json::Value;

use crate::support::{ChildGuard, Lines, tfwatch, tfwatch_bin, tfwatch_output, wait_for};

/// A workload under `sh -c '…; true'` (sh stays its parent: a job boundary, so the
/// workload is a job of its own), with a `--duration` unique to this test run so
/// `--match` picks these and no other engineer's workloads.
fn job(scenario: &str, millis: u64, extra: &str) -> ChildGuard {
    let script = format!(
        "{} run-workload --scenario {scenario} --duration {millis}ms {extra}; true",
        tfwatch_bin().display()
    );
    let mut command = std::process::Command::new("sh");
    command.args(["-c", &script]);
    ChildGuard::spawn(command)
}

#[test]
fn two_jobs_are_found_and_attributed_each_to_its_own() {
    // Unique durations: the deadlocked job ends during the watch, the other outlives it.
    let unique = u64::from(std::process::id() % 500);
    let deadlock_ms = 6_000 + unique;
    let oversubscribed_ms = 30_000 + unique;
    let deadlocked = job("deadlock", deadlock_ms, "");
    // Far more work than the duration allows, so the job is still running when the
    // watch ends however fast the machine is (its default work can finish sooner).
    let oversubscribed = job("oversubscribe", oversubscribed_ms, "--units 1000000000");
    // The job is named by its root: the workload under its sh.
    let root: i32 = wait_for(
        "the oversubscribed workload under its sh",
        Duration::from_secs(10),
        || {
            std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", oversubscribed.pid()))
                .ok()?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        },
    );
    let pattern = format!("run-workload .*--duration ({deadlock_ms}|{oversubscribed_ms})ms");
    let mut watcher = ChildGuard::spawn(tfwatch(&[
        "node",
        "--json",
        "--interval",
        "500ms",
        "--duration",
        "20s",
        "--hang-after",
        "3s",
        "--match",
        &pattern,
    ]));
    let lines = Lines::new(watcher.child.stdout.take().unwrap());
    let mut started = Vec::new();
    let mut deadlock_job = None;
    let mut oversubscribed_job = None;
    let mut ended = Vec::new();
    let seen = lines.until(
        "both findings and the deadlocked job's end",
        Duration::from_secs(25),
        |line| {
            let value: Value = serde_json::from_str(line).unwrap();
            let job = value["job"].as_str().map(str::to_string);
            match value["type"].as_str().unwrap() {
                "job-started" => started.push(job.unwrap()),
                "job-ended" => ended.push(job.unwrap()),
                "finding" => match value["kind"].as_str().unwrap() {
                    "deadlock" => deadlock_job = job,
                    "oversubscription" => oversubscribed_job = job,
                    _ => {}
                },
                _ => {}
            }
            let deadlocked_ended = deadlock_job.as_ref().is_some_and(|j| ended.contains(j));
            deadlocked_ended && oversubscribed_job.is_some()
        },
    );
    let mut context = seen.join("\n");
    if oversubscribed_job.is_none() || deadlock_job.is_none() {
        use std::io::Read;
        let _ = watcher.child.kill();
        let mut stderr = String::new();
        let _ = watcher
            .child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut stderr);
        context.push_str(&format!("\nstderr:\n{stderr}"));
    }
    let deadlock_job = deadlock_job.unwrap_or_else(|| panic!("no deadlock finding:\n{context}"));
    let oversubscribed_job =
        oversubscribed_job.unwrap_or_else(|| panic!("no oversubscription finding:\n{context}"));
    assert_ne!(
        deadlock_job, oversubscribed_job,
        "each finding has its own job"
    );
    assert!(deadlock_job.starts_with("tree/"), "{deadlock_job}");
    assert!(started.contains(&deadlock_job) && started.contains(&oversubscribed_job));
    assert!(
        ended.contains(&deadlock_job),
        "the job that ended is said to:\n{context}"
    );
    assert!(!ended.contains(&oversubscribed_job));
    assert!(
        oversubscribed_job.starts_with(&format!("tree/{root}-")),
        "{oversubscribed_job} vs root {root}"
    );
    drop(deadlocked);
    drop(watcher);
}

#[test]
fn a_bad_match_pattern_is_a_usage_error() {
    let out = tfwatch_output(&["node", "--json", "--match", "(unclosed", "--duration", "1s"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--match") && stderr.contains("regular expression"),
        "{stderr}"
    );
    let out = tfwatch_output(&["node", "--user", "no-such-user-here", "--duration", "1s"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no such user"));
}
