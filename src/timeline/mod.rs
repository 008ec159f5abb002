//! The timeline: the last few full samples and a compact summary of every sample over a
//! longer window. Detectors and rules are pure functions of it.
//!
//! Full samples of a 10,000-thread process are large, so only the newest two keep their
//! threads (the deltas of every reader); a few older ones keep their process figures, and
//! each sample leaves a [`Summary`] (per-process sums and the deltas since the previous
//! sample, matched thread by thread) that long windows are judged on.

use std::collections::{HashMap, VecDeque};

use serde::{Deserialize, Serialize};

pub mod contention;
pub mod waits;

use crate::model::{AppMetrics, CpuThrottling, Sample, ThreadList, ThreadSample};
use waits::{WaitKind, classify};

/// Recent samples kept (the GPU window, the span of switch rates).
const RECENT_SAMPLES: usize = 8;

/// Of those, the newest that keep their threads: the latest and the one before it. Older
/// ones drop their thread lists (at seed scale each is megabytes) and keep, per thread,
/// only the non-voluntary switch count, which is read every few samples.
const SAMPLES_WITH_THREADS: usize = 2;

/// Summaries newer than this (seconds before the newest) keep every sample; older ones
/// are merged with their neighbours until they lie about a [`THINNING_RATIO`]th of their
/// age apart (5 s at a minute, 50 s at ten), so neither a fast `--interval` nor a long
/// history (twice the hang window) multiplies the memory a window takes: a history of
/// hours keeps some tens of summaries beyond the first minute.
pub const FULL_RESOLUTION_SECONDS: f64 = 60.0;

/// Old summaries lie about their age divided by this apart.
pub const THINNING_RATIO: f64 = 12.0;

/// The most seconds two merged summaries may span together at `age` seconds before the
/// newest: none within [`FULL_RESOLUTION_SECONDS`].
pub fn thinned_spacing(age: f64) -> f64 {
    if age <= FULL_RESOLUTION_SECONDS {
        0.0
    } else {
        age / THINNING_RATIO
    }
}

/// A compact reading of one sample, with the change since the previous one.
#[derive(Debug, Clone, Default, Serialize, schemars::JsonSchema, Deserialize, PartialEq)]
pub struct Summary {
    pub elapsed_seconds: f64,
    pub time_unix_seconds: f64,
    /// Seconds since the previous sample (0 for the first).
    pub interval_seconds: f64,
    pub usable_cpus: f64,
    pub memory_limit_bytes: u64,
    pub processes: Vec<ProcessSummary>,
    pub app: Option<AppMetrics>,
    /// The quota cgroup's throttling counters at this sample, where read.
    #[serde(default)]
    pub throttling: Option<CpuThrottling>,
    /// GIL readings from the memory of CPython processes that the sample carried.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gil: Vec<crate::model::gil::GilReading>,
}

/// One process in a [`Summary`].
#[derive(Debug, Clone, Default, Serialize, schemars::JsonSchema, Deserialize, PartialEq)]
pub struct ProcessSummary {
    pub pid: i32,
    pub ppid: i32,
    pub comm: String,
    pub exe: Option<String>,
    pub state: char,
    pub start_time_seconds: f64,
    pub threads: u32,
    pub running: u32,
    /// Untimed waits on lock words private to the process (locks, conditions, or
    /// workers waiting for work that no stacks have told apart yet).
    pub lock_waiters: u32,
    /// Futex waiters whose stacks show them waiting for work (pool workers, queue
    /// consumers, event waiters): idle, not blocked on a lock.
    #[serde(default)]
    pub idle_waiters: u32,
    /// Untimed waits on futex words that may be shared with other processes.
    #[serde(default)]
    pub shared_waiters: u32,
    pub input_waiters: u32,
    pub sleepers: u32,
    pub io_waiters: u32,
    pub unknown_waiters: u32,
    pub rss_bytes: u64,
    /// utime + stime of the whole process (exited threads included).
    pub cpu_seconds: f64,
    /// rchar + wchar, where readable.
    pub io_chars: Option<u64>,
    /// Changes since the previous sample, over threads present in both.
    pub delta_run_seconds: f64,
    /// The part of `delta_run_seconds` run by communication-library threads (gloo,
    /// NCCL, the TCP store, MPI): their polling is no progress of the process's own work.
    pub delta_library_run_seconds: f64,
    pub delta_wait_seconds: f64,
    pub delta_nonvoluntary_switches: f64,
    /// Change of `cpu_seconds`; `None` for a process new in this sample.
    pub delta_cpu_seconds: Option<f64>,
    pub delta_io_chars: Option<u64>,
    /// The futex word the most of its threads wait on, where this sample read waits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub futex_share: Option<contention::FutexShare>,
    /// Threads that may run an event loop, where this sample read them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub loop_probes: Vec<contention::LoopProbe>,
}

