//! `tfwatch snapshot` against real processes.

use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::support::{ChildGuard, children, snapshot_json, tfwatch_output, wait_for};

/// A python3 process with `threads` extra threads blocked on an event, one named with
/// spaces and parentheses, and one child process blocked on a pipe read.
fn python_tree(threads: usize) -> ChildGuard {
    let script = format!(
        r#"
import ctypes, os, sys, threading
libc = ctypes.CDLL(None)
ready = threading.Event()
stop = threading.Event()
def named():
    libc.prctl(15, b"odd (name) x", 0, 0, 0)
    stop.wait()
ts = [threading.Thread(target=stop.wait, daemon=True) for _ in range({n})]
ts.append(threading.Thread(target=named, daemon=True))
for t in ts: t.start()
r, w = os.pipe()
pid = os.fork()
if pid == 0:
    os.read(r, 1)
    os._exit(0)
print(pid, flush=True)
sys.stdin.read()
"#,
        n = threads - 1
    );
    let mut command = Command::new("python3");
    command
        .args(["-c", &script])
        .stdin(std::process::Stdio::piped());
    ChildGuard::spawn(command)
}

fn task_count(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task")).map_or(0, |d| d.count())
}

#[test]
fn json_reports_exact_threads_states_and_children() {
    let guard = python_tree(5);
    let pid = guard.pid();
    // Main thread + 5 threads.
    wait_for("6 threads and a child", Duration::from_secs(20), || {
        (task_count(pid) == 6 && children(pid).len() == 1).then_some(())
    });
    let child = children(pid)[0];
    let report: Value = snapshot_json(pid, "200ms", &[]);
    let processes = report["processes"].as_array().unwrap();
    let root = &processes[0];
    assert_eq!(root["pid"], pid);
    let threads = root["threads"].as_array().unwrap();
    assert_eq!(threads.len(), 6, "{root:#}");
    for t in threads {
        let state = t["state"].as_str().unwrap();
        assert!(["S", "R"].contains(&state), "unexpected state {state}");
        assert!(t["tid"].as_i64().unwrap() > 0);
        assert!(t["cpu_seconds"].as_f64().is_some());
        assert!(t.get("runqueue_wait_seconds").is_some());
        assert!(t.get("nonvoluntary_ctxt_switches").is_some());
        assert!(t.get("wchan").is_some());
    }
    assert!(
        threads.iter().any(|t| t["name"] == "odd (name) x"),
        "the odd thread name survives parsing"
    );
    let kid = processes
        .iter()
        .find(|p| p["pid"] == child)
        .expect("the child process is in the report");
    assert_eq!(kid["ppid"], pid);
    assert_eq!(kid["threads"].as_array().unwrap().len(), 1);
    let cpus = &report["cpus"];
    assert!(cpus["usable"].as_f64().unwrap() >= 1.0);
    assert!(cpus["online"].as_u64().unwrap() >= 1);
    assert!(report["memory_limit_bytes"].as_u64().unwrap() > 0);
    assert!(report["findings"].is_array());
    assert!(report["runtimes"].is_array());
}

#[test]
fn text_report_groups_threads_by_wait_channel() {
    let guard = python_tree(3);
    let pid = guard.pid();
    wait_for("4 threads", Duration::from_secs(20), || {
        (task_count(pid) == 4).then_some(())
    });
    let out = tfwatch_output(&["snapshot", &pid.to_string(), "--window", "100ms"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(&format!("THREADS of pid {pid}")), "{text}");
    assert!(text.contains("by wait channel:"), "{text}");
    assert!(text.contains("CPUs     usable"), "{text}");
    assert!(text.contains("FINDINGS"), "{text}");
}

#[test]
fn missing_pid_is_a_clear_error() {
    // Pids above pid_max never exist.
    let out = tfwatch_output(&["snapshot", "2147483600"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("2147483600"), "{err}");
    assert!(err.contains("no process"), "{err}");
}

#[test]
fn zombie_child_is_marked_not_fatal() {
    let script = r#"
import os, sys
pid = os.fork()
if pid == 0:
    os._exit(0)
print(pid, flush=True)
sys.stdin.read()
"#;
    let mut command = Command::new("python3");
    command
        .args(["-c", script])
        .stdin(std::process::Stdio::piped());
    let guard = ChildGuard::spawn(command);
    let pid = guard.pid();
    // `python3` may be a shim that execs the interpreter: only a zombie of the
    // interpreter itself is the one the script made (a shell's own children come and go).
    let zombie = wait_for("a zombie child", Duration::from_secs(20), || {
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        if !comm.starts_with("python") {
            return None;
        }
        children(pid).into_iter().find(|c| {
            std::fs::read_to_string(format!("/proc/{c}/stat")).is_ok_and(|s| {
                s.rsplit_once(") ")
                    .is_some_and(|(_, rest)| rest.starts_with('Z'))
            })
        })
    });
    let report: Value = snapshot_json(pid, "0", &[]);
    let z = report["processes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["pid"] == zombie)
        .unwrap_or_else(|| panic!("zombie {zombie} not listed: {:#}", report["processes"]));
    assert_eq!(z["state"], "Z");
    assert!(
        z["threads_unavailable"]
            .as_str()
            .unwrap()
            .contains("zombie")
    );
}

#[test]
fn zombie_children_are_not_threads_and_are_noted_with_a_capped_list() {
    // 70 children that exit at once, and a parent that never waits for them: 70
    // zombies under one live process.
    let mut command = Command::new("python3");
    command.args([
        "-c",
        "import os, time\nfor _ in range(70):\n    if os.fork() == 0:\n        os._exit(0)\ntime.sleep(120)",
    ]);
    let guard = ChildGuard::spawn(command);
    let pid = guard.pid();
    wait_for("70 zombie children", Duration::from_secs(20), || {
        let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).ok()?;
        let zombies = children
            .split_whitespace()
            .filter(|child| {
                std::fs::read_to_string(format!("/proc/{child}/stat")).is_ok_and(|stat| {
                    stat.rsplit_once(')')
                        .is_some_and(|(_, r)| r.starts_with(" Z"))
                })
            })
            .count();
        (zombies == 70).then_some(())
    });
    let report = snapshot_json(pid, "200ms", &["--no-gpu"]);
    assert_eq!(report["tree_threads"], 1, "zombies are not threads");
    let findings = report["findings"].as_array().unwrap();
    assert!(
        !findings.iter().any(|f| f["kind"] == "thread-explosion"),
        "{findings:?}"
    );
    let note = findings
        .iter()
        .find(|f| f["kind"] == "unreaped-children")
        .unwrap_or_else(|| panic!("an unreaped-children note: {findings:?}"));
    assert_eq!(note["severity"], "info");
    assert!(
        note["summary"]
            .as_str()
            .unwrap()
            .contains("70 exited children")
    );
    let evidence = note["evidence"][0].as_str().unwrap();
    assert!(evidence.ends_with("and 60 more"), "{evidence}");
    assert!(evidence.len() < 200, "{evidence}");
}
