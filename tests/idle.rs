//! Idle is not hung: real programs that wait between bursts of work (a Pool between
//! batches, a thread pool with a sleeping main, a service waiting for its stop signal,
//! torch, a DataLoader, scikit-learn, a TensorFlow model waiting for requests) run under
//! `tfwatch run --hang-after 6s` to their own exit code with nothing of warning or above,
//! and the hangs that look idle (a Pool worker on a lock copied at fork, thread-pool
//! starvation, a join on a consumer no thread can feed) end with 122, named.
//!
//! Each program idles longer than the hang window, after it has worked.

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

use crate::support::{skip, tfwatch_bin};

/// The idle time of each program: past the 6 s hang window, with the stacks taken at 3 s.
const IDLE: &str = "9";

/// Writes `source` to a fresh file and gives its path.
fn program(name: &str, source: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tfwatch-idle-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{name}.py"));
    std::fs::write(&path, source.replace("IDLE", IDLE)).unwrap();
    path
}

/// Whether python3 can import `modules`; else the test skips (`what` says which
/// requirement it is).
fn can_import(what: &str, modules: &str) -> bool {
    let out = Command::new("python3")
        .args(["-c", &format!("import {modules}")])
        .output();
    match out {
        Ok(o) if o.status.success() => true,
        Ok(o) => {
            let err = String::from_utf8_lossy(&o.stderr);
            skip(
                what,
                format!(
                    "`import {modules}` failed: {}",
                    err.lines().last().unwrap_or("")
                ),
            );
            false
        }
        Err(e) => {
            skip("python3", format!("no python3: {e}"));
            false
        }
    }
}

/// `tfwatch run --json --hang-after 6s -- python3 PROGRAM`: its exit code and its JSON
/// lines (stderr).
fn run(program: &PathBuf) -> (i32, Vec<Value>) {
    let out = Command::new(tfwatch_bin())
        .args([
            "run",
            "--json",
            "--no-gpu",
            "--hang-after",
            "6s",
            "--timeout",
            "120s",
            "--",
        ])
        .arg("python3")
        .arg(program)
        .output()
        .unwrap();
    let lines = String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    (out.status.code().unwrap_or(-1), lines)
}

/// The findings and alerts at warning or above among `lines`.
fn loud(lines: &[Value]) -> Vec<String> {
    lines
        .iter()
        .filter(|l| matches!(l["type"].as_str(), Some("finding" | "alert")))
        .filter(|l| matches!(l["severity"].as_str(), Some("warning" | "error")))
        .map(|l| {
            format!(
                "{}: {}",
                l["kind"].as_str().or(l["rule"].as_str()).unwrap_or("?"),
                l["summary"]
                    .as_str()
                    .or(l["message"].as_str())
                    .unwrap_or("")
            )
        })
        .collect()
}

/// Runs an idle program: its own exit code (0), nothing loud.
fn quiet(name: &str, source: &str) -> Vec<Value> {
    let path = program(name, source);
    let (code, lines) = run(&path);
    assert_eq!(code, 0, "{name} was not left to end by itself: {lines:#?}");
    assert_eq!(loud(&lines), Vec::<String>::new(), "{name}");
    lines
}

/// Runs a hang that looks idle: 122, with a hang finding whose text has `named`.
fn hung(name: &str, source: &str, kind: &str, named: &str) {
    let path = program(name, source);
    let (code, lines) = run(&path);
    assert_eq!(code, 122, "{name} is a hang: {lines:#?}");
    let text = serde_json::to_string(&lines).unwrap();
    assert!(
        lines
            .iter()
            .any(|l| l["kind"] == kind && l["severity"] == "error"),
        "{name}: no {kind} error in {text}"
    );
    assert!(text.contains(named), "{name}: {named:?} not in {text}");
}

/// Whether an `idle` finding was said for the process.
fn said_idle(lines: &[Value]) -> bool {
    lines
        .iter()
        .any(|l| l["kind"] == "idle" && l["severity"] == "info")
}

const FORK_POOL: &str = r#"
import multiprocessing as mp, time
def work(x): return sum(i * i for i in range(20000))
if __name__ == "__main__":
    # As many workers as the CPUs a test machine has: the pool fits, and is idle.
    with mp.get_context("fork").Pool(2) as pool:
        pool.map(work, range(32))
        time.sleep(IDLE)
        pool.map(work, range(32))
"#;

#[test]
fn a_fork_pool_between_batches_is_left_alone() {
    if can_import("python3", "multiprocessing") {
        quiet("fork_pool", FORK_POOL);
    }
}

