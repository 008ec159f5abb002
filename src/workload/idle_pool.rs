//! `idle-pool`: a pool of worker threads that waits for work between batches.
//!
//! Fixed (the healthy shape): the main thread hands out a batch, sleeps longer than a
//! hang window while every worker waits for work, hands out a second batch, then a stop
//! to each worker and joins them. No progress for seconds, and nothing hung: a detector
//! must stay quiet.
//! Broken (the hang that looks idle): after the first batch the main thread joins the
//! workers without sending the stop; every worker waits for work that no thread of the
//! process can send, and the join waits on them. Its deadline is a `SIGALRM`, not a
//! watchdog thread: a sleeping thread could feed the workers, and then the wait would
//! not be provably owed.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::Duration;

use anyhow::Result;

use super::compute::{Matrices, work_unit};
use super::{Ctx, WorkloadOptions};

/// Work items in each batch.
const BATCH: u64 = 64;

/// A unit of work, or `None`: stop.
type Jobs = (Mutex<VecDeque<Option<u64>>>, Condvar);

/// The line the alarm writes and the exit code, set before the alarm is armed.
static ALARM: OnceLock<(Vec<u8>, i32)> = OnceLock::new();

extern "C" fn on_alarm(_: libc::c_int) {
    if let Some((line, code)) = ALARM.get() {
        // SAFETY: write(2) and _exit(2) are async-signal-safe; the buffer lives forever.
        unsafe {
            libc::write(1, line.as_ptr().cast(), line.len());
            libc::_exit(*code);
        }
    }
}

/// Ends the process at `after` with `line` on stdout and exit `code`, from a signal
/// handler.
fn arm_alarm(after: Duration, line: String, code: i32) {
    let _ = ALARM.set((format!("{line}\n").into_bytes(), code));
    // SAFETY: installs a handler that only calls async-signal-safe functions.
    unsafe {
        libc::signal(libc::SIGALRM, on_alarm as *const () as libc::sighandler_t);
        libc::alarm(after.as_secs().max(1) as libc::c_uint);
    }
}

fn worker(jobs: &Jobs, done: &std::sync::atomic::AtomicU64) {
    let matrices = Matrices::new(48);
    let mut scratch = vec![0.0; 48 * 48];
    loop {
        let item = {
            let (queue, ready) = jobs;
            let mut queue = queue.lock().unwrap_or_else(|e| e.into_inner());
            loop {
                match queue.pop_front() {
                    Some(item) => break item,
                    None => queue = ready.wait(queue).unwrap_or_else(|e| e.into_inner()),
                }
            }
        };
        let Some(units) = item else { return };
        for _ in 0..units {
            std::hint::black_box(work_unit(&matrices, &mut scratch));
        }
        done.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}

fn hand_out(jobs: &Jobs, items: impl IntoIterator<Item = Option<u64>>) {
    let (queue, ready) = jobs;
    queue
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .extend(items);
    ready.notify_all();
}

pub fn run(ctx: &Ctx, _args: &WorkloadOptions) -> Result<i32> {
    let workers = ctx.usable_cpus.max(2);
    let jobs: Arc<Jobs> = Arc::new((Mutex::new(VecDeque::new()), Condvar::new()));
    let done = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let handles: Vec<_> = (0..workers)
        .map(|i| {
            let (jobs, done) = (Arc::clone(&jobs), Arc::clone(&done));
            std::thread::Builder::new()
                .name(format!("pool-worker-{i}"))
                .spawn(move || worker(&jobs, &done))
        })
        .collect::<std::io::Result<_>>()?;
    ctx.say(format!(
        "{workers} pool workers wait for work between batches"
    ));
    hand_out(&jobs, (0..BATCH).map(|_| Some(2)));
    while done.load(std::sync::atomic::Ordering::Relaxed) < BATCH {
        std::thread::sleep(Duration::from_millis(10));
    }
    if !ctx.fixed() {
        let mut result = ctx.result(false);
        result.work_units = Some(BATCH);
        result.detail = "the main thread joins workers that wait for work no thread sends".into();
        let line = serde_json::to_string(&result).unwrap_or_default();
        arm_alarm(
            ctx.deadline
                .saturating_duration_since(std::time::Instant::now()),
            format!("{} result={line}", super::common::PREFIX),
            0,
        );
        super::common::emit_onset("join on idle workers");
    } else {
        arm_alarm(
            ctx.duration + Duration::from_secs(5),
            "[workload] did not end within 5s of its duration; exiting".into(),
            super::common::EXIT_OVERRAN,
        );
        // Idle for most of the run: longer than a hang window.
        let idle = ctx
            .deadline
            .saturating_duration_since(std::time::Instant::now());
        std::thread::sleep(idle.mul_f64(0.8));
        hand_out(&jobs, (0..BATCH).map(|_| Some(2)));
        hand_out(&jobs, (0..workers).map(|_| None));
    }
    for handle in handles {
        let _ = handle.join();
    }
    let mut result = ctx.result(true);
    result.work_units = Some(done.load(std::sync::atomic::Ordering::Relaxed));
    result.detail = format!("{workers} workers idle between two batches, then stopped");
    Ok(ctx.finish(&result))
}
