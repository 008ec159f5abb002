//! `tfwatch run -- <cmd>`: the CI gate and hang watchdog, with its exit codes.

use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::support::{ChildGuard, Lines, tfwatch, tfwatch_bin, wait_for};

const HANG: i32 = 122;
const RULE_GATE: i32 = 120;
const BASELINE: i32 = 121;

fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("tfwatch-run-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs `tfwatch run` to completion (in its own process group, ended on drop).
fn run(args: &[&str]) -> (i32, String, String) {
    let mut all = vec!["run"];
    all.extend_from_slice(args);
    let mut guard = ChildGuard::spawn(tfwatch(&all));
    let stdout = Lines::new(guard.child.stdout.take().unwrap());
    let stderr = Lines::new(guard.child.stderr.take().unwrap());
    let out = stdout.until("stdout to close", Duration::from_secs(120), |_| false);
    let err = stderr.until("stderr to close", Duration::from_secs(120), |_| false);
    let status = guard.child.wait().unwrap();
    (status.code().unwrap_or(-1), out.join("\n"), err.join("\n"))
}

fn workload_args<'a>(rest: &[&'a str]) -> Vec<&'a str> {
    let bin = Box::leak(tfwatch_bin().to_string_lossy().to_string().into_boxed_str());
    let mut args = vec!["--", bin, "run-workload"];
    args.extend_from_slice(rest);
    args
}

#[test]
fn exit_codes_of_the_command_pass_through() {
    let (code, _, _) = run(&["--no-gpu", "--", "sh", "-c", "exit 3"]);
    assert_eq!(code, 3);
    let (code, out, _) = run(&["--no-gpu", "--", "sh", "-c", "echo hello from the job"]);
    assert_eq!(code, 0);
    assert!(
        out.contains("hello from the job"),
        "stdout is inherited: {out}"
    );
    let (code, _, err) = run(&["--", "no-such-command-tfwatch-test"]);
    assert_eq!(code, 127);
    assert!(err.contains("command not found"), "{err}");
    assert!(err.contains("no-such-command-tfwatch-test"), "{err}");
}

