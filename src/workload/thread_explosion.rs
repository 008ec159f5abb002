//! `thread-explosion`: a thread per task, without bound.
//!
//! Broken: every task (`--threads`, default 300) gets a new thread, which does a small
//! task behind a shared lock and then stays alive (parked, as a leaked or idle thread
//! does) until the end, so the thread count climbs past any bound. Fixed: the same tasks
//! on the same schedule run on a pool capped at usable CPUs.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};

use super::common;
use super::compute::{Matrices, work_unit};
use super::{Ctx, WorkloadOptions};

/// Default number of tasks, each of which gets its own thread in the broken variant.
pub const DEFAULT_TASKS: usize = 300;
/// The bound the broken variant climbs past: the thread-explosion detector's default
/// bound on this machine, max(64, 4 × usable CPUs) (the default rule `threads > 50`
/// alerts earlier).
pub fn thread_bound() -> u64 {
    u64::from(crate::model::runtimes::default_thread_bound(
        common::usable_cpus() as f64,
    ))
}
const MAX_TASKS: usize = 10_000;

/// When task `index` of `tasks` is submitted: spread over the first half of the run.
pub fn submit_offset(index: usize, tasks: usize, duration: Duration) -> Duration {
    let spread = duration / 2;
    let per_task = (spread / tasks.max(1) as u32).min(Duration::from_millis(20));
    per_task * index as u32
}

struct Shared {
    lock: Mutex<f64>,
    matrices: Matrices,
    completed: AtomicU64,
    finished: AtomicBool,
}

impl Shared {
    fn task(&self) {
        let mut c = vec![0.0; self.matrices.n * self.matrices.n];
        let value = work_unit(&self.matrices, &mut c);
        if let Ok(mut total) = self.lock.lock() {
            *total += value;
        }
        self.completed.fetch_add(1, Ordering::Relaxed);
    }
}

pub fn run(ctx: &Ctx, args: &WorkloadOptions) -> Result<i32> {
    let tasks = args.threads.unwrap_or(DEFAULT_TASKS);
    if tasks == 0 || tasks > MAX_TASKS {
        bail!("--threads {tasks} is out of range: 1 to {MAX_TASKS} tasks");
    }
    let shared = Arc::new(Shared {
        lock: Mutex::new(0.0),
        matrices: Matrices::new(32),
        completed: AtomicU64::new(0),
        finished: AtomicBool::new(false),
    });
    let pool_size = ctx.usable_cpus;
    let mut handles = Vec::new();
    let mut pool_sender = None;
    if ctx.fixed() {
        let (sender, receiver) = mpsc::channel::<()>();
        let receiver = Arc::new(Mutex::new(receiver));
        for index in 0..pool_size {
            let receiver = Arc::clone(&receiver);
            let shared = Arc::clone(&shared);
            handles.push(
                std::thread::Builder::new()
                    .name(format!("pool-{index}"))
                    .spawn(move || {
                        loop {
                            let next = match receiver.lock() {
                                Ok(receiver) => receiver.recv(),
                                Err(_) => return,
                            };
                            if next.is_err() {
                                return;
                            }
                            shared.task();
                        }
                    })?,
            );
        }
        pool_sender = Some(sender);
        ctx.say(format!(
            "pool of {pool_size} threads (usable CPUs) for {tasks} tasks"
        ));
    } else {
        ctx.say(format!(
            "a new thread for each of {tasks} tasks, kept alive"
        ));
    }
    let start = Instant::now();
    let mut peak_threads = 0u64;
    let mut onset_sent = false;
    let bound = thread_bound();
    let mut spawn_error = None;
    for index in 0..tasks {
        common::sleep_until(start + submit_offset(index, tasks, ctx.duration));
        if Instant::now() >= ctx.deadline {
            break;
        }
        if let Some(sender) = &pool_sender {
            let _ = sender.send(());
        } else {
            let shared = Arc::clone(&shared);
            let spawned = std::thread::Builder::new()
                .name(format!("task-{index}"))
                .stack_size(256 * 1024)
                .spawn(move || {
                    shared.task();
                    while !shared.finished.load(Ordering::Acquire) {
                        std::thread::park();
                    }
                });
            match spawned {
                Ok(handle) => handles.push(handle),
                Err(err) => {
                    spawn_error = Some(err);
                    break;
                }
            }
        }
        let threads = common::self_status_field(std::path::Path::new(common::PROC_ROOT), "Threads")
            .unwrap_or(0);
        peak_threads = peak_threads.max(threads);
        if !onset_sent && threads > bound {
            common::emit_onset("thread-explosion");
            onset_sent = true;
        }
        if (index + 1) % 50 == 0 {
            ctx.say(format!("{} tasks submitted, {threads} threads", index + 1));
        }
    }
    if let Some(err) = &spawn_error {
        ctx.say(format!("cannot start another thread: {err}"));
    }
    // Wait for the tasks to finish, then stay until the end of the run.
    while shared.completed.load(Ordering::Relaxed) < tasks as u64 && Instant::now() < ctx.deadline {
        std::thread::sleep(common::POLL);
    }
    peak_threads = peak_threads.max(
        common::self_status_field(std::path::Path::new(common::PROC_ROOT), "Threads").unwrap_or(0),
    );
    common::sleep_until(ctx.deadline);
    peak_threads = peak_threads.max(
        common::self_status_field(std::path::Path::new(common::PROC_ROOT), "Threads").unwrap_or(0),
    );
    drop(pool_sender);
    shared.finished.store(true, Ordering::Release);
    for handle in &handles {
        handle.thread().unpark();
    }
    for handle in handles {
        let _ = handle.join();
    }
    let completed = shared.completed.load(Ordering::Relaxed);
    ctx.say(format!(
        "{completed} of {tasks} tasks done; peak {peak_threads} threads"
    ));
    let mut result = ctx.result(completed == tasks as u64);
    result.peak_threads = Some(peak_threads);
    result.work_units = Some(completed);
    result.detail = if ctx.fixed() {
        format!("pool of {pool_size}")
    } else {
        format!("one thread per task, past the detector bound {bound}")
    };
    Ok(ctx.finish(&result))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn submissions_fit_in_the_first_half() {
        let duration = Duration::from_secs(4);
        let last = submit_offset(299, 300, duration);
        assert!(last <= duration / 2, "{last:?}");
        assert!(submit_offset(1, 300, duration) > Duration::ZERO);
        assert_eq!(submit_offset(0, 1, duration), Duration::ZERO);
        // Long runs do not dawdle: at most 20 ms between tasks.
        assert!(submit_offset(10, 10, Duration::from_secs(3600)) <= Duration::from_millis(200));
    }
}
