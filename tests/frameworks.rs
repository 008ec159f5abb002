//! Real frameworks under `tfwatch run`: the scripts under `src/workload/frameworks/`
//! (which `run-workload --verify` runs too) hang the ways ML jobs do (a fork after the
//! framework's pools started, DataLoader workers forked while a lock was held, a
//! `tf.py_function` waiting on its caller's lock), oversubscribe the CPUs, or run
//! healthy with the fixes. Each script prints
//! `skip: ...` and exits 77 where its framework cannot be imported; the test then prints
//! the reason and passes, or fails where `TFWATCH_REQUIRE` names the framework
//! (`tensorflow`, `torch`). An import of TensorFlow takes several seconds, so there is
//! one run per case.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;

use crate::support::{ChildGuard, Lines, tfwatch};

const HANG: i32 = 122;
/// `run`'s code when the gate (`--fail-on`) failed.
const GATE: i32 = 120;
/// The scripts' exit code when their framework is not importable.
const SKIP: i32 = 77;
/// A TF import and a hang diagnosis on a loaded two-core machine take a minute or more.
const RUN_LIMIT: Duration = Duration::from_secs(400);

/// The path of a script of `src/workload/frameworks/`.
pub(crate) fn script(name: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("src/workload/frameworks")
        .join(name)
        .to_string_lossy()
        .to_string()
}

struct Ran {
    code: i32,
    out: String,
    err: String,
    report: Value,
}

/// `tfwatch run ARGS --report R -- python3 SCRIPT`; `None` (with the reason printed)
/// when the script says its framework is missing.
fn run_script(name: &str, args: &[&str]) -> Option<Ran> {
    run_script_with(name, &[], args)
}

