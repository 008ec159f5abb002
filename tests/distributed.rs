//! Real `torch.distributed` jobs on the gloo backend (CPU), launched by hand
//! (`src/workload/frameworks/torch_gloo.py` without RANK starts its ranks with RANK,
//! WORLD_SIZE, MASTER_ADDR and MASTER_PORT set) and by torchrun: a collective mismatch, a straggler, a healthy job and one that
//! finishes. Each test prints a reason and passes where torch cannot be imported, and
//! fails there where `TFWATCH_REQUIRE` names `torch` (as `.ci/run` does, which installs
//! it); the same detector and verdict are covered by the unit tests of
//! `detect::distributed` on synthetic timelines and stacks.

use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use serde_json::Value;

use crate::frameworks::script;
use crate::support::{ChildGuard, Lines, tfwatch};

const HANG: i32 = 122;
/// Importing torch and meeting the peers takes tens of seconds on a loaded two-core
/// machine; the hang window comes after that.
const RUN_LIMIT: Duration = Duration::from_secs(400);

/// Why torch.distributed cannot be used here, if it cannot.
pub(crate) fn torch_missing() -> Option<&'static str> {
    static MISSING: OnceLock<Option<String>> = OnceLock::new();
    MISSING
        .get_or_init(|| {
            let out = Command::new("python3")
                .args([
                    "-c",
                    "import torch.distributed as d; assert d.is_available()",
                ])
                .output();
            match out {
                Ok(out) if out.status.success() => None,
                Ok(out) => Some(format!(
                    "torch.distributed is not importable: {}",
                    String::from_utf8_lossy(&out.stderr)
                        .lines()
                        .last()
                        .unwrap_or("no error text")
                )),
                Err(e) => Some(format!("python3 cannot be run: {e}")),
            }
        })
        .as_deref()
}

macro_rules! need_torch {
    ($test:expr) => {
        if let Some(reason) = torch_missing() {
            crate::support::skip("torch", format!("{}: {reason}", $test));
            return;
        }
    };
}

/// The 1-based line of torch_gloo.py that holds `marker` (so the tests do not hard-code
/// line numbers).
pub(crate) fn line_of(marker: &str) -> usize {
    let text = std::fs::read_to_string(script("torch_gloo.py")).unwrap();
    text.lines()
        .position(|l| l.contains(marker))
        .unwrap_or_else(|| panic!("no line with {marker:?} in torch_gloo.py"))
        + 1
}

/// A port nobody listens on now, for torchrun's rendezvous.
fn free_port() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port().to_string()
}

