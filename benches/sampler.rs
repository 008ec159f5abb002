//! Cost of reading every thread of a live process of 1,000 and of 10,000 sleeping
//! threads, by these methods, measured in the same run:
//!
//! - `ps -L -o tid,stat,wchan,time -p PID` (a spawned command; it reads every thread of
//!   the machine, so only one target runs at a time);
//! - the procfs crate's per-task API (`stat`, `schedstat`, `status`) plus `wchan`;
//! - plain open/read/close of `stat`, `schedstat`, `status`, `wchan` per thread;
//! - floors: files kept open and re-read with `pread` at offset 0, not parsed — the four
//!   files above, the five a full tfwatch sample reads of a sleeping thread (adding
//!   `syscall`),
//!   and the two of a steady-state sample;
//! - tfwatch's detail sample and its steady-state sample, as it runs (the files of a
//!   thread that has not run since they were read are carried, see
//!   `tfwatch::source::proc::task`), and a detail sample that carries nothing — what a
//!   process whose every thread runs between samples costs.
//!
//! Criterion measures wall time; a table of CPU time per sample (getrusage of the
//! sampling thread, or of the reaped `ps` children) is printed at the end, with the
//! machine it ran on. Run: `cargo bench --bench sampler`. To iterate on one part,
//! `TFWATCH_BENCH_THREADS=1000` picks the sizes and `TFWATCH_BENCH_ONLY=tfwatch` keeps
//! the methods whose label contains the text.
//!
//! The target process is forked while the bench has one thread; it starts its threads
//! with small stacks, each blocked in `park()`, and is killed by pid when done.

use std::fs::File;
use std::hint::black_box;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use criterion::Criterion;
use tfwatch::source::proc::{SampleTime, Sampler, SamplerConfig};

const SIZES: [usize; 2] = [1_000, 10_000];

/// The sizes to run: `TFWATCH_BENCH_THREADS` (comma-separated), else [`SIZES`].
fn sizes() -> Vec<usize> {
    match std::env::var("TFWATCH_BENCH_THREADS") {
        Ok(list) => list
            .split(',')
            .map(|n| {
                n.trim()
                    .parse()
                    .expect("TFWATCH_BENCH_THREADS: a list of thread counts")
            })
            .collect(),
        Err(_) => SIZES.to_vec(),
    }
}

/// Whether the method labelled `label` runs (`TFWATCH_BENCH_ONLY` filters by substring).
fn wanted(label: &str) -> bool {
    std::env::var("TFWATCH_BENCH_ONLY").map_or(true, |only| label.contains(&only))
}

mod support;

use support::{Target, cpu_seconds, sleeping_threads};

fn ps(pid: i32) -> usize {
    let output = Command::new("ps")
        .args(["-L", "-o", "tid,stat,wchan,time", "-p", &pid.to_string()])
        .output()
        .expect("ps runs");
    output.stdout.len()
}

fn procfs_per_task(pid: i32) -> usize {
    let process = procfs::process::Process::new(pid).expect("target exists");
    let mut read = 0;
    for task in process.tasks().expect("task list").flatten() {
        let (Ok(stat), Ok(sched), Ok(status)) = (task.stat(), task.schedstat(), task.status())
        else {
            continue;
        };
        let wchan = std::fs::read_to_string(format!("/proc/{pid}/task/{}/wchan", task.tid))
            .unwrap_or_default();
        black_box((
            stat.utime,
            sched.sum_exec_runtime,
            status.voluntary_ctxt_switches,
        ));
        read += wchan.len();
    }
    read
}

/// The files of the comparison: `stat`, `schedstat`, `status`, `wchan`.
const FILES: [&str; 4] = ["stat", "schedstat", "status", "wchan"];
/// The files a full tfwatch sample reads of a sleeping thread.
const FULL_FILES: [&str; 5] = ["stat", "schedstat", "status", "wchan", "syscall"];
/// The files a steady-state tfwatch sample reads per thread.
const STEADY_FILES: [&str; 2] = ["stat", "schedstat"];

fn open_read_close(target: &Target, buf: &mut [u8]) -> usize {
    // The task list is read each time, as a sampler without kept descriptors must.
    let mut read = 0;
    for tid in target.tids() {
        for name in FILES {
            let path = format!("/proc/{}/task/{tid}/{name}", target.pid);
            if let Ok(file) = File::open(path) {
                read += file.read_at(buf, 0).unwrap_or(0);
            }
        }
    }
    read
}

/// A floor: the given files of every thread kept open, re-read with pread, not parsed.
struct KeptFiles(Vec<File>);

impl KeptFiles {
    fn open(target: &Target, names: &[&str]) -> KeptFiles {
        let mut files = Vec::new();
        for tid in target.tids() {
            for name in names {
                if let Ok(file) = File::open(format!("/proc/{}/task/{tid}/{name}", target.pid)) {
                    files.push(file);
                }
            }
        }
        KeptFiles(files)
    }

    fn read(&self, buf: &mut [u8]) -> usize {
        self.0.iter().map(|f| f.read_at(buf, 0).unwrap_or(0)).sum()
    }
}

fn sampler(pid: i32, details_every: u32, carry_unchanged: bool) -> Sampler {
    let config = SamplerConfig {
        details_every,
        carry_unchanged,
        audit_every_seconds: f64::INFINITY,
        ..SamplerConfig::default()
    };
    Sampler::new(pid, config).expect("sampler attaches")
}

