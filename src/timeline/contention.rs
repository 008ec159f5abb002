//! The futex word the most threads of a process wait on, read once per sample for the
//! lock-contention detector (only the newest two samples keep their threads, so what a
//! window of samples needs is kept in each [`super::ProcessSummary`]).
//!
//! A thread blocked in `futex` shows the word it waits on in arg 0 of
//! `/proc/TID/syscall`. Threads that queue on one lock all show the same word; the
//! summary keeps that word, how many wait on it, and how much of the process's work
//! those waiters did since the previous sample (in a convoy the lock passes from one
//! waiter to the next, so the waiters do the work; idle pool workers on one condition
//! word do none of it).

use serde::{Deserialize, Serialize};

use crate::model::{ProcessSample, Syscall, ThreadSample};

/// Slow fields older than this are not this sample's reading of the thread's wait.
const FRESH_SECONDS: f64 = 1e-3;

/// Tids kept per reading (the finding names a few; rotation is judged on these).
const TIDS_KEPT: usize = 256;

const FUTEX_CMD_MASK: u64 = 0x7f;
const FUTEX_WAIT: u64 = 0;
const FUTEX_LOCK_PI: u64 = 6;
const FUTEX_WAIT_BITSET: u64 = 9;
const FUTEX_LOCK_PI2: u64 = 13;

/// Poll calls an event loop sleeps in between events (asyncio's selector: `epoll_wait`;
/// uvloop's libuv: `epoll_pwait`). `poll` and `select` are left out: a program waits in
/// them once (`subprocess.communicate`, a socket timeout) without running a loop.
const POLL_CALLS: &[&str] = &["epoll_wait", "epoll_pwait", "epoll_pwait2"];

/// Probes kept per process and sample.
const LOOP_PROBES_KEPT: usize = 8;

/// One thread that may run an event loop, as one sample read it: whether it sleeps in
/// its poll now, and its counters (the detector takes deltas between readings).
#[derive(Debug, Clone, Default, Serialize, schemars::JsonSchema, Deserialize, PartialEq)]
pub struct LoopProbe {
    pub tid: i32,
    /// In a poll call (`epoll_wait` and the like) at the sample.
    pub at_poll: bool,
    /// Time on CPU so far (`schedstat`), seconds.
    pub run_seconds: f64,
    /// Time runnable but waiting for a CPU so far (`schedstat`), seconds.
    #[serde(default)]
    pub runqueue_wait_seconds: f64,
    /// Voluntary context switches so far: each time the thread slept (its poll among them).
    pub voluntary_switches: u64,
}

/// The threads of `process` that may run an event loop, read fresh in this sample:
/// those in a poll call now, and the main thread (where `asyncio.run` runs a loop). At
/// most `LOOP_PROBES_KEPT`.
pub fn loop_probes(process: &ProcessSample) -> Vec<LoopProbe> {
    process
        .threads
        .iter()
        .filter(|t| process.details_age_seconds(t) <= FRESH_SECONDS)
        .filter_map(|t| {
            let at_poll = matches!(
                &t.syscall,
                Some(Syscall::InSyscall { name: Some(name), .. }) if POLL_CALLS.contains(&name.as_ref())
            );
            (at_poll || t.tid == process.pid).then_some(())?;
            Some(LoopProbe {
                tid: t.tid,
                at_poll,
                run_seconds: t.run_seconds?,
                runqueue_wait_seconds: t.runqueue_wait_seconds.unwrap_or(0.0),
                voluntary_switches: t.voluntary_ctxt_switches?,
            })
        })
        .take(LOOP_PROBES_KEPT)
        .collect()
}

