//! An event loop blocked by its own work: the thread that runs an asyncio (or uvloop)
//! loop stays on the CPU for long stretches without getting back to its poll, so every
//! request on the loop waits behind the call that holds it.
//!
//! From outside, a loop thread is one seen sleeping in its poll (`epoll_wait` and the
//! like, [`crate::timeline::contention::LoopProbe::at_poll`]) at some reading of the
//! history (a blocked loop is seldom caught there; a server waits there before its load).
//! Between two readings of it, each return to the poll that sleeps is a voluntary
//! context switch; the time it ran or waited for a CPU divided by those switches is how
//! long, on average, it stayed away from its poll. An interval is blocked when the
//! thread was busy (away from its poll at least [`BUSY_SHARE`] of it) and that stretch
//! is at least the threshold ([`super::DetectConfig::event_loop_block_seconds`],
//! asyncio's own `slow_callback_duration`, 100 ms, by default), on the CPU too: short
//! callbacks that only wait for a CPU of a loaded machine are not the loop's own work. A loop that hands its
//! calls to threads (`asyncio.to_thread`) sleeps in its poll (or for the GIL) between
//! short callbacks: its stretches are milliseconds.

use std::collections::BTreeMap;

use crate::model::{Finding, FindingKind, Severity};
use crate::timeline::Timeline;
use crate::timeline::contention::LoopProbe;

use super::DetectConfig;

/// Share of an interval the loop thread must have run for it to count as blocked.
pub const BUSY_SHARE: f64 = 0.5;

/// Blocked intervals (between readings of the loop thread) for a warning.
pub const SUSTAINED_INTERVALS: usize = 3;

/// Intervals looked at: the newest this many within [`WINDOW_SECONDS`].
const INTERVALS: usize = 5;

/// How far back readings are looked for.
const WINDOW_SECONDS: f64 = 30.0;

/// One interval between two readings of a loop thread.
#[derive(Debug, Clone, Copy)]
struct Interval {
    seconds: f64,
    /// Time away from the poll: on the CPU, or runnable and waiting for one (a loaded
    /// machine preempts the loop; it is away from its poll all the same).
    run_seconds: f64,
    /// The part of `run_seconds` on the CPU: the loop's own work.
    cpu_seconds: f64,
    sleeps: u64,
}

impl Interval {
    /// Mean time on the CPU between returns to the poll (the whole run when it never
    /// slept).
    fn stretch_seconds(&self) -> f64 {
        self.run_seconds / self.sleeps.max(1) as f64
    }

    /// Busy, away from its poll for the threshold at a time, and on the CPU for the
    /// threshold at a time too: a loop whose short callbacks only wait for a CPU of a
    /// loaded machine is not blocked by its own work.
    fn is_blocked(&self, threshold: f64) -> bool {
        self.seconds > 0.0
            && self.run_seconds >= BUSY_SHARE * self.seconds
            && self.stretch_seconds() >= threshold
            && self.cpu_seconds / self.sleeps.max(1) as f64 >= threshold
    }
}

/// `event-loop-blocked` findings: one per loop thread blocked in its newest intervals.
pub fn blocked_loops(timeline: &Timeline, config: &DetectConfig) -> Vec<Finding> {
    let Some(latest) = timeline.latest_summary() else {
        return Vec::new();
    };
    let threshold = config.event_loop_block_seconds;
    let mut findings = Vec::new();
    for process in &latest.processes {
        // Threads seen sleeping in a poll anywhere in the history: a blocked loop is
        // seldom caught at its poll, but a server waits in it before its load begins.
        let loops: Vec<i32> = timeline
            .summaries()
            .filter_map(|s| s.process(process.pid))
            .flat_map(|p| p.loop_probes.iter().filter(|probe| probe.at_poll))
            .map(|probe| probe.tid)
            .collect();
        // Each loop thread's readings in the window, oldest first.
        let mut by_tid: BTreeMap<i32, Vec<(f64, &LoopProbe)>> = BTreeMap::new();
        for summary in timeline.window(WINDOW_SECONDS) {
            let Some(p) = summary.process(process.pid) else {
                continue;
            };
            for probe in p
                .loop_probes
                .iter()
                .filter(|probe| loops.contains(&probe.tid))
            {
                by_tid
                    .entry(probe.tid)
                    .or_default()
                    .push((summary.elapsed_seconds, probe));
            }
        }
        for (tid, readings) in by_tid {
            let intervals: Vec<Interval> = readings
                .windows(2)
                .map(|pair| Interval {
                    seconds: pair[1].0 - pair[0].0,
                    run_seconds: (pair[1].1.run_seconds + pair[1].1.runqueue_wait_seconds
                        - pair[0].1.run_seconds
                        - pair[0].1.runqueue_wait_seconds)
                        .max(0.0),
                    cpu_seconds: (pair[1].1.run_seconds - pair[0].1.run_seconds).max(0.0),
                    sleeps: pair[1]
                        .1
                        .voluntary_switches
                        .saturating_sub(pair[0].1.voluntary_switches),
                })
                .collect();
            let newest: Vec<Interval> = intervals
                .iter()
                .rev()
                .take(INTERVALS)
                .rev()
                .copied()
                .collect();
            if let Some(finding) = judge_loop(process.pid, &process.comm, tid, &newest, threshold) {
                findings.push(finding);
            }
        }
    }
    findings
}

