//! The hang explained from stacks, on real processes: a C++ `std::mutex` cycle
//! (demangled frames, owners), Python lock-order deadlocks with `RLock` (proven from the
//! owners in memory) and with `Lock` (likely, from the `with` blocks), the TensorFlow
//! callback-lock hang, and the pause each process took.

use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::support::{ChildGuard, Lines, snapshot_json, tfwatch_output};

/// Threads of a Python program take two locks in opposite orders.
pub(crate) const PYTHON_ABBA: &str = r#"
import sys, threading
kind = threading.RLock if sys.argv[1] == "rlock" else threading.Lock
lock_a, lock_b = kind(), kind()
both = threading.Barrier(2)
def worker(first, second):
    with first:
        both.wait()
        with second:
            pass
ts = [threading.Thread(target=worker, args=(lock_a, lock_b)),
      threading.Thread(target=worker, args=(lock_b, lock_a))]
for t in ts: t.start()
print("started", flush=True)
for t in ts: t.join()
"#;

fn python3() -> bool {
    let there = Command::new("python3").arg("--version").output().is_ok();
    if !there {
        crate::support::skip("python3", "no python3 on this machine");
    }
    there
}

/// The explanation of `pid` in a snapshot with stacks, once `ready` says it is there.
fn explained(pid: i32, ready: impl Fn(&Value) -> bool) -> Option<Value> {
    let mut last = Value::Null;
    let found = wait_for_or(Duration::from_secs(30), || {
        let report = snapshot_json(pid, "100ms", &["--stacks", "--no-gpu"]);
        let e = report["stacks"]["explained"]
            .as_array()
            .and_then(|e| e.iter().find(|e| e["pid"] == pid))
            .cloned();
        last = report;
        e.filter(&ready)
    });
    if found.is_none() {
        skip_without_stacks(&last, &format!("no explanation of pid {pid}"));
        return None;
    }
    found.map(|e| {
        let mut e = e;
        e["report"] = last;
        e
    })
}

/// Skips the test when `report` shows that stacks cannot be taken here (not built in,
/// no ptrace access); otherwise fails with `what`.
fn skip_without_stacks(report: &Value, what: &str) {
    let stacks = report["stacks"].to_string();
    if let Some(lack) = crate::support::stacks_missing(&stacks) {
        crate::support::skip(lack, stacks);
        return;
    }
    panic!("{what} in: {:#}", report["stacks"]);
}

/// As `wait_for`, but `None` at the deadline.
fn wait_for_or<T>(timeout: Duration, mut condition: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if let Some(v) = condition() {
            return Some(v);
        }
        if std::time::Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Starts `command`, a program that prints "started" once its threads are in place, and
/// waits (10 s at most) for that line.
fn started(command: Command) -> ChildGuard {
    let mut program = ChildGuard::spawn(command);
    let lines = Lines::new(program.child.stdout.take().unwrap());
    lines.until("started", Duration::from_secs(10), |l| l == "started");
    program
}

fn python_abba(kind: &str) -> Option<(ChildGuard, Value)> {
    if !python3() {
        return None;
    }
    // From a file: the lock names come from the source lines.
    let script =
        std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("abba_{kind}.py"));
    std::fs::write(&script, PYTHON_ABBA).unwrap();
    let mut command = Command::new("python3");
    command.arg(&script).arg(kind);
    let program = started(command);
    let pid = program.pid();
    let e = explained(pid, |e| e["meaning"].is_string())?;
    Some((program, e))
}

#[test]
fn python_rlock_cycle_is_proven_from_the_owners() {
    let Some((_program, e)) = python_abba("rlock") else {
        return;
    };
    let meaning = e["meaning"].as_str().unwrap();
    assert!(
        meaning.starts_with("a proven Python lock-order deadlock"),
        "{meaning}"
    );
    let edges = e["python_locks"].as_array().unwrap();
    assert_eq!(edges.len(), 2, "{edges:#?}");
    assert!(
        edges.iter().all(|l| l["confidence"] == "proven"),
        "{edges:#?}"
    );
    // Each waits for the other: the holders are the two waiters.
    let waiters: Vec<&Value> = edges.iter().map(|l| &l["waiter_tid"]).collect();
    assert!(
        edges.iter().all(|l| waiters.contains(&&l["holder_tid"])),
        "{edges:#?}"
    );
    let lines = e["lines"].to_string();
    assert!(
        lines.contains("waits on Python RLock `second` at abba_rlock.py:9 in `worker`"),
        "{lines}"
    );
}

