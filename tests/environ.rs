//! The environment a program really uses, and audits redone when a process execs:
//! real python3 processes started through the pyenv shim.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use tfwatch::model::Sample;
use tfwatch::source::proc::{SampleTime, Sampler, SamplerConfig};

use crate::support::{ChildGuard, Lines, tfwatch_output, wait_for};

/// A python3 that sets OMP_NUM_THREADS after start (through `os.environ`, which calls
/// `putenv`): the snapshot reads it from memory and marks it as set after start.
#[test]
fn variable_set_after_start_is_read_from_memory() {
    let script = r#"
import os, time
os.environ["OMP_NUM_THREADS"] = "1"
print("ready", os.getpid(), flush=True)
time.sleep(60)
"#;
    let mut command = Command::new("python3");
    command
        .args(["-c", script])
        .env_remove("OMP_NUM_THREADS")
        .env("TFWATCH_ENVIRON_TEST", "1");
    let mut guard = ChildGuard::spawn(command);
    let lines = Lines::new(guard.child.stdout.take().unwrap());
    let seen = lines.until("ready", Duration::from_secs(30), |l| l.starts_with("ready"));
    let python: i32 = seen
        .last()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|p| p.parse().ok())
        .expect("ready line with a pid");
    // The start-up environment does not have it.
    let startup = std::fs::read(format!("/proc/{python}/environ")).unwrap();
    assert!(
        !startup
            .split(|&b| b == 0)
            .any(|e| e.starts_with(b"OMP_NUM_THREADS=")),
        "OMP_NUM_THREADS in the start-up environment"
    );

    let out = tfwatch_output(&[
        "snapshot",
        &guard.pid().to_string(),
        "--format",
        "json",
        "--window",
        "100ms",
        "--no-gpu",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).expect("valid JSON");
    let runtimes = report["runtimes"].as_array().unwrap();
    let audit = runtimes
        .iter()
        .find(|r| r["pid"] == python)
        .unwrap_or_else(|| panic!("no audit of pid {python} in {runtimes:#?}"));
    assert_eq!(audit["env_source"], "memory", "{audit:#}");
    assert_eq!(audit["env"]["OMP_NUM_THREADS"], "1", "{audit:#}");
    let changes = audit["env_changes"].as_array().unwrap();
    assert!(
        changes.iter().any(|c| c["variable"] == "OMP_NUM_THREADS"
            && c["at_start"].is_null()
            && c["now"] == "1"),
        "{changes:#?}"
    );

    let text = tfwatch_output(&[
        "snapshot",
        &guard.pid().to_string(),
        "--window",
        "100ms",
        "--no-gpu",
    ]);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains("environment (memory): OMP_NUM_THREADS=1")
            && text.contains("OMP_NUM_THREADS=1 set after start"),
        "{text}"
    );
}

fn at(elapsed_seconds: f64) -> SampleTime {
    SampleTime {
        elapsed_seconds,
        ..SampleTime::default()
    }
}

fn has_cpython(sample: &Sample, pid: i32) -> bool {
    sample
        .processes
        .iter()
        .find(|p| p.pid == pid)
        .and_then(|p| p.audit.as_ref())
        .is_some_and(|a| a.runtimes.iter().any(|r| r.name == "CPython"))
}

/// A bash that execs python3 through the pyenv shim (bash, then pyenv, then python):
/// the audit of the pid is redone on exec, well before the periodic refresh.
#[test]
fn audit_is_redone_when_the_process_execs() {
    let mut command = Command::new("bash");
    command
        .args([
            "-c",
            "read _; exec python3 -c 'import time; time.sleep(30)'",
        ])
        .stdin(Stdio::piped());
    let mut guard = ChildGuard::spawn(command);
    let pid = guard.pid();
    let config = SamplerConfig {
        audit_every_seconds: 3600.0,
        ..SamplerConfig::default()
    };
    let mut sampler = Sampler::new(pid, config).expect("sampler attaches");
    let first = sampler.sample(at(0.0)).expect("first sample");
    // bash is still waiting on stdin: audited, no CPython.
    let bash = first.processes.iter().find(|p| p.pid == pid).unwrap();
    assert_eq!(bash.comm, "bash");
    assert!(bash.audit.is_some(), "bash was not audited");
    assert!(!has_cpython(&first, pid));

    guard
        .child
        .stdin
        .take()
        .unwrap()
        .write_all(b"go\n")
        .unwrap();
    let start = Instant::now();
    let sample = wait_for("the audit to list CPython", Duration::from_secs(30), || {
        let sample = sampler
            .sample(at(start.elapsed().as_secs_f64() + 0.1))
            .ok()?;
        has_cpython(&sample, pid).then_some(sample)
    });
    let python = sample.processes.iter().find(|p| p.pid == pid).unwrap();
    assert!(python.comm.starts_with("python"), "{}", python.comm);
}
