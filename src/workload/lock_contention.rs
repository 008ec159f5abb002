//! `lock-contention`: request threads that share one model behind one lock — the
//! "thread-safe wrapper" that takes a lock around every `predict()`.
//!
//! Broken: `--threads` request threads (default 8) each prepare a request (a little
//! work of their own), then take one shared `Mutex` and run a matrix multiply (the
//! model call) inside it: the threads take turns and the process does one thread's
//! work. Fixed: one thread per usable CPU, each with its own copy of the model and no
//! lock. Measured: model calls per second, and the cores used.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::{Context, Result};

use super::common;
use super::compute::{Matrices, UNIT_N, work_unit};
use super::{Ctx, WorkloadOptions};

/// Request threads of the broken variant.
pub const DEFAULT_THREADS: usize = 8;

/// Side of the matrices a request thread prepares outside the lock (a small share of
/// the model call).
const PREPARE_N: usize = UNIT_N / 2;

pub fn run(ctx: &Ctx, args: &WorkloadOptions) -> Result<i32> {
    let threads = if ctx.fixed() {
        ctx.usable_cpus.max(1)
    } else {
        args.threads.unwrap_or(DEFAULT_THREADS).max(2)
    };
    ctx.say(if ctx.fixed() {
        format!("{threads} request threads (usable CPUs), each with its own model, no lock")
    } else {
        format!("{threads} request threads through one lock around the shared model")
    });
    let shared = Arc::new(Mutex::new(Matrices::new(UNIT_N)));
    let calls = Arc::new(AtomicU64::new(0));
    let cpu_before = process_cpu_seconds();
    let start = Instant::now();
    if !ctx.fixed() {
        common::emit_onset("lock-contention");
    }
    let mut handles = Vec::with_capacity(threads);
    for index in 0..threads {
        let shared = Arc::clone(&shared);
        let calls = Arc::clone(&calls);
        let deadline = ctx.deadline;
        let fixed = ctx.fixed();
        let handle = std::thread::Builder::new()
            .name(format!("request-{index}"))
            .spawn(move || {
                let own = Matrices::new(UNIT_N);
                let request = Matrices::new(PREPARE_N);
                let mut prepared = vec![0.0; PREPARE_N * PREPARE_N];
                let mut c = vec![0.0; UNIT_N * UNIT_N];
                let mut lock_wait = 0.0;
                let units = common::work_until(deadline, || {
                    work_unit(&request, &mut prepared);
                    if fixed {
                        work_unit(&own, &mut c);
                    } else {
                        // A poisoned lock still holds the model: keep serving.
                        let asked = Instant::now();
                        let model = shared.lock().unwrap_or_else(|e| e.into_inner());
                        lock_wait += asked.elapsed().as_secs_f64();
                        work_unit(&model, &mut c);
                    }
                    calls.fetch_add(1, Ordering::Relaxed);
                });
                (units, lock_wait)
            })
            .context("cannot start a request thread")?;
        handles.push(handle);
    }
    let mut lock_wait = 0.0;
    for handle in handles {
        let (_, waited) = handle
            .join()
            .map_err(|_| anyhow::anyhow!("a request thread panicked"))?;
        lock_wait += waited;
    }
    let seconds = start.elapsed().as_secs_f64().max(1e-9);
    let lock_share = 100.0 * lock_wait / (seconds * threads as f64);
    let cpu_seconds = (process_cpu_seconds() - cpu_before).max(0.0);
    let calls = calls.load(Ordering::Relaxed);
    let throughput = calls as f64 / seconds;
    ctx.say(format!(
        "{throughput:.1} model calls/s, {:.2} cores used, threads waited {lock_share:.0} % of their time for the lock",
        cpu_seconds / seconds
    ));
    let mut result = ctx.result(calls > 0);
    result.throughput = Some(throughput);
    result.work_units = Some(calls);
    result.cpu_seconds = Some(cpu_seconds);
    result.detail = if ctx.fixed() {
        format!("{threads} threads, no lock")
    } else {
        format!("{threads} threads, one lock: {lock_share:.0} % of their time waiting for it")
    };
    Ok(ctx.finish(&result))
}

/// CPU time (user + system) of this process so far, in seconds.
fn process_cpu_seconds() -> f64 {
    // SAFETY: getrusage writes the struct it is given and nothing else.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return 0.0;
    }
    let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    seconds(usage.ru_utime) + seconds(usage.ru_stime)
}