#[test]
fn python_lock_cycle_is_likely_from_the_with_blocks() {
    let Some((program, e)) = python_abba("lock") else {
        return;
    };
    let meaning = e["meaning"].as_str().unwrap();
    assert!(
        meaning.starts_with("a likely Python lock-order deadlock"),
        "{meaning}"
    );
    let edges = e["python_locks"].as_array().unwrap();
    assert!(
        edges.iter().all(|l| l["confidence"] == "likely"),
        "{edges:#?}"
    );
    assert!(
        edges.iter().all(|l| l["because"]
            .as_str()
            .unwrap()
            .contains("is inside `with second:`")
            || l["because"]
                .as_str()
                .unwrap()
                .contains("is inside `with first:`")),
        "{edges:#?}"
    );
    // The text says how long the process was paused, and names the waits.
    let pid = program.pid().to_string();
    let out = tfwatch_output(&[
        "snapshot", &pid, "--stacks", "--no-gpu", "--window", "100ms",
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!("pid {pid}: who waits for what (paused ")),
        "{text}"
    );
    assert!(
        text.contains("what it means: a likely Python lock-order deadlock"),
        "{text}"
    );
}

#[test]
fn cpp_mutex_cycle_has_demangled_frames_and_named_waits() {
    let Some(exe) =
        crate::deadlock::compile_cpp("tfwatch_explain_mutex", crate::deadlock::CPP_DEADLOCK)
    else {
        return;
    };
    let mut program = ChildGuard::spawn(Command::new(exe));
    let lines = Lines::new(program.child.stdout.take().unwrap());
    lines.until("the addresses", Duration::from_secs(10), |l| {
        l.starts_with("first")
    });
    let pid = program.pid();
    let Some(e) = explained(pid, |e| {
        e["lines"].as_array().is_some_and(|l| {
            l.iter()
                .filter(|l| l.as_str().unwrap().contains("waits on a pthread mutex"))
                .count()
                == 2
        })
    }) else {
        return;
    };
    let report = &e["report"];
    let functions: Vec<&str> = report["stacks"]["threads"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|t| t["frames"].as_array().unwrap().iter())
        .filter_map(|f| f["function"].as_str())
        .collect();
    assert!(
        functions.iter().all(|f| !f.starts_with("_Z")),
        "{functions:#?}"
    );
    assert!(
        functions
            .iter()
            .any(|f| f.starts_with("take(std::mutex&, std::mutex&)")),
        "{functions:#?}"
    );
    // The deadlock finding carries the named waits, beside the owners from memory.
    let deadlock = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["kind"] == "deadlock")
        .unwrap_or_else(|| panic!("{:#}", report["findings"]));
    let evidence = deadlock["evidence"].to_string();
    assert!(evidence.contains("waits on a pthread mutex"), "{evidence}");
    assert!(
        evidence.contains(&format!("pid {pid} paused ")),
        "{evidence}"
    );
    assert!(
        deadlock["summary"].as_str().unwrap().contains("held by"),
        "{deadlock:#}"
    );
}