/// `tfwatch run --hang-after 5s --report R -- ARGS`: its exit code, stderr and report.
fn run(name: &str, command: &[&str]) -> (i32, String, Value) {
    let dir = std::env::temp_dir().join(format!("tfwatch-dist-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let report = dir.join("report.json");
    let report_arg = report.to_string_lossy().to_string();
    let mut all = vec![
        "run",
        "--no-gpu",
        "--hang-after",
        "5s",
        "--grace",
        "2s",
        "--timeout",
        "300s",
        "--report",
        &report_arg,
        "--",
    ];
    all.extend_from_slice(command);
    let mut guard = ChildGuard::spawn(tfwatch(&all));
    let stdout = Lines::new(guard.child.stdout.take().unwrap());
    let stderr = Lines::new(guard.child.stderr.take().unwrap());
    let _ = stdout.until("the job's stdout to close", RUN_LIMIT, |_| false);
    let err = stderr
        .until("tfwatch's stderr to close", RUN_LIMIT, |_| false)
        .join("\n");
    let code = guard.child.wait().unwrap().code().unwrap_or(-1);
    let text = std::fs::read_to_string(&report)
        .unwrap_or_else(|e| panic!("no report from {name} (exit {code}): {e}\n{err}"));
    let _ = std::fs::remove_dir_all(&dir);
    (code, err, serde_json::from_str(&text).unwrap())
}

fn diagnosis_findings(report: &Value) -> Vec<Value> {
    report["diagnosis"]["findings"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

#[test]
fn run_ends_a_collective_mismatch_and_names_each_ranks_collective_and_line() {
    need_torch!("run_ends_a_collective_mismatch_and_names_each_ranks_collective_and_line");
    let job = script("torch_gloo.py");
    let (code, err, report) = run("mismatch", &["python3", &job, "mismatch", "2"]);
    assert_eq!(code, HANG, "a mismatch is a hang:\n{err}");
    let findings = diagnosis_findings(&report);
    let first = &findings[0];
    assert_eq!(first["kind"], "distributed-hang", "{findings:#?}");
    let summary = first["summary"].as_str().unwrap();
    let all_reduce = line_of("the last rank skips this one");
    let barrier = all_reduce + 1;
    assert!(
        summary.contains("collective mismatch")
            && summary.contains("rank 0/2 (pid ")
            && summary.contains(&format!(
                "in all_reduce at {}:{all_reduce} in rank_main",
                script("torch_gloo.py")
            ))
            && summary.contains(&format!(
                "in barrier at {}:{barrier} in rank_main",
                script("torch_gloo.py")
            )),
        "{summary}"
    );
    assert!(
        err.contains("collective mismatch"),
        "the text diagnosis says it too:\n{err}"
    );
}

#[test]
fn run_under_torchrun_names_the_straggler_and_where_it_is() {
    need_torch!("run_under_torchrun_names_the_straggler_and_where_it_is");
    let port = free_port();
    let master_port = format!("--master-port={port}");
    let collective = script("torch_gloo.py");
    let (code, err, report) = run(
        "straggler",
        &[
            "python3",
            "-m",
            "torch.distributed.run",
            "--nproc-per-node",
            "2",
            &master_port,
            &collective,
            "straggler",
        ],
    );
    assert_eq!(code, HANG, "{err}");
    let findings = diagnosis_findings(&report);
    let first = &findings[0];
    assert_eq!(first["kind"], "distributed-hang", "{findings:#?}");
    let summary = first["summary"].as_str().unwrap();
    let sleep = line_of("the straggler, still");
    assert!(
        summary.contains(&format!(
            "straggler: rank 1/2 (pid {}) is blocked outside any collective at {collective}:{sleep} in rank_main",
            first["pids"][1]
        )),
        "{summary}"
    );
    assert!(
        first["evidence"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e.as_str().unwrap().starts_with("job run ")),
        "torchrun's ranks are one job by their run id: {first:#}"
    );
}

/// The launcher's rank processes, once `count` of them printed "ready".
fn ready_job(world: usize, mode: &str) -> (ChildGuard, Lines) {
    let mut command = Command::new("python3");
    command
        .args([script("torch_gloo.py"), mode.to_string(), world.to_string()])
        .env("PYTHONUNBUFFERED", "1");
    let mut job = ChildGuard::spawn(command);
    let out = Lines::new(job.child.stdout.take().unwrap());
    let mut ready = 0;
    out.until("every rank to be ready", RUN_LIMIT, |line| {
        ready += line.matches("ready ").count();
        ready == world
    });
    (job, out)
}

/// `attach PID --json --hang-after 5s` until a finding of `kind` (or the duration ends):
/// every finding line seen.
fn attach_findings(pid: i32, duration: &str, stop_at: Option<&str>) -> Vec<Value> {
    let mut watch = ChildGuard::spawn(tfwatch(&[
        "attach",
        &pid.to_string(),
        "--json",
        "--no-gpu",
        "--hang-after",
        "5s",
        "--duration",
        duration,
    ]));
    let lines = Lines::new(watch.child.stdout.take().unwrap());
    let mut findings = Vec::new();
    lines.until("the watch to end", RUN_LIMIT, |line| {
        let Ok(event) = serde_json::from_str::<Value>(line) else {
            return false;
        };
        if event["type"] == "finding" {
            let stop = stop_at.is_some_and(|kind| event["kind"] == kind);
            findings.push(event);
            return stop;
        }
        false
    });
    findings
}

#[test]
fn attach_sees_four_ranks_of_a_job_hang_where_their_sockets_look_idle() {
    need_torch!("attach_sees_four_ranks_of_a_job_hang_where_their_sockets_look_idle");
    let (job, _out) = ready_job(4, "mismatch");
    let findings = attach_findings(job.pid(), "60s", Some("distributed-hang"));
    let hang = findings
        .iter()
        .find(|f| f["kind"] == "distributed-hang")
        .unwrap_or_else(|| panic!("no distributed-hang in 60 s: {findings:#?}"));
    assert_eq!(hang["severity"], "error");
    assert_eq!(hang["metrics"]["ranks_watched"], 4.0, "{hang:#}");
    let evidence: Vec<&str> = hang["evidence"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for rank in 0..4 {
        assert!(
            evidence
                .iter()
                .any(|e| e.starts_with(&format!("rank {rank}/4 pid ")) && e.contains("no progress")),
            "{evidence:#?}"
        );
    }
}

#[test]
fn a_rank_watched_alone_says_its_peers_are_outside_the_watch() {
    need_torch!("a_rank_watched_alone_says_its_peers_are_outside_the_watch");
    let (job, _out) = ready_job(2, "mismatch");
    let children =
        std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", job.pid())).unwrap();
    let rank0 = children
        .split_whitespace()
        .find(|pid| {
            std::fs::read(format!("/proc/{pid}/environ"))
                .is_ok_and(|env| env.split(|&b| b == 0).any(|e| e == b"RANK=0"))
        })
        .expect("rank 0 among the launcher's children")
        .parse::<i32>()
        .unwrap();
    let findings = attach_findings(rank0, "60s", Some("distributed-hang"));
    let hang = findings
        .iter()
        .find(|f| f["kind"] == "distributed-hang")
        .unwrap_or_else(|| panic!("no distributed-hang in 60 s: {findings:#?}"));
    assert!(
        hang["evidence"].as_array().unwrap().iter().any(|e| e
            .as_str()
            .unwrap()
            .starts_with("WORLD_SIZE is 2 but 1 rank(s) are watched")),
        "{hang:#}"
    );
}

#[test]
fn a_healthy_job_raises_nothing_of_warning_or_above() {
    need_torch!("a_healthy_job_raises_nothing_of_warning_or_above");
    let (job, _out) = ready_job(2, "healthy");
    let findings = attach_findings(job.pid(), "15s", None);
    let loud: Vec<&Value> = findings
        .iter()
        .filter(|f| f["severity"] != "info")
        .collect();
    assert!(loud.is_empty(), "a healthy job raised {loud:#?}");
}

#[test]
fn the_fixed_job_finishes_under_run_and_passes() {
    need_torch!("the_fixed_job_finishes_under_run_and_passes");
    let job = script("torch_gloo.py");
    let (code, err, report) = run("fixed", &["python3", &job, "fixed", "2"]);
    assert_eq!(code, 0, "{err}");
    let hangs: Vec<Value> = report["findings"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|f| f["kind"] == "distributed-hang" || f["kind"] == "straggler")
        .collect();
    assert!(hangs.is_empty(), "{hangs:#?}");
}

/// `snapshot PID --stacks` of `pid` as JSON, retried until a finding of `kind` is in it
/// (the ranks may still be on their way into their collectives) or the deadline passes.
fn snapshot_until(pid: i32, kind: &str, deadline: Duration) -> (Value, Option<Value>) {
    let start = std::time::Instant::now();
    loop {
        let out = crate::support::tfwatch_output(&[
            "snapshot",
            &pid.to_string(),
            "--stacks",
            "--no-gpu",
            "--window",
            "1s",
            "--format",
            "json",
        ]);
        assert!(
            out.status.success(),
            "snapshot failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let report: Value = serde_json::from_slice(&out.stdout).expect("a JSON report");
        let found = report["findings"]
            .as_array()
            .and_then(|f| f.iter().find(|f| f["kind"] == kind).cloned());
        if found.is_some() || start.elapsed() > deadline {
            return (report, found);
        }
    }
}

#[test]
fn snapshot_with_stacks_gives_the_cross_rank_verdict_of_a_hung_job() {
    need_torch!("snapshot_with_stacks_gives_the_cross_rank_verdict_of_a_hung_job");
    let (job, _out) = ready_job(2, "mismatch");
    let (report, found) = snapshot_until(job.pid(), "distributed-hang", Duration::from_secs(90));
    let hang = found.unwrap_or_else(|| {
        panic!(
            "no distributed-hang in the snapshots for 90 s: {:#}",
            report["findings"]
        )
    });
    let script = script("torch_gloo.py");
    let all_reduce = line_of("the last rank skips this one");
    let summary = hang["summary"].as_str().unwrap();
    assert!(
        summary.contains("snapshot window: collective mismatch")
            && summary.contains(&format!(
                "in all_reduce at {script}:{all_reduce} in rank_main"
            ))
            && summary.contains(&format!(
                "in barrier at {script}:{} in rank_main",
                all_reduce + 1
            )),
        "{summary}"
    );
    assert_eq!(
        hang["severity"], "warning",
        "one window is an observation, not a hang: {hang:#}"
    );
    let pids: Vec<i64> = hang["pids"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_i64)
        .collect();
    assert_eq!(pids.len(), 2, "{hang:#}");
    let evidence: Vec<&str> = hang["evidence"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for (rank, pid) in pids.iter().enumerate() {
        assert!(
            evidence
                .iter()
                .any(|e| e.starts_with(&format!("rank {rank}/2 (pid {pid}): waits in "))),
            "{evidence:#?}"
        );
    }
    assert!(
        evidence
            .iter()
            .any(|e| e.contains("not over a hang window") && e.contains("--hang-after")),
        "the snapshot says what it cannot decide: {evidence:#?}"
    );
    assert!(
        hang["remedy"]
            .as_str()
            .unwrap()
            .starts_with("Every rank must call"),
        "{hang:#}"
    );
    // Each rank's process row carries its rank.
    for (rank, pid) in pids.iter().enumerate() {
        let row = report["processes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["pid"].as_i64() == Some(*pid))
            .unwrap_or_else(|| panic!("no process {pid}"));
        assert_eq!(row["rank"], format!("rank {rank}/2"));
    }
    // The text report says the same.
    let text = crate::support::tfwatch_output(&[
        "snapshot",
        &job.pid().to_string(),
        "--stacks",
        "--no-gpu",
        "--window",
        "1s",
    ]);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains("[warning] distributed-hang: distributed job: 2 of 2 rank(s)")
            && text.contains("collective mismatch"),
        "{text}"
    );
}

#[test]
fn attach_with_listen_exports_each_ranks_collective_and_line() {
    need_torch!("attach_with_listen_exports_each_ranks_collective_and_line");
    let (job, _out) = ready_job(2, "mismatch");
    let (_attach, _output, url) = crate::prometheus::listening(tfwatch(&[
        "attach",
        &job.pid().to_string(),
        "--no-tui",
        "--no-gpu",
        "--listen",
        "127.0.0.1:0",
    ]));
    // Each rank's series once its stacks were taken (it stayed still 10 s, long before
    // the default hang window ends and any hang's stacks): in a collective, which one,
    // and the line that called it.
    let ranks = crate::support::wait_for(
        "both ranks' series to name their collective",
        Duration::from_secs(60),
        || {
            let body = crate::prometheus::http_get(&url)?;
            let ranks: Vec<String> = body
                .lines()
                .filter(|l| {
                    l.starts_with("tfwatch_rank_info{") && l.contains("state=\"collective\"")
                })
                .map(str::to_string)
                .collect();
            (ranks.len() == 2).then_some(ranks)
        },
    );
    let rank = |n: u32| {
        ranks
            .iter()
            .find(|l| l.contains(&format!(",rank=\"{n}\",")))
            .unwrap_or_else(|| panic!("rank {n} in {ranks:#?}"))
    };
    assert!(
        rank(0).contains("collective=\"all_reduce\"")
            && rank(0).contains(&format!(
                "torch_gloo.py:{}",
                line_of("the last rank skips this one")
            ))
            && rank(1).contains("collective=\"barrier\"")
            && rank(1).contains(&format!("torch_gloo.py:{}", line_of("dist.barrier()"))),
        "{ranks:#?}"
    );
}