fn full_sample(sampler: &mut Sampler) -> usize {
    sampler.request_details();
    sampler
        .sample(SampleTime::default())
        .expect("sample")
        .thread_count()
}

fn steady_sample(sampler: &mut Sampler) -> usize {
    sampler
        .sample(SampleTime::default())
        .expect("sample")
        .thread_count()
}

/// Wall and CPU milliseconds per call of `work`, over `rounds` calls.
fn measure(rounds: u32, mut work: impl FnMut() -> usize) -> (f64, f64) {
    work();
    let (thread_before, children_before) = cpu_seconds();
    let started = Instant::now();
    for _ in 0..rounds {
        black_box(work());
    }
    let wall = started.elapsed().as_secs_f64();
    let (thread_after, children_after) = cpu_seconds();
    let cpu = (thread_after - thread_before) + (children_after - children_before);
    (
        wall * 1e3 / f64::from(rounds),
        cpu * 1e3 / f64::from(rounds),
    )
}

/// Runs one method under criterion (wall time) and [`measure`] (the table's CPU time).
struct Method<'a, 'g> {
    group: &'a mut criterion::BenchmarkGroup<'g, criterion::measurement::WallTime>,
    rows: &'a mut Vec<Row>,
    threads: usize,
    rounds: u32,
}

impl Method<'_, '_> {
    fn run(&mut self, label: &'static str, mut work: impl FnMut() -> usize) {
        if !wanted(label) {
            return;
        }
        self.group.bench_function(label, |b| b.iter(&mut work));
        let (wall_ms, cpu_ms) = measure(self.rounds, &mut work);
        self.rows.push(Row {
            threads: self.threads,
            method: label,
            wall_ms,
            cpu_ms,
        });
    }
}

struct Row {
    threads: usize,
    method: &'static str,
    wall_ms: f64,
    cpu_ms: f64,
}

fn main() {
    let mut criterion = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(2))
        .configure_from_args();
    let mut rows = Vec::new();
    let mut buf = vec![0u8; 4096];

    for threads in sizes() {
        // One target at a time: `ps` reads every thread of the machine.
        let target = sleeping_threads(threads);
        target.wait_until_asleep(threads);
        let target = &target;
        let pid = target.pid;
        let rounds = if threads > 1_000 { 10 } else { 100 };
        let mut group = criterion.benchmark_group(format!("{threads}_threads"));
        let mut method = Method {
            group: &mut group,
            rows: &mut rows,
            threads,
            rounds,
        };

        method.run("ps -L -o tid,stat,wchan,time", || ps(pid));
        method.run("procfs per-task (stat+schedstat+status, wchan)", || {
            procfs_per_task(pid)
        });
        method.run("open/read/close stat+schedstat+status+wchan", || {
            open_read_close(target, &mut buf)
        });

        // Each kept-descriptor method has the open-files limit to itself; the floors
        // are measured where every descriptor fits.
        for (names, label) in [
            (
                &FILES[..],
                "floor: kept fds stat+schedstat+status+wchan, pread",
            ),
            (
                &FULL_FILES[..],
                "floor: kept fds of the 5 files of a full sample, pread",
            ),
            (
                &STEADY_FILES[..],
                "floor: kept fds stat+schedstat (steady state), pread",
            ),
        ] {
            if threads * names.len() < 18_000 && wanted(label) {
                let kept = KeptFiles::open(target, names);
                method.run(label, || kept.read(&mut buf));
            }
        }
        if wanted("tfwatch detail") {
            let mut full = sampler(pid, u32::MAX, true);
            method.run(
                "tfwatch detail sample (schedstat+stat; slow files of threads that ran)",
                || full_sample(&mut full),
            );
            let (kept_fds, budget) = full.kept_descriptors();
            println!("{threads} threads: tfwatch keeps {kept_fds} descriptors (budget {budget})");
            let mut every = sampler(pid, u32::MAX, false);
            method.run(
                "tfwatch detail sample, nothing carried (5 files, parsed)",
                || full_sample(&mut every),
            );
        }
        if wanted("tfwatch steady") {
            let mut steady = sampler(pid, u32::MAX, true);
            steady_sample(&mut steady);
            method.run(
                "tfwatch steady-state sample (schedstat; stat of threads that ran)",
                || steady_sample(&mut steady),
            );
        }
        group.finish();
    }
    criterion.final_summary();

    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!();
    println!(
        "machine: {cpus} CPUs (nproc), kernel {}, RLIMIT_NOFILE {}",
        kernel.trim(),
        nofile()
    );
    println!("| threads | method | wall ms / sample | CPU ms / sample |\n|---:|---|---:|---:|");
    for row in &rows {
        println!(
            "| {} | {} | {:.2} | {:.2} |",
            row.threads, row.method, row.wall_ms, row.cpu_ms
        );
    }
}

fn nofile() -> String {
    let path = PathBuf::from("/proc/self/limits");
    std::fs::read_to_string(path)
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|l| l.starts_with("Max open files"))
                .map(|l| l.split_whitespace().nth(3).unwrap_or("?").to_string())
        })
        .unwrap_or_default()
}
