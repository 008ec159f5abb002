//! Proof of deadlocks on real processes: the wait-for graph from mutex owners read in
//! the target's memory, the inherited lock of a forked child, and stacks on demand.

use std::process::Command;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::{ChildGuard, tfwatch, tfwatch_output, wait_for};

/// A running `run-workload` scenario and its output lines.
struct Workload {
    guard: ChildGuard,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Workload {
    fn start(args: &[&str]) -> Workload {
        let mut all = vec!["run-workload"];
        all.extend_from_slice(args);
        Workload::spawn(tfwatch(&all))
    }

    fn spawn(command: Command) -> Workload {
        let mut guard = ChildGuard::spawn(command);
        let stdout = guard.child.stdout.take().expect("stdout is piped");
        let lines = crate::support::line_channel(stdout);
        Workload {
            guard,
            lines,
            seen: Vec::new(),
        }
    }

    fn pid(&self) -> i32 {
        self.guard.pid()
    }

    /// Waits until `count` lines contain `needle`; returns them.
    fn wait_lines(&mut self, needle: &str, count: usize, timeout: Duration) -> Vec<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let found: Vec<String> = self
                .seen
                .iter()
                .filter(|l| l.contains(needle))
                .cloned()
                .collect();
            if found.len() >= count {
                return found;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => self.seen.push(line),
                Err(_) => panic!(
                    "timed out after {timeout:?} waiting for {count} line(s) with {needle:?}; output so far:\n{}",
                    self.seen.join("\n")
                ),
            }
        }
    }
}

/// One JSON snapshot of `pid`; `None` when tfwatch failed (the process ended).
fn snapshot(pid: i32, extra: &[&str]) -> Option<Value> {
    let pid = pid.to_string();
    let mut args = vec![
        "snapshot",
        pid.as_str(),
        "--format",
        "json",
        "--window",
        "200ms",
    ];
    args.extend_from_slice(extra);
    let out = tfwatch_output(&args);
    if !out.status.success() {
        eprintln!("snapshot failed: {}", String::from_utf8_lossy(&out.stderr));
        return None;
    }
    Some(serde_json::from_slice(&out.stdout).expect("valid JSON"))
}

fn findings_of<'a>(report: &'a Value, kind: &str) -> Vec<&'a Value> {
    report["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .filter(|f| f["kind"] == kind)
        .collect()
}

/// Snapshots `pid` until a finding of `kind` appears (the cycle forms after a warmup).
fn wait_finding(pid: i32, kind: &str, extra: &[&str]) -> Value {
    wait_for(
        &format!("a {kind} finding"),
        Duration::from_secs(30),
        || {
            let report = snapshot(pid, extra)?;
            (!findings_of(&report, kind).is_empty()).then_some(report)
        },
    )
}

fn tid_named(report: &Value, name: &str) -> i64 {
    report["processes"]
        .as_array()
        .expect("processes")
        .iter()
        .flat_map(|p| p["threads"].as_array().expect("threads").iter())
        .find(|t| t["name"] == name)
        .and_then(|t| t["tid"].as_i64())
        .unwrap_or_else(|| panic!("no thread {name}"))
}

/// The mutex addresses the workload printed ("mutex m0 at 0x…").
fn mutex_addresses(workload: &mut Workload, n: usize) -> Vec<String> {
    workload
        .wait_lines("mutex m", n, Duration::from_secs(10))
        .iter()
        .map(|l| l.rsplit(' ').next().expect("address").to_string())
        .collect()
}