fn judge_loop(
    pid: i32,
    comm: &str,
    tid: i32,
    intervals: &[Interval],
    threshold: f64,
) -> Option<Finding> {
    let blocked: Vec<&Interval> = intervals
        .iter()
        .filter(|i| i.is_blocked(threshold))
        .collect();
    if blocked.is_empty() {
        return None;
    }
    let sustained = blocked.len() >= SUSTAINED_INTERVALS
        && blocked.len() * 2 >= intervals.len()
        && intervals
            .iter()
            .rev()
            .take(2)
            .any(|i| i.is_blocked(threshold));
    let (run, seconds, sleeps) = blocked.iter().fold((0.0, 0.0, 0), |(r, s, n), i| {
        (r + i.run_seconds, s + i.seconds, n + i.sleeps)
    });
    let stretch = run / sleeps.max(1) as f64;
    let share = if seconds > 0.0 { run / seconds } else { 0.0 };
    let mut finding = Finding::new(
        FindingKind::EventLoopBlocked,
        if sustained {
            Severity::Warning
        } else {
            Severity::Info
        },
        format!(
            "the event loop of pid {pid} ({comm}), thread {tid}, stays away from its poll for {} {:.0} ms at a time (threshold {:.0} ms), in {} of {} intervals: every request on the loop waits behind the call that holds it",
            if sleeps == 0 { "at least" } else { "about" },
            stretch * 1000.0,
            threshold * 1000.0,
            blocked.len(),
            intervals.len()
        ),
    );
    finding.confidence = if sustained { 0.8 } else { 0.5 };
    finding.pids = vec![pid];
    finding.tids = vec![tid];
    finding.evidence.push(format!(
        "thread {tid} was seen sleeping in its poll (epoll_wait or the like): it runs an event loop"
    ));
    finding.evidence.push(format!(
        "over {seconds:.1} s of blocked intervals it ran or waited for a CPU {run:.2} s ({:.0} % of the time) and went back to sleep in its poll only {sleeps} time(s): {:.0} ms away from its poll at a time on average",
        share * 100.0,
        stretch * 1000.0
    ));
    finding.evidence.push(format!(
        "per interval (ms away from the poll between sleeps): {}",
        intervals
            .iter()
            .map(|i| format!("{:.0}", i.stretch_seconds() * 1000.0))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    finding.metrics.insert("loop_block_seconds".into(), stretch);
    finding.metrics.insert("loop_busy_share".into(), share);
    finding
        .metrics
        .insert("loop_blocked_intervals".into(), blocked.len() as f64);
    finding
        .metrics
        .insert("loop_block_threshold_seconds".into(), threshold);
    finding.remedy = "Keep the event loop unblocked: run CPU-bound or blocking calls off the loop with `await asyncio.to_thread(fn, ...)` or `await loop.run_in_executor(pool, fn, ...)` (a ProcessPoolExecutor for pure-Python CPU work, which holds the GIL); keep coroutines to awaits and short callbacks. `PYTHONASYNCIODEBUG=1` makes asyncio log each callback slower than `loop.slow_callback_duration` with its line; `tfwatch snapshot --stacks` shows the call under the coroutine.".to_string();
    Some(finding)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::test_support::{process, sample, thread};
    use crate::model::{Syscall, ThreadSample};

    /// The loop thread (the main thread) with its counters; at its poll when `at_poll`.
    fn loop_thread(run: f64, sleeps: u64, at_poll: bool) -> ThreadSample {
        let mut t = thread(100, if at_poll { 'S' } else { 'R' }, "", run);
        t.voluntary_ctxt_switches = Some(sleeps);
        t.syscall = Some(if at_poll {
            Syscall::InSyscall {
                number: 232,
                name: Some("epoll_wait".into()),
                args: [3, 0x7ffd_0000, 1024, 100, 0, 0],
            }
        } else {
            Syscall::Running
        });
        t
    }

    fn timeline(per_second_run: f64, per_second_sleeps: u64) -> Timeline {
        let mut timeline = Timeline::new(120.0);
        for i in 0..7u64 {
            let t = loop_thread(i as f64 * per_second_run, i * per_second_sleeps, i % 3 == 0);
            let mut p = process(100, 1, vec![t]);
            p.exe = Some("/usr/bin/python3.11".to_string());
            timeline.push(sample(i as f64, 2.0, vec![p]));
        }
        timeline
    }

    #[test]
    fn a_loop_on_the_cpu_150_ms_at_a_time_is_blocked() {
        // 0.9 s of CPU a second, back to its poll 6 times: 150 ms stretches.
        let findings = blocked_loops(&timeline(0.9, 6), &DetectConfig::default());
        assert_eq!(findings.len(), 1, "{findings:#?}");
        let f = &findings[0];
        assert_eq!(f.kind, FindingKind::EventLoopBlocked);
        assert_eq!(f.severity, Severity::Warning);
        assert!((f.metrics["loop_block_seconds"] - 0.15).abs() < 1e-6);
        assert!(f.summary.contains("about 150 ms"), "{}", f.summary);
        assert!(f.remedy.contains("asyncio.to_thread"));
    }

    #[test]
    fn a_loop_that_hands_its_calls_to_threads_is_not_blocked() {
        // Busy but back at its poll (or the GIL) every few milliseconds.
        assert!(blocked_loops(&timeline(0.6, 300), &DetectConfig::default()).is_empty());
        // Idle: asleep in its poll.
        assert!(blocked_loops(&timeline(0.001, 1), &DetectConfig::default()).is_empty());
    }

    #[test]
    fn a_loop_whose_short_callbacks_wait_for_a_cpu_of_a_loaded_machine_is_not_blocked() {
        // Away from its poll 0.9 s a second, back 6 times (150 ms stretches), but on the
        // CPU 0.06 s of it: the rest waits for a CPU other processes hold.
        let loaded = |cpu_per_second: f64| {
            let mut timeline = Timeline::new(120.0);
            for i in 0..7u64 {
                let mut t = loop_thread(i as f64 * cpu_per_second, i * 6, i % 3 == 0);
                t.runqueue_wait_seconds = Some(i as f64 * (0.9 - cpu_per_second));
                let mut p = process(100, 1, vec![t]);
                p.exe = Some("/usr/bin/python3.11".to_string());
                timeline.push(sample(i as f64, 2.0, vec![p]));
            }
            blocked_loops(&timeline, &DetectConfig::default())
        };
        assert!(loaded(0.06).is_empty(), "{:#?}", loaded(0.06));
        // Its own 150 ms calls slowed by the load to 0.9 s a second are still blocking.
        assert_eq!(loaded(0.75).len(), 1);
    }

    #[test]
    fn a_thread_never_seen_at_a_poll_is_no_loop() {
        let mut timeline = Timeline::new(120.0);
        for i in 0..7u64 {
            let t = loop_thread(i as f64 * 0.95, 0, false);
            let mut p = process(100, 1, vec![t]);
            p.exe = Some("/usr/bin/python3.11".to_string());
            timeline.push(sample(i as f64, 2.0, vec![p]));
        }
        assert!(blocked_loops(&timeline, &DetectConfig::default()).is_empty());
    }

    #[test]
    fn the_threshold_is_a_setting() {
        let config = DetectConfig {
            event_loop_block_seconds: 0.2,
            ..DetectConfig::default()
        };
        assert!(blocked_loops(&timeline(0.9, 6), &config).is_empty());
    }
}