impl Summary {
    pub fn threads(&self) -> u32 {
        self.processes.iter().map(|p| p.threads).sum()
    }

    pub fn running(&self) -> u32 {
        self.processes.iter().map(|p| p.running).sum()
    }

    pub fn rss_bytes(&self) -> u64 {
        self.processes.iter().map(|p| p.rss_bytes).sum()
    }

    /// The process `pid`, if in this summary. Summaries list their processes by
    /// ascending pid (see [`summarise`]), so this is a binary search; a list in another
    /// order (one deserialised from elsewhere) is still searched whole.
    pub fn process(&self, pid: i32) -> Option<&ProcessSummary> {
        match self.processes.binary_search_by_key(&pid, |p| p.pid) {
            Ok(i) => Some(&self.processes[i]),
            Err(_) => self.processes.iter().find(|p| p.pid == pid),
        }
    }

    /// Takes in the summary just before this one, so that this one covers both
    /// intervals: changes add up; of the counts at the sample, the merged one keeps
    /// what argues against a hang (the most running and input or disk waiters, the
    /// fewest lock waiters), so that thinning never lengthens a stall. A process new in
    /// `older` stays new.
    fn absorb(&mut self, older: &Summary) {
        self.interval_seconds += older.interval_seconds;
        // The newer reading of a process stands for both.
        for reading in &older.gil {
            if !self.gil.iter().any(|g| g.pid == reading.pid) {
                self.gil.push(reading.clone());
            }
        }
        for p in &mut self.processes {
            let Some(o) = older.process(p.pid) else {
                continue;
            };
            p.delta_run_seconds += o.delta_run_seconds;
            p.delta_library_run_seconds += o.delta_library_run_seconds;
            p.delta_wait_seconds += o.delta_wait_seconds;
            p.delta_nonvoluntary_switches += o.delta_nonvoluntary_switches;
            p.delta_cpu_seconds = match (p.delta_cpu_seconds, o.delta_cpu_seconds) {
                (Some(a), Some(b)) => Some(a + b),
                _ => None,
            };
            p.delta_io_chars = match (p.delta_io_chars, o.delta_io_chars) {
                (Some(a), Some(b)) => Some(a + b),
                _ => None,
            };
            p.running = p.running.max(o.running);
            p.input_waiters = p.input_waiters.max(o.input_waiters);
            p.io_waiters = p.io_waiters.max(o.io_waiters);
            p.lock_waiters = p.lock_waiters.min(o.lock_waiters);
        }
    }
}

/// A recent sample, with each thread's non-voluntary switch count (by tid), which stays
/// when the sample drops its threads.
#[derive(Debug, Clone)]
struct Recent {
    sample: Sample,
    switches: Vec<(i32, u64)>,
}

/// Recent samples and the summaries of a longer window.
#[derive(Debug, Clone)]
pub struct Timeline {
    /// The newest [`SAMPLES_WITH_THREADS`] whole, older ones without their threads.
    recent: VecDeque<Recent>,
    history: VecDeque<Summary>,
    /// Summaries older than this (seconds before the newest) are dropped.
    pub history_seconds: f64,
}

impl Timeline {
    pub fn new(history_seconds: f64) -> Self {
        Timeline {
            recent: VecDeque::new(),
            history: VecDeque::new(),
            history_seconds,
        }
    }