/// [`run_script`] with arguments for the script.
fn run_script_with(name: &str, script_args: &[&str], args: &[&str]) -> Option<Ran> {
    let label = format!("{} {}", name, script_args.join(" "));
    let dir = std::env::temp_dir().join(format!(
        "tfwatch-frameworks-{}-{}-{}",
        name.trim_end_matches(".py"),
        script_args.join("-"),
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let report = dir.join("report.json");
    let report_arg = report.to_string_lossy().to_string();
    let path = script(name);
    let mut all = vec![
        "run",
        "--no-gpu",
        "--grace",
        "1s",
        "--timeout",
        "300s",
        "--report",
        &report_arg,
    ];
    all.extend_from_slice(args);
    all.extend(["--", "python3", path.as_str()]);
    all.extend_from_slice(script_args);
    let mut command = tfwatch(&all);
    command
        .env("TF_CPP_MIN_LOG_LEVEL", "3")
        .env("PYTHONUNBUFFERED", "1");
    let mut guard = ChildGuard::spawn(command);
    let stdout = Lines::new(guard.child.stdout.take().unwrap());
    let stderr = Lines::new(guard.child.stderr.take().unwrap());
    let out = stdout
        .until("the job's stdout to close", RUN_LIMIT, |_| false)
        .join("\n");
    let err = stderr
        .until("tfwatch's stderr to close", RUN_LIMIT, |_| false)
        .join("\n");
    let code = guard.child.wait().unwrap().code().unwrap_or(-1);
    if code == SKIP
        && let Some(reason) = out.lines().find(|l| l.starts_with("skip:"))
    {
        let framework = if label.starts_with("tf_") || label.contains(" tensorflow ") {
            "tensorflow"
        } else {
            "torch"
        };
        crate::support::skip(framework, format!("{label}: {reason}"));
        let _ = std::fs::remove_dir_all(&dir);
        return None;
    }
    let text = std::fs::read_to_string(&report)
        .unwrap_or_else(|e| panic!("no report from {label} (exit {code}): {e}\n{err}"));
    let report: Value = serde_json::from_str(&text).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    println!("{label}: exit {code}, findings {:?}", kinds(&report));
    Some(Ran {
        code,
        out,
        err,
        report,
    })
}

/// `kind (severity)` of each finding of the diagnosis, in its order.
fn kinds(report: &Value) -> Vec<String> {
    report["diagnosis"]["findings"]
        .as_array()
        .map(|findings| {
            findings
                .iter()
                .map(|f| format!("{} ({})", f["kind"], f["severity"]))
                .collect()
        })
        .unwrap_or_default()
}

fn finding_kinds(report: &Value) -> Vec<String> {
    report["diagnosis"]["findings"]
        .as_array()
        .map(|findings| {
            findings
                .iter()
                .filter_map(|f| f["kind"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// Findings and alerts of severity warning or above anywhere in the report.
fn warnings_or_worse(report: &Value) -> Vec<String> {
    let serious = |v: &Value| matches!(v["severity"].as_str(), Some("warning" | "error"));
    let mut seen = Vec::new();
    for key in ["findings", "alerts"] {
        for item in report[key].as_array().into_iter().flatten() {
            if serious(item) {
                seen.push(item.to_string());
            }
        }
    }
    for item in report["diagnosis"]["findings"]
        .as_array()
        .into_iter()
        .flatten()
    {
        if serious(item) {
            seen.push(item.to_string());
        }
    }
    seen
}

fn assert_fork_hang(name: &str) {
    let Some(ran) = run_script(name, &["--hang-after", "5s"]) else {
        return;
    };
    assert_eq!(ran.code, HANG, "{}\n{}", ran.out, ran.err);
    assert_eq!(ran.report["outcome"], "hang-detected");
    assert!(
        ran.out.contains("forked child"),
        "the script forked: {}",
        ran.out
    );
    let found = finding_kinds(&ran.report);
    assert!(
        found
            .iter()
            .any(|k| k == "fork-inherited-lock" || k == "no-progress"),
        "a fork-inherited-lock or no-progress finding: {found:?}\n{}",
        ran.err
    );
}

fn assert_healthy(name: &str) {
    assert_healthy_with(name, &[]);
}

fn assert_healthy_with(name: &str, script_args: &[&str]) {
    let Some(ran) = run_script_with(name, script_args, &["--fail-on", "warning"]) else {
        return;
    };
    assert_eq!(
        ran.code,
        0,
        "the script's own code, nothing of warning or above: {:?}\n{}\n{}",
        warnings_or_worse(&ran.report),
        ran.out,
        ran.err
    );
    assert!(
        warnings_or_worse(&ran.report).is_empty(),
        "{:?}",
        warnings_or_worse(&ran.report)
    );
}

/// Fork after TensorFlow's pools started, while a thread holds a lock the child takes.
#[test]
fn tensorflow_fork_after_pools_start_hangs_the_child() {
    assert_fork_hang("tf_fork_lock.py");
}

/// A `tf.py_function` callback waits on a lock its caller holds across the call.
#[test]
fn tensorflow_py_function_waiting_on_its_caller_is_a_hang() {
    let Some(ran) = run_script("tf_py_function_lock.py", &["--hang-after", "5s"]) else {
        return;
    };
    assert_eq!(ran.code, HANG, "{}\n{}", ran.out, ran.err);
    assert_eq!(ran.report["outcome"], "hang-detected");
    let found = finding_kinds(&ran.report);
    assert!(
        found
            .first()
            .is_some_and(|k| k == "no-progress" || k == "deadlock"),
        "the hang comes first in the diagnosis: {found:?}"
    );
    assert!(!ran.out.contains("step:"), "the call never returned");
}

/// The fixes (pools sized before import, spawn instead of fork, no lock held across
/// the call) and a small Keras training loop: nothing of severity warning or above.
#[test]
fn tensorflow_fixed_job_and_keras_training_raise_nothing() {
    assert_healthy("tf_healthy.py");
}

/// Fork after `torch.set_num_threads` started the intra-op pool.
#[test]
fn torch_fork_after_pool_start_hangs_the_child() {
    assert_fork_hang("torch_fork_lock.py");
}

/// A DataLoader with two spawned workers feeding a small training loop.
#[test]
fn torch_dataloader_with_workers_is_healthy() {
    assert_healthy("torch_dataloader_healthy.py");
}

/// DataLoader workers forked while a parent thread held the lock the dataset takes.
#[test]
fn torch_dataloader_workers_blocked_on_a_copied_lock_hang() {
    assert_fork_hang("torch_dataloader_fork_lock.py");
}

/// A framework pool of 3 × the usable CPUs, all busy: an observed oversubscription
/// (warning or above) that names the pool.
fn assert_oversubscribed(framework: &str) {
    let Some(ran) = run_script_with(
        "oversubscribe.py",
        &[framework, "broken", "8"],
        &["--fail-on", "warning"],
    ) else {
        return;
    };
    assert_eq!(ran.code, GATE, "{}\n{}", ran.out, ran.err);
    let all: Vec<&Value> = ["findings"]
        .iter()
        .flat_map(|k| ran.report[*k].as_array().into_iter().flatten())
        .chain(
            ran.report["diagnosis"]["findings"]
                .as_array()
                .into_iter()
                .flatten(),
        )
        .collect();
    let found = all
        .iter()
        .find(|f| f["kind"] == "oversubscription")
        .unwrap_or_else(|| panic!("no oversubscription in {all:#?}"));
    assert!(
        matches!(found["severity"].as_str(), Some("warning" | "error")),
        "{found:#}"
    );
}

#[test]
fn torch_pool_past_the_cpus_is_oversubscription() {
    assert_oversubscribed("torch");
}

#[test]
fn tensorflow_pool_past_the_cpus_is_oversubscription() {
    assert_oversubscribed("tensorflow");
}

/// torch.set_num_threads sized to the CPUs, the same through OMP_NUM_THREADS set in
/// os.environ before the import, and one spawned worker per CPU with
/// torch.set_num_threads(1): nothing of warning or above.
#[test]
fn torch_pools_fixed_the_seeds_ways_raise_nothing() {
    for variant in ["fixed-api", "fixed-env", "workers"] {
        assert_healthy_with("oversubscribe.py", &["torch", variant, "6"]);
    }
}

/// TF_NUM_INTRAOP_THREADS set in os.environ before the import: nothing of warning or
/// above.
#[test]
fn tensorflow_pool_sized_before_import_raises_nothing() {
    assert_healthy_with("oversubscribe.py", &["tensorflow", "fixed-env", "6"]);
}
