//! CPU cost of a full `snapshot --format json` of a 1,000-thread process against
//! `ps -L -o tid,stat,wchan,time` of the same process, measured in the same run:
//!
//! - `ps -L -o tid,stat,wchan,time -p PID`, a spawned command, its CPU from `wait4`;
//! - the library path of `snapshot --format json --window 0`: `take_snapshot` (window 0,
//!   no GPU) and `write_json` into a `Vec`, CPU from `getrusage(RUSAGE_THREAD)`, and
//!   its two halves (the samples and report, the JSON) apart;
//! - the release binary `target/release/tfwatch snapshot --format json --window 0
//!   --no-gpu PID` with its output to `/dev/null`, CPU from `wait4`, when it has been
//!   built (`cargo build --release --bin tfwatch`); it adds the process start.
//!
//! The methods take turns, round by round (a shared machine's busy spells fall on all
//! of them). The target is met when a full snapshot costs at most 1/1.5 of `ps`: the
//! table ends with the ratios of the library path and of the release binary (over the
//! sums, and the median of the rounds' ratios) and says whether each is met. Run: `cargo bench --bench snapshot`;
//! `TFWATCH_BENCH_THREADS` picks the size (default 1,000), `TFWATCH_BENCH_ROUNDS` the
//! rounds per method (default 30). Criterion is not used: the figure is CPU time, not
//! wall time.

use std::hint::black_box;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tfwatch::app::snapshot::take_snapshot;
use tfwatch::sink::report::write_json;
use tfwatch::source::proc::SamplerConfig;

mod support;

use support::{cpu_seconds, sleeping_threads};

/// The target met: `snapshot` uses this many times less CPU than `ps`.
const TARGET_RATIO: f64 = 1.5;

fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

/// Runs `command` to the end with its output discarded; returns its CPU milliseconds
/// (user + system, from `wait4`) and its wall milliseconds.
fn child_cpu(command: &mut Command) -> (f64, f64) {
    let started = Instant::now();
    let child = command
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("the command starts");
    let pid = child.id() as i32;
    let mut status = 0;
    // SAFETY: waits for (and reaps) the child spawned above, by its pid; wait4 writes
    // into the zeroed rusage passed by pointer.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        let reaped = libc::wait4(pid, &mut status, 0, &mut usage);
        assert_eq!(reaped, pid, "wait4");
        usage
    };
    let status = std::process::ExitStatus::from_raw(status);
    assert!(status.success(), "{command:?} failed: {status}");
    std::mem::forget(child);
    let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    (
        (seconds(usage.ru_utime) + seconds(usage.ru_stime)) * 1e3,
        started.elapsed().as_secs_f64() * 1e3,
    )
}

/// CPU and wall milliseconds of this thread for one call of `work`.
fn own_cpu_once(work: impl FnOnce() -> usize) -> (f64, f64) {
    let (before, _) = cpu_seconds();
    let started = Instant::now();
    black_box(work());
    let wall = started.elapsed().as_secs_f64();
    let (after, _) = cpu_seconds();
    ((after - before) * 1e3, wall * 1e3)
}

/// CPU and wall milliseconds of this thread per call of `work`, over `rounds` calls.
fn own_cpu(rounds: usize, mut work: impl FnMut() -> usize) -> (f64, f64) {
    black_box(work());
    let (mut cpu, mut wall) = (0.0, 0.0);
    for _ in 0..rounds {
        let (c, w) = own_cpu_once(&mut work);
        cpu += c;
        wall += w;
    }
    (cpu / rounds as f64, wall / rounds as f64)
}

/// Per-run CPU and wall milliseconds of one method, summed over the rounds.
#[derive(Default)]
struct Total {
    cpu_ms: f64,
    wall_ms: f64,
    /// This method's CPU in each round, for the per-round ratios.
    per_round: Vec<f64>,
}

impl Total {
    fn add(&mut self, (cpu, wall): (f64, f64)) {
        self.cpu_ms += cpu;
        self.wall_ms += wall;
        self.per_round.push(cpu);
    }

    fn row(&self, method: String) -> Row {
        let rounds = self.per_round.len().max(1) as f64;
        Row {
            method,
            cpu_ms: self.cpu_ms / rounds,
            wall_ms: self.wall_ms / rounds,
        }
    }
}

/// Prints `ps`'s CPU over `method`'s (the sums, and the median of the rounds) and
/// whether the target is met.
fn print_ratio(name: &str, ps: &Total, method: &Total) {
    let ratio = ps.cpu_ms / method.cpu_ms.max(1e-9);
    println!(
        "ps / snapshot ({name}) CPU: {ratio:.2}x, median of the rounds {:.2}x (target ≥ {TARGET_RATIO}x): {}",
        median_ratio(ps, method),
        if ratio >= TARGET_RATIO {
            "met"
        } else {
            "MISSED"
        }
    );
}