    /// Adds a sample; summarises it against the previous one.
    pub fn push(&mut self, sample: Sample) {
        let summary = summarise_after(self.latest(), self.history.back(), &sample);
        self.history.push_back(summary);
        let mut switches: Vec<(i32, u64)> = sample
            .threads()
            .filter_map(|(_, t)| Some((t.tid, t.nonvoluntary_ctxt_switches?)))
            .collect();
        switches.sort_unstable();
        self.recent.push_back(Recent { sample, switches });
        if let Some(older) = self
            .recent
            .len()
            .checked_sub(SAMPLES_WITH_THREADS + 1)
            .and_then(|i| self.recent.get_mut(i))
        {
            for p in &mut older.sample.processes {
                p.threads = ThreadList::default();
            }
        }
        while self.recent.len() > RECENT_SAMPLES {
            self.recent.pop_front();
        }
        let newest = self.history.back().map_or(0.0, |s| s.elapsed_seconds);
        while self
            .history
            .front()
            .is_some_and(|s| newest - s.elapsed_seconds > self.history_seconds)
        {
            self.history.pop_front();
        }
        self.thin(newest);
    }

    /// Merges neighbouring summaries older than [`FULL_RESOLUTION_SECONDS`] while
    /// together they span at most [`thinned_spacing`] of the newer one's age; a walk
    /// over the old part (some tens of summaries) per push.
    fn thin(&mut self, newest: f64) {
        // The oldest summary stays as it is: its interval reaches before the history.
        let mut i = 1;
        while i + 1 < self.history.len() {
            let (older, newer) = (&self.history[i], &self.history[i + 1]);
            let age = newest - newer.elapsed_seconds;
            if age <= FULL_RESOLUTION_SECONDS {
                break;
            }
            if older.interval_seconds + newer.interval_seconds > thinned_spacing(age) + 1e-9 {
                i += 1;
                continue;
            }
            let Some(older) = self.history.remove(i) else {
                break;
            };
            // The newer one, now at `i`, covers both; it may take in the next as well.
            if let Some(newer) = self.history.get_mut(i) {
                newer.absorb(&older);
            }
        }
    }

    pub fn latest(&self) -> Option<&Sample> {
        self.recent.back().map(|r| &r.sample)
    }

    pub fn latest_summary(&self) -> Option<&Summary> {
        self.history.back()
    }

    /// The full sample before the latest.
    pub fn previous(&self) -> Option<&Sample> {
        self.recent.iter().rev().nth(1).map(|r| &r.sample)
    }

    /// The recent samples, oldest first: only the newest two keep their threads.
    pub fn recent(&self) -> impl DoubleEndedIterator<Item = &Sample> {
        self.recent.iter().map(|r| &r.sample)
    }

    /// The oldest recent reading of non-voluntary switches before the latest sample: its
    /// time and each thread's count, sorted by tid (switches are read every few samples,
    /// so their rates are taken over this span).
    pub fn switches_before_latest(&self) -> Option<(f64, &[(i32, u64)])> {
        let latest = self.latest()?.elapsed_seconds;
        self.recent
            .iter()
            .find(|r| r.sample.elapsed_seconds < latest && !r.switches.is_empty())
            .map(|r| (r.sample.elapsed_seconds, r.switches.as_slice()))
    }

    pub fn summaries(&self) -> impl DoubleEndedIterator<Item = &Summary> + ExactSizeIterator {
        self.history.iter()
    }

    pub fn len(&self) -> usize {
        self.history.len()
    }

    pub fn is_empty(&self) -> bool {
        self.history.is_empty()
    }

    /// Seconds covered by the summaries (newest − oldest).
    pub fn span_seconds(&self) -> f64 {
        match (self.history.front(), self.history.back()) {
            (Some(a), Some(b)) => b.elapsed_seconds - a.elapsed_seconds,
            _ => 0.0,
        }
    }

    /// The newest GIL reading of `pid` no older than `seconds` before the newest summary.
    pub fn gil_reading(&self, pid: i32, seconds: f64) -> Option<&crate::model::gil::GilReading> {
        self.window(seconds)
            .filter_map(|s| s.gil.iter().find(|g| g.pid == pid))
            .last()
    }

    /// The summaries of the last `seconds` (those newer than newest − seconds), oldest first.
    pub fn window(&self, seconds: f64) -> impl Iterator<Item = &Summary> {
        let newest = self.history.back().map_or(0.0, |s| s.elapsed_seconds);
        self.history
            .iter()
            .filter(move |s| newest - s.elapsed_seconds <= seconds + 1e-9)
    }
}

/// What [`classify`] looks at: the state, the wait channel and the system call's name.
/// Whether the stacks of `process` show thread `tid` waiting for work, time or input.
fn idle_by_stacks(process: &crate::model::ProcessSample, tid: i32) -> bool {
    process
        .waits
        .as_ref()
        .and_then(|w| w.class_of(tid))
        .is_some_and(|c| c.is_idle())
}