#[test]
fn a_spawn_pool_and_a_process_pool_executor_are_left_alone() {
    if !can_import("python3", "multiprocessing") {
        return;
    }
    quiet("spawn_pool", &FORK_POOL.replace("\"fork\"", "\"spawn\""));
    quiet(
        "process_pool_executor",
        r#"
import time
from concurrent.futures import ProcessPoolExecutor
def work(x): return sum(i * i for i in range(20000))
if __name__ == "__main__":
    with ProcessPoolExecutor(2) as ex:
        list(ex.map(work, range(16)))
        time.sleep(IDLE)
        list(ex.map(work, range(16)))
"#,
    );
}

#[test]
fn a_thread_pool_with_a_sleeping_main_is_idle_not_hung() {
    if !can_import("python3", "concurrent.futures") {
        return;
    }
    let lines = quiet(
        "thread_pool",
        r#"
import time
from concurrent.futures import ThreadPoolExecutor
ex = ThreadPoolExecutor(8)
list(ex.map(lambda x: sum(i * i for i in range(20000)), range(64)))
time.sleep(IDLE)
list(ex.map(lambda x: sum(i * i for i in range(20000)), range(64)))
"#,
    );
    let idle = lines.iter().find(|l| l["kind"] == "idle");
    assert!(
        idle.is_some(),
        "the idle process is said to be idle: {lines:#?}"
    );
    let summary = idle.unwrap()["summary"].as_str().unwrap_or("");
    assert!(
        summary.contains("8 ThreadPoolExecutor thread(s) wait for work")
            && summary.contains("MainThread sleeps at thread_pool.py:6"),
        "{summary}"
    );
}

#[test]
fn queue_workers_and_a_main_waiting_for_its_stop_signal_are_idle() {
    if !can_import("python3", "queue") {
        return;
    }
    // Every thread in an untimed wait on a private word: /proc alone would call it a
    // hang (only a signal can wake it); the stacks show workers waiting for work and a
    // main thread waiting for its stop event, set by the alarm's signal.
    let lines = quiet(
        "stop_signal",
        r#"
import queue, signal, threading
jobs, stop = queue.Queue(), threading.Event()
def worker():
    while (item := jobs.get()) is not None:
        sum(i * i for i in range(item))
threads = [threading.Thread(target=worker) for _ in range(4)]
for t in threads: t.start()
for _ in range(8): jobs.put(20000)
signal.signal(signal.SIGALRM, lambda *a: stop.set())
signal.alarm(IDLE)
stop.wait()
for t in threads: jobs.put(None)
for t in threads: t.join()
"#,
    );
    assert!(said_idle(&lines), "{lines:#?}");
}

#[test]
fn a_socket_service_between_requests_is_left_alone() {
    if !can_import("python3", "socketserver") {
        return;
    }
    quiet(
        "socket_service",
        r#"
import signal, socketserver, threading
class Echo(socketserver.StreamRequestHandler):
    def handle(self): self.wfile.write(self.rfile.readline())
server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Echo)
threading.Thread(target=server.serve_forever, daemon=True).start()
signal.signal(signal.SIGALRM, lambda *a: None)
signal.alarm(IDLE)
signal.pause()
server.shutdown()
"#,
    );
}

#[test]
fn torch_and_a_dataloader_between_steps_are_left_alone() {
    if !can_import("torch", "torch") {
        return;
    }
    quiet(
        "torch_idle",
        r#"
import time, torch
a = torch.randn(256, 256)
for _ in range(20): a = torch.tanh(a @ a)
time.sleep(IDLE)
for _ in range(20): a = torch.tanh(a @ a)
"#,
    );
    quiet(
        "dataloader",
        r#"
import time, torch
from torch.utils.data import DataLoader, TensorDataset
if __name__ == "__main__":
    data = TensorDataset(torch.randn(256, 8))
    loader = DataLoader(data, batch_size=32, num_workers=2, persistent_workers=True)
    for epoch in range(2):
        for (batch,) in loader: batch.sum()
        if epoch == 0: time.sleep(IDLE)
"#,
    );
}

#[test]
fn scikit_learn_with_n_jobs_between_fits_is_left_alone() {
    if !can_import("sklearn", "sklearn") {
        return;
    }
    quiet(
        "sklearn_jobs",
        r#"
import time
from sklearn.datasets import make_classification
from sklearn.ensemble import RandomForestClassifier
X, y = make_classification(n_samples=400, random_state=0)
if __name__ == "__main__":
    RandomForestClassifier(n_estimators=20, n_jobs=2).fit(X, y)
    time.sleep(IDLE)
    RandomForestClassifier(n_estimators=20, n_jobs=2).fit(X, y)
"#,
    );
}

