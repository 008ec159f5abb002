//! The GIL read from the interpreter's memory on real CPython processes: pure-Python
//! threads raise `gil-contention` with each holder's share of the reads, the switches
//! and the lines they run, read without stopping the process; the same work in
//! processes, in numpy calls that release the GIL, and an idle program stay quiet at
//! warning and above. The reader itself is checked on every installed CPython 3.11 to
//! 3.13: a spinning program's GIL is held and handed between its threads, a sleeping
//! one's is free.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use tfwatch::source::gil::{Burst, locate, sample};

use crate::support::{ChildGuard, Lines, skip, tfwatch};

/// `threads` pure-Python loops in threads or processes, or numpy matmuls in threads
/// (they release the GIL), or idle threads, for `seconds` (the loops end sooner once
/// the optional stop file exists); prints `ready` once started.
const SCRIPT: &str = r#"
import multiprocessing, os, sys, threading, time
STOPPED = False
os.environ["OPENBLAS_NUM_THREADS"] = "1"
os.environ["OMP_NUM_THREADS"] = "1"

def spin(stop):
    count = 0
    while time.monotonic() < stop and not STOPPED:
        for _ in range(10000):
            count += 1

def matmul(stop):
    import numpy as np
    a = np.random.rand(256, 256)
    while time.monotonic() < stop:
        a @ a

def idle(stop):
    while time.monotonic() < stop:
        time.sleep(0.05)

if __name__ == "__main__":
    mode, n, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    stop_file = sys.argv[4] if len(sys.argv) > 4 else None
    stop = time.monotonic() + seconds
    target = {"threads": spin, "processes": spin, "numpy": matmul, "idle": idle}[mode]
    kind = multiprocessing.Process if mode == "processes" else threading.Thread
    workers = [kind(target=target, args=(stop,)) for _ in range(n)]
    for w in workers:
        w.start()
    print("ready", flush=True)
    # The main thread watches for the stop file (threads' loops read only a flag).
    while stop_file and any(w.is_alive() for w in workers):
        if os.path.exists(stop_file):
            STOPPED = True
        time.sleep(0.1)
    for w in workers:
        w.join()
"#;

fn script() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tfwatch-gil-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("gil.py");
    std::fs::write(&path, SCRIPT).unwrap();
    path
}

fn usable_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// The (major, minor) of `python`, or `None` when it does not run.
fn version_of(python: &str) -> Option<(u32, u32)> {
    let out = Command::new(python)
        .args(["-c", "import sys; print(*sys.version_info[:2])"])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut parts = text.split_whitespace().map(|p| p.parse().ok());
    Some((parts.next()??, parts.next()??))
}

/// Starts `python SCRIPT ARGS…` and waits for its `ready`.
fn start(python: &str, args: &[&str]) -> ChildGuard {
    let mut command = Command::new(python);
    command.arg(script()).args(args);
    command.stdout(std::process::Stdio::piped());
    let mut child = ChildGuard::spawn(command);
    let out = Lines::new(child.child.stdout.take().unwrap());
    out.until("the program to start", Duration::from_secs(60), |l| {
        l == "ready"
    });
    child
}

/// `tfwatch run --json --interval 250ms --report R [--fail-on warning] -- python3
/// ARGS…`, its `--json` lines handed to `watch` as they come (the command is told to
/// stop when it returns true): its exit code and report.
fn run_watched(
    args: &[&str],
    gate: bool,
    watch: impl FnMut(&Value) -> bool,
) -> (Option<i32>, Value) {
    let report = script().with_file_name(format!("report-{}.json", args.join("-")));
    let stop = script().with_file_name(format!("stop-{}", args.join("-")));
    let _ = std::fs::remove_file(&stop);
    let script = script();
    let report_arg = report.to_string_lossy().to_string();
    let script_arg = script.to_string_lossy().to_string();
    let stop_arg = stop.to_string_lossy().to_string();
    let mut all = vec![
        "run",
        "--json",
        "--interval",
        "250ms",
        "--report",
        report_arg.as_str(),
    ];
    if gate {
        all.extend(["--fail-on", "warning"]);
    }
    all.extend(["--", "python3", script_arg.as_str()]);
    all.extend_from_slice(args);
    all.push(stop_arg.as_str());
    let mut command = tfwatch(&all);
    command.stdin(std::process::Stdio::null());
    command.stdout(std::process::Stdio::null());
    command.stderr(std::process::Stdio::piped());
    let mut run = ChildGuard::spawn(command);
    let lines = Lines::new(run.child.stderr.take().unwrap());
    let mut watch = watch;
    lines.until(
        "the watch to see what it waits for",
        Duration::from_secs(120),
        |l| serde_json::from_str::<Value>(l).is_ok_and(|v| watch(&v)),
    );
    std::fs::write(&stop, "").unwrap();
    let status = crate::support::wait_for("tfwatch run to end", Duration::from_secs(120), || {
        run.child.try_wait().unwrap()
    });
    let text = std::fs::read_to_string(&report).unwrap();
    (status.code(), serde_json::from_str(&text).unwrap())
}