#[test]
fn tensorflow_callback_lock_hang_is_explained() {
    if !python3() {
        return;
    }
    let script = format!(
        "{}/src/workload/frameworks/tf_py_function_lock.py",
        env!("CARGO_MANIFEST_DIR")
    );
    let mut program = ChildGuard::spawn({
        let mut c = Command::new("python3");
        c.arg(script);
        c
    });
    let lines = Lines::new(program.child.stdout.take().unwrap());
    let seen = lines.until("the call", Duration::from_secs(120), |l| {
        l.starts_with("calling step()") || l.starts_with("skip:")
    });
    if seen.iter().any(|l| l.starts_with("skip:")) {
        crate::support::skip("tensorflow", seen.join(" "));
        return;
    }
    assert!(
        seen.iter().any(|l| l.starts_with("calling step()")),
        "the program ended before its call: {seen:?}"
    );
    let pid = program.pid();
    let Some(e) = explained(pid, |e| e["meaning"].is_string()) else {
        return;
    };
    let lines: Vec<&str> = e["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap())
        .collect();
    assert!(
        lines.iter().any(|l| l
            .starts_with("MainThread waits for a TensorFlow op at tf_py_function_lock.py:")
            && l.ends_with("in `<module>`")),
        "{lines:#?}"
    );
    assert!(
        lines.iter().any(|l| l
            .contains("waits on Python Lock `state_lock` at tf_py_function_lock.py:")
            && l.ends_with("in `callback`, inside a `tf.py_function` callback")),
        "{lines:#?}"
    );
    assert!(
        e["idle_pools"].as_array().is_some_and(|p| !p.is_empty()),
        "{e:#}"
    );
    let meaning = e["meaning"].as_str().unwrap();
    assert!(
        meaning.starts_with(
            "a callback into Python waits for a lock that the thread waiting for the op holds"
        ),
        "{meaning}"
    );
    assert!(e["paused_ms"].as_f64().is_some_and(|ms| ms > 0.0), "{e:#}");
    drop(program);
}

/// A Python thread hashing without the GIL runs while another waits on a lock: the
/// Python frames are read in place (no pause), for only the GIL's holder can change
/// them. A thread spinning in Python holds the GIL while it runs: the process is
/// stopped for the read.
const GIL_PROGRAM: &str = r#"
import hashlib, sys, threading
lock = threading.Lock()
lock.acquire()
def blocked():
    with lock:
        pass
def native():
    data = b"x" * 256_000_000
    while True:
        hashlib.sha256(data).digest()
def spin():
    n = 0
    while True:
        n += 1
threading.Thread(target=blocked, daemon=True).start()
threading.Thread(target=native if sys.argv[1] == "native" else spin, daemon=True).start()
print("started", flush=True)
threading.Event().wait()
"#;

/// The Python pause of a snapshot with stacks of `pid` taken while one of its threads
/// was running (state R in the report), once `wanted` holds for it.
fn python_pause_while_running(pid: i32, wanted: impl Fn(&Value) -> bool) -> Option<Value> {
    let mut last = Value::Null;
    let found = wait_for_or(Duration::from_secs(30), || {
        let report = snapshot_json(pid, "0s", &["--stacks", "--no-gpu"]);
        let running = report["processes"][0]["threads_by_state"]
            .to_string()
            .contains("\"R\"");
        let pause = report["stacks"]["pauses"]
            .as_array()
            .and_then(|p| p.iter().find(|p| p["kind"] == "python"))
            .cloned();
        last = report;
        pause.filter(|p| running && wanted(p))
    });
    if found.is_none() {
        skip_without_stacks(&last, &format!("no such Python pause of pid {pid}"));
    }
    found
}

fn gil_program(mode: &str) -> Option<ChildGuard> {
    if !python3() {
        return None;
    }
    let mut command = Command::new("python3");
    command.args(["-c", GIL_PROGRAM, mode]);
    Some(started(command))
}

#[test]
fn python_frames_are_read_in_place_while_only_gil_free_threads_run() {
    let Some(program) = gil_program("native") else {
        return;
    };
    let Some(pause) = python_pause_while_running(program.pid(), |p| p["in_place"] == true) else {
        return;
    };
    assert_eq!(pause["seconds"].as_f64(), Some(0.0), "{pause}");
    assert!(pause["threads"].as_u64().unwrap() >= 3, "{pause}");
}

#[test]
fn a_running_gil_holder_is_stopped_for_its_python_frames() {
    let Some(program) = gil_program("spin") else {
        return;
    };
    let Some(pause) = python_pause_while_running(program.pid(), |_| true) else {
        return;
    };
    assert_ne!(pause["in_place"], true, "{pause}");
    assert!(pause["seconds"].as_f64().unwrap() > 0.0, "{pause}");
}

/// The report opens with its verdict: a snapshot with stacks of a deadlocked Python
/// program says what the stacks proved above the budget and the findings (which, from a
/// short window, hold none), in the text and in the HTML page.
#[test]
fn a_snapshot_leads_with_the_verdict_of_its_stacks() {
    let Some((program, _)) = python_abba("rlock") else {
        return;
    };
    let pid = program.pid().to_string();
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("verdict-first");
    std::fs::create_dir_all(&dir).unwrap();
    let html = dir.join("snapshot.html");
    let out = tfwatch_output(&[
        "snapshot",
        &pid,
        "--stacks",
        "--no-gpu",
        "--window",
        "100ms",
        "--html",
        html.to_str().unwrap(),
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    let at = |what: &str| {
        text.find(what)
            .unwrap_or_else(|| panic!("no {what:?} in {text}"))
    };
    assert!(
        at("VERDICT") < at("CPUs") && at("CPUs") < at("FINDINGS"),
        "{text}"
    );
    // Proven from the owners in memory, or likely from the `with` blocks.
    assert!(
        ["proven", "likely"]
            .iter()
            .any(|how| text.contains(&format!(
                "  pid {pid}: a {how} Python lock-order deadlock\n"
            ))),
        "{text}"
    );
    // Who waits for what is under the verdict, once.
    assert!(at("who waits for what") < at("FINDINGS"), "{text}");
    assert_eq!(text.matches("who waits for what").count(), 1, "{text}");
    // The findings of the window do not contradict it.
    let findings = &text[at("FINDINGS")..at("PROCESSES")];
    assert!(!findings.contains("  none\n"), "{findings}");
    assert!(!findings.contains("to decide:"), "{findings}");
    let page = std::fs::read_to_string(&html).unwrap();
    let find = |what: &str| {
        page.find(what)
            .unwrap_or_else(|| panic!("no {what:?} in the page"))
    };
    assert!(
        find("id=\"verdict\"") < find("id=\"findings\"")
            && find("id=\"findings\"") < find("id=\"charts\""),
        "the verdict first"
    );
    let verdict = &page[find("id=\"verdict\"")..find("id=\"findings\"")];
    assert!(
        verdict.contains("Python lock-order deadlock") && verdict.contains("waits on Python RLock"),
        "{verdict}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// `run --html` of a Python deadlock: the verdict above the findings, and the hang in
/// the Findings box as the stacks rewrote it — not the finding from before them that
/// asks for stacks.
#[test]
fn a_run_page_shows_the_hang_as_the_stacks_rewrote_it() {
    if !python3() {
        return;
    }
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("verdict-run");
    std::fs::create_dir_all(&dir).unwrap();
    let script = dir.join("abba_rlock.py");
    std::fs::write(&script, PYTHON_ABBA).unwrap();
    let html = dir.join("run.html");
    let mut command = crate::support::tfwatch(&[
        "run",
        "--no-gpu",
        "--hang-after",
        "2s",
        "--interval",
        "500ms",
        "--grace",
        "1s",
        "--html",
        html.to_str().unwrap(),
        "--",
        "python3",
        script.to_str().unwrap(),
        "rlock",
    ]);
    command.stdin(std::process::Stdio::null());
    let mut run = ChildGuard::spawn(command);
    let stderr = Lines::new(run.child.stderr.take().unwrap());
    let err = stderr.until("stderr to close", Duration::from_secs(120), |_| false);
    let status = crate::support::wait_for("run to end", Duration::from_secs(30), || {
        run.child.try_wait().ok().flatten()
    });
    let err = err.join("\n");
    assert_eq!(status.code(), Some(122), "{err}");
    let page = std::fs::read_to_string(&html).unwrap();
    if !page.contains("id=\"verdict\"") {
        // No stacks here: the page can show no verdict.
        skip_without_stacks(
            &serde_json::json!({ "stacks": err }),
            "no verdict on the run page",
        );
        return;
    }
    let find = |what: &str| {
        page.find(what)
            .unwrap_or_else(|| panic!("no {what:?} in the page"))
    };
    assert!(find("id=\"verdict\"") < find("id=\"findings\""));
    let findings = &page[find("id=\"findings\"")..find("id=\"charts\"")];
    assert!(findings.contains("updated by the stacks"), "{findings}");
    assert!(
        findings.contains("Python lock-order deadlock"),
        "{findings}"
    );
    assert!(
        !findings.contains("Take stacks to see the locks"),
        "the pre-stacks remedy: {findings}"
    );
    // The text diagnosis on stderr leads with the verdict too.
    let diagnosis = &err[err.find("diagnosis of pid").expect("a diagnosis")..];
    assert!(
        diagnosis.find("VERDICT").unwrap() < diagnosis.find("FINDINGS").unwrap(),
        "{diagnosis}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