type WaitKey<'a> = (char, Option<&'a str>, Option<&'a str>, Option<(bool, bool)>);

fn wait_key(thread: &ThreadSample) -> WaitKey<'_> {
    let syscall = match &thread.syscall {
        Some(crate::model::Syscall::InSyscall {
            name: Some(name), ..
        }) => Some(name.as_ref()),
        _ => None,
    };
    let futex = waits::futex_wait(thread).map(|f| (f.private, f.timed));
    (thread.state, thread.wchan.as_deref(), syscall, futex)
}

/// Calls `pair` for each thread of `now` with the same thread in `before`: a merge of
/// the two lists when both are in tid order (as the sampler writes them), else by a map.
fn for_each_pair<'a>(
    before: &'a [ThreadSample],
    now: &'a [ThreadSample],
    mut pair: impl FnMut(&'a ThreadSample, &'a ThreadSample),
) {
    if before.is_sorted_by_key(|t| t.tid) && now.is_sorted_by_key(|t| t.tid) {
        let mut earlier = before.iter().peekable();
        for t in now {
            while earlier.next_if(|b| b.tid < t.tid).is_some() {}
            if let Some(b) = earlier.next_if(|b| b.tid == t.tid) {
                pair(b, t);
            }
        }
    } else {
        let by_tid: HashMap<i32, &ThreadSample> = before.iter().map(|t| (t.tid, t)).collect();
        for t in now {
            if let Some(b) = by_tid.get(&t.tid) {
                pair(b, t);
            }
        }
    }
}

/// Summarises `sample` against the previous full sample.
pub fn summarise(previous: Option<&Sample>, sample: &Sample) -> Summary {
    summarise_after(previous, None, sample)
}

/// The counts of a process's threads by wait, as in [`ProcessSummary`].
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct WaitCounts {
    running: u32,
    lock_waiters: u32,
    idle_waiters: u32,
    shared_waiters: u32,
    input_waiters: u32,
    sleepers: u32,
    io_waiters: u32,
    unknown_waiters: u32,
}

impl WaitCounts {
    fn of(summary: &ProcessSummary) -> WaitCounts {
        WaitCounts {
            running: summary.running,
            lock_waiters: summary.lock_waiters,
            idle_waiters: summary.idle_waiters,
            shared_waiters: summary.shared_waiters,
            input_waiters: summary.input_waiters,
            sleepers: summary.sleepers,
            io_waiters: summary.io_waiters,
            unknown_waiters: summary.unknown_waiters,
        }
    }

    fn set(self, summary: &mut ProcessSummary) {
        summary.running = self.running;
        summary.lock_waiters = self.lock_waiters;
        summary.idle_waiters = self.idle_waiters;
        summary.shared_waiters = self.shared_waiters;
        summary.input_waiters = self.input_waiters;
        summary.sleepers = self.sleepers;
        summary.io_waiters = self.io_waiters;
        summary.unknown_waiters = self.unknown_waiters;
    }
}

/// Whether `now` is `before` carried on: the same shared thread list (the sampler
/// carries a still process's list whole) with the same thread count, exit state and
/// stacks, so that its threads count as they did and none of them ran.
fn carried(before: &crate::model::ProcessSample, now: &crate::model::ProcessSample) -> bool {
    before.threads.shares(&now.threads)
        && before.num_threads == now.num_threads
        && before.has_exited() == now.has_exited()
        && match (&before.waits, &now.waits) {
            (None, None) => true,
            (Some(a), Some(b)) => std::sync::Arc::ptr_eq(a, b),
            _ => false,
        }
}

