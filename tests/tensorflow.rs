//! Real TensorFlow processes: what tfwatch says about a healthy `import tensorflow` job.
//! Skipped, with the reason printed, where `import tensorflow` fails (a failure where
//! `TFWATCH_REQUIRE` names `tensorflow`). The import takes several seconds, so there is
//! one test.

use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::support::{ChildGuard, Lines, snapshot_json, wait_for};

/// A healthy, idle TensorFlow parent (numpy and, where installed, scipy loaded: each pip
/// wheel bundles its own OpenBLAS) with two forked children asleep: predicted risks at
/// most, no warning.
#[test]
fn idle_tensorflow_job_gets_no_warning() {
    let script = r#"
import os, sys, time
try:
    import numpy, tensorflow
    try:
        import scipy.linalg
    except Exception:
        pass
except Exception as e:
    print("skip:", type(e).__name__, e, flush=True)
    sys.exit(0)
children = []
for _ in range(2):
    pid = os.fork()
    if pid == 0:
        time.sleep(600)
        os._exit(0)
    children.append(pid)
print("ready", *children, flush=True)
sys.stdin.read()
"#;
    let mut command = Command::new("python3");
    command
        .args(["-c", script])
        .env_remove("OMP_NUM_THREADS")
        .env_remove("OPENBLAS_NUM_THREADS")
        .env("TF_CPP_MIN_LOG_LEVEL", "3")
        .stdin(std::process::Stdio::piped());
    let mut guard = ChildGuard::spawn(command);
    let pid = guard.pid();
    let stdout = guard.child.stdout.take().unwrap();
    let lines = Lines::new(stdout);
    let seen = lines.until("tensorflow imported", Duration::from_secs(120), |l| {
        l.starts_with("ready") || l.starts_with("skip:")
    });
    let last = seen.last().cloned().unwrap_or_default();
    if !last.starts_with("ready") {
        crate::support::skip("tensorflow", format!("`import tensorflow` failed: {last}"));
        return;
    }
    let children: Vec<i32> = last
        .split_whitespace()
        .skip(1)
        .filter_map(|p| p.parse().ok())
        .collect();
    assert_eq!(children.len(), 2, "{last}");
    // The children are asleep (0 runnable threads) before the snapshot.
    wait_for("children asleep", Duration::from_secs(10), || {
        children
            .iter()
            .all(|c| {
                std::fs::read_to_string(format!("/proc/{c}/stat")).is_ok_and(|s| {
                    s.rsplit(')')
                        .next()
                        .is_some_and(|r| r.trim_start().starts_with('S'))
                })
            })
            .then_some(())
    });
    let report: Value = snapshot_json(pid, "500ms", &["--no-gpu"]);
    let findings = report["findings"].as_array().unwrap();
    for f in findings {
        assert_eq!(
            f["severity"], "info",
            "a healthy TensorFlow job got {}: {f:#}",
            f["severity"]
        );
    }
    // Three processes × TensorFlow's pools sized to the CPUs: a predicted risk, worded
    // as one.
    let pools = findings
        .iter()
        .find(|f| f["kind"] == "pool-oversubscription")
        .unwrap_or_else(|| panic!("no pool-oversubscription in {findings:#?}"));
    let summary = pools["summary"].as_str().unwrap();
    assert!(summary.contains("would start up to"), "{summary}");
    assert!(!summary.contains("runnable"), "{summary}");
}