/// The median of `ps`'s CPU over `method`'s, round by round.
fn median_ratio(ps: &Total, method: &Total) -> f64 {
    let mut ratios: Vec<f64> = ps
        .per_round
        .iter()
        .zip(&method.per_round)
        .map(|(ps, m)| ps / m.max(1e-9))
        .collect();
    ratios.sort_by(f64::total_cmp);
    ratios.get(ratios.len() / 2).copied().unwrap_or(0.0)
}

fn config() -> SamplerConfig {
    SamplerConfig::default()
}

fn snapshot_json(pid: i32, out: &mut Vec<u8>) -> usize {
    out.clear();
    let report = take_snapshot(pid, config(), Duration::ZERO, false).expect("snapshot");
    write_json(&report, out).expect("json into a Vec");
    out.len()
}

struct Row {
    method: String,
    cpu_ms: f64,
    wall_ms: f64,
}

fn main() {
    // `cargo bench` passes `--bench`; other arguments (a criterion filter) are ignored.
    let threads = env_number("TFWATCH_BENCH_THREADS", 1_000);
    let rounds = env_number("TFWATCH_BENCH_ROUNDS", 30).max(1);
    let target = sleeping_threads(threads);
    target.wait_until_asleep(threads);
    let pid = target.pid;
    let binary = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/release/tfwatch");
    let binary = binary.exists().then_some(binary);
    let ps_command = || {
        let mut ps = Command::new("ps");
        ps.args(["-L", "-o", "tid,stat,wchan,time", "-p", &pid.to_string()]);
        ps
    };
    let binary_command = |binary: &PathBuf| {
        let mut snapshot = Command::new(binary);
        snapshot.args([
            "snapshot",
            "--format",
            "json",
            "--window",
            "0s",
            "--no-gpu",
            &pid.to_string(),
        ]);
        snapshot
    };

    // The methods take turns round by round, so that a busy spell of a shared machine
    // falls on all of them alike; one warm-up round first.
    let mut out = Vec::new();
    let (mut ps, mut library, mut release) = (Total::default(), Total::default(), Total::default());
    for round in 0..=rounds {
        let ps_run = child_cpu(&mut ps_command());
        let library_run = own_cpu_once(|| snapshot_json(pid, &mut out));
        let release_run = binary.as_ref().map(|b| child_cpu(&mut binary_command(b)));
        if round > 0 {
            ps.add(ps_run);
            library.add(library_run);
            if let Some(run) = release_run {
                release.add(run);
            }
        }
    }
    let json_bytes = out.len();
    let mut rows = vec![
        ps.row("ps -L -o tid,stat,wchan,time (child, wait4)".into()),
        library.row(format!(
            "snapshot --format json --window 0: take_snapshot + write_json ({json_bytes} bytes)"
        )),
    ];

    let (take_cpu, take_wall) = own_cpu(rounds, || {
        take_snapshot(pid, config(), Duration::ZERO, false)
            .expect("snapshot")
            .tree_threads
    });
    rows.push(Row {
        method: "  of which take_snapshot (one sample, diagnosis, report)".into(),
        cpu_ms: take_cpu,
        wall_ms: take_wall,
    });
    let report = take_snapshot(pid, config(), Duration::ZERO, false).expect("snapshot");
    let (json_cpu, json_wall) = own_cpu(rounds, || {
        out.clear();
        write_json(&report, &mut out).expect("json into a Vec");
        out.len()
    });
    rows.push(Row {
        method: "  of which write_json".into(),
        cpu_ms: json_cpu,
        wall_ms: json_wall,
    });
    if binary.is_some() {
        rows.push(
            release.row(
                "target/release/tfwatch snapshot --format json --window 0s --no-gpu (child, wait4)"
                    .into(),
            ),
        );
    }

    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!();
    println!(
        "machine: {cpus} CPUs (nproc), kernel {}; target: {threads} sleeping threads; {rounds} rounds each",
        kernel.trim()
    );
    println!("| method | CPU ms / run | wall ms / run |\n|---|---:|---:|");
    for row in &rows {
        println!(
            "| {} | {:.2} | {:.2} |",
            row.method, row.cpu_ms, row.wall_ms
        );
    }
    println!();
    print_ratio("library", &ps, &library);
    if binary.is_some() {
        print_ratio("release binary, process start included", &ps, &release);
    } else {
        println!(
            "(no target/release/tfwatch: `cargo build --release --bin tfwatch` adds the release binary's row)"
        );
    }
}
