//! Helpers shared by the integration tests: child processes that are always ended,
//! waiting on a condition with a deadline instead of sleeping, and the one way a test
//! skips (`skip`), which fails instead where `TFWATCH_REQUIRE` names what it lacks.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Path of the built `tfwatch` binary.
pub fn tfwatch_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_tfwatch"))
}

/// A `tfwatch` command with arguments.
pub fn tfwatch(args: &[&str]) -> Command {
    let mut command = Command::new(tfwatch_bin());
    command.args(args);
    command
}

/// Runs `tfwatch` to completion and returns its output.
pub fn tfwatch_output(args: &[&str]) -> Output {
    tfwatch(args).output().expect("tfwatch runs")
}

/// `tfwatch snapshot PID --format json --window WINDOW` plus `extra`, which must
/// succeed; returns the report.
pub fn snapshot_json(pid: i32, window: &str, extra: &[&str]) -> serde_json::Value {
    let pid = pid.to_string();
    let mut args = vec![
        "snapshot",
        pid.as_str(),
        "--format",
        "json",
        "--window",
        window,
    ];
    args.extend_from_slice(extra);
    let out = tfwatch_output(&args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("valid JSON")
}

/// A child process that is killed (by pid, with its process group) and reaped on drop,
/// so a failing test leaves nothing behind.
pub struct ChildGuard {
    pub child: Child,
}

impl ChildGuard {
    /// Spawns `command` in a new process group with stdout piped.
    pub fn spawn(mut command: Command) -> ChildGuard {
        use std::os::unix::process::CommandExt;
        command
            .process_group(0)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        ChildGuard {
            child: command.spawn().expect("child process starts"),
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let pid = self.pid();
        // The group holds the scenario's own children too; the group id is our child's pid.
        unsafe {
            libc::kill(-pid, libc::SIGKILL);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The variable that lists what a run must have (comma-separated), so that a test
/// whose tool or access is missing fails instead of passing as skipped. `.ci/run` sets it
/// for everything it installs.
pub const REQUIRE: &str = "TFWATCH_REQUIRE";

/// The names `TFWATCH_REQUIRE` takes, one per thing a test may lack.
pub const REQUIREMENTS: &[&str] = &[
    "tensorflow", // `import tensorflow` works
    "torch",      // `import torch.distributed` works
    "sklearn",    // `import sklearn` works
    "python3",    // a python3 to run
    "prometheus", // prometheus and promtool
    "chromium",   // headless screenshots
    "tmux",       // the dashboard in a terminal
    "zsh",        // the completion script parses
    "fish",       // the completion script parses
    "groff",      // the man pages render
    "g++",        // C++ test programs
    "cc",         // C test programs
    "taskset",    // pinning processes to a CPU
    "ptrace",     // reading other processes' memory and stacks
    "stacks",     // the stack unwinders built in (default features)
    "root",       // running as root (setpriv, cgroups)
    "cgroup",     // a cgroup v1 hierarchy (cpu, freezer) to make groups in
    "fuse",       // mounting a FUSE file system
];

/// Whether `TFWATCH_REQUIRE` names `what` (or `all`).
pub fn required(what: &str) -> bool {
    assert!(
        REQUIREMENTS.contains(&what),
        "{what:?} is not a name of {REQUIRE}: {REQUIREMENTS:?}"
    );
    named_in(&std::env::var(REQUIRE).unwrap_or_default(), what)
}

/// Whether the comma-separated `list` names `what` (or `all`).
fn named_in(list: &str, what: &str) -> bool {
    list.split(',')
        .map(str::trim)
        .any(|name| name == what || name == "all")
}

#[test]
fn a_requirement_is_named_whole_or_by_all() {
    assert!(named_in("python3, torch,tmux", "torch"));
    assert!(named_in("all", "fuse"));
    assert!(!named_in("torchvision", "torch"));
    assert!(!named_in("", "torch"));
}

/// Skips the rest of a test that lacks `what`: prints `skipped: REASON` (the caller then
/// returns), or panics with the reason where `TFWATCH_REQUIRE` says the run must have
/// `what`.
pub fn skip(what: &str, reason: impl std::fmt::Display) {
    if required(what) {
        panic!("{REQUIRE} requires {what}, but: {reason}");
    }
    eprintln!("skipped ({what} not required): {reason}");
}

/// What a report's `stacks.unavailable` (or any text of it) says is missing: `"stacks"`
/// when an unwinder is not built in, `"ptrace"` when access was refused; `None` when
/// neither.
pub fn stacks_missing(unavailable: &str) -> Option<&'static str> {
    if unavailable.contains("not built in") {
        Some("stacks")
    } else if unavailable.contains("no ptrace access") {
        Some("ptrace")
    } else {
        None
    }
}

/// A name in `TFWATCH_REQUIRE` that no test knows would require nothing: refused here,
/// and so are those `.ci/run` sets.
#[test]
fn the_required_names_are_known() {
    let ci = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/.ci/run")).unwrap();
    let set = ci
        .lines()
        .find_map(|l| l.trim().strip_prefix("export TFWATCH_REQUIRE="))
        .expect(".ci/run exports TFWATCH_REQUIRE");
    let from_env = std::env::var(REQUIRE).unwrap_or_default();
    for list in [set.trim_matches('"'), from_env.as_str()] {
        for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            assert!(
                name == "all" || REQUIREMENTS.contains(&name),
                "{REQUIRE} names {name:?}, which no test knows: {REQUIREMENTS:?}"
            );
        }
    }
}

/// The pids of `pid`'s main thread's children (`/proc/PID/task/PID/children`).
pub fn children(pid: i32) -> Vec<i32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// Polls `condition` until it returns `Some` or the deadline passes; panics with `what`
/// on timeout.
pub fn wait_for<T>(what: &str, timeout: Duration, mut condition: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = condition() {
            return value;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The lines of `source`, read on a thread and sent over a channel.
pub fn line_channel(
    source: impl std::io::Read + Send + 'static,
) -> std::sync::mpsc::Receiver<String> {
    use std::io::BufRead;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(source).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Lines of a child's output, read on a thread so a test can wait with a deadline.
pub struct Lines {
    rx: std::sync::mpsc::Receiver<String>,
}

impl Lines {
    pub fn new(source: impl std::io::Read + Send + 'static) -> Lines {
        Lines {
            rx: line_channel(source),
        }
    }

    /// Collects lines until `done` says so or the output ends; panics at the deadline.
    pub fn until(
        &self,
        what: &str,
        timeout: Duration,
        mut done: impl FnMut(&str) -> bool,
    ) -> Vec<String> {
        let deadline = Instant::now() + timeout;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                panic!(
                    "timed out after {timeout:?} waiting for {what}; saw:\n{}",
                    seen.join("\n")
                );
            }
            match self.rx.recv_timeout(left) {
                Ok(line) => {
                    let stop = done(&line);
                    seen.push(line);
                    if stop {
                        return seen;
                    }
                }
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => continue,
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return seen,
            }
        }
    }
}

/// Starts `tfwatch run-workload` with `args` and returns it with its pid.
pub fn workload(args: &[&str]) -> ChildGuard {
    let mut all = vec!["run-workload"];
    all.extend_from_slice(args);
    ChildGuard::spawn(tfwatch(&all))
}