#[test]
fn deadlock_is_ended_with_the_hang_code_and_a_diagnosis() {
    let dir = temp_dir("deadlock");
    let report = dir.join("report.json");
    let report_arg = report.to_string_lossy().to_string();
    let mut args = vec![
        "--no-gpu",
        "--hang-after",
        "2s",
        "--interval",
        "500ms",
        "--grace",
        "1s",
        "--report",
        report_arg.as_str(),
    ];
    args.extend(workload_args(&[
        "--scenario",
        "deadlock",
        "--duration",
        "60s",
    ]));
    let (code, _, err) = run(&args);
    assert_eq!(code, HANG, "{err}");
    assert!(err.contains("hang detected"), "{err}");
    assert!(
        err.contains("worker-a") && err.contains("worker-b"),
        "the diagnosis names the blocked threads: {err}"
    );
    let report: Value = serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    assert_eq!(report["outcome"], "hang-detected");
    assert_eq!(report["exit_code"], HANG);
    assert!(
        report["diagnosis"]["processes"]
            .as_array()
            .is_some_and(|p| !p.is_empty())
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn fork_lock_child_is_named_in_the_diagnosis() {
    let mut args = vec![
        "--no-gpu",
        "--hang-after",
        "2s",
        "--interval",
        "500ms",
        "--grace",
        "1s",
    ];
    args.extend(workload_args(&[
        "--scenario",
        "fork-lock",
        "--duration",
        "60s",
    ]));
    let (code, out, err) = run(&args);
    assert_eq!(code, HANG, "{err}");
    let child = out
        .lines()
        .find_map(|l| l.strip_prefix("tfwatch-workload: child="))
        .and_then(|rest| rest.split_whitespace().next())
        .expect("the workload prints its child");
    assert!(err.contains("fork-inherited-lock"), "{err}");
    assert!(
        err.contains(&format!("pid {child}")),
        "the child {child} is named: {err}"
    );
}

#[test]
fn thread_rule_fails_the_gate_and_junit_is_valid_xml() {
    let dir = temp_dir("junit");
    let junit = dir.join("tfwatch.xml");
    let junit_arg = junit.to_string_lossy().to_string();
    let mut args = vec![
        "--no-gpu",
        "--interval",
        "250ms",
        "--fail-on",
        "warning",
        "--junit",
        junit_arg.as_str(),
    ];
    args.extend(workload_args(&[
        "--scenario",
        "thread-explosion",
        "--duration",
        "3s",
    ]));
    let (code, _, err) = run(&args);
    assert_eq!(code, RULE_GATE, "{err}");
    assert!(err.contains("rule gate failed"), "{err}");

    let xml = std::fs::read_to_string(&junit).unwrap();
    let doc = roxmltree::Document::parse(&xml).expect("well-formed XML");
    let root = doc.root_element();
    assert_eq!(root.tag_name().name(), "testsuites");
    let suite = root
        .children()
        .find(|n| n.has_tag_name("testsuite"))
        .expect("a testsuite");
    let cases: Vec<_> = suite
        .children()
        .filter(|n| n.has_tag_name("testcase"))
        .collect();
    assert_eq!(
        suite.attribute("tests").unwrap().parse::<usize>().unwrap(),
        cases.len()
    );
    let failed: Vec<_> = cases
        .iter()
        .filter(|c| c.children().any(|n| n.has_tag_name("failure")))
        .collect();
    assert_eq!(
        suite
            .attribute("failures")
            .unwrap()
            .parse::<usize>()
            .unwrap(),
        failed.len()
    );
    let names: Vec<&str> = failed.iter().filter_map(|c| c.attribute("name")).collect();
    assert!(names.contains(&"rule too-many-threads"), "{names:?}");
    assert!(names.contains(&"detector thread-explosion"), "{names:?}");
    for case in &cases {
        assert!(case.attribute("classname").is_some() && case.attribute("name").is_some());
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn healthy_passes_with_the_commands_own_code() {
    let mut args = vec!["--no-gpu", "--interval", "500ms"];
    args.extend(workload_args(&[
        "--scenario",
        "healthy",
        "--duration",
        "3s",
    ]));
    let (code, _, err) = run(&args);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("passed"), "{err}");
}

#[test]
fn baseline_from_the_fix_gates_the_broken_variant() {
    let dir = temp_dir("baseline");
    let baseline = dir.join("baseline.json");
    let baseline_arg = baseline.to_string_lossy().to_string();
    let mut args = vec![
        "--no-gpu",
        "--interval",
        "500ms",
        "--summary",
        baseline_arg.as_str(),
    ];
    args.extend(workload_args(&[
        "--scenario",
        "oversubscribe",
        "--fixed",
        "--duration",
        "3s",
        "--units",
        "100000",
    ]));
    let (code, _, err) = run(&args);
    assert_eq!(code, 0, "{err}");
    let summary: Value =
        serde_json::from_str(&std::fs::read_to_string(&baseline).unwrap()).unwrap();
    assert!(summary["peak_threads"].as_f64().unwrap() >= 3.0);

    let mut args = vec![
        "--no-gpu",
        "--interval",
        "500ms",
        "--fail-on",
        "never",
        "--baseline",
        baseline_arg.as_str(),
        "--max-increase",
        "threads=10%,runnable=25%",
    ];
    args.extend(workload_args(&[
        "--scenario",
        "oversubscribe",
        "--duration",
        "3s",
        "--units",
        "100000",
    ]));
    let (code, _, err) = run(&args);
    assert_eq!(code, BASELINE, "{err}");
    assert!(err.contains("REGRESSED"), "{err}");
    let threads = err
        .lines()
        .find(|l| l.starts_with("threads "))
        .expect("the comparison table has a threads row");
    assert!(threads.contains('%'), "the change is printed: {threads}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn timeout_exits_124_after_the_diagnosis() {
    let (code, _, err) = run(&[
        "--no-gpu",
        "--timeout",
        "1s",
        "--grace",
        "1s",
        "--",
        "sleep",
        "30",
    ]);
    assert_eq!(code, 124, "{err}");
    assert!(err.contains("timed out"), "{err}");
    assert!(
        err.contains("THREADS of pid"),
        "the diagnosis is written: {err}"
    );
}

#[test]
fn sigterm_reaches_the_command_and_leaves_no_orphan() {
    let mut command = tfwatch(&[
        "run",
        "--no-gpu",
        "--grace",
        "1s",
        "--",
        "sh",
        "-c",
        "sleep 60 & echo $!; wait",
    ]);
    command.stderr(Stdio::null());
    let mut guard = ChildGuard::spawn(command);
    let lines = Lines::new(guard.child.stdout.take().unwrap());
    let seen = lines.until("the background pid", Duration::from_secs(20), |l| {
        l.trim().parse::<i32>().is_ok()
    });
    let background: i32 = seen.last().unwrap().trim().parse().unwrap();
    // SAFETY: signals the tfwatch process this test started.
    unsafe {
        libc::kill(guard.pid(), libc::SIGTERM);
    }
    let status = wait_for("tfwatch to exit", Duration::from_secs(20), || {
        guard.child.try_wait().unwrap()
    });
    assert_ne!(status.code(), Some(0));
    wait_for(
        "the background sleep to be gone",
        Duration::from_secs(10),
        || (!std::path::Path::new(&format!("/proc/{background}")).exists()).then_some(()),
    );
    // Nothing of the command is left in its process group either.
    let group = Command::new("pgrep")
        .args(["-g", &guard.pid().to_string()])
        .output();
    if let Ok(out) = group {
        assert!(String::from_utf8_lossy(&out.stdout).trim().is_empty());
    }
}

const USAGE: i32 = 2;

/// Runs `tfwatch ARGS` to completion within a deadline: (code, stdout, stderr).
fn tfwatch_within(args: &[&str], timeout: Duration) -> (i32, String, String) {
    let mut guard = ChildGuard::spawn(tfwatch(args));
    let stdout = Lines::new(guard.child.stdout.take().unwrap());
    let stderr = Lines::new(guard.child.stderr.take().unwrap());
    let out = stdout.until("stdout to close", timeout, |_| false);
    let err = stderr.until("stderr to close", timeout, |_| false);
    let status = wait_for("tfwatch to exit", timeout, || {
        guard.child.try_wait().unwrap()
    });
    (status.code().unwrap_or(-1), out.join("\n"), err.join("\n"))
}

#[test]
fn usage_errors_exit_2_and_huge_durations_do_not_panic() {
    let huge = "18446744073709551615s";
    let cases: Vec<Vec<&str>> = vec![
        vec!["run", "--listen", "0.0.0.0:9464", "--", "true"],
        vec![
            "run",
            "--max-increase",
            "thread=10%",
            "--baseline",
            "f",
            "--",
            "true",
        ],
        vec!["run", "--interval", "0", "--", "true"],
        vec!["run", "--interval", "1ns", "--", "true"],
        vec!["run", "--interval", "2h", "--", "true"],
        vec!["run", "--interval", huge, "--", "true"],
        vec!["run", "--timeout", huge, "--", "true"],
        vec!["run", "--timeout", "31days", "--", "true"],
        vec!["run", "--hang-after", "31days", "--", "true"],
        vec!["run", "--grace", huge, "--", "true"],
        vec!["run", "--memory-limit", "0", "--", "true"],
        vec!["run", "--memory-limit", "10000TiB", "--", "true"],
        vec!["attach", "1", "--no-tui", "--duration", huge],
        vec!["attach", "1", "--no-tui", "--interval", "0"],
        vec!["run-workload", "--scenario", "deadlock", "--duration", huge],
    ];
    for args in cases {
        let (code, _, err) = tfwatch_within(&args, Duration::from_secs(30));
        assert_eq!(code, USAGE, "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        assert!(
            err.contains("tfwatch: ") || err.contains("error:"),
            "{args:?}: {err}"
        );
    }
    // A pid that does not exist is not a usage error: tfwatch cannot watch it (125).
    let (code, _, err) = tfwatch_within(
        &["attach", "2147483646", "--no-tui", "--duration", "1s"],
        Duration::from_secs(30),
    );
    assert_eq!(code, 125, "{err}");
}

#[test]
fn unwritable_outputs_are_refused_before_the_command_starts() {
    let dir = temp_dir("unwritable");
    let missing = dir.join("no-such-dir").join("report.json");
    let missing = missing.to_string_lossy().to_string();
    let a_dir = dir.to_string_lossy().to_string();
    for flag in ["--report", "--junit", "--summary"] {
        for path in [missing.as_str(), a_dir.as_str()] {
            let (code, out, err) = tfwatch_within(
                &[
                    "run",
                    "--no-gpu",
                    flag,
                    path,
                    "--",
                    "sh",
                    "-c",
                    "echo the job started",
                ],
                Duration::from_secs(30),
            );
            assert_eq!(code, USAGE, "{flag} {path}: {err}");
            assert!(!out.contains("the job started"), "{flag} {path}: {out}");
            assert!(err.contains(flag), "{flag} {path}: {err}");
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn attach_record_to_a_fifo_without_reader_does_not_block() {
    let dir = temp_dir("fifo");
    let fifo = dir.join("record.fifo");
    let c_path = std::ffi::CString::new(fifo.to_string_lossy().as_bytes()).unwrap();
    // SAFETY: mkfifo with a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0);
    let target = ChildGuard::spawn({
        let mut c = Command::new("sleep");
        c.arg("30");
        c
    });
    let pid = target.pid().to_string();
    let fifo_arg = fifo.to_string_lossy().to_string();
    let (code, _, err) = tfwatch_within(
        &[
            "attach",
            &pid,
            "--no-tui",
            "--no-gpu",
            "--record",
            &fifo_arg,
            "--duration",
            "1s",
        ],
        Duration::from_secs(20),
    );
    assert_eq!(code, USAGE, "{err}");
    assert!(err.contains("no reader"), "{err}");
    drop(target);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn how_the_command_ended_is_said_plainly() {
    let (code, _, err) = run(&["--no-gpu", "--", "sh", "-c", "kill -SEGV $$"]);
    assert_eq!(code, 139, "{err}");
    assert!(
        err.contains("command was killed by signal 11 (SIGSEGV)"),
        "{err}"
    );
    assert!(!err.contains("passed"), "{err}");
    let (code, _, err) = run(&["--no-gpu", "--", "sh", "-c", "exit 7"]);
    assert_eq!(code, 7, "{err}");
    assert!(err.contains("command exited 7; no gate failed"), "{err}");
    assert!(!err.contains("passed"), "{err}");
    let dir = temp_dir("dir-command");
    let (code, _, err) = run(&["--no-gpu", "--", dir.to_str().unwrap()]);
    assert_eq!(code, 126, "{err}");
    assert!(err.contains("is a directory"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn json_stderr_holds_only_json_lines_with_diagnosis_and_exit() {
    let (code, _, err) = run(&[
        "--no-gpu",
        "--json",
        "--timeout",
        "1s",
        "--grace",
        "1s",
        "--",
        "sleep",
        "30",
    ]);
    assert_eq!(code, 124, "{err}");
    let events: Vec<Value> = err
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let diagnosis = events
        .iter()
        .find(|e| e["type"] == "diagnosis")
        .unwrap_or_else(|| panic!("a diagnosis event: {err}"));
    assert_eq!(diagnosis["reason"], "timed out");
    let last = events.last().unwrap();
    assert_eq!(last["type"], "exit", "{err}");
    assert_eq!(last["exit_code"], 124, "{err}");
    assert_eq!(last["outcome"], "timed-out", "{err}");
}

/// Starts `tfwatch run` with a shell that traps `signal` and says so, sends it to
/// tfwatch, and returns what the command printed.
fn forwarded(signal: libc::c_int, name: &str) -> Vec<String> {
    let script =
        format!("trap 'echo got {name}; exit 0' {name}; echo ready; while :; do sleep 0.05; done");
    let mut command = tfwatch(&[
        "run", "--no-gpu", "--grace", "5s", "--", "sh", "-c", &script,
    ]);
    command.stderr(Stdio::null());
    let mut guard = ChildGuard::spawn(command);
    let lines = Lines::new(guard.child.stdout.take().unwrap());
    lines.until("ready", Duration::from_secs(20), |l| l == "ready");
    // SAFETY: signals the tfwatch process this test started.
    unsafe {
        libc::kill(guard.pid(), signal);
    }
    let seen = lines.until("the trap", Duration::from_secs(20), |l| {
        l.starts_with("got")
    });
    wait_for("tfwatch to exit", Duration::from_secs(20), || {
        guard.child.try_wait().unwrap()
    });
    seen
}

#[test]
fn signals_reach_the_command_as_themselves() {
    for (signal, name) in [
        (libc::SIGINT, "INT"),
        (libc::SIGHUP, "HUP"),
        (libc::SIGQUIT, "QUIT"),
        (libc::SIGTERM, "TERM"),
    ] {
        let seen = forwarded(signal, name);
        assert!(seen.contains(&format!("got {name}")), "{name}: {seen:?}");
    }
}

#[test]
fn the_command_dies_with_tfwatch() {
    let mut command = tfwatch(&["run", "--no-gpu", "--", "sleep", "300"]);
    command.stderr(Stdio::null());
    let mut guard = ChildGuard::spawn(command);
    let tfwatch_pid = guard.pid();
    let children = format!("/proc/{tfwatch_pid}/task/{tfwatch_pid}/children");
    let sleep: i32 = wait_for("the command to start", Duration::from_secs(20), || {
        let text = std::fs::read_to_string(&children).ok()?;
        let pid: i32 = text.split_whitespace().next()?.parse().ok()?;
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
        (comm.trim() == "sleep").then_some(pid)
    });
    /// Ends the command by pid should the test fail.
    struct KillOnDrop(i32);
    impl Drop for KillOnDrop {
        fn drop(&mut self) {
            // SAFETY: kill(2) on the pid of the command this test started through tfwatch.
            unsafe {
                libc::kill(self.0, libc::SIGKILL);
            }
        }
    }
    let _sleep_guard = KillOnDrop(sleep);
    // Only tfwatch is killed: the command (in its own group) is left to PR_SET_PDEATHSIG.
    guard.child.kill().unwrap();
    guard.child.wait().unwrap();
    wait_for(
        "the command to die with tfwatch",
        Duration::from_secs(10),
        || match std::fs::read_to_string(format!("/proc/{sleep}/stat")) {
            Err(_) => Some(()),
            Ok(stat) => stat
                .rsplit(')')
                .next()
                .is_some_and(|rest| rest.trim_start().starts_with('Z'))
                .then_some(()),
        },
    );
}

#[test]
fn an_interactive_command_can_read_the_terminal() {
    let line = format!(
        "{} run --no-gpu --interval 100ms -- sh -c 'read x; echo got:$x'",
        tfwatch_bin().display()
    );
    let mut command = Command::new("script");
    command
        .args(["-qec", &line, "/dev/null"])
        .stdin(Stdio::piped());
    let mut guard = ChildGuard::spawn(command);
    let lines = Lines::new(guard.child.stdout.take().unwrap());
    {
        use std::io::Write;
        let mut stdin = guard.child.stdin.take().unwrap();
        stdin.write_all(b"hello\n").unwrap();
        // Kept open until the answer comes, so script does not end the session early.
        let seen = lines.until("the command's answer", Duration::from_secs(30), |l| {
            l.contains("got:hello")
        });
        assert!(seen.iter().any(|l| l.contains("got:hello")), "{seen:?}");
        drop(stdin);
    }
    let status = wait_for("script to exit", Duration::from_secs(20), || {
        guard.child.try_wait().unwrap()
    });
    assert_eq!(status.code(), Some(0));
}

#[test]
fn a_stopped_command_gets_sigterm_at_the_timeout() {
    let dir = temp_dir("stopped");
    let report = dir.join("report.json");
    let report_arg = report.to_string_lossy().to_string();
    let started = std::time::Instant::now();
    let (code, _, err) = run(&[
        "--no-gpu",
        "--timeout",
        "1s",
        "--grace",
        "30s",
        "--report",
        &report_arg,
        "--",
        "sh",
        "-c",
        "kill -STOP $$; sleep 100",
    ]);
    assert_eq!(code, 124, "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(25),
        "SIGTERM arrived before the grace ran out: {err}"
    );
    let report: Value = serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    assert_eq!(report["command_exit_code"], 128 + libc::SIGTERM, "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_ci_guide_run_example_rules_file_is_valid() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let path = root.join("rules/ci.toml");
    let guide = std::fs::read_to_string(root.join("docs/guide/ci.md")).unwrap();
    assert!(guide.contains("--rules rules/ci.toml"));
    let (code, out, err) = tfwatch_within(
        &["rules", "check", path.to_str().unwrap()],
        Duration::from_secs(20),
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("rules OK"), "{out}");
}

/// The pids a `run` note names as left running: "pid 12 (sleep 3701.25)", or "pid 12
/// (setsid sleep 3701.25)" when it was named before `setsid` exec'd the sleep.
fn left_running(err: &str, command: &str) -> Vec<i32> {
    err.split("pid ")
        .filter_map(|part| {
            let (pid, rest) = part.split_once(" (")?;
            let (named, _) = rest.split_once(')')?;
            named.ends_with(command).then(|| pid.parse().ok()).flatten()
        })
        .collect()
}

/// Whether `pid` is a process running `sleep SECONDS`.
fn is_sleep(pid: i32, seconds: &str) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .is_ok_and(|cmdline| cmdline == format!("sleep\0{seconds}\0").as_bytes())
}

#[test]
fn what_the_command_leaves_running_is_named_and_ended() {
    // One sleep in a session of its own, one in the command's group; the command exits
    // at once.
    let script = "(setsid sleep 3701.25 &); sleep 3701.5 & exit 0";
    let (code, _, err) = run(&["--no-gpu", "--grace", "1s", "--", "sh", "-c", script]);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("the command left 2 process(es) running"),
        "{err}"
    );
    let pids: Vec<i32> = ["sleep 3701.25", "sleep 3701.5"]
        .iter()
        .flat_map(|command| left_running(&err, command))
        .collect();
    assert_eq!(pids.len(), 2, "both are named: {err}");
    for (pid, seconds) in pids.iter().zip(["3701.25", "3701.5"]) {
        assert!(
            !is_sleep(*pid, seconds),
            "pid {pid} was left running: {err}"
        );
    }
}

#[test]
fn leave_orphans_leaves_them_running_and_names_them() {
    // Its output goes elsewhere: left running, it must not hold tfwatch's stderr open.
    let script = "(setsid sleep 3702.25 >/dev/null 2>&1 </dev/null &); exit 0";
    let (code, _, err) = run(&["--no-gpu", "--leave-orphans", "--", "sh", "-c", script]);
    let pids = left_running(&err, "sleep 3702.25");
    // Ended here, by the pid tfwatch named: the test started it.
    let end = |pids: &[i32]| {
        for &pid in pids {
            if is_sleep(pid, "3702.25") {
                // SAFETY: kill(2) on the sleep this test's command started.
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                }
            }
        }
    };
    // Named maybe before `setsid` exec'd the sleep: the same pid, soon the sleep.
    let alive = pids.iter().all(|&pid| {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !is_sleep(pid, "3702.25")
            && std::path::Path::new(&format!("/proc/{pid}")).exists()
            && std::time::Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(20));
        }
        is_sleep(pid, "3702.25")
    });
    end(&pids);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("--leave-orphans: leaving them"), "{err}");
    assert_eq!(pids.len(), 1, "{err}");
    assert!(alive, "--leave-orphans left it running");
}

#[test]
fn a_report_that_cannot_be_written_is_said_before_the_exit_event_which_says_125() {
    let (code, _, err) = run(&["--no-gpu", "--json", "--report", "/dev/full", "--", "true"]);
    assert_eq!(code, 125, "{err}");
    let events: Vec<Value> = err
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let last = events.last().unwrap();
    assert_eq!(last["type"], "exit", "{err}");
    assert_eq!(last["exit_code"], 125, "{err}");
    assert_eq!(last["command_exit_code"], 0, "{err}");
    let message = last["message"].as_str().unwrap();
    assert!(message.ends_with("tfwatch exit 125"), "{message}");
    assert!(message.contains("/dev/full"), "{message}");
    let note = events
        .iter()
        .find(|e| e["type"] == "message")
        .unwrap_or_else(|| panic!("the failure as a message event: {err}"));
    assert!(
        note["message"]
            .as_str()
            .unwrap()
            .contains("cannot write the report /dev/full"),
        "{note}"
    );
    // Without --json, the same code and the same words.
    let (code, _, err) = run(&["--no-gpu", "--report", "/dev/full", "--", "true"]);
    assert_eq!(code, 125, "{err}");
    assert!(err.trim_end().ends_with("tfwatch exit 125"), "{err}");
}

/// `tfwatch run ARGS` with its stderr on /dev/full (every write fails, as on a full
/// disk), to completion with a deadline; returns the exit code and the report.
fn run_with_full_stderr(args: &[&str], report: &std::path::Path) -> (i32, Value) {
    let mut all = vec!["run", "--no-gpu", "--report", report.to_str().unwrap()];
    all.extend_from_slice(args);
    let mut command = tfwatch(&all);
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .expect("/dev/full");
    use std::os::unix::process::CommandExt;
    command.process_group(0).stdout(Stdio::null()).stderr(full);
    // Ended with its group on drop, should the wait below fail.
    let mut guard = ChildGuard {
        child: command.spawn().expect("tfwatch starts"),
    };
    let status = wait_for("tfwatch run to end", Duration::from_secs(120), || {
        guard.child.try_wait().ok().flatten()
    });
    let report: Value = serde_json::from_slice(&std::fs::read(report).expect("the report"))
        .expect("the report is JSON");
    (status.code().unwrap_or(-1), report)
}

#[test]
fn stderr_that_cannot_be_written_makes_125_and_the_report_says_why() {
    let dir = temp_dir("full-stderr");
    let report = dir.join("report.json");
    let (code, report) = run_with_full_stderr(&["--json", "--", "sleep", "1.5"], &report);
    assert_eq!(code, 125, "{report:#}");
    assert_eq!(report["exit_code"], 125, "{report:#}");
    assert_eq!(report["outcome"], "passed", "{report:#}");
    assert_eq!(report["command_exit_code"], 0, "{report:#}");
    let errors = report["errors"].as_array().expect("the errors");
    assert!(
        errors.len() == 1
            && errors[0]
                .as_str()
                .unwrap()
                .contains("No space left on device"),
        "{errors:?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_hang_is_still_gated_and_ended_when_stderr_cannot_be_written() {
    let dir = temp_dir("full-stderr-hang");
    let report = dir.join("report.json");
    let mut args = vec!["--hang-after", "2s", "--interval", "500ms", "--grace", "1s"];
    args.extend(workload_args(&[
        "--scenario",
        "deadlock",
        "--duration",
        "60s",
    ]));
    let (code, report) = run_with_full_stderr(&args, &report);
    // The hang was found, the diagnosis taken and the command ended, although not one
    // line reached stderr: 125 says so, the report says what was found.
    assert_eq!(code, 125, "{report:#}");
    assert_eq!(report["outcome"], "hang-detected", "{report:#}");
    assert!(report["diagnosis"].is_object(), "{report:#}");
    assert!(
        report["command_exit_code"]
            .as_i64()
            .is_some_and(|c| c > 128),
        "ended by a signal: {report:#}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn min_severity_leaves_info_out_of_stderr_counts_it_and_the_report_keeps_it() {
    let dir = temp_dir("min-severity");
    // A rule that fires on the first sample, at info: an alert every run has.
    let rules = dir.join("info.toml");
    std::fs::write(
        &rules,
        "[[rule]]\nname = \"always-info\"\nmetric = \"processes\"\nop = \">=\"\nthreshold = 1\nseverity = \"info\"\nmessage = \"{value} process(es)\"\n",
    )
    .unwrap();
    let report = dir.join("report.json");
    let args = |min: &'static str| {
        vec![
            "--no-gpu".to_string(),
            "--interval".into(),
            "200ms".into(),
            "--rules".into(),
            rules.to_string_lossy().into_owned(),
            "--min-severity".into(),
            min.into(),
            "--report".into(),
            report.to_string_lossy().into_owned(),
            "--".into(),
            "sleep".into(),
            "1.5".into(),
        ]
    };
    let shown = args("info");
    let (code, _, err) = run(&shown.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("ALERT") && err.contains("always-info"),
        "{err}"
    );
    assert!(!err.contains("not shown"), "{err}");
    let hidden = args("warning");
    let (code, _, err) = run(&hidden.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(code, 0, "{err}");
    assert!(!err.contains("always-info"), "{err}");
    assert!(
        err.contains("1 finding(s) and alert(s) below warning not shown (--min-severity)"),
        "{err}"
    );
    let report: Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    assert!(
        report["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["rule"] == "always-info"),
        "the report keeps it: {report:#}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_bare_duration_is_seconds() {
    // --timeout 1 is one second: a 30 s sleep times out (124) long before its end.
    let (code, _, err) = run(&[
        "--no-gpu",
        "--timeout",
        "1",
        "--grace",
        "1",
        "--",
        "sleep",
        "30",
    ]);
    assert_eq!(code, 124, "{err}");
    assert!(err.contains("timed out"), "{err}");
}