/// [`run_watched`] until the command ends by itself.
fn run_with_report(args: &[&str], gate: bool) -> (Option<i32>, Value) {
    run_watched(args, gate, |_| false)
}

fn findings<'a>(report: &'a Value, kind: &str) -> Vec<&'a Value> {
    report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["kind"] == kind)
        .collect()
}

fn warned(report: &Value) -> Vec<String> {
    report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["severity"] != "info")
        .map(|f| format!("{} {}: {}", f["kind"], f["severity"], f["summary"]))
        .collect()
}

#[test]
fn pure_python_threads_raise_gil_contention_with_the_holders_read_from_memory() {
    if usable_cpus() < 2 {
        skip("python3", "GIL contention needs 2 usable CPUs to show");
        return;
    }
    let Some(version) = version_of("python3") else {
        skip("python3", "no python3 runs here");
        return;
    };
    // The loops run until the watch warns (or 100 s): a loaded machine reads the
    // threads' waits less often than an idle one.
    let (_, report) = run_watched(&["threads", "4", "100"], false, |line| {
        line["type"] == "finding"
            && line["kind"] == "gil-contention"
            && line["severity"] == "warning"
    });
    let found = findings(&report, "gil-contention");
    let finding = found.first().unwrap_or_else(|| panic!("{report:#}"));
    assert_eq!(finding["severity"], "warning", "{finding:#}");
    let evidence = finding["evidence"].to_string();
    if !((3, 11)..=(3, 13)).contains(&version) {
        // Another version: said so, judged from /proc alone.
        assert!(
            evidence.contains("could not be read from the interpreter's memory"),
            "{finding:#}"
        );
        return;
    }
    let held = finding["metrics"]["gil_held_share"].as_f64().unwrap();
    assert!(held >= 0.8, "{finding:#}");
    let top = finding["metrics"]["gil_top_holder_share"].as_f64().unwrap();
    // Four threads take turns: none holds it all the time.
    assert!(top > 0.0 && top < 0.9, "{finding:#}");
    assert!(
        finding["metrics"]["gil_switches_per_second"]
            .as_f64()
            .unwrap()
            > 1.0
    );
    assert!(
        evidence.contains("GIL read from the interpreter's memory (CPython 3.")
            && evidence.contains("the process never stopped"),
        "{finding:#}"
    );
    // The holders' lines are those of the loop.
    assert!(evidence.contains("runs spin (gil.py:"), "{finding:#}");
    assert!(
        finding["summary"]
            .as_str()
            .unwrap()
            .contains("confirmed from the interpreter"),
        "{finding:#}"
    );
}

#[test]
fn the_same_loops_in_processes_numpy_or_an_idle_program_stay_below_warning() {
    let cpus = usable_cpus().to_string();
    for args in [
        ["processes", cpus.as_str(), "5"],
        ["numpy", cpus.as_str(), "5"],
        ["idle", "4", "5"],
    ] {
        if args[0] == "numpy"
            && !Command::new("python3")
                .args(["-c", "import numpy"])
                .status()
                .is_ok_and(|s| s.success())
        {
            skip("python3", "python3 cannot import numpy");
            continue;
        }
        let (code, report) = run_with_report(&args, true);
        assert_eq!(code, Some(0), "{args:?}: {:?}", warned(&report));
        assert!(
            findings(&report, "gil-contention")
                .iter()
                .all(|f| f["severity"] == "info"),
            "{args:?}: {report:#}"
        );
    }
}