/// One sample's reading of the futex word shared by the most waiters of a process.
#[derive(Debug, Clone, Default, Serialize, schemars::JsonSchema, Deserialize, PartialEq)]
pub struct FutexShare {
    /// The futex address (0 when no two fresh threads wait on one word).
    pub address: u64,
    /// Threads waiting on it at the sample.
    pub waiters: u32,
    /// Of those, waits with a timeout (CPython's GIL waits time out every 5 ms; a
    /// `threading.Lock().acquire()` or a mutex waits without one).
    pub timed_waiters: u32,
    /// Of those, threads that ran since the previous sample.
    pub waiters_ran: u32,
    /// CPU seconds the waiters ran since the previous sample.
    pub waiters_run_seconds: f64,
    /// Threads that want to work: those that ran since the previous sample, are
    /// runnable, or wait on the word.
    pub active_threads: u32,
    /// Threads whose wait was read in this sample (slow fields fresh).
    pub read_threads: u32,
    /// Owner tid read from the lock word, where the lock records one.
    pub owner_tid: Option<i32>,
    /// "pthread-mutex" or "unknown", as the sampler read the word.
    pub lock_kind: Option<String>,
    /// Threads runnable at the sample (not waiting on the word): the holder is among
    /// them while it works. At most `TIDS_KEPT`.
    pub running_tids: Vec<i32>,
    /// The waiters, at most `TIDS_KEPT`.
    pub waiter_tids: Vec<i32>,
}

/// The futex word a thread waits on and whether the wait has a timeout; `None` for a
/// thread not in a futex wait.
pub fn futex_wait(thread: &ThreadSample) -> Option<(u64, bool)> {
    let Some(Syscall::InSyscall {
        name: Some(name),
        args,
        ..
    }) = &thread.syscall
    else {
        return None;
    };
    if name != "futex" {
        return None;
    }
    let command = args[1] & FUTEX_CMD_MASK;
    matches!(
        command,
        FUTEX_WAIT | FUTEX_WAIT_BITSET | FUTEX_LOCK_PI | FUTEX_LOCK_PI2
    )
    .then_some((args[0], args[3] != 0))
}

/// The reading of `process` against the same process in the previous sample; `None`
/// when fewer than half of its threads' waits were read in this sample (slow fields
/// are read every few samples outside `--verify`).
pub fn futex_share(before: Option<&ProcessSample>, process: &ProcessSample) -> Option<FutexShare> {
    let fresh = |t: &ThreadSample| process.details_age_seconds(t) <= FRESH_SECONDS;
    let waits: Vec<(u64, bool)> = process
        .threads
        .iter()
        .filter(|t| fresh(t))
        .filter_map(futex_wait)
        .collect();
    let read_threads = process.threads.iter().filter(|t| fresh(t)).count() as u32;
    // Between detail samples only the threads that changed are read: a few fresh
    // waits are no reading of the process.
    if read_threads == 0 || (read_threads as usize) * 2 < process.threads.len() {
        return None;
    }
    // Locks are waited on without a timeout; a word of timed waits (CPython's GIL, a
    // pool's idle timer) is taken only when no untimed word has two waiters.
    let mut untimed: Vec<u64> = waits.iter().filter(|w| !w.1).map(|w| w.0).collect();
    untimed.sort_unstable();
    let (mut address, mut waiters) = most_common(&untimed);
    if waiters < 2 {
        let mut all: Vec<u64> = waits.iter().map(|w| w.0).collect();
        all.sort_unstable();
        (address, waiters) = most_common(&all);
    }
    let mut share = FutexShare {
        read_threads,
        ..FutexShare::default()
    };
    if waiters < 2 {
        return Some(share);
    }
    share.address = address;
    share.waiters = waiters as u32;
    let previous_run = |t: &ThreadSample| -> Option<f64> {
        let threads = &before?.threads;
        let found = if threads.is_sorted_by_key(|b| b.tid) {
            threads
                .binary_search_by_key(&t.tid, |b| b.tid)
                .ok()
                .and_then(|i| threads.get(i))
        } else {
            threads.iter().find(|b| b.tid == t.tid)
        };
        found?.run_seconds
    };
    for t in process.threads.iter() {
        let ran = match (t.run_seconds, previous_run(t)) {
            (Some(now), Some(then)) => (now - then).max(0.0),
            _ => 0.0,
        };
        let waiting = fresh(t)
            .then(|| futex_wait(t))
            .flatten()
            .filter(|(word, _)| *word == address);
        if let Some((_, timed)) = waiting {
            share.timed_waiters += u32::from(timed);
            share.waiters_ran += u32::from(ran > 0.0);
            share.waiters_run_seconds += ran;
            share.active_threads += 1;
            if share.waiter_tids.len() < TIDS_KEPT {
                share.waiter_tids.push(t.tid);
            }
            if let Some(lock) = t.lock.as_ref().filter(|l| l.address == address) {
                share.owner_tid = share.owner_tid.or(lock.owner_tid);
                share
                    .lock_kind
                    .get_or_insert_with(|| lock.kind.as_str().to_string());
            }
            continue;
        }
        let runnable = t.state == 'R';
        if runnable || ran > 0.0 {
            share.active_threads += 1;
        }
        if runnable && share.running_tids.len() < TIDS_KEPT {
            share.running_tids.push(t.tid);
        }
    }
    Some(share)
}