/// [`summarise`], given also the summary of `previous`: a process carried whole from
/// `previous` keeps its counts without its threads being classified again (a node of
/// thousands of still threads costs its processes, not its threads). Processes are
/// listed by ascending pid.
pub fn summarise_after(
    previous: Option<&Sample>,
    previous_summary: Option<&Summary>,
    sample: &Sample,
) -> Summary {
    let earlier_processes: HashMap<i32, _> = previous
        .map(|p| p.processes.iter().map(|proc_| (proc_.pid, proc_)).collect())
        .unwrap_or_default();
    // The summary of `previous` itself (not a thinned one), to reuse counts from.
    let previous_summary = previous_summary
        .filter(|summary| previous.is_some_and(|p| p.elapsed_seconds == summary.elapsed_seconds));
    // Threads of one tree share a few waits: classify each distinct one once.
    let mut kinds: HashMap<WaitKey<'_>, WaitKind> = HashMap::new();
    let mut processes = sample
        .processes
        .iter()
        .map(|p| {
            // An exited process (a zombie its parent has not reaped) has no threads.
            let exited = p.has_exited();
            let mut summary = ProcessSummary {
                pid: p.pid,
                ppid: p.ppid,
                comm: p.comm.clone(),
                exe: p.exe.clone(),
                state: p.state,
                start_time_seconds: p.start_time_seconds,
                // Threads not read yet (a large new process is read over a few samples)
                // still count, from `stat`, as threads whose wait is unknown: a first
                // read spread over samples is not thread growth.
                threads: if exited {
                    0
                } else {
                    (p.threads.len() as u32).max(p.num_threads)
                },
                unknown_waiters: if exited {
                    0
                } else {
                    p.num_threads.saturating_sub(p.threads.len() as u32)
                },
                rss_bytes: p.rss_bytes,
                cpu_seconds: p.cpu_seconds,
                io_chars: p.io.map(|io| io.rchar + io.wchar),
                ..ProcessSummary::default()
            };
            let before = earlier_processes.get(&p.pid).copied();
            let kept = before
                .filter(|before| carried(before, p))
                .and_then(|_| previous_summary?.process(p.pid))
                .map(WaitCounts::of);
            if let Some(counts) = kept {
                counts.set(&mut summary);
            } else {
                for t in &p.threads {
                    let kind = *kinds.entry(wait_key(t)).or_insert_with(|| classify(t));
                    match kind {
                        WaitKind::Running => summary.running += 1,
                        // A futex waiter its stacks show waiting for work is idle.
                        WaitKind::Lock if idle_by_stacks(p, t.tid) => summary.idle_waiters += 1,
                        WaitKind::Lock => summary.lock_waiters += 1,
                        WaitKind::Shared => summary.shared_waiters += 1,
                        WaitKind::Input => summary.input_waiters += 1,
                        WaitKind::Sleep => summary.sleepers += 1,
                        WaitKind::Io => summary.io_waiters += 1,
                        WaitKind::Unknown => summary.unknown_waiters += 1,
                        WaitKind::Stopped | WaitKind::Dead => {}
                    }
                }
            }
            // A carried list is the same threads with the same readings: no change.
            if let Some(before) = before.filter(|_| kept.is_none()) {
                for_each_pair(&before.threads, &p.threads, |before, t| {
                    let ran = positive(t.run_seconds, before.run_seconds);
                    summary.delta_run_seconds += ran;
                    if crate::model::ranks::is_communication_thread(&t.name) {
                        summary.delta_library_run_seconds += ran;
                    }
                    summary.delta_wait_seconds +=
                        positive(t.runqueue_wait_seconds, before.runqueue_wait_seconds);
                    summary.delta_nonvoluntary_switches += positive(
                        t.nonvoluntary_ctxt_switches.map(|v| v as f64),
                        before.nonvoluntary_ctxt_switches.map(|v| v as f64),
                    );
                });
            }
            if let Some(before) = earlier_processes.get(&p.pid) {
                summary.delta_cpu_seconds = Some((p.cpu_seconds - before.cpu_seconds).max(0.0));
                summary.delta_io_chars = match (summary.io_chars, before.io) {
                    (Some(now), Some(then)) => Some(now.saturating_sub(then.rchar + then.wchar)),
                    _ => None,
                };
            }
            summary.futex_share =
                contention::futex_share(earlier_processes.get(&p.pid).copied(), p);
            summary.loop_probes = contention::loop_probes(p);
            summary
        })
        .collect::<Vec<_>>();
    processes.sort_by_key(|p| p.pid);
    Summary {
        elapsed_seconds: sample.elapsed_seconds,
        time_unix_seconds: sample.time_unix_seconds,
        interval_seconds: previous
            .map(|p| (sample.elapsed_seconds - p.elapsed_seconds).max(0.0))
            .unwrap_or(0.0),
        usable_cpus: sample.cpus.usable,
        memory_limit_bytes: sample.memory_limit.bytes,
        processes,
        app: sample.app.clone(),
        throttling: sample.cpus.throttling.clone(),
        gil: sample.gil.clone(),
    }
}

