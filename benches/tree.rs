//! Sampling cost at seed scale: a live tree of 300 processes × 63 sleeping threads
//! (18,901 threads, `benches/support/sleeping_tree.c`, compiled with gcc), watched by
//! the release binary, next to `ps -eLf` over the same tree in the same run:
//!
//! - `tfwatch attach --json --duration 30s ROOT` (1 Hz): CPU from `wait4`, peak RSS, and
//!   every sample's duration from its `sample` lines;
//! - `tfwatch node --json --duration 30s` on the machine holding the tree;
//! - how soon `tfwatch node --hang-after 3s` finds a deadlocked and an oversubscribed job
//!   started beside the tree;
//! - `tfwatch attach` of one 1,000-thread process over 30 s;
//! - `ps -eLf`, a few rounds, CPU from `wait4`.
//!
//! Needs `cargo build --release --bin tfwatch` first and gcc. Run:
//! `cargo bench --bench tree`; `TFWATCH_TREE` = "PROCESSES×THREADS" picks the size
//! (default 300x63), `TFWATCH_BENCH_SECONDS` the watch length (default 30). The figures
//! are CPU time, not wall time, so criterion is not used. Each line says whether the
//! issue's target is met.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Instant;

mod support;

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_string())
}

/// The running tree: killed (SIGTERM to the root, which kills its children by pid) and
/// reaped on drop.
struct Tree {
    child: Child,
    pids: Vec<i32>,
}

impl Tree {
    fn start(processes: usize, threads: usize) -> Tree {
        let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/support/sleeping_tree.c");
        let binary = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/sleeping_tree");
        let status = Command::new("gcc")
            .args(["-O2", "-pthread", "-o"])
            .arg(&binary)
            .arg(&source)
            .status()
            .expect("gcc runs");
        assert!(status.success(), "gcc failed");
        // Under `sh` (a job boundary), so `tfwatch node` sees the tree as a job of its
        // own rather than part of the job of the bench's ancestors.
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(format!("{} {processes} {threads}; true", binary.display()))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("the tree starts");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("the ready line");
        let pids: Vec<i32> = line
            .split_whitespace()
            .skip(1)
            .filter_map(|p| p.parse().ok())
            .collect();
        assert_eq!(pids.len(), processes + 1, "tree did not start: {line:?}");
        Tree { child, pids }
    }
}

impl Drop for Tree {
    fn drop(&mut self) {
        // SAFETY: signals the root this bench started (the tree under its sh), by pid.
        unsafe {
            libc::kill(self.pids[0], libc::SIGTERM);
        }
        if let Some(stdin) = self.child.stdin.as_mut() {
            let _ = stdin.flush();
        }
        let _ = self.child.wait();
    }
}

struct Run {
    cpu_seconds: f64,
    wall_seconds: f64,
    max_rss_mb: f64,
    stdout: String,
}

fn run(command: &mut Command) -> Run {
    let started = Instant::now();
    let out = tempfile_path();
    let file = std::fs::File::create(&out).expect("output file");
    let child = command
        .stdout(file)
        .stderr(Stdio::null())
        .spawn()
        .expect("starts");
    let pid = child.id() as i32;
    let mut status = 0;
    // SAFETY: reaps the child spawned above by its pid; wait4 fills the zeroed rusage.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        assert_eq!(libc::wait4(pid, &mut status, 0, &mut usage), pid, "wait4");
        usage
    };
    std::mem::forget(child);
    let status = std::process::ExitStatus::from_raw(status);
    assert!(status.success(), "{command:?}: {status}");
    let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    let stdout = std::fs::read_to_string(&out).unwrap_or_default();
    let _ = std::fs::remove_file(&out);
    Run {
        cpu_seconds: seconds(usage.ru_utime) + seconds(usage.ru_stime),
        wall_seconds: started.elapsed().as_secs_f64(),
        max_rss_mb: usage.ru_maxrss as f64 / 1024.0,
        stdout,
    }
}

