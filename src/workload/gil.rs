//! `gil`: pure-Python CPU work in threads of one CPython process — the threads take
//! turns on the GIL and the process does about one thread's work whatever its CPUs.
//!
//! Broken: `--threads` Python threads (default: 4) each run a pure-Python loop in one
//! `python3` process. Fixed: the loops in one process per usable CPU
//! (`multiprocessing`, one interpreter and GIL each). Measured: loop rounds per second
//! over all workers, and the cores used. Needs `python3` on the PATH (CPython).

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use super::common;
use super::{Ctx, WorkloadOptions};

/// Python threads of the broken variant.
pub const DEFAULT_WORKERS: usize = 4;

/// The Python program: `python3 -c SCRIPT MODE WORKERS SECONDS`; prints
/// `rounds=N` when done. One round is 10,000 additions in the interpreter.
const SCRIPT: &str = r#"
import sys, threading, time, multiprocessing as mp

def spin(seconds, counts, index):
    end = time.monotonic() + seconds
    rounds = 0
    while time.monotonic() < end:
        x = 0
        for i in range(10000):
            x += i
        rounds += 1
    counts[index] = rounds

def main():
    mode, workers, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    if mode == "threads":
        counts = [0] * workers
        ts = [threading.Thread(target=spin, args=(seconds, counts, i), name=f"py-worker-{i}") for i in range(workers)]
    else:
        counts = mp.Array("q", workers)
        ts = [mp.Process(target=spin, args=(seconds, counts, i), name=f"py-worker-{i}") for i in range(workers)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    print(f"rounds={sum(counts[:])}", flush=True)

if __name__ == "__main__":
    mp.set_start_method("fork")
    main()
"#;

pub fn run(ctx: &Ctx, args: &WorkloadOptions) -> Result<i32> {
    let workers = if ctx.fixed() {
        ctx.usable_cpus.max(1)
    } else {
        args.threads.unwrap_or(DEFAULT_WORKERS).max(2)
    };
    ctx.say(if ctx.fixed() {
        format!("{workers} pure-Python loops in {workers} processes (one GIL each)")
    } else {
        format!("{workers} pure-Python loops in {workers} threads of one interpreter")
    });
    // Leave a little of the duration for the interpreter to start and to report.
    let seconds = ctx
        .deadline
        .saturating_duration_since(Instant::now())
        .saturating_sub(Duration::from_millis(1500))
        .max(Duration::from_secs(1));
    if !ctx.fixed() {
        common::emit_onset("gil");
    }
    let started = Instant::now();
    let mut child = Command::new("python3")
        .arg("-c")
        .arg(SCRIPT)
        .arg(if ctx.fixed() { "processes" } else { "threads" })
        .arg(workers.to_string())
        .arg(format!("{:.3}", seconds.as_secs_f64()))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .context("cannot start python3 (the gil scenario needs CPython on the PATH)")?;
    let mut out = String::new();
    if let Some(mut stdout) = child.stdout.take() {
        stdout
            .read_to_string(&mut out)
            .context("cannot read python3's output")?;
    }
    let status = child.wait().context("cannot wait for python3")?;
    let elapsed = started.elapsed().as_secs_f64().max(1e-9);
    let rounds: Option<u64> = out
        .lines()
        .find_map(|l| l.strip_prefix("rounds="))
        .and_then(|n| n.trim().parse().ok());
    let Some(rounds) = rounds.filter(|_| status.success()) else {
        bail!("python3 ended with {status} without its count (output {out:?})");
    };
    let cpu_seconds = children_cpu_seconds();
    let throughput = rounds as f64 / seconds.as_secs_f64();
    ctx.say(format!(
        "{throughput:.1} rounds/s, {:.2} cores used",
        cpu_seconds / elapsed
    ));
    let mut result = ctx.result(rounds > 0);
    result.throughput = Some(throughput);
    result.work_units = Some(rounds);
    result.cpu_seconds = Some(cpu_seconds);
    result.detail = if ctx.fixed() {
        format!("{workers} processes, one GIL each")
    } else {
        format!("{workers} threads, one GIL")
    };
    Ok(ctx.finish(&result))
}

/// CPU time (user + system) of this process's waited-for children, in seconds.
fn children_cpu_seconds() -> f64 {
    // SAFETY: getrusage writes the struct it is given and nothing else.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage) } != 0 {
        return 0.0;
    }
    let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    seconds(usage.ru_utime) + seconds(usage.ru_stime)
}