#[test]
fn deadlock_scenario_is_a_cycle_naming_both_threads_and_mutexes() {
    let mut workload = Workload::start(&["--scenario", "deadlock", "--duration", "20s"]);
    let addresses = mutex_addresses(&mut workload, 2);
    let report = wait_finding(workload.pid(), "deadlock", &[]);
    let deadlocks = findings_of(&report, "deadlock");
    assert_eq!(deadlocks.len(), 1, "{deadlocks:#?}");
    let finding = deadlocks[0];
    let a = tid_named(&report, "worker-a");
    let b = tid_named(&report, "worker-b");
    let tids: Vec<i64> = finding["tids"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_i64)
        .collect();
    assert!(tids.contains(&a) && tids.contains(&b), "{finding:#}");
    let summary = finding["summary"].as_str().unwrap();
    for address in &addresses {
        assert!(summary.contains(address.as_str()), "{address} in {summary}");
    }
    assert!(summary.contains("cycle"), "{summary}");
    assert_eq!(finding["confidence"], 1.0);
    assert_eq!(finding["metrics"]["cycle_length"], 2.0);
    // The threads carry their lock and its owner.
    let thread_a = report["processes"][0]["threads"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["tid"] == a)
        .unwrap();
    assert_eq!(thread_a["lock"]["kind"], "pthread-mutex", "{thread_a:#}");
    assert_eq!(thread_a["lock"]["owner_tid"], b);
}

#[test]
fn deadlock_cycle_of_three_is_one_cycle_of_three() {
    let workload = Workload::start(&[
        "--scenario",
        "deadlock",
        "--cycle",
        "3",
        "--duration",
        "20s",
    ]);
    let report = wait_finding(workload.pid(), "deadlock", &[]);
    let deadlocks = findings_of(&report, "deadlock");
    assert_eq!(deadlocks.len(), 1, "{deadlocks:#?}");
    assert_eq!(deadlocks[0]["metrics"]["cycle_length"], 3.0);
    assert_eq!(deadlocks[0]["tids"].as_array().unwrap().len(), 3);
}

#[test]
fn fixed_deadlock_scenario_has_no_deadlock() {
    let mut workload = Workload::start(&["--scenario", "deadlock", "--fixed", "--duration", "20s"]);
    workload.wait_lines("started", 1, Duration::from_secs(10));
    let mut seen = 0;
    for _ in 0..3 {
        // The fixed run may finish first; every report taken must be clean.
        if let Some(report) = snapshot(workload.pid(), &[]) {
            seen += 1;
            assert!(findings_of(&report, "deadlock").is_empty(), "{report:#}");
        }
    }
    eprintln!("{seen} snapshot(s) of the fixed run taken");
}

#[test]
fn fork_lock_child_has_an_inherited_lock_whose_owner_is_gone() {
    let mut workload = Workload::start(&["--scenario", "fork-lock", "--duration", "20s"]);
    let parent = workload.pid();
    workload.wait_lines("forked child", 1, Duration::from_secs(10));
    let report = wait_finding(parent, "fork-inherited-lock", &[]);
    let found = findings_of(&report, "fork-inherited-lock");
    assert_eq!(found.len(), 1, "one finding per child: {found:#?}");
    let finding = found[0];
    assert_eq!(finding["confidence"], 1.0, "{finding:#}");
    let summary = finding["summary"].as_str().unwrap();
    assert!(summary.contains("owner gone"), "{summary}");
    let flusher = tid_named(&report, "log-flusher");
    assert!(
        summary.contains(&format!("held by tid {flusher}")),
        "the owner is the parent's log-flusher: {summary}"
    );
    assert_eq!(finding["pids"][1], parent);
}

