//! The cost of reading the GIL from a CPython process's memory, and that it never stops
//! the process:
//!
//! - one burst of 100 GIL reads over 1 s (`source::gil::sample`), CPU of the reading
//!   thread (`RUSAGE_THREAD`);
//! - `tfwatch attach --json --no-gpu --no-stacks` at 1 Hz of a 16-thread Python process
//!   whose threads spin in pure Python (GIL contention: a burst every 10 s), of the same
//!   process idle (16 threads asleep), and of a 1,000-thread Python process (4 spinning,
//!   996 waiting on an event): CPU from `wait4` over the watch, as a share of one core;
//!   the bursts counted in its `--record` file; and the target's `TracerPid` and state
//!   read every 20 ms through the watch (never traced or stopped).
//!
//! Needs python3 (CPython 3.11 – 3.13) and the release binary
//! (`cargo build --release --bin tfwatch`; `TFWATCH_BIN` names another). Run:
//! `cargo bench --bench gil`; `TFWATCH_BENCH_SECONDS` sets each watch's length
//! (default 30). The figures are CPU time, so criterion is not used.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const SCRIPT: &str = r#"
import sys, threading, time
spinning, waiting = int(sys.argv[1]), int(sys.argv[2])
def spin():
    while True:
        for _ in range(10000):
            pass
stop = threading.Event()
for _ in range(spinning):
    threading.Thread(target=spin, daemon=True).start()
for _ in range(waiting):
    threading.Thread(target=stop.wait, daemon=True).start()
print("ready", flush=True)
stop.wait()
"#;

/// A Python target, killed by pid and reaped on drop.
struct Target {
    child: Child,
}

impl Target {
    fn start(spinning: usize, waiting: usize) -> Target {
        let mut child = Command::new("python3")
            .args(["-c", SCRIPT, &spinning.to_string(), &waiting.to_string()])
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 starts");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("ready");
        assert_eq!(line.trim(), "ready");
        Target { child }
    }

    fn pid(&self) -> i32 {
        i32::try_from(self.child.id()).unwrap_or(0)
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn cpu_seconds(usage: &libc::rusage) -> f64 {
    let s = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    s(usage.ru_utime) + s(usage.ru_stime)
}

fn binary() -> PathBuf {
    std::env::var_os("TFWATCH_BIN").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("target/release/tfwatch"),
        PathBuf::from,
    )
}

/// Reads `pid`'s `TracerPid` and state every 20 ms until `stop`: how many reads found
/// it traced or stopped, of how many.
fn watch_target(pid: i32, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<(u64, u64)> {
    std::thread::spawn(move || {
        let (mut reads, mut stopped) = (0, 0);
        while !stop.load(Ordering::Relaxed) {
            if let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) {
                reads += 1;
                let traced = status
                    .lines()
                    .find_map(|l| l.strip_prefix("TracerPid:"))
                    .is_some_and(|t| t.trim() != "0");
                let state_stopped = status
                    .lines()
                    .find_map(|l| l.strip_prefix("State:"))
                    .is_some_and(|s| s.trim_start().starts_with(['t', 'T']));
                if traced || state_stopped {
                    stopped += 1;
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        (reads, stopped)
    })
}

struct Watched {
    cpu: f64,
    seconds: f64,
    bursts: usize,
    reads: u64,
    stopped: u64,
}

/// `tfwatch attach PID --json --no-gpu --no-stacks --duration SECONDS --record R`: its
/// CPU from `wait4`, the bursts in its record, and what the target watcher saw.
fn attach(pid: i32, seconds: u64, record: &Path) -> Watched {
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = watch_target(pid, Arc::clone(&stop));
    let started = Instant::now();
    let child = Command::new(binary())
        .args([
            "attach",
            &pid.to_string(),
            "--json",
            "--no-gpu",
            "--no-stacks",
            "--duration",
            &format!("{seconds}s"),
            "--record",
        ])
        .arg(record)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("tfwatch starts (cargo build --release --bin tfwatch first)");
    let mut status = 0;
    // SAFETY: wait4 on our own child with a zeroed rusage out-parameter.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let waited = unsafe {
        libc::wait4(
            i32::try_from(child.id()).unwrap_or(0),
            &mut status,
            0,
            &mut usage,
        )
    };
    assert!(waited > 0, "wait4 failed");
    // Reaped by wait4 above.
    std::mem::forget(child);
    let elapsed = started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let (reads, stopped) = watcher.join().unwrap_or((0, 0));
    let bursts = std::fs::read_to_string(record)
        .map(|t| t.matches("\"locked_reads\"").count())
        .unwrap_or(0);
    Watched {
        cpu: cpu_seconds(&usage),
        seconds: elapsed,
        bursts,
        reads,
        stopped,
    }
}

/// CPU seconds of this thread.
fn thread_cpu() -> f64 {
    // SAFETY: getrusage writes the struct it is given and nothing else.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut usage) };
    cpu_seconds(&usage)
}

fn main() {
    let seconds: u64 = std::env::var("TFWATCH_BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30);
    let dir = std::env::temp_dir().join(format!("tfwatch-bench-gil-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a temporary directory");
    let proc_root = Path::new("/proc");

    // One burst, read in this process.
    let target = Target::start(16, 0);
    let runtime = tfwatch::source::gil::locate(proc_root, target.pid()).expect("CPython 3.11-3.13");
    let before = thread_cpu();
    let reading =
        tfwatch::source::gil::sample(proc_root, &runtime, tfwatch::source::gil::Burst::default())
            .expect("a burst");
    let burst_cpu = thread_cpu() - before;
    println!(
        "one burst: {} reads over {:.2} s of CPython {}: {:.2} ms CPU; GIL held in {:.0} % of reads by {} threads, {:.0} switches/s",
        reading.reads,
        reading.seconds,
        reading.version,
        burst_cpu * 1000.0,
        reading.locked_share() * 100.0,
        reading.holders.len(),
        reading.switches_per_second()
    );
    let mut rows = Vec::new();
    let contended = attach(target.pid(), seconds, &dir.join("contended.jsonl"));
    rows.push((
        "16 threads, pure-Python spin (GIL contended)",
        contended,
        1.0,
    ));
    drop(target);
    let idle = Target::start(0, 16);
    rows.push((
        "16 threads, idle",
        attach(idle.pid(), seconds, &dir.join("idle.jsonl")),
        1.0,
    ));
    drop(idle);
    let large = Target::start(4, 996);
    rows.push((
        "1,000 threads (4 spinning, 996 waiting)",
        attach(large.pid(), seconds, &dir.join("large.jsonl")),
        1.0,
    ));
    drop(large);
    println!();
    println!(
        "| target | watch | tfwatch CPU | share of a core | GIL bursts | target traced or stopped | target ≤ 1 % |"
    );
    println!("|---|---:|---:|---:|---:|---:|---|");
    for (what, w, limit) in rows {
        let share = 100.0 * w.cpu / w.seconds.max(1e-9);
        println!(
            "| {what} | {:.1} s | {:.2} s | {share:.2} % | {} | {} of {} reads | {} |",
            w.seconds,
            w.cpu,
            w.bursts,
            w.stopped,
            w.reads,
            if share <= limit { "met" } else { "NOT met" }
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
