//! "Why it is slow" on real Python programs: eight request threads through one
//! `threading.Lock` around a numpy matmul (the "thread-safe wrapper" around predict())
//! is named as lock contention with its futex word; the same work without the lock,
//! one thread per CPU, raises nothing of warning or above.

use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::support::{ChildGuard, Lines, tfwatch};

/// Request threads through one lock (`lock`) or none (`free`); prints `ready` once the
/// threads run, then serves until the duration (argv[3], seconds) is up.
const SCRIPT: &str = r#"
import os, sys, threading, time
# One BLAS thread per call: the model call uses one core, as a serving thread's does.
os.environ["OPENBLAS_NUM_THREADS"] = "1"
os.environ["OMP_NUM_THREADS"] = "1"
os.environ["MKL_NUM_THREADS"] = "1"
import numpy as np

mode, threads, duration = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
model = np.random.rand(192, 192)
lock = threading.Lock()
calls = [0] * threads
stop = time.monotonic() + duration

def predict(weights, x):
    return weights @ x

def serve(i):
    x = np.random.rand(192, 192)
    own = model.copy()
    while time.monotonic() < stop:
        if mode == "lock":
            with lock:  # the thread-safe wrapper
                predict(model, x)
        else:
            predict(own, x)
        calls[i] += 1

workers = [threading.Thread(target=serve, args=(i,), name=f"request-{i}") for i in range(threads)]
start = time.monotonic()
for w in workers:
    w.start()
print("ready", flush=True)
for w in workers:
    w.join()
print(f"calls/s {sum(calls) / (time.monotonic() - start):.1f}", flush=True)
"#;

fn script_path() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("tfwatch-contention-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("serve.py");
    std::fs::write(&path, SCRIPT).unwrap();
    path
}

fn usable_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

#[test]
fn a_lock_around_a_numpy_matmul_is_named_with_its_futex_word() {
    let script = script_path();
    let mut command = Command::new("python3");
    command.arg(&script).args(["lock", "8", "60"]);
    let mut target = ChildGuard::spawn(command);
    let out = Lines::new(target.child.stdout.take().unwrap());
    out.until("the threads to start", Duration::from_secs(60), |l| {
        l == "ready"
    });
    let pid = target.pid().to_string();
    let mut attach = tfwatch(&[
        "attach",
        &pid,
        "--json",
        "--no-gpu",
        "--no-stacks",
        "--interval",
        "250ms",
        "--duration",
        "40s",
    ]);
    attach.stderr(std::process::Stdio::inherit());
    let mut watch = ChildGuard::spawn(attach);
    let lines = Lines::new(watch.child.stdout.take().unwrap());
    let seen = lines.until("a lock-contention warning", Duration::from_secs(45), |l| {
        l.contains(r#""kind":"lock-contention""#) && l.contains(r#""severity":"warning""#)
    });
    let finding: Value = seen
        .iter()
        .rev()
        .find(|l| l.contains(r#""kind":"lock-contention""#))
        .map(|l| serde_json::from_str(l).unwrap())
        .unwrap_or_else(|| panic!("no lock-contention finding:\n{}", seen.join("\n")));
    let summary = finding["summary"].as_str().unwrap();
    assert!(
        summary.contains("queue on one lock (futex word 0x"),
        "{summary}"
    );
    let waiters = finding["metrics"]["lock_waiters"].as_f64().unwrap();
    assert!(waiters >= 3.0, "{finding:#}");
    // The word the finding names is the one the waiters show in their syscall file.
    let address = finding["metrics"]["lock_address"].as_f64().unwrap() as u64;
    let tids: Vec<i64> = finding["tids"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_i64)
        .collect();
    assert!(!tids.is_empty());
    let parallelism = finding["metrics"]["effective_parallelism"]
        .as_f64()
        .unwrap();
    assert!(parallelism < 1.6, "{finding:#}");
    let evidence = finding["evidence"].to_string();
    assert!(evidence.contains(&format!("{address:#x}")), "{evidence}");
    assert!(
        finding["remedy"]
            .as_str()
            .unwrap()
            .contains("read-only model")
    );
    // The threads in the program and the finding: no oversubscription was claimed.
    assert!(
        !seen
            .iter()
            .any(|l| l.contains(r#""kind":"oversubscription""#)),
        "8 threads of which one runs are no oversubscription"
    );
    drop(watch);
    drop(target);
}

#[test]
fn the_same_threads_without_the_lock_raise_nothing() {
    let script = script_path();
    let threads = usable_cpus().to_string();
    let script = script.to_string_lossy().to_string();
    let mut command = tfwatch(&[
        "run",
        "--no-gpu",
        "--interval",
        "250ms",
        "--fail-on",
        "warning",
        "--",
        "python3",
        &script,
        "free",
        &threads,
        "6",
    ]);
    command.stdin(std::process::Stdio::null());
    let mut run = ChildGuard::spawn(command);
    let out = Lines::new(run.child.stdout.take().unwrap());
    let err = Lines::new(run.child.stderr.take().unwrap());
    let stdout = out.until("stdout to close", Duration::from_secs(120), |_| false);
    let stderr = err.until("stderr to close", Duration::from_secs(120), |_| false);
    let status = run.child.wait().unwrap();
    let stderr = stderr.join("\n");
    assert_eq!(status.code(), Some(0), "{stderr}\n{}", stdout.join("\n"));
    assert!(!stderr.contains("lock-contention"), "{stderr}");
    assert!(
        stdout.iter().any(|l| l.starts_with("calls/s")),
        "{stdout:?}"
    );
}