fn tempfile_path() -> PathBuf {
    std::env::temp_dir().join(format!(
        "tfwatch-tree-bench-{}-{}",
        std::process::id(),
        Instant::now().elapsed().as_nanos()
    ))
}

/// Durations of the `sample` lines of an attach run.
fn sample_durations(stdout: &str) -> Vec<f64> {
    stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["type"] == "sample")
        .filter_map(|v| v["sample_duration_seconds"].as_f64())
        .collect()
}

/// `tfwatch node --hang-after 3s` on the machine holding the tree, with a deadlocked
/// and an oversubscribed job started beside it: how long after each job appeared its
/// finding came (target: within 5 s of the 3 s hang window).
fn detection(binary: &Path) {
    let hang_window = 3.0;
    // Each under `sh` (a job boundary): a job of its own, named by the workload.
    let job = |scenario: &str| {
        Command::new("sh")
            .arg("-c")
            .arg(format!(
                "{} run-workload --scenario {scenario} --duration 40s; true",
                binary.display()
            ))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("the workload starts")
    };
    // The workload's pid: the child of its sh.
    let workload_of = |sh: u32| {
        let deadline = Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let children = std::fs::read_to_string(format!("/proc/{sh}/task/{sh}/children"))
                .unwrap_or_default();
            if let Some(pid) = children.split_whitespace().next() {
                return pid.to_string();
            }
            assert!(
                Instant::now() < deadline,
                "the workload under sh {sh} did not start"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    };
    let mut node = Command::new(binary)
        .args(["node", "--json", "--hang-after", "3s", "--duration", "25s"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("tfwatch node starts");
    let stdout = node.stdout.take().expect("stdout");
    // The node's first scan (the tree is large) before the jobs start.
    std::thread::sleep(std::time::Duration::from_secs(3));
    let mut jobs = [
        ("deadlock", job("deadlock")),
        ("oversubscription", job("oversubscribe")),
    ];
    let workloads: Vec<String> = jobs.iter().map(|(_, sh)| workload_of(sh.id())).collect();
    let pids: Vec<(&str, String)> = jobs
        .iter()
        .zip(&workloads)
        .map(|((kind, _), pid)| (*kind, format!("tree/{pid}-")))
        .collect();
    let mut started: Vec<Option<f64>> = vec![None; pids.len()];
    let mut found: Vec<Option<f64>> = vec![None; pids.len()];
    for line in BufReader::new(stdout).lines().map_while(Result::ok) {
        let Ok(value) = serde_json::from_str::<serde_json::Value>(&line) else {
            continue;
        };
        let job = value["job"].as_str().unwrap_or_default();
        let at = value["elapsed_seconds"].as_f64().unwrap_or_default();
        for (i, (kind, prefix)) in pids.iter().enumerate() {
            if !job.starts_with(prefix.as_str()) {
                continue;
            }
            if value["type"] == "job-started" {
                started[i].get_or_insert(at);
            }
            let finding = value["type"] == "finding" && value["kind"] == *kind;
            if finding && found[i].is_none() {
                found[i] = Some(at);
            }
        }
        if found.iter().all(Option::is_some) {
            break;
        }
    }
    let _ = node.kill();
    let _ = node.wait();
    for ((_, sh), pid) in jobs.iter_mut().zip(&workloads) {
        if let Ok(pid) = pid.parse::<i32>() {
            // SAFETY: kill(2) of the workload this bench started, by its pid.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
        }
        let _ = sh.wait();
    }
    for (i, (kind, _)) in pids.iter().enumerate() {
        match (started[i], found[i]) {
            (Some(start), Some(at)) => {
                let after = at - start;
                println!(
                    "node detection: {kind} found {after:.1} s after its job appeared ({}: ≤ {:.0} s, the {hang_window:.0} s hang window + 5 s)",
                    verdict(after <= hang_window + 5.0),
                    hang_window + 5.0
                );
            }
            _ => println!("node detection: {kind} NOT found within the 25 s watch (MISSED)"),
        }
    }
}

fn verdict(met: bool) -> &'static str {
    if met { "met" } else { "MISSED" }
}

fn main() {
    let binary = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/release/tfwatch");
    assert!(
        binary.exists(),
        "build it first: cargo build --release --bin tfwatch"
    );
    let size = env_or("TFWATCH_TREE", "300x63");
    let (processes, threads) = size
        .split_once(['x', '×'])
        .and_then(|(p, t)| Some((p.parse().ok()?, t.parse().ok()?)))
        .expect("TFWATCH_TREE is PROCESSESxTHREADS");
    let seconds: u64 = env_or("TFWATCH_BENCH_SECONDS", "30")
        .parse()
        .expect("seconds");
    let duration = format!("{seconds}s");
    println!(
        "machine: {} CPUs; {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );

    let tree = Tree::start(processes, threads);
    let total_threads = processes * threads + 1;
    println!(
        "tree: {processes} processes × {threads} threads = {total_threads} threads, root {}",
        tree.pids[0]
    );

    let ps_rounds = 3;
    let ps: f64 = (0..ps_rounds)
        .map(|_| run(Command::new("ps").arg("-eLf")).cpu_seconds)
        .sum::<f64>()
        / f64::from(ps_rounds);
    println!("ps -eLf: {:.3} s CPU per run (mean of {ps_rounds})", ps);

    let attach = run(Command::new(&binary).args([
        "attach",
        "--json",
        "--no-gpu",
        "--duration",
        &duration,
        &tree.pids[0].to_string(),
    ]));
    let durations = sample_durations(&attach.stdout);
    let slowest = durations.iter().copied().fold(0.0, f64::max);
    let share = 100.0 * attach.cpu_seconds / seconds as f64;
    println!(
        "attach ROOT: {:.2} s CPU in {:.1} s = {share:.1} % of a core ({}: ≤ 3 %), {:.2}× ps -eLf; {} samples, slowest {:.3} s ({}: < 0.5 s); peak RSS {:.0} MB ({}: ≤ 64 MB)",
        attach.cpu_seconds,
        attach.wall_seconds,
        verdict(share <= 3.0),
        attach.cpu_seconds / ps,
        durations.len(),
        slowest,
        verdict(slowest < 0.5),
        attach.max_rss_mb,
        verdict(attach.max_rss_mb <= 64.0),
    );
    println!(
        "  sample durations: {:?}",
        durations
            .iter()
            .map(|d| (d * 1000.0).round() / 1000.0)
            .collect::<Vec<_>>()
    );

    let node = run(Command::new(&binary).args(["node", "--json", "--duration", &duration]));
    // Jobs that end and start again while nothing ended say the scan lost them.
    let count = |kind: &str| {
        node.stdout
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v["type"] == kind)
            .count()
    };
    println!(
        "  node: {} job-started and {} job-ended lines",
        count("job-started"),
        count("job-ended")
    );
    let share = 100.0 * node.cpu_seconds / seconds as f64;
    println!(
        "node: {:.2} s CPU in {:.1} s = {share:.1} % of a core ({}: ≤ 5 %); peak RSS {:.0} MB",
        node.cpu_seconds,
        node.wall_seconds,
        verdict(share <= 5.0),
        node.max_rss_mb
    );
    detection(&binary);
    drop(tree);

    let one = support::sleeping_threads(1_000);
    one.wait_until_asleep(1_000);
    let attach = run(Command::new(&binary).args([
        "attach",
        "--json",
        "--no-gpu",
        "--duration",
        &duration,
        &one.pid.to_string(),
    ]));
    let share = 100.0 * attach.cpu_seconds / seconds as f64;
    println!(
        "attach of a 1,000-thread process: {:.3} s CPU = {share:.2} % of a core ({}: ≤ 1 %)",
        attach.cpu_seconds,
        verdict(share <= 1.0)
    );
}