/// The most frequent value of a sorted list and its count ((0, 0) when empty).
fn most_common(sorted: &[u64]) -> (u64, usize) {
    let mut best = (0, 0);
    for run in sorted.chunk_by(|a, b| a == b) {
        if run.len() > best.1 {
            best = (run[0], run.len());
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    fn waiter(tid: i32, address: u64, timed: bool, run: f64) -> ThreadSample {
        ThreadSample {
            tid,
            state: 'S',
            run_seconds: Some(run),
            syscall: Some(Syscall::InSyscall {
                number: 202,
                name: Some("futex".into()),
                args: [address, 128, 2, u64::from(timed) * 0x7ff0, 0, 0],
            }),
            ..ThreadSample::default()
        }
    }

    fn runner(tid: i32, run: f64) -> ThreadSample {
        ThreadSample {
            tid,
            state: 'R',
            run_seconds: Some(run),
            syscall: Some(Syscall::Running),
            ..ThreadSample::default()
        }
    }

    fn process(threads: Vec<ThreadSample>) -> ProcessSample {
        ProcessSample {
            pid: 1,
            threads: threads.into(),
            ..ProcessSample::default()
        }
    }

    #[test]
    fn the_word_most_waiters_share_with_the_work_they_did() {
        let before = process(vec![
            waiter(1, 0x10, false, 1.0),
            waiter(2, 0x10, false, 1.0),
            runner(3, 1.0),
            waiter(4, 0x20, false, 1.0),
        ]);
        let now = process(vec![
            waiter(1, 0x10, false, 1.4),
            waiter(2, 0x10, false, 1.0),
            runner(3, 1.5),
            waiter(4, 0x20, false, 1.0),
        ]);
        let share = futex_share(Some(&before), &now).unwrap();
        assert_eq!(share.address, 0x10);
        assert_eq!(share.waiters, 2);
        assert_eq!(share.waiters_ran, 1);
        assert!((share.waiters_run_seconds - 0.4).abs() < 1e-9);
        // The two waiters and the runner; the idle waiter on 0x20 did not run.
        assert_eq!(share.active_threads, 3);
        assert_eq!(share.running_tids, vec![3]);
        assert_eq!(share.waiter_tids, vec![1, 2]);
        assert_eq!(share.timed_waiters, 0);
    }

    #[test]
    fn stale_waits_are_no_reading_and_lone_waits_no_word() {
        let mut stale = process(vec![waiter(1, 0x10, false, 1.0)]);
        stale.carried_seconds = 2.0;
        assert_eq!(futex_share(None, &stale), None);
        let lone = process(vec![waiter(1, 0x10, true, 1.0), runner(2, 1.0)]);
        let share = futex_share(None, &lone).unwrap();
        assert_eq!(
            (share.address, share.waiters, share.read_threads),
            (0, 0, 2)
        );
    }

    #[test]
    fn timed_waits_and_wake_operations() {
        let timed = waiter(1, 0x10, true, 0.0);
        assert_eq!(futex_wait(&timed), Some((0x10, true)));
        let mut wake = waiter(1, 0x10, false, 0.0);
        if let Some(Syscall::InSyscall { args, .. }) = wake.syscall.as_mut() {
            args[1] = 1 | 128; // FUTEX_WAKE_PRIVATE
        }
        assert_eq!(futex_wait(&wake), None);
        assert_eq!(futex_wait(&runner(2, 0.0)), None);
    }
}