/// Compiles `source` with g++ into the test's temporary directory.
pub(crate) fn compile_cpp(name: &str, source: &str) -> Option<std::path::PathBuf> {
    if Command::new("g++").arg("--version").output().is_err() {
        crate::support::skip("g++", "no g++ on this machine");
        return None;
    }
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let src = dir.join(format!("{name}.cpp"));
    let exe = dir.join(name);
    std::fs::write(&src, source).expect("write the C++ source");
    let out = Command::new("g++")
        .args(["-O1", "-g", "-pthread", "-o"])
        .arg(&exe)
        .arg(&src)
        .output()
        .expect("g++ runs");
    assert!(
        out.status.success(),
        "g++ failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(exe)
}

pub(crate) const CPP_DEADLOCK: &str = r#"
#include <atomic>
#include <cstdio>
#include <mutex>
#include <thread>
std::mutex first, second;
std::atomic<int> holding{0};
void take(std::mutex& a, std::mutex& b) {
    std::lock_guard<std::mutex> one(a);
    holding++;
    while (holding.load() < 2) std::this_thread::yield();
    std::lock_guard<std::mutex> two(b);
}
int main() {
    std::printf("first %p second %p\n", (void*)&first, (void*)&second);
    std::fflush(stdout);
    std::thread t1(take, std::ref(first), std::ref(second));
    std::thread t2(take, std::ref(second), std::ref(first));
    t1.join();
    t2.join();
}
"#;

#[test]
fn cpp_std_mutex_deadlock_is_found() {
    let Some(exe) = compile_cpp("tfwatch_std_mutex_deadlock", CPP_DEADLOCK) else {
        return;
    };
    let mut program = Workload::spawn(Command::new(exe));
    let line = program.wait_lines("first", 1, Duration::from_secs(10))[0].clone();
    let report = wait_finding(program.pid(), "deadlock", &[]);
    let deadlocks = findings_of(&report, "deadlock");
    assert_eq!(deadlocks.len(), 1, "{deadlocks:#?}");
    let summary = deadlocks[0]["summary"].as_str().unwrap();
    for address in line.split_whitespace().filter(|w| w.starts_with("0x")) {
        assert!(summary.contains(address), "{address} in {summary}");
    }
}

fn stacks_of<'a>(report: &'a Value, kind: &str) -> Vec<&'a Value> {
    report["stacks"]["threads"]
        .as_array()
        // A merged stack ("mixed") holds both the native and the Python frames.
        .map(|threads| {
            threads
                .iter()
                .filter(|s| s["kind"] == kind || s["kind"] == "mixed")
                .collect()
        })
        .unwrap_or_default()
}

fn unavailable_stacks(report: &Value) -> String {
    report["stacks"]["unavailable"].to_string()
}

#[test]
fn stacks_of_blocked_workload_threads_show_the_lock_function() {
    let workload = Workload::start(&["--scenario", "deadlock", "--duration", "20s"]);
    wait_finding(workload.pid(), "deadlock", &[]);
    let report = snapshot(workload.pid(), &["--stacks"]).expect("a snapshot with stacks");
    let native = stacks_of(&report, "native");
    if native.is_empty() && cfg!(not(feature = "stacks-native")) {
        crate::support::skip("stacks", unavailable_stacks(&report));
        return;
    }
    let a = tid_named(&report, "worker-a");
    let stack = native
        .iter()
        .find(|s| s["tid"] == a)
        .unwrap_or_else(|| panic!("no stack of worker-a: {}", unavailable_stacks(&report)));
    let functions: Vec<&str> = stack["frames"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|f| f["function"].as_str())
        .collect();
    assert!(
        functions.iter().any(|f| f.contains("workload_lock_mutex")),
        "{functions:#?}"
    );
    // The test build has debug info: the frame has its file and line.
    let frame = stack["frames"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| {
            f["function"]
                .as_str()
                .is_some_and(|n| n.contains("workload_lock_mutex"))
        })
        .unwrap();
    assert!(
        frame["file"]
            .as_str()
            .is_some_and(|f| f.ends_with("workload/common.rs")),
        "{frame:#}"
    );
    assert!(frame["line"].as_u64().unwrap() > 0);
    assert!(stack["paused_seconds"].as_f64().unwrap() > 0.0);
}

const PYTHON_DEADLOCK: &str = r#"
import sys, threading
a, b = threading.Lock(), threading.Lock()
both = threading.Barrier(2)
def first_then_second():
    with a:
        both.wait()
        with b:
            pass
def second_then_first():
    with b:
        both.wait()
        with a:
            pass