/// The CPython 3.11 – 3.13 interpreters installed here (pyenv's, then the PATH's).
fn interpreters() -> Vec<(String, (u32, u32))> {
    let mut found: Vec<(String, (u32, u32))> = Vec::new();
    let pyenv = std::env::var("PYENV_ROOT")
        .map(PathBuf::from)
        .unwrap_or_else(|_| Path::new("/root/.pyenv").to_path_buf());
    let mut candidates: Vec<String> = std::fs::read_dir(pyenv.join("versions"))
        .map(|dir| {
            dir.filter_map(Result::ok)
                .filter_map(|e| {
                    let name = e.file_name().to_string_lossy().to_string();
                    let minor = name.strip_prefix("3.")?.split('.').next()?.to_string();
                    Some(
                        e.path()
                            .join(format!("bin/python3.{minor}"))
                            .to_string_lossy()
                            .to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    candidates.push("python3".to_string());
    for python in candidates {
        if let Some(version) = version_of(&python).filter(|v| ((3, 11)..=(3, 13)).contains(v))
            && !found.iter().any(|(_, v)| *v == version)
        {
            found.push((python, version));
        }
    }
    found
}

fn tracer_of(pid: i32) -> Option<String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("TracerPid:"))
        .map(|t| t.trim().to_string())
}

#[test]
fn the_gil_is_read_from_memory_on_every_installed_cpython_3_11_to_3_13() {
    let found = interpreters();
    if found.is_empty() {
        skip("python3", "no CPython 3.11 to 3.13 installed");
        return;
    }
    let proc_root = Path::new("/proc");
    for (python, version) in found {
        // Three spinning threads: the GIL is held nearly always, by each in turn.
        let spinning = start(&python, &["threads", "3", "30"]);
        let pid = spinning.pid();
        let runtime = crate::support::wait_for("the runtime", Duration::from_secs(10), || {
            locate(proc_root, pid).ok()
        });
        assert_eq!(
            (u32::from(runtime.version.0), u32::from(runtime.version.1)),
            version
        );
        let reading = sample(proc_root, &runtime, Burst::default()).unwrap();
        assert_eq!(reading.reads, 100, "{python}: {reading:?}");
        assert!(reading.seconds >= 0.9, "{python}: {reading:?}");
        assert!(reading.locked_share() >= 0.8, "{python}: {reading:?}");
        assert!(reading.switches > 0, "{python}: {reading:?}");
        let tasks: Vec<i32> = std::fs::read_dir(format!("/proc/{pid}/task"))
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
            .collect();
        let named: Vec<i32> = reading.holders.iter().map(|h| h.tid).collect();
        assert!(
            named.len() >= 2 && named.iter().all(|t| tasks.contains(t) && *t != pid),
            "{python}: holders {named:?} are the spinning threads of {tasks:?}"
        );
        // Read in place: never traced, never stopped.
        assert_eq!(tracer_of(pid).as_deref(), Some("0"));
        drop(spinning);

        // An idle program: its threads sleep with the GIL released.
        let idle = start(&python, &["idle", "3", "30"]);
        let runtime = crate::support::wait_for("the runtime", Duration::from_secs(10), || {
            locate(proc_root, idle.pid()).ok()
        });
        let burst = Burst {
            reads: 50,
            over: Duration::from_millis(500),
        };
        let reading = sample(proc_root, &runtime, burst).unwrap();
        assert!(reading.locked_share() <= 0.5, "{python}: {reading:?}");
        drop(idle);
    }
}

#[test]
fn an_interpreter_before_3_11_is_said_to_be_unsupported() {
    let pyenv = Path::new("/root/.pyenv/versions");
    let Some(old) = std::fs::read_dir(pyenv).ok().and_then(|dir| {
        dir.filter_map(Result::ok)
            .map(|e| e.file_name().to_string_lossy().to_string())
            .find(|n| n.starts_with("3.10.") || n.starts_with("3.9."))
    }) else {
        skip(
            "python3",
            "no CPython 3.9 or 3.10 installed under /root/.pyenv",
        );
        return;
    };
    let minor = old.split('.').nth(1).unwrap();
    let python = pyenv.join(&old).join(format!("bin/python3.{minor}"));
    let idle = start(&python.to_string_lossy(), &["idle", "1", "30"]);
    let error = locate(Path::new("/proc"), idle.pid()).unwrap_err();
    assert!(error.contains("unsupported CPython version"), "{error}");
}
