//! Lock contention (a convoy): most threads of a busy process queue on one futex word
//! while the thread that holds it works, and the lock passes from waiter to waiter, so
//! the process does one thread's work whatever its threads and CPUs.
//!
//! Judged on the summaries' [`FutexShare`] readings (one per sample whose waits were
//! read): a reading is a convoy when at least [`MIN_WAITERS`] threads wait on one word,
//! they are a good part of the threads that want to work, the process is busy (it wants at
//! least [`crate::detect::BUSY_MIN_CPUS`] cores: runs or waits for a CPU) and the waiters themselves
//! did most of its work since the previous reading (the lock rotates through them).
//! Idle pool workers on one condition word do none of the work: they are not a convoy.
//! CPython's GIL waits time out every 5 ms; a word most of whose waits are timed in a
//! CPython process is the GIL, judged by the GIL detector, not here.

use crate::model::{Finding, FindingKind, Severity};
use crate::timeline::contention::FutexShare;
use crate::timeline::{ProcessSummary, Summary, Timeline};

use super::DetectConfig;

/// Threads that must wait on the word for a reading to be a convoy.
pub const MIN_WAITERS: u32 = 3;

/// Share of the threads that want to work which must wait on the word (in CPython a
/// convoy's threads wait on the lock or, once through it, for the GIL).
const WAITING_SHARE: f64 = 1.0 / 3.0;

/// Share of their fair part of the process's CPU work since the previous reading that
/// the waiters must have done: in a convoy the lock passes between them, so the
/// waiters of a moment did about their number's share of the work; idle workers none.
const WAITERS_WORK_SHARE: f64 = 0.5;

/// Convoy readings (on one word) for a warning: several samples.
pub const SUSTAINED_READINGS: usize = 3;

/// Readings looked at: the newest this many within [`WINDOW_SECONDS`].
const READINGS: usize = 5;

/// How far back readings are looked for (waits are read every few samples).
pub(super) const WINDOW_SECONDS: f64 = 30.0;

/// A reading of one process: its summary and the word.
pub(super) struct Reading<'a> {
    pub(super) summary: &'a Summary,
    pub(super) process: &'a ProcessSummary,
    pub(super) share: &'a FutexShare,
}

impl Reading<'_> {
    /// Cores the process wanted over the interval before the reading: ran, or waited
    /// for a CPU (a loaded machine gives a busy process only a share of what it wants).
    pub(super) fn wanted_cores(&self) -> Option<f64> {
        (self.summary.interval_seconds > 0.0).then(|| {
            (self.process.delta_run_seconds + self.process.delta_wait_seconds)
                / self.summary.interval_seconds
        })
    }

    pub(super) fn is_gil_like(&self) -> bool {
        let cpython = self
            .process
            .exe
            .as_deref()
            .and_then(|e| e.rsplit('/').next())
            .is_some_and(|name| name.starts_with("python"))
            || self.process.comm.starts_with("python");
        cpython && f64::from(self.share.timed_waiters) > 0.5 * f64::from(self.share.waiters)
    }

    fn is_convoy(&self) -> bool {
        let share = self.share;
        share.waiters >= MIN_WAITERS
            && f64::from(share.waiters) >= WAITING_SHARE * f64::from(share.active_threads)
            && share.waiters_ran >= 2
            && self
                .wanted_cores()
                .is_some_and(|c| c >= super::BUSY_MIN_CPUS)
            && share.waiters_run_seconds
                >= WAITERS_WORK_SHARE * self.process.delta_run_seconds * f64::from(share.waiters)
                    / f64::from(share.active_threads.max(1))
            && !self.is_gil_like()
    }
}

/// `lock-contention` findings, one per process with a convoy among its newest readings.
pub fn lock_convoy(timeline: &Timeline, _config: &DetectConfig) -> Vec<Finding> {
    let Some(latest) = timeline.latest_summary() else {
        return Vec::new();
    };
    let window: Vec<&Summary> = timeline.window(WINDOW_SECONDS).collect();
    latest
        .processes
        .iter()
        .filter_map(|p| judge_process(&window, p.pid, latest.usable_cpus))
        .collect()
}

/// The newest [`READINGS`] readings of `pid` in `window`, oldest first.
pub(super) fn readings<'a>(window: &[&'a Summary], pid: i32) -> Vec<Reading<'a>> {
    let mut readings: Vec<Reading<'a>> = window
        .iter()
        .rev()
        .filter_map(|summary| {
            // The first sample has nothing to compare with: no reading.
            let process = summary
                .process(pid)
                .filter(|_| summary.interval_seconds > 0.0)?;
            let share = process.futex_share.as_ref()?;
            Some(Reading {
                summary,
                process,
                share,
            })
        })
        .take(READINGS)
        .collect();
    readings.reverse();
    readings
}

