//! `deadlock`: worker threads take libc pthread mutexes in a cycle.
//!
//! Broken: worker *i* locks mutex *i*, waits at a barrier until every worker holds its
//! first mutex, then locks mutex *i+1 (mod N)* — a certain N-cycle; CPU progress stops
//! and the process ends only when its watchdog fires at `--duration`.
//! Fixed: every worker takes its two mutexes in one global order (lower index first),
//! does its rounds of work and the scenario ends when they are done.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};

use super::common::{self, PthreadMutex, workload_lock_mutex, workload_unlock_mutex};
use super::compute::{Matrices, work_unit};
use super::{Ctx, WorkloadOptions};

/// Rounds of locked work each worker does in the fixed variant.
pub const ROUNDS: u64 = 200;
/// Work before the broken variant takes its first lock, so it makes progress first.
const WARMUP: Duration = Duration::from_millis(300);
const MAX_CYCLE: usize = 26;

/// Name of worker `index`: `worker-a`, `worker-b`, ...
pub fn worker_name(index: usize) -> String {
    let letter = char::from(b'a' + u8::try_from(index % MAX_CYCLE).unwrap_or(0));
    format!("worker-{letter}")
}

/// The two mutexes worker `index` of a cycle of `n` needs, in the order it takes them.
pub fn lock_order(index: usize, n: usize, fixed: bool) -> (usize, usize) {
    let first = index % n;
    let second = (index + 1) % n;
    if fixed {
        (first.min(second), first.max(second))
    } else {
        (first, second)
    }
}

pub fn run(ctx: &Ctx, args: &WorkloadOptions) -> Result<i32> {
    let n = args.cycle;
    if !(2..=MAX_CYCLE).contains(&n) {
        bail!("--cycle {n} is out of range: a lock cycle needs 2 to {MAX_CYCLE} threads");
    }
    let mutexes: Arc<Vec<PthreadMutex>> = Arc::new((0..n).map(|_| PthreadMutex::new()).collect());
    let rounds: Arc<Vec<AtomicU64>> = Arc::new((0..n).map(|_| AtomicU64::new(0)).collect());
    for (index, mutex) in mutexes.iter().enumerate() {
        ctx.say(format!("mutex m{index} at {:#x}", mutex.address()));
    }
    let fixed = ctx.fixed();
    if !fixed {
        let ctx_end = ctx.clone();
        let rounds_end = Arc::clone(&rounds);
        common::arm_watchdog(ctx.deadline, move || {
            let done: u64 = rounds_end.iter().map(|r| r.load(Ordering::Relaxed)).sum();
            ctx_end.say(format!(
                "still deadlocked after {:.1}s ({done} rounds done before the cycle formed); exiting",
                ctx_end.duration.as_secs_f64()
            ));
            let mut result = ctx_end.result(false);
            result.work_units = Some(done);
            result.detail = format!("{n} threads hung in a lock cycle");
            ctx_end.finish(&result)
        });
    }
    let barrier = Arc::new(Barrier::new(n));
    let mut handles = Vec::with_capacity(n);
    for index in 0..n {
        let mutexes = Arc::clone(&mutexes);
        let rounds = Arc::clone(&rounds);
        let barrier = Arc::clone(&barrier);
        let ctx = ctx.clone();
        let name = worker_name(index);
        let handle = std::thread::Builder::new()
            .name(name.clone())
            .spawn(move || {
                if fixed {
                    ordered_worker(&ctx, &name, index, &mutexes, &rounds[index]);
                } else {
                    cycle_worker(&ctx, &name, index, &mutexes, &rounds[index], &barrier);
                }
            })?;
        handles.push(handle);
    }
    let tid_note: Vec<String> = (0..n).map(worker_name).collect();
    ctx.say(format!("started {}", tid_note.join(", ")));
    for handle in handles {
        let _ = handle.join();
    }
    let done: u64 = rounds.iter().map(|r| r.load(Ordering::Relaxed)).sum();
    ctx.say(format!("done: {done} rounds in a consistent lock order"));
    let mut result = ctx.result(done == ROUNDS * n as u64);
    result.work_units = Some(done);
    result.throughput = Some(done as f64 / ctx.started.elapsed().as_secs_f64().max(1e-9));
    result.detail = format!("{n} threads completed {done} locked rounds");
    Ok(ctx.finish(&result))
}

/// Fixed: both mutexes in a global order, `ROUNDS` times (or until the deadline).
fn ordered_worker(
    ctx: &Ctx,
    name: &str,
    index: usize,
    mutexes: &[PthreadMutex],
    rounds: &AtomicU64,
) {
    let n = mutexes.len();
    let (first, second) = lock_order(index, n, true);
    let matrices = Matrices::new(48);
    let mut c = vec![0.0; 48 * 48];
    for _ in 0..ROUNDS {
        if Instant::now() >= ctx.deadline {
            break;
        }
        workload_lock_mutex(&mutexes[first]);
        workload_lock_mutex(&mutexes[second]);
        work_unit(&matrices, &mut c);
        workload_unlock_mutex(&mutexes[second]);
        workload_unlock_mutex(&mutexes[first]);
        rounds.fetch_add(1, Ordering::Relaxed);
    }
    ctx.say(format!(
        "{name} finished {} rounds (m{first} then m{second})",
        rounds.load(Ordering::Relaxed)
    ));
}

/// Broken: own mutex, barrier, then the next worker's mutex — never returns.
fn cycle_worker(
    ctx: &Ctx,
    name: &str,
    index: usize,
    mutexes: &[PthreadMutex],
    rounds: &AtomicU64,
    barrier: &Barrier,
) {
    let n = mutexes.len();
    let (first, second) = lock_order(index, n, false);
    let matrices = Matrices::new(48);
    let mut c = vec![0.0; 48 * 48];
    let warmup_end = Instant::now() + WARMUP;
    while Instant::now() < warmup_end {
        workload_lock_mutex(&mutexes[first]);
        work_unit(&matrices, &mut c);
        workload_unlock_mutex(&mutexes[first]);
        rounds.fetch_add(1, Ordering::Relaxed);
    }
    workload_lock_mutex(&mutexes[first]);
    ctx.say(format!(
        "{name} (tid {}) holds m{first} ({:#x})",
        gettid(),
        mutexes[first].address()
    ));
    if barrier.wait().is_leader() {
        common::emit_onset("deadlock");
    }
    ctx.say(format!(
        "{name} waits for m{second} ({:#x}) held by {}",
        mutexes[second].address(),
        worker_name(second)
    ));
    workload_lock_mutex(&mutexes[second]);
    // Only reached if the cycle did not form; release and report it.
    ctx.say(format!("{name} unexpectedly acquired m{second}"));
    workload_unlock_mutex(&mutexes[second]);
    workload_unlock_mutex(&mutexes[first]);
}

fn gettid() -> i64 {
    // SAFETY: gettid has no preconditions.
    unsafe { libc::syscall(libc::SYS_gettid) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broken_order_is_a_cycle_and_fixed_order_is_global() {
        for n in 2..6 {
            // Broken: each worker's second mutex is the next worker's first.
            for i in 0..n {
                let (_, second) = lock_order(i, n, false);
                assert_eq!(second, lock_order((i + 1) % n, n, false).0);
            }
            // Fixed: always lower index first, so no cycle can form.
            for i in 0..n {
                let (first, second) = lock_order(i, n, true);
                assert!(first < second);
            }
        }
        assert_eq!(worker_name(0), "worker-a");
        assert_eq!(worker_name(2), "worker-c");
    }
}
