//! Processes that are stuck, stopped, frozen, half-exited or hostile: what the reports
//! say about them, and that tfwatch itself never hangs on them.

use std::process::Command;
use std::time::Duration;

use crate::support::{ChildGuard, tfwatch, tfwatch_output, wait_for};

fn comm(pid: i32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default()
}

/// `tfwatch` with `args` (a snapshot in JSON), which must return within 20 s and
/// succeed; returns the report.
fn snapshot_within_20s(args: &[&str]) -> serde_json::Value {
    use std::io::Read;
    let mut command = tfwatch(args);
    command.stdin(std::process::Stdio::null());
    let mut run = ChildGuard::spawn(command);
    let status = wait_for("tfwatch to return", Duration::from_secs(20), || {
        run.child.try_wait().unwrap()
    });
    let mut stdout = String::new();
    run.child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .unwrap();
    assert!(status.success(), "{stdout}");
    serde_json::from_str(&stdout).unwrap()
}

#[test]
fn escape_sequences_in_names_and_argv_are_escaped_in_text() {
    let hostile = "\x1b]0;pwn\x07\x1b[2J\r\u{9b}2J";
    let script = r#"
import ctypes, sys, threading
libc = ctypes.CDLL(None)
def named():
    libc.prctl(15, b"\x1b]0;thr\x07", 0, 0, 0)
    sys.stdin.read()
threading.Thread(target=named, daemon=True).start()
open("/proc/self/comm", "w").write("\x1b]0;pwn\x07")
print("ready", flush=True)
sys.stdin.read()
"#;
    let mut command = Command::new("python3");
    command
        .args(["-c", script, hostile])
        .stdin(std::process::Stdio::piped());
    let guard = ChildGuard::spawn(command);
    let pid = guard.pid();
    wait_for("the hostile name", Duration::from_secs(20), || {
        comm(pid).starts_with('\x1b').then_some(())
    });
    let out = tfwatch_output(&["snapshot", &pid.to_string(), "--window", "100ms"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    for raw in ['\x1b', '\x07', '\r', '\u{9b}'] {
        assert!(
            !text.contains(raw),
            "raw {raw:?} in the snapshot text:\n{text:?}"
        );
    }
    assert!(text.contains("\\x1b]0;pwn\\x07"), "{text}");
}

/// A freezer cgroup made for one test, thawed and removed on drop (even on failure).
struct Freezer {
    dir: std::path::PathBuf,
}

impl Freezer {
    /// A freezer cgroup of this test process, `name` telling it from those of the
    /// tests running beside it.
    fn new(name: &str) -> Option<Freezer> {
        let root = std::path::Path::new("/sys/fs/cgroup/freezer");
        if !root.join("freezer.state").exists() && !root.join("tasks").exists() {
            return None;
        }
        let dir = root.join(format!("tfwatch-test-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).ok()?;
        Some(Freezer { dir })
    }

    fn write(&self, file: &str, value: &str) {
        std::fs::write(self.dir.join(file), value).unwrap();
    }

    fn state(&self) -> String {
        std::fs::read_to_string(self.dir.join("freezer.state"))
            .unwrap_or_default()
            .trim()
            .to_string()
    }
}

impl Drop for Freezer {
    fn drop(&mut self) {
        let _ = std::fs::write(self.dir.join("freezer.state"), "THAWED");
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while std::fs::read_to_string(self.dir.join("freezer.state"))
            .is_ok_and(|s| s.trim() != "THAWED")
            && std::time::Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(20));
        }
        // Move our tasks back to the root before removing the cgroup.
        if let Ok(tasks) = std::fs::read_to_string(self.dir.join("tasks")) {
            for task in tasks.split_whitespace() {
                let _ = std::fs::write("/sys/fs/cgroup/freezer/tasks", task);
            }
        }
        let _ = std::fs::remove_dir(&self.dir);
    }
}

#[test]
fn stacks_of_a_frozen_process_return_and_name_the_freezer() {
    let Some(freezer) = Freezer::new("stacks") else {
        crate::support::skip(
            "cgroup",
            "no cgroup-v1 freezer mounted at /sys/fs/cgroup/freezer",
        );
        return;
    };
    let mut command = Command::new("sleep");
    command.arg("60");
    let child = ChildGuard::spawn(command);
    let pid = child.pid();
    freezer.write("tasks", &pid.to_string());
    freezer.write("freezer.state", "FROZEN");
    wait_for("the cgroup frozen", Duration::from_secs(10), || {
        (freezer.state() == "FROZEN").then_some(())
    });
    let report = snapshot_within_20s(&[
        "snapshot",
        &pid.to_string(),
        "--stacks",
        "--window",
        "100ms",
        "--format",
        "json",
    ]);
    let unavailable = report["stacks"]["unavailable"].to_string();
    assert!(
        unavailable.contains("frozen") && unavailable.contains(&format!("pid {pid}")),
        "{unavailable}"
    );
    drop(freezer);
    drop(child);
}

#[test]
fn a_process_whose_main_thread_exited_is_still_watched() {
    let script = r#"
import ctypes, threading
def busy():
    while True:
        sum(range(1000))
for _ in range(2):
    threading.Thread(target=busy).start()
print("ready", flush=True)
ctypes.CDLL(None).pthread_exit(None)
"#;
    let mut command = Command::new("python3");
    command.args(["-c", script]);
    let guard = ChildGuard::spawn(command);
    let pid = guard.pid();
    wait_for("the main thread gone", Duration::from_secs(20), || {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        (stat.rsplit_once(')')?.1.trim_start().starts_with('Z')).then_some(())
    });
    let out = tfwatch_output(&[
        "attach",
        &pid.to_string(),
        "--json",
        "--no-gpu",
        "--duration",
        "3s",
        "--interval",
        "500ms",
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    let samples = text
        .lines()
        .filter(|l| l.contains(r#""type":"sample""#))
        .count();
    assert!(samples >= 2, "{samples} sample line(s):\n{text}");
    assert!(!text.contains("target-exited"), "{text}");
}

#[test]
fn a_stopped_process_is_said_to_be_stopped() {
    let mut command = Command::new("sleep");
    command.arg("60");
    let child = ChildGuard::spawn(command);
    let pid = child.pid();
    unsafe {
        libc::kill(pid, libc::SIGSTOP);
    }
    wait_for("the child stopped", Duration::from_secs(10), || {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        (stat.rsplit_once(')')?.1.trim_start().starts_with('T')).then_some(())
    });
    let json = tfwatch_output(&[
        "snapshot",
        &pid.to_string(),
        "--window",
        "100ms",
        "--format",
        "json",
    ]);
    let text = tfwatch_output(&["snapshot", &pid.to_string(), "--window", "100ms"]);
    unsafe {
        libc::kill(pid, libc::SIGCONT);
    }
    let expected = format!("pid {pid} is stopped (SIGSTOP/SIGTSTP, state T)");
    let report: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert!(
        report["states"].to_string().contains(&expected),
        "{}",
        report["states"]
    );
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains(&expected), "{text}");
    drop(child);
}

#[test]
fn hidden_wait_channels_are_said_and_lock_counts_left_out() {
    // tfwatch as nobody, watching a root-owned process: the kernel shows its wchan as 0.
    let me = std::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(crate::support::tfwatch_bin())
        .arg("--version")
        .output();
    if !me.is_ok_and(|o| o.status.success()) || unsafe { libc::geteuid() } != 0 {
        crate::support::skip(
            "root",
            "needs root and setpriv, and a tfwatch binary nobody may run",
        );
        return;
    }
    let mut command = Command::new("sleep");
    command.arg("30");
    let child = ChildGuard::spawn(command);
    let pid = child.pid();
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(crate::support::tfwatch_bin())
        .args([
            "attach",
            &pid.to_string(),
            "--json",
            "--no-gpu",
            "--duration",
            "2s",
            "--interval",
            "500ms",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let samples: Vec<serde_json::Value> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["type"] == "sample")
        .collect();
    assert!(
        !samples.is_empty(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for sample in &samples {
        assert!(
            sample["metrics"].get("threads_blocked_lock").is_none(),
            "a lock count that cannot be known: {}",
            sample["metrics"]
        );
    }
    // A sample line carries an unavailable source once, when it is first seen.
    let unavailable: String = samples
        .iter()
        .map(|s| s["unavailable"].to_string())
        .collect();
    assert!(
        unavailable.contains(&format!("wait channels of pid {pid} unreadable")),
        "{unavailable}"
    );
    drop(child);
}

#[test]
fn a_kernel_thread_gets_no_ptrace_advice() {
    let out = tfwatch_output(&[
        "snapshot",
        "2",
        "--stacks",
        "--no-children",
        "--no-gpu",
        "--window",
        "0",
        "--format",
        "json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let stacks = report["stacks"]["unavailable"].to_string();
    assert!(stacks.contains("pid 2 is a kernel thread"), "{stacks}");
    assert!(!stacks.contains("run tfwatch as root"), "{stacks}");
}

/// A parent stuck in uninterruptible sleep: `vfork` whose child sleeps instead of
/// calling exec (the parent waits in `wait_for_vfork_done`, state D).
fn vfork_parent() -> Option<ChildGuard> {
    let dir = std::env::temp_dir().join(format!("tfwatch-vfork-{}", std::process::id()));
    std::fs::create_dir_all(&dir).ok()?;
    let source = dir.join("vfork.c");
    std::fs::write(
        &source,
        "#include <unistd.h>\nint main(void){ if (vfork() == 0) { sleep(60); _exit(0); } return 0; }\n",
    )
    .ok()?;
    let binary = dir.join("vfork");
    let built = Command::new("cc")
        .arg(&source)
        .arg("-o")
        .arg(&binary)
        .status()
        .ok()?;
    if !built.success() {
        return None;
    }
    let guard = ChildGuard::spawn(Command::new(&binary));
    let _ = std::fs::remove_dir_all(&dir);
    Some(guard)
}

#[test]
fn stacks_skip_threads_in_uninterruptible_sleep() {
    let Some(parent) = vfork_parent() else {
        crate::support::skip("cc", "no C compiler");
        return;
    };
    let pid = parent.pid();
    wait_for("the parent in D", Duration::from_secs(10), || {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        (stat.rsplit_once(')')?.1.trim_start().starts_with('D')).then_some(())
    });
    let report = snapshot_within_20s(&[
        "snapshot",
        &pid.to_string(),
        "--stacks",
        "--no-children",
        "--no-gpu",
        "--window",
        "100ms",
        "--format",
        "json",
    ]);
    let unavailable = report["stacks"]["unavailable"].to_string();
    assert!(
        unavailable.contains("in uninterruptible sleep in") && unavailable.contains("not unwound"),
        "{unavailable}"
    );
    // The sleeping thread is shown as such, with its wait named, never waited for.
    let thread = report["stacks"]["threads"]
        .as_array()
        .and_then(|t| t.iter().find(|t| t["tid"] == pid))
        .unwrap_or_else(|| panic!("the D thread among the stacks: {:#}", report["stacks"]));
    assert_eq!(thread["wait"]["kind"], "uninterruptible", "{thread:#}");
    assert!(
        thread["not_unwound"].as_str().is_some_and(
            |w| w.starts_with("uninterruptible sleep in `") && w.ends_with("not unwound")
        ),
        "{thread:#}"
    );
    let states = report["states"].to_string();
    assert!(
        states.contains(&format!(
            "pid {pid}: 1 thread(s) in uninterruptible sleep (D) in"
        )),
        "{states}"
    );
    drop(parent);
}

/// The one wording of a frozen process, as every command says it.
const FROZEN: &str = "is frozen by its cgroup";

#[test]
fn run_and_snapshot_name_a_frozen_command_alike() {
    let Some(freezer) = Freezer::new("run") else {
        crate::support::skip(
            "cgroup",
            "no cgroup-v1 freezer mounted at /sys/fs/cgroup/freezer",
        );
        return;
    };
    // The command joins the freezer cgroup itself, then becomes a sleep.
    let script = format!("echo $$ > {}/tasks && exec sleep 60", freezer.dir.display());
    let mut command = tfwatch(&[
        "run",
        "--json",
        "--timeout",
        "4s",
        "--",
        "sh",
        "-c",
        &script,
    ]);
    command.stdin(std::process::Stdio::null());
    let mut run = ChildGuard::spawn(command);
    // Read on threads: the frozen command holds run's output open after run ends.
    let stdout = crate::support::line_channel(run.child.stdout.take().unwrap());
    let stderr = crate::support::line_channel(run.child.stderr.take().unwrap());
    let pid: i32 = wait_for(
        "the command in the freezer",
        Duration::from_secs(20),
        || {
            let tasks = std::fs::read_to_string(freezer.dir.join("tasks")).ok()?;
            let pid: i32 = tasks.split_whitespace().next()?.parse().ok()?;
            (comm(pid).trim() == "sleep").then_some(pid)
        },
    );
    freezer.write("freezer.state", "FROZEN");
    wait_for("the cgroup frozen", Duration::from_secs(10), || {
        (freezer.state() == "FROZEN").then_some(())
    });
    let snapshot = snapshot_within_20s(&["snapshot", &pid.to_string(), "--format", "json"]);
    let snapshot = snapshot.to_string();
    assert!(
        snapshot.contains(&format!("pid {pid} {FROZEN}")),
        "{snapshot}"
    );
    let status = wait_for("run to end", Duration::from_secs(60), || {
        run.child.try_wait().ok().flatten()
    });
    // Its output, till a quiet half second on each (run has ended).
    let mut out = String::new();
    for lines in [stdout, stderr] {
        while let Ok(line) = lines.recv_timeout(Duration::from_millis(500)) {
            out.push_str(&line);
            out.push('\n');
        }
    }
    assert!(status.code().is_some(), "{out}");
    assert!(out.contains(&format!("pid {pid} {FROZEN}")), "{out}");
    assert!(
        !out.contains("uninterruptible sleep"),
        "a frozen command is not said to be in uninterruptible sleep:\n{out}"
    );
    drop(freezer);
}
