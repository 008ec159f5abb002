//! "Why it is slow" on real Python programs. Eight request threads through one
//! `threading.Lock` around a numpy matmul (the "thread-safe wrapper" around predict())
//! is named as lock contention with its futex word; the same work without the lock,
//! one thread per CPU, raises nothing of warning or above. An asyncio server whose
//! handler makes a 150 ms call on the loop is named as a blocked loop; with
//! `asyncio.to_thread` it is not. Four pure-Python threads on two CPUs take turns on
//! the GIL; the same work in processes raises nothing.

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

/// `tfwatch attach PID --json --no-stacks --interval 250ms` until a `kind` warning (at
/// most 45 s): the watch (ended when dropped) and the lines it wrote.
fn attach_until_warning(pid: i32, kind: &str) -> (ChildGuard, Vec<String>) {
    let pid = pid.to_string();
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
    let kind_field = format!(r#""kind":"{kind}""#);
    let seen = lines.until(&format!("a {kind} warning"), Duration::from_secs(45), |l| {
        l.contains(&kind_field) && l.contains(r#""severity":"warning""#)
    });
    (watch, seen)
}

/// `tfwatch run --fail-on warning -- python3 ARGS…` must exit 0 (nothing of warning or
/// above); its stdout lines and its stderr.
fn passes_the_warning_gate(args: &[&str]) -> (Vec<String>, String) {
    let mut all = vec![
        "run",
        "--no-gpu",
        "--interval",
        "250ms",
        "--fail-on",
        "warning",
        "--",
        "python3",
    ];
    all.extend_from_slice(args);
    let mut command = tfwatch(&all);
    command.stdin(std::process::Stdio::null());
    let mut run = ChildGuard::spawn(command);
    let out = Lines::new(run.child.stdout.take().unwrap());
    let err = Lines::new(run.child.stderr.take().unwrap());
    let stdout = out.until("stdout to close", Duration::from_secs(120), |_| false);
    let stderr = err.until("stderr to close", Duration::from_secs(120), |_| false);
    let status = run.child.wait().unwrap();
    let stderr = stderr.join("\n");
    assert_eq!(status.code(), Some(0), "{stderr}\n{}", stdout.join("\n"));
    (stdout, stderr)
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
    let (watch, seen) = attach_until_warning(target.pid(), "lock-contention");
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
    drop(watch);
    drop(target);
}

#[test]
fn the_same_threads_without_the_lock_raise_nothing() {
    let script = script_path();
    let threads = usable_cpus().to_string();
    let script = script.to_string_lossy().to_string();
    let (stdout, stderr) = passes_the_warning_gate(&[&script, "free", &threads, "6"]);
    assert!(!stderr.contains("lock-contention"), "{stderr}");
    assert!(
        stdout.iter().any(|l| l.starts_with("calls/s")),
        "{stdout:?}"
    );
}

/// An asyncio server whose handler makes a 150 ms model call (numpy, which releases the
/// GIL): on the loop (`blocking`) or through `asyncio.to_thread` (`to_thread`). With
/// `selfload` it starts its own client process; `client PORT CONNECTIONS SECONDS`
/// sends requests one after another on each connection.
const LOOP_SCRIPT: &str = r#"
import asyncio, os, subprocess, sys, threading, time
os.environ["OPENBLAS_NUM_THREADS"] = "1"
os.environ["OMP_NUM_THREADS"] = "1"
os.environ["MKL_NUM_THREADS"] = "1"

if sys.argv[1] == "client":
    import socket
    port, connections, duration = int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
    stop = time.monotonic() + duration
    def send():
        with socket.create_connection(("127.0.0.1", port)) as s:
            f = s.makefile("rwb")
            while time.monotonic() < stop:
                f.write(b"x\n")
                f.flush()
                if not f.readline():
                    break
    clients = [threading.Thread(target=send) for _ in range(connections)]
    for c in clients:
        c.start()
    for c in clients:
        c.join()
    sys.exit(0)

import numpy as np
mode, duration = sys.argv[1], float(sys.argv[2])
selfload = len(sys.argv) > 3 and sys.argv[3] == "selfload"
weights = np.random.rand(160, 160)
served = 0

def predict():
    end = time.perf_counter() + 0.15
    while time.perf_counter() < end:
        weights @ weights

async def handle(reader, writer):
    global served
    while True:
        line = await reader.readline()
        if not line:
            break
        if mode == "blocking":
            predict()  # the model call on the loop
        else:
            await asyncio.to_thread(predict)
        served += 1
        writer.write(b"ok\n")
        await writer.drain()
    writer.close()

async def main():
    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    print(f"port {port}", flush=True)
    if selfload:
        subprocess.Popen([sys.executable, __file__, "client", str(port), str(os.cpu_count() or 1), str(duration)])
    start = time.monotonic()
    await asyncio.sleep(duration)
    print(f"requests/s {served / (time.monotonic() - start):.1f}", flush=True)
    os._exit(0)

asyncio.run(main())
"#;

fn loop_script() -> String {
    let path = script_path().with_file_name("server.py");
    std::fs::write(&path, LOOP_SCRIPT).unwrap();
    path.to_string_lossy().to_string()
}

#[test]
fn an_asyncio_loop_blocked_by_a_150_ms_call_is_named() {
    let script = loop_script();
    let mut command = Command::new("python3");
    command.args([script.as_str(), "blocking", "60"]);
    let mut server = ChildGuard::spawn(command);
    let out = Lines::new(server.child.stdout.take().unwrap());
    let seen = out.until("the server's port", Duration::from_secs(60), |l| {
        l.starts_with("port ")
    });
    let port = seen.last().unwrap().trim_start_matches("port ").to_string();
    let pid = server.pid().to_string();
    let mut attach = tfwatch(&[
        "attach",
        &pid,
        "--json",
        "--no-gpu",
        "--no-stacks",
        "--interval",
        "250ms",
        "--duration",
        "45s",
    ]);
    attach.stderr(std::process::Stdio::inherit());
    let mut watch = ChildGuard::spawn(attach);
    let lines = Lines::new(watch.child.stdout.take().unwrap());
    // The idle server waits in its poll before the load begins.
    lines.until("a first sample", Duration::from_secs(20), |l| {
        l.contains(r#""type":"sample""#)
    });
    let cpus = usable_cpus().to_string();
    let mut client = Command::new("python3");
    client.args([script.as_str(), "client", &port, &cpus, "50"]);
    let client = ChildGuard::spawn(client);
    let seen = lines.until(
        "an event-loop-blocked warning",
        Duration::from_secs(40),
        |l| l.contains(r#""kind":"event-loop-blocked""#) && l.contains(r#""severity":"warning""#),
    );
    let finding: Value = serde_json::from_str(seen.last().unwrap()).unwrap();
    assert_eq!(finding["tids"][0].as_i64(), Some(i64::from(server.pid())));
    let block = finding["metrics"]["loop_block_seconds"].as_f64().unwrap();
    assert!(block >= 0.1, "{finding:#}");
    assert!(
        finding["remedy"]
            .as_str()
            .unwrap()
            .contains("asyncio.to_thread")
    );
    drop(client);
    drop(watch);
    drop(server);
}

#[test]
fn the_same_server_with_to_thread_raises_nothing() {
    let script = loop_script();
    let (stdout, stderr) = passes_the_warning_gate(&[&script, "to_thread", "8", "selfload"]);
    assert!(!stderr.contains("event-loop-blocked"), "{stderr}");
    assert!(
        stdout.iter().any(|l| l.starts_with("requests/s")),
        "{stdout:?}"
    );
}

/// Pure-Python CPU work on `threads` threads or `processes` processes.
const GIL_SCRIPT: &str = r#"
import multiprocessing, sys, threading, time

def spin(stop):
    count = 0
    while time.monotonic() < stop:
        for _ in range(10000):
            count += 1

if __name__ == "__main__":
    mode, n, duration = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    stop = time.monotonic() + duration
    kind = threading.Thread if mode == "threads" else multiprocessing.Process
    workers = [kind(target=spin, args=(stop,)) for _ in range(n)]
    for w in workers:
        w.start()
    print("ready", flush=True)
    for w in workers:
        w.join()
"#;

fn gil_script() -> String {
    let path = script_path().with_file_name("spin.py");
    std::fs::write(&path, GIL_SCRIPT).unwrap();
    path.to_string_lossy().to_string()
}

#[test]
fn four_pure_python_threads_take_turns_on_the_gil() {
    if usable_cpus() < 2 {
        eprintln!("skipped: GIL contention needs 2 usable CPUs to show, this machine has 1");
        return;
    }
    let script = gil_script();
    let mut command = Command::new("python3");
    command.args([script.as_str(), "threads", "4", "60"]);
    let mut target = ChildGuard::spawn(command);
    let out = Lines::new(target.child.stdout.take().unwrap());
    out.until("the threads to start", Duration::from_secs(60), |l| {
        l == "ready"
    });
    let (watch, seen) = attach_until_warning(target.pid(), "gil-contention");
    let finding: Value = serde_json::from_str(seen.last().unwrap()).unwrap();
    let used = finding["metrics"]["effective_parallelism"]
        .as_f64()
        .unwrap();
    assert!(used <= 1.3, "{finding:#}");
    assert!(
        finding["remedy"]
            .as_str()
            .unwrap()
            .contains("ProcessPoolExecutor")
    );
    assert!(
        !seen
            .iter()
            .any(|l| l.contains(r#""kind":"lock-contention""#)),
        "the GIL is not named as a lock"
    );
    drop(watch);
    drop(target);
}

#[test]
fn the_same_work_in_processes_raises_nothing() {
    let script = gil_script();
    let processes = usable_cpus().to_string();
    let (_, stderr) = passes_the_warning_gate(&[&script, "processes", &processes, "6"]);
    assert!(!stderr.contains("gil-contention"), "{stderr}");
}

/// A coroutine that calls `run_coroutine_threadsafe(coro, loop).result()` on the loop's
/// own thread: the loop waits for a coroutine only it could run.
const SELF_WAIT_SCRIPT: &str = r#"
import asyncio

async def work():
    return 1

async def handler(loop):
    future = asyncio.run_coroutine_threadsafe(work(), loop)
    return future.result()  # on the loop's own thread

async def main():
    await handler(asyncio.get_running_loop())

asyncio.run(main())
"#;

#[test]
fn a_loop_blocked_on_run_coroutine_threadsafe_result_is_a_hang_that_waits_on_itself() {
    let path = script_path().with_file_name("self_wait.py");
    std::fs::write(&path, SELF_WAIT_SCRIPT).unwrap();
    let report = path.with_file_name("self_wait_report.json");
    let (path, report_arg) = (
        path.to_string_lossy().to_string(),
        report.to_string_lossy().to_string(),
    );
    let mut command = tfwatch(&[
        "run",
        "--no-gpu",
        "--hang-after",
        "3s",
        "--report",
        &report_arg,
        "--",
        "python3",
        &path,
    ]);
    command
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let mut run = ChildGuard::spawn(command);
    let status = crate::support::wait_for("tfwatch run to end", Duration::from_secs(90), || {
        run.child.try_wait().unwrap()
    });
    let report: Value = serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    assert_eq!(status.code(), Some(122), "a hang: {report:#}");
    let text = report["findings"].to_string();
    if !text.contains("the loop waits on itself") {
        let stacks = report["diagnosis"].to_string();
        if let Some(lack) = crate::support::stacks_missing(&format!("{text} {stacks}")) {
            crate::support::skip(lack, stacks);
            return;
        }
        panic!("the hang names the loop waiting on itself: {report:#}");
    }
    assert!(text.contains("self_wait.py:9 in `handler`"), "{text}");
}
