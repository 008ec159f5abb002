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