fn judge_process(window: &[&Summary], pid: i32, usable: f64) -> Option<Finding> {
    let readings = readings(window, pid);
    let convoys: Vec<&Reading<'_>> = readings.iter().filter(|r| r.is_convoy()).collect();
    // The word of the newest convoy; earlier convoys on other words do not add up.
    let address = convoys.last()?.share.address;
    let on_word: Vec<&Reading<'_>> = convoys
        .into_iter()
        .filter(|r| r.share.address == address)
        .collect();
    let newest = on_word.last()?;
    // Several convoys, at least half of the readings, one of the newest two.
    let sustained = on_word.len() >= SUSTAINED_READINGS
        && on_word.len() * 2 >= readings.len()
        && readings.iter().rev().take(2).any(Reading::is_convoy);
    let first = on_word.first()?;
    // Cores used over the readings' intervals (the window the convoy was seen in).
    let (mut run, mut runqueue, mut seconds) = (0.0, 0.0, 0.0);
    for r in &on_word {
        run += r.process.delta_run_seconds;
        runqueue += r.process.delta_wait_seconds;
        seconds += r.summary.interval_seconds;
    }
    let wanted = if seconds > 0.0 {
        (run + runqueue) / seconds
    } else {
        0.0
    };
    let cores = if seconds > 0.0 { run / seconds } else { 0.0 };
    let waiters: Vec<u32> = on_word.iter().map(|r| r.share.waiters).collect();
    let mean_waiters = f64::from(waiters.iter().sum::<u32>()) / waiters.len() as f64;
    let threads = newest.process.threads;
    let active = newest.share.active_threads;
    let span = newest.summary.elapsed_seconds - first.summary.elapsed_seconds
        + first.summary.interval_seconds;
    let process = newest.process;
    let mut finding = Finding::new(
        FindingKind::LockContention,
        if sustained {
            Severity::Warning
        } else {
            Severity::Info
        },
        format!(
            "{} of {} threads of pid {} ({}) queue on one lock (futex word {address:#x}) while its holder works: {cores:.2} core(s) used of {} usable, in {} of {} readings",
            newest.share.waiters,
            threads,
            pid,
            process.comm,
            trim(usable),
            on_word.len(),
            readings.len(),
        ),
    );
    finding.confidence = if sustained { 0.8 } else { 0.5 };
    finding.pids = vec![pid];
    finding.tids = newest.share.waiter_tids.clone();
    finding.evidence.push(format!(
        "threads waiting on futex word {address:#x} per reading: {} (of {active} threads that want to work at the newest)",
        waiters
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    ));
    let ran: u32 = on_word.iter().map(|r| r.share.waiters_ran).sum();
    let waited: u32 = on_word.iter().map(|r| r.share.waiters).sum();
    let waiters_work: f64 = on_word.iter().map(|r| r.share.waiters_run_seconds).sum();
    finding.evidence.push(format!(
        "the lock passes between them: {ran} of {waited} waits were by threads that ran since the reading before, and the waiters did {:.0} % of the process's CPU work ({waiters_work:.2} of {run:.2} CPU-s)",
        if run > 0.0 { 100.0 * waiters_work / run } else { 0.0 }
    ));
    finding.evidence.push(format!(
        "effective parallelism {cores:.2} CPU-s per second over {span:.1} s ({wanted:.2} wanted: run or waiting for a CPU), with {mean_waiters:.1} threads waiting on the lock on average and {} usable CPU(s): the threads run one at a time",
        trim(usable)
    ));
    match (newest.share.owner_tid, newest.share.lock_kind.as_deref()) {
        (Some(owner), kind) => finding.evidence.push(format!(
            "owner read from the lock word: tid {owner} ({})",
            kind.unwrap_or("lock")
        )),
        (None, Some(kind)) => finding.evidence.push(format!(
            "the word records no owner (kind {kind}: a Python lock, semaphore or Rust mutex)"
        )),
        (None, None) => {}
    }
    if !newest.share.running_tids.is_empty() {
        let running: Vec<String> = newest
            .share
            .running_tids
            .iter()
            .take(4)
            .map(i32::to_string)
            .collect();
        finding.evidence.push(format!(
            "runnable at the newest reading, not waiting (the holder is among them while it works): tid {}",
            running.join(", ")
        ));
    }
    finding
        .metrics
        .insert("lock_address".into(), address as f64);
    finding
        .metrics
        .insert("lock_waiters".into(), f64::from(newest.share.waiters));
    finding
        .metrics
        .insert("lock_waiters_mean".into(), mean_waiters);
    finding.metrics.insert(
        "lock_waiting_share".into(),
        on_word.len() as f64 / readings.len() as f64,
    );
    finding
        .metrics
        .insert("effective_parallelism".into(), cores);
    finding.metrics.insert("usable_cpus".into(), usable);
    finding.metrics.insert("threads".into(), f64::from(threads));
    finding.remedy = "The lock makes the threads take turns, so the process does one thread's work. Do not lock around a read-only model (a TensorFlow or PyTorch model's predict(), a numpy call, can be called from several threads at once); give each thread its own copy; or put one worker behind a queue and size the threads to the usable CPUs. Hold a lock only around the shared state it protects, never around the computation.".to_string();
    Some(finding)
}

pub(super) fn trim(value: f64) -> String {
    if value.fract() == 0.0 {
        format!("{value:.0}")
    } else {
        format!("{value:.2}")
    }
}

#[cfg(test)]
mod tests;