ts = [threading.Thread(target=first_then_second), threading.Thread(target=second_then_first)]
for t in ts: t.start()
print("started", flush=True)
for t in ts: t.join()
"#;

#[test]
fn python_stacks_show_frames_with_file_and_line() {
    if Command::new("python3").arg("--version").output().is_err() {
        crate::support::skip("python3", "no python3 on this machine");
        return;
    }
    let mut command = Command::new("python3");
    command.args(["-c", PYTHON_DEADLOCK]);
    let mut program = Workload::spawn(command);
    program.wait_lines("started", 1, Duration::from_secs(10));
    let report = snapshot(program.pid(), &["--stacks"]).expect("a snapshot with stacks");
    let python = stacks_of(&report, "python");
    if python.is_empty() {
        let unavailable = unavailable_stacks(&report);
        crate::support::skip(
            crate::support::stacks_missing(&unavailable).unwrap_or("ptrace"),
            format!("no Python stacks here: {unavailable}"),
        );
        return;
    }
    let frames: Vec<&Value> = python
        .iter()
        .flat_map(|s| s["frames"].as_array().unwrap().iter())
        .collect();
    let frame = frames
        .iter()
        .find(|f| f["function"] == "first_then_second")
        .unwrap_or_else(|| panic!("no frame of first_then_second: {frames:#?}"));
    assert_eq!(frame["file"], "<string>");
    assert!(frame["line"].as_u64().unwrap() > 0, "{frame:#}");
}

#[test]
fn run_diagnoses_a_deadlock_with_stacks() {
    let report_path =
        std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("deadlock-run-report.json");
    let _ = std::fs::remove_file(&report_path);
    let exe = crate::support::tfwatch_bin();
    let out = tfwatch(&["run", "--hang-after", "3s", "--report"])
        .arg(&report_path)
        .arg("--")
        .arg(exe)
        .args([
            "run-workload",
            "--scenario",
            "deadlock",
            "--duration",
            "30s",
        ])
        .output()
        .expect("tfwatch run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("hang detected"), "{stderr}");
    let report: Value =
        serde_json::from_slice(&std::fs::read(&report_path).expect("the report is written"))
            .expect("valid JSON");
    let diagnosis = &report["diagnosis"];
    assert!(
        !findings_of(diagnosis, "deadlock").is_empty(),
        "{diagnosis:#}"
    );
    let native = stacks_of(diagnosis, "native");
    if native.is_empty() && cfg!(not(feature = "stacks-native")) {
        return;
    }
    assert!(
        native.iter().any(
            |s| s["frames"].as_array().unwrap().iter().any(|f| f["function"]
                .as_str()
                .is_some_and(|n| n.contains("workload_lock_mutex")))
        ),
        "{}",
        unavailable_stacks(diagnosis)
    );
}

const PYTHON_GIL: &str = r#"
import threading
def spin():
    x = 0
    while True:
        x += 1
for _ in range(6):
    threading.Thread(target=spin, daemon=True).start()
print("started", flush=True)
threading.Event().wait(60)
"#;

#[test]
fn python_threads_waiting_for_the_gil_are_grouped() {
    if Command::new("python3").arg("--version").output().is_err() {
        crate::support::skip("python3", "no python3 on this machine");
        return;
    }
    let mut command = Command::new("python3");
    command.args(["-c", PYTHON_GIL]);
    let mut program = Workload::spawn(command);
    program.wait_lines("started", 1, Duration::from_secs(10));
    let note = wait_for(
        "a GIL note in the snapshot",
        Duration::from_secs(30),
        || {
            let report = snapshot(program.pid(), &[])?;
            report["locks"]
                .as_array()?
                .iter()
                .find(|n| n["kind"] == "gil-heuristic")
                .cloned()
        },
    );
    let text = note["text"].as_str().unwrap();
    assert!(text.contains("waiting for the GIL"), "{text}");
    assert!(text.contains("heuristic"), "{text}");
    assert!(note["tids"].as_array().unwrap().len() >= 2, "{note:#}");
}