#[test]
fn a_tensorflow_model_waiting_for_requests_is_left_alone() {
    if !can_import("tensorflow", "tensorflow") {
        return;
    }
    quiet(
        "tf_serving",
        r#"
import queue, threading, time
import numpy as np, tensorflow as tf
model = tf.keras.Sequential([tf.keras.Input((8,)), tf.keras.layers.Dense(4)])
requests = queue.Queue()
def serve():
    while (x := requests.get()) is not None:
        model.predict(x, verbose=0)
server = threading.Thread(target=serve); server.start()
requests.put(np.ones((2, 8), "float32"))
time.sleep(IDLE)
requests.put(np.ones((2, 8), "float32"))
requests.put(None); server.join()
"#,
    );
}

#[test]
fn a_pool_worker_on_a_lock_copied_at_fork_is_a_hang() {
    if !can_import("python3", "multiprocessing") {
        return;
    }
    hung(
        "fork_lock_pool",
        r#"
import multiprocessing as mp, threading, time
lock = threading.Lock()
def task(x):
    with lock: return x
def hold():
    with lock: time.sleep(60)
if __name__ == "__main__":
    threading.Thread(target=hold, daemon=True).start()
    time.sleep(0.2)
    with mp.get_context("fork").Pool(2) as pool:
        print(pool.map(task, range(4)))
"#,
        "fork-inherited-lock",
        "single-threaded fork",
    );
}

#[test]
fn thread_pool_starvation_is_a_hang_named_with_its_pool() {
    if !can_import("python3", "concurrent.futures") {
        return;
    }
    hung(
        "starvation",
        r#"
from concurrent.futures import ThreadPoolExecutor
pool = ThreadPoolExecutor(2)
def inner(): return 1
def outer(): return pool.submit(inner).result()
futures = [pool.submit(outer) for _ in range(2)]
print([f.result() for f in futures])
"#,
        "no-progress",
        "thread-pool starvation",
    );
}

#[test]
fn a_join_on_a_consumer_no_thread_can_feed_is_a_hang() {
    if !can_import("python3", "queue") {
        return;
    }
    hung(
        "join_consumer",
        r#"
import queue, threading
items = queue.Queue()
def consumer():
    while (item := items.get()) is not None:
        pass
t = threading.Thread(target=consumer, name="consumer"); t.start()
items.put(1)
t.join()
"#,
        "no-progress",
        "queue.get()",
    );
}

/// Starts `source` (its `IDLE` made long enough to outlast the watch), waits for its
/// "ready" line (printed once it has worked), then `tfwatch attach PID --json
/// --hang-after 6s` for 12 s: the attach's JSON lines. The program is ended by pid.
fn attached(name: &str, source: &str) -> Vec<Value> {
    use std::io::{BufRead, BufReader};
    let path = program(name, &source.replace("IDLE", "40"));
    let mut child = Command::new("python3")
        .arg(&path)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut ready = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut ready)
        .unwrap();
    assert_eq!(ready.trim(), "ready", "{name} did not start");
    let out = Command::new(tfwatch_bin())
        .args(["attach", "--json", "--no-gpu", "--hang-after", "6s"])
        .args(["--duration", "12s"])
        .arg(child.id().to_string())
        .output()
        .unwrap();
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(out.status.code(), Some(0), "attach to {name}: {out:?}");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

#[test]
fn attach_says_idle_programs_are_idle_and_raises_nothing() {
    if !can_import("python3", "concurrent.futures") {
        return;
    }
    let thread_pool = std::thread::spawn(|| {
        attached(
            "attach_thread_pool",
            r#"
import time
from concurrent.futures import ThreadPoolExecutor
ex = ThreadPoolExecutor(8)
list(ex.map(lambda x: sum(i * i for i in range(20000)), range(64)))
print("ready", flush=True)
time.sleep(IDLE)
"#,
        )
    });
    let fork_pool = attached(
        "attach_fork_pool",
        r#"
import multiprocessing as mp, time
def work(x): return sum(i * i for i in range(20000))
if __name__ == "__main__":
    with mp.get_context("fork").Pool(2) as pool:
        pool.map(work, range(32))
        print("ready", flush=True)
        time.sleep(IDLE)
"#,
    );
    let thread_pool = thread_pool.join().unwrap();
    for (name, lines) in [("thread pool", &thread_pool), ("fork pool", &fork_pool)] {
        assert!(
            lines.iter().any(|l| l["type"] == "sample"),
            "{name}: no samples: {lines:#?}"
        );
        assert_eq!(loud(lines), Vec::<String>::new(), "{name}");
        assert!(
            lines.iter().all(|l| l["kind"] != "no-progress"),
            "{name}: an idle process is not 'no progress': {lines:#?}"
        );
    }
    assert!(said_idle(&thread_pool), "{thread_pool:#?}");
}