/// Throttling over the summaries of a window: (periods, throttled periods, throttled
/// seconds) between its first and last counters; `None` without two readings of the
/// same file.
pub fn throttling_delta<'a>(
    window: impl IntoIterator<Item = &'a Summary>,
) -> Option<(u64, u64, f64)> {
    let readings: Vec<&CpuThrottling> = window
        .into_iter()
        .filter_map(|s| s.throttling.as_ref())
        .collect();
    let (first, last) = (readings.first()?, readings.last()?);
    if readings.len() < 2 || first.path != last.path {
        return None;
    }
    Some((
        last.periods.saturating_sub(first.periods),
        last.throttled_periods
            .saturating_sub(first.throttled_periods),
        (last.throttled_seconds - first.throttled_seconds).max(0.0),
    ))
}

fn positive(now: Option<f64>, then: Option<f64>) -> f64 {
    match (now, then) {
        (Some(n), Some(t)) => (n - t).max(0.0),
        _ => 0.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ProcessSample;

    fn sample(elapsed: f64, run: f64, wait: f64, tids: &[i32]) -> Sample {
        Sample {
            elapsed_seconds: elapsed,
            root_pid: 1,
            processes: vec![ProcessSample {
                pid: 1,
                cpu_seconds: run,
                threads: tids
                    .iter()
                    .map(|&tid| ThreadSample {
                        tid,
                        state: 'R',
                        run_seconds: Some(run),
                        runqueue_wait_seconds: Some(wait),
                        ..ThreadSample::default()
                    })
                    .collect(),
                ..ProcessSample::default()
            }],
            ..Sample::default()
        }
    }

    /// A large new process read over a few samples (its threads deferred) counts every
    /// thread `stat` names from the first sample, the unread ones as of unknown wait:
    /// the spread-out first read is no thread growth.
    #[test]
    fn threads_not_read_yet_count_from_stat_as_unknown_waits() {
        let mut timeline = Timeline::new(60.0);
        let mut deferred = sample(0.0, 1.0, 0.5, &[1, 2]);
        deferred.processes[0].num_threads = 63;
        timeline.push(deferred);
        let first = timeline.latest_summary().unwrap().clone();
        assert_eq!(first.threads(), 63);
        assert_eq!(first.processes[0].running, 2);
        assert_eq!(first.processes[0].unknown_waiters, 61);
        let tids: Vec<i32> = (1..=63).collect();
        let mut read = sample(1.0, 2.0, 0.5, &tids);
        read.processes[0].num_threads = 63;
        timeline.push(read);
        let second = timeline.latest_summary().unwrap();
        assert_eq!(second.threads(), 63);
        assert_eq!(second.processes[0].unknown_waiters, 0);
    }

    #[test]
    fn deltas_match_threads_and_ignore_newcomers() {
        let mut timeline = Timeline::new(60.0);
        timeline.push(sample(0.0, 1.0, 0.5, &[1, 2]));
        timeline.push(sample(1.0, 2.0, 2.5, &[1, 2, 3]));
        let s = timeline.latest_summary().unwrap();
        // Threads 1 and 2 each ran 1 s and waited 2 s; thread 3 is new and not counted.
        assert_eq!(s.processes[0].delta_run_seconds, 2.0);
        assert_eq!(s.processes[0].delta_wait_seconds, 4.0);
        assert_eq!(s.processes[0].delta_cpu_seconds, Some(1.0));
        assert_eq!(s.processes[0].running, 3);
        assert_eq!(s.interval_seconds, 1.0);
    }

    /// The oldest summary's time, and the run time the summaries after it add up to.
    fn run_since_first(timeline: &Timeline) -> (f64, f64) {
        let first = timeline.summaries().next().unwrap().elapsed_seconds;
        let total = timeline
            .summaries()
            .skip(1)
            .map(|s| s.processes[0].delta_run_seconds)
            .sum();
        (first, total)
    }

    #[test]
    fn old_history_is_thinned_by_age_keeping_its_changes() {
        let mut timeline = Timeline::new(600.0);
        // 300 s at 100 ms: the thread runs 0.01 s each interval, and once, 200 s
        // before the end, 5 s at a time.
        let mut run = 0.0;
        let mut runs = Vec::new();
        for i in 0..=3000 {
            run += if i == 1000 { 5.0 } else { 0.01 };
            runs.push(run);
            timeline.push(sample(f64::from(i) / 10.0, run, 0.0, &[1]));
        }
        let full = (FULL_RESOLUTION_SECONDS * 10.0) as usize;
        // Spacing a twelfth of the age from 60 s to 300 s: about 12 ln 5 ≈ 19 summaries.
        let thinned = timeline.len() - full;
        assert!(
            (10..=40).contains(&thinned),
            "{thinned} summaries older than a minute (of {})",
            timeline.len()
        );
        // Every merged summary spans at most the spacing its age allows.
        let newest = timeline.latest_summary().unwrap().elapsed_seconds;
        for s in timeline.summaries().skip(1) {
            let age = newest - s.elapsed_seconds;
            assert!(
                s.interval_seconds <= thinned_spacing(age).max(0.1) + 1e-6,
                "{} s at age {age}",
                s.interval_seconds
            );
        }
        // Every change is still there: the run time over the whole history adds up.
        let (first, total) = run_since_first(&timeline);
        let expected = run - runs[(first * 10.0).round() as usize];
        assert!((total - expected).abs() < 1e-6, "{total} vs {expected}");
        // The burst is in one interval, not spread or lost.
        assert!(
            timeline
                .summaries()
                .any(|s| s.processes[0].delta_run_seconds >= 5.0)
        );
        // The newest minute keeps every sample.
        assert_eq!(timeline.window(10.0).count(), 101);
    }

    /// Twice an hour's hang window at 1 Hz stays some tens of summaries beyond the
    /// first minute, not thousands.
    #[test]
    fn a_history_of_hours_keeps_some_tens_of_old_summaries() {
        let mut timeline = Timeline::new(7200.0);
        for i in 0..=7200 {
            timeline.push(sample(f64::from(i), f64::from(i) * 0.5, 0.0, &[1]));
        }
        let old = timeline.len() - 61;
        // About 12 ln(7200 / 60) ≈ 57 at full blocks; greedy merging fills them about
        // two thirds.
        assert!(old <= 120, "{old} summaries older than a minute");
        assert!(timeline.span_seconds() >= 7199.0);
        let (first, total) = run_since_first(&timeline);
        assert!((total - (7200.0 - first) * 0.5).abs() < 1e-6, "{total}");
    }

    #[test]
    fn history_is_trimmed_to_its_window() {
        let mut timeline = Timeline::new(5.0);
        for i in 0..20 {
            timeline.push(sample(i as f64, i as f64, 0.0, &[1]));
        }
        assert_eq!(timeline.len(), 6);
        assert_eq!(timeline.span_seconds(), 5.0);
        assert_eq!(timeline.window(2.0).count(), 3);
        assert_eq!(timeline.recent().count(), RECENT_SAMPLES);
    }

    /// Only the latest two samples keep their threads; the older recent ones keep their
    /// process figures, and the switch counts of the oldest that had them still give
    /// the rates over the whole recent span.
    #[test]
    fn older_recent_samples_drop_their_threads_but_keep_switch_counts() {
        let mut timeline = Timeline::new(60.0);
        for i in 0..12u64 {
            let mut s = sample(i as f64, i as f64, 0.0, &[7, 3]);
            // Switches read every fourth sample, as the sampler does.
            if i % 4 == 1 {
                for t in &mut s.processes[0].threads {
                    t.nonvoluntary_ctxt_switches = Some(100 * i + t.tid as u64);
                }
            }
            timeline.push(s);
        }
        let with_threads: Vec<usize> = timeline
            .recent()
            .map(|s| s.processes[0].threads.len())
            .collect();
        assert_eq!(with_threads, [0, 0, 0, 0, 0, 0, 2, 2]);
        assert!(timeline.recent().all(|s| s.processes[0].pid == 1));
        assert_eq!(timeline.previous().unwrap().processes[0].threads.len(), 2);
        // Samples 4..=11 are recent; the oldest with switches is sample 5.
        assert_eq!(
            timeline.switches_before_latest(),
            Some((5.0, &[(3, 503), (7, 507)][..]))
        );
    }
}
