//! Hangs: a process making no progress while its threads wait on locks, and the forked
//! child blocked on a lock it inherited from a multi-threaded parent.

use crate::model::stacks::{StacksReport, paused_line};
use crate::model::verdict::{ProcWait, ProcessWaits, WaitVerdict, judge_waits};
use crate::model::waits::StackExplanation;
use crate::model::{Finding, FindingKind, Severity};
use crate::model::{ProcessSample, futex_wait};
use crate::timeline::{ProcessSummary, Timeline};
use crate::units::format_seconds;

use super::DetectConfig;
use crate::timeline::waits::{WaitKind, classify};

/// CPU time per second of wall time below which a process counts as making no progress
/// (1 % of one core: heartbeat threads stay below it, real work does not).
const PROGRESS_CPU_SHARE: f64 = 0.01;

/// How long a process has been stuck, as seen in the timeline.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StallSpan {
    /// Seconds from the last sample that showed progress (or the first sample of the
    /// process) to the newest.
    pub seconds: f64,
    /// Whether progress was seen earlier in the timeline (confidence rises).
    pub progressed_before: bool,
}

/// Whether the process moved between the previous sample and this one: CPU time beyond
/// a heartbeat's, or any I/O.
fn progressed(p: &ProcessSummary, interval: f64) -> bool {
    let floor = PROGRESS_CPU_SHARE * interval.max(0.001);
    p.delta_run_seconds > floor
        || p.delta_cpu_seconds.is_some_and(|d| d > floor.max(0.02))
        || p.delta_io_chars.is_some_and(|d| d > 0)
}

/// Whether a process is still the way a hang or an idle program looks: threads in
/// untimed waits on private lock words (locks, or workers waiting for work), nothing
/// running, nothing waiting for input or disk.
fn blocked_on_locks(p: &ProcessSummary) -> bool {
    p.lock_waiters + p.idle_waiters > 0
        && p.running == 0
        && p.input_waiters == 0
        && p.io_waiters == 0
}

/// Whether none of the process's threads was read in that sample (a large tree's still
/// process, known by its `stat` alone): not known to be anything but what it is when
/// first read, so a stall runs back through it.
fn unread(p: &ProcessSummary) -> bool {
    p.threads > 0 && p.unknown_waiters == p.threads && p.running == 0
}

/// How long `pid` has made no progress while blocked on locks, newest sample backwards
/// (through samples that had its `stat` alone).
/// `None` when it is not blocked now.
pub fn stall_span(timeline: &Timeline, pid: i32) -> Option<StallSpan> {
    let summaries: Vec<_> = timeline.summaries().collect();
    let newest = summaries.last()?;
    let now = newest.process(pid)?;
    if !blocked_on_locks(now) {
        return None;
    }
    let mut since = newest.elapsed_seconds;
    let mut progressed_before = false;
    for pair in summaries.windows(2).rev() {
        let (older, newer) = (pair[0], pair[1]);
        let Some(p) = newer.process(pid) else { break };
        if p.delta_cpu_seconds.is_none() {
            // New in `newer`: nothing to compare with.
            break;
        }
        if progressed(p, newer.interval_seconds) || !(blocked_on_locks(p) || unread(p)) {
            progressed_before = progressed(p, newer.interval_seconds);
            break;
        }
        since = older.elapsed_seconds;
    }
    Some(StallSpan {
        seconds: newest.elapsed_seconds - since,
        progressed_before,
    })
}

/// Each live thread's wait as /proc shows it, for [`judge_waits`].
pub fn proc_waits(process: &ProcessSample) -> Vec<(i32, ProcWait)> {
    process
        .threads
        .iter()
        .filter_map(|t| {
            let wait = match classify(t) {
                WaitKind::Lock => ProcWait::PrivateWait,
                WaitKind::Dead => return None,
                WaitKind::Stopped | WaitKind::Unknown => ProcWait::Unknown,
                _ if futex_wait(t).is_some() => ProcWait::FutexEnds,
                _ => ProcWait::CanAct,
            };
            Some((t.tid, wait))
        })
        .collect()
}

/// (waiter, owner) of each pthread mutex whose owner was read from memory.
fn mutex_owners(process: &ProcessSample) -> Vec<(i32, i32)> {
    process
        .threads
        .iter()
        .filter_map(|t| Some((t.tid, t.lock.as_ref()?.owner_tid?)))
        .collect()
}

/// What the waits of `process` say.
pub fn judge_process(process: &ProcessSample) -> WaitVerdict {
    judge_waits(
        &proc_waits(process),
        process.waits.as_deref(),
        &mutex_owners(process),
    )
}

/// What the waits of `pid` say, in the newest sample.
pub fn verdict(timeline: &Timeline, pid: i32) -> Option<WaitVerdict> {
    Some(judge_process(timeline.latest()?.process(pid)?))
}

/// How long `pid` has been hung: stalled, and its waits say hung.
pub fn hang_span(timeline: &Timeline, pid: i32) -> Option<StallSpan> {
    let span = stall_span(timeline, pid)?;
    verdict(timeline, pid)?.is_hung().then_some(span)
}

/// `no-progress`: a process without progress for the hang window whose waits say hung
/// (an error, which `run` acts on); one whose waits say idle gets an `idle` finding,
/// and one neither proven nor known idle an `info` no-progress that says why.
pub fn no_progress(timeline: &Timeline, config: &DetectConfig, excluded: &[i32]) -> Vec<Finding> {
    let (Some(summary), Some(sample)) = (timeline.latest_summary(), timeline.latest()) else {
        return Vec::new();
    };
    let pending_work = summary
        .app
        .as_ref()
        .and_then(|a| a.queue_depth)
        .is_some_and(|d| d > 0.0);
    let mut findings = Vec::new();
    for p in &summary.processes {
        if excluded.contains(&p.pid) {
            continue;
        }
        let Some(span) = stall_span(timeline, p.pid) else {
            continue;
        };
        let Some(process) = sample.process(p.pid) else {
            continue;
        };
        if span.seconds < config.hang_after_seconds {
            continue;
        }
        let waits = process.waits.as_deref();
        findings.push(match judge_process(process) {
            WaitVerdict::Hung { because, owed } => {
                let mut finding = hung(p, process, span, pending_work);
                finding
                    .evidence
                    .insert(0, format!("why it cannot end by itself: {because}"));
                if !owed.is_empty() {
                    finding
                        .evidence
                        .insert(0, format!("owed waits: {}", truncate_list(&owed, 6)));
                }
                if let Some(waits) = waits.filter(|w| !w.threads.is_empty()) {
                    finding.summary = format!(
                        "pid {} ({}) made no progress for {}: {} owed wait(s) that no thread of it can end{}",
                        p.pid,
                        p.comm,
                        format_seconds(span.seconds),
                        owed.len().max(1),
                        waits
                            .meaning
                            .as_deref()
                            .map(|m| format!(" — {m}"))
                            .unwrap_or_default()
                    );
                    explain_hung(&mut finding, waits);
                }
                finding
            }
            WaitVerdict::Idle { summary } => idle(p, span, &summary),
            WaitVerdict::Unconfirmed { why } => unconfirmed(p, span, &why),
        });
    }
    findings
}

/// A hung process: what its stacks mean, and a remedy that does not ask for the stacks
/// already taken. A lock-order cycle proven from them is a deadlock.
fn explain_hung(finding: &mut Finding, waits: &ProcessWaits) {
    let Some(meaning) = &waits.meaning else {
        finding.remedy = "Read the owed waits above: a lock held across a wait, a join or a result that no thread will give, a lock taken in two orders.".to_string();
        return;
    };
    finding
        .evidence
        .insert(0, format!("what it means: {meaning}"));
    if meaning.contains("lock-order deadlock") {
        finding.kind = FindingKind::Deadlock;
        if meaning.starts_with("a proven") {
            finding.confidence = 1.0;
        }
        finding.remedy = "Take the locks in one global order everywhere (or hold one lock at a time); the threads and locks of the cycle are named above.".to_string();
    } else {
        finding.remedy = format!("The stacks above show the cause: {meaning}.");
    }
}

/// The error finding of a hung process, from /proc.
fn hung(
    p: &ProcessSummary,
    process: &ProcessSample,
    span: StallSpan,
    pending_work: bool,
) -> Finding {
    let mut confidence: f64 = if span.progressed_before { 0.9 } else { 0.7 };
    if pending_work {
        confidence += 0.1;
    }
    if p.unknown_waiters > 0 {
        confidence -= 0.1;
    }
    let mut finding = Finding::new(
        FindingKind::NoProgress,
        Severity::Error,
        format!(
            "pid {} ({}) made no progress for {}: {} of {} thread(s) blocked on locks",
            p.pid,
            p.comm,
            format_seconds(span.seconds),
            p.lock_waiters,
            p.threads
        ),
    );
    finding.confidence = confidence.clamp(0.0, 1.0);
    finding.pids = vec![p.pid];
    let mut waiting = Vec::new();
    for t in process.threads.iter() {
        if classify(t) == WaitKind::Lock {
            finding.tids.push(t.tid);
            waiting.push(format!(
                "{} ({}) in {}",
                t.tid,
                t.name,
                t.wchan.as_deref().unwrap_or("a futex wait")
            ));
        }
    }
    finding.evidence.push(format!(
        "CPU time did not grow for {} (under {:.0} % of a core) and no I/O moved",
        format_seconds(span.seconds),
        PROGRESS_CPU_SHARE * 100.0
    ));
    finding.evidence.push(format!(
        "threads blocked on locks: {}",
        truncate_list(&waiting, 6)
    ));
    if p.sleepers > 0 {
        finding.evidence.push(format!(
            "{} thread(s) asleep on timers; none waiting for input or disk",
            p.sleepers
        ));
    }
    if span.progressed_before {
        finding
            .evidence
            .push("the process was making progress earlier in this watch".to_string());
    }
    if pending_work {
        finding
            .evidence
            .push("the application reports work queued".to_string());
    }
    finding
        .metrics
        .insert("seconds_without_progress".into(), span.seconds);
    finding
        .metrics
        .insert("lock_waiters".into(), f64::from(p.lock_waiters));
    finding.remedy = format!(
        "Take stacks to see the locks (`tfwatch snapshot {} --stacks`, or `gdb -p {} -batch -ex 'thread apply all bt'`); look for two locks taken in opposite orders, a lock held across fork, or a wait on work that never comes.",
        p.pid, p.pid
    );
    finding
}

/// An idle process: every thread waits for work, for time or for input.
fn idle(p: &ProcessSummary, span: StallSpan, summary: &str) -> Finding {
    let mut finding = Finding::new(
        FindingKind::Idle,
        Severity::Info,
        format!("pid {} ({}) is idle: {summary}", p.pid, p.comm),
    );
    finding.pids = vec![p.pid];
    finding.evidence.push(format!(
        "no CPU progress for {}, and its stacks show every thread waiting for work, for time or for input: nothing owed",
        format_seconds(span.seconds)
    ));
    finding.metrics.insert("seconds_idle".into(), span.seconds);
    finding.remedy =
        "Nothing to fix: this is how a pool between batches or a service between requests waits."
            .to_string();
    finding
}

/// A process without progress that is neither proven hung nor known idle.
fn unconfirmed(p: &ProcessSummary, span: StallSpan, why: &str) -> Finding {
    let mut finding = Finding::new(
        FindingKind::NoProgress,
        Severity::Info,
        format!(
            "pid {} ({}) made no progress for {}, not confirmed as a hang",
            p.pid,
            p.comm,
            format_seconds(span.seconds)
        ),
    );
    finding.confidence = 0.3;
    finding.pids = vec![p.pid];
    finding.evidence.push(format!("not confirmed: {why}"));
    finding
        .metrics
        .insert("seconds_without_progress".into(), span.seconds);
    finding.remedy = format!(
        "`tfwatch snapshot {} --stacks` shows where each thread waits; a hang needs a wait that cannot end by itself (a lock, a join, a result).",
        p.pid
    );
    finding
}

/// Rewrites the hang and deadlock findings of `findings` with what the stacks show: the
/// threads that matter, one line each, idle pool threads as a count, the meaning of a
/// known pattern, and how long each process was paused for its stacks. The same words
/// then reach the text and JSON reports, `run`'s diagnosis and the dashboard.
pub fn explain_with_stacks(findings: &mut [Finding], stacks: &StacksReport) {
    for finding in findings.iter_mut() {
        if !matches!(
            finding.kind,
            FindingKind::NoProgress | FindingKind::Deadlock
        ) {
            continue;
        }
        let explained: Vec<&StackExplanation> = stacks
            .explained
            .iter()
            .filter(|e| finding.pids.contains(&e.pid))
            .collect();
        if explained.is_empty() {
            continue;
        }
        let mut evidence = Vec::new();
        for e in &explained {
            evidence.extend(e.lines.iter().map(|l| l.trim_start().to_string()));
            evidence.extend(e.idle_line());
            if let Some(ms) = e.paused_ms {
                evidence.push(paused_line(e.pid, ms, stacks.partial(e.pid).as_deref()));
            }
        }
        let meaning = explained.iter().find_map(|e| e.meaning.clone());
        if finding.kind == FindingKind::NoProgress {
            // "pid 7 (python3) made no progress for 12 s: <what the stacks say>".
            let waiting: usize = explained
                .iter()
                .map(|e| e.lines.iter().filter(|l| !l.starts_with(' ')).count())
                .sum();
            let idle: usize = explained
                .iter()
                .flat_map(|e| e.idle_pools.iter().map(|(_, n)| n))
                .sum();
            const NO_PROGRESS: &str = " made no progress for ";
            // "…made no progress for 12 s: …" or "…for 12 s, not confirmed as a hang".
            if let Some(at) = finding.summary.find(NO_PROGRESS)
                && let Some(end) = finding.summary[at + NO_PROGRESS.len()..].find([':', ','])
            {
                finding.summary.truncate(at + NO_PROGRESS.len() + end);
                finding.summary.push_str(&format!(
                    ": {waiting} thread(s) waiting, {idle} idle pool thread(s)"
                ));
                if let Some(meaning) = &meaning {
                    finding.summary.push_str(&format!(" — {meaning}"));
                }
            }
            finding.evidence.retain(|e| {
                !e.starts_with("threads blocked on locks: ") && !e.starts_with("not confirmed: ")
            });
            if meaning
                .as_deref()
                .is_some_and(|m| m.starts_with("a proven"))
            {
                finding.confidence = 1.0;
            }
            // A lock-order cycle seen in the stacks is a deadlock, and its remedy does
            // not ask for the stacks just taken.
            if meaning
                .as_deref()
                .is_some_and(|m| m.contains("lock-order deadlock"))
            {
                finding.kind = FindingKind::Deadlock;
                finding.severity = Severity::Error;
                finding.remedy = "Take the locks in one global order everywhere (or hold one lock at a time); the threads and locks of the cycle are named above.".to_string();
            }
        } else if let Some(meaning) = &meaning {
            evidence.push(format!("what it means: {meaning}"));
        }
        // The stacks first: they are what the engineer reads. What the detector said
        // from the same stacks (the owed waits, their meaning) is not said twice.
        finding
            .evidence
            .retain(|e| !e.starts_with("owed waits: ") && !e.starts_with("what it means: "));
        evidence.append(&mut finding.evidence);
        finding.evidence = evidence;
    }
}

/// What to do about a lock inherited across fork (shared with the proof in `deadlock`).
pub(crate) const FORK_REMEDY: &str = "A lock held by another thread of the parent at fork() time was copied locked into the child, and the thread that would release it does not exist there. Fork before starting threads, or start workers with spawn/forkserver (Python: multiprocessing.set_start_method('spawn'); PyTorch DataLoader(multiprocessing_context='spawn')), or exec a fresh process; libraries can reset their locks in pthread_atfork handlers.";

/// `fork-inherited-lock` (heuristic; [`super::deadlock`] proves it where the mutex owner
/// can be read, and [`super::deadlock::merge_fork_findings`] keeps one finding per
/// child): a single-threaded child of a multi-threaded parent, same
/// executable, blocked on a futex with ~0 CPU since it started.
pub fn fork_inherited_lock(timeline: &Timeline, config: &DetectConfig) -> Vec<Finding> {
    let Some(sample) = timeline.latest() else {
        return Vec::new();
    };
    let mut findings = Vec::new();
    for child in &sample.processes {
        let [thread] = child.threads.as_slice() else {
            continue;
        };
        if classify(thread) != WaitKind::Lock {
            continue;
        }
        let Some(parent) = sample.process(child.ppid) else {
            continue;
        };
        if parent.threads.len() < 2 {
            continue;
        }
        let same_program = match (&child.exe, &parent.exe) {
            (Some(a), Some(b)) => a == b,
            _ => child.comm == parent.comm,
        };
        // A child that exec'd (a `spawn` worker: the same interpreter with other
        // arguments) inherited no lock.
        let execd = !child.cmdline.is_empty()
            && !parent.cmdline.is_empty()
            && child.cmdline != parent.cmdline;
        if !same_program || execd {
            continue;
        }
        let age = sample
            .uptime_seconds
            .map(|up| (up - child.start_time_seconds).max(0.0));
        let cpu_allowance = age.map_or(0.05, |a| (a * 0.01).max(0.05));
        if child.cpu_seconds > cpu_allowance {
            continue;
        }
        let Some(span) = stall_span(timeline, child.pid) else {
            continue;
        };
        if span.seconds < config.fork_lock_min_seconds {
            continue;
        }
        let mut finding = Finding::new(
            FindingKind::ForkInheritedLock,
            Severity::Error,
            format!(
                "pid {} is a single-threaded fork of multi-threaded pid {} ({}), blocked on a lock since it started",
                child.pid, parent.pid, parent.comm
            ),
        );
        finding.confidence = 0.8;
        finding.pids = vec![child.pid, parent.pid];
        finding.tids = vec![thread.tid];
        finding.evidence.push(format!(
            "child {} has 1 thread, in {}; parent {} has {} threads",
            child.pid,
            thread.wchan.as_deref().unwrap_or("a futex wait"),
            parent.pid,
            parent.threads.len()
        ));
        finding.evidence.push(format!(
            "child CPU time {:.2} s{}; no progress for the {} watched",
            child.cpu_seconds,
            age.map(|a| format!(" in {} since fork", format_seconds(a)))
                .unwrap_or_default(),
            format_seconds(span.seconds)
        ));
        finding.evidence.push(format!(
            "same program as its parent: {}",
            child.exe.as_deref().unwrap_or(&child.comm)
        ));
        finding
            .metrics
            .insert("child_cpu_seconds".into(), child.cpu_seconds);
        finding
            .metrics
            .insert("parent_threads".into(), parent.threads.len() as f64);
        if let Some(a) = age {
            finding.metrics.insert("seconds_since_fork".into(), a);
        }
        finding.remedy = FORK_REMEDY.to_string();
        findings.push(finding);
    }
    findings
}

fn truncate_list(items: &[String], n: usize) -> String {
    if items.len() <= n {
        items.join(", ")
    } else {
        format!("{} … and {} more", items[..n].join(", "), items.len() - n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::test_support::{process, sample, thread};
    use crate::detect::{DetectConfig, detect};
    use crate::model::{Sample, ThreadSample};

    fn config(hang: f64) -> DetectConfig {
        DetectConfig {
            hang_after_seconds: hang,
            ..DetectConfig::default()
        }
    }

    /// A process whose two workers deadlock at `stuck_at` seconds.
    fn deadlocking(stuck_at: f64, until: f64) -> Timeline {
        deadlocking_with(stuck_at, until, |_| {})
    }

    /// [`deadlocking`], each sample changed by `edit` before it is pushed.
    fn deadlocking_with(stuck_at: f64, until: f64, edit: impl Fn(&mut Sample)) -> Timeline {
        let mut timeline = Timeline::new(600.0);
        let mut t = 0.0;
        while t <= until {
            let run = t.min(stuck_at);
            let (state, wchan) = if t < stuck_at {
                ('R', "")
            } else {
                ('S', "futex_do_wait")
            };
            // Each worker waits for the mutex the other owns (owners read from memory).
            let owned_by = |mut t: ThreadSample, owner: i32| {
                if state == 'S' {
                    t.lock = Some(crate::model::LockWait {
                        address: 0x1000,
                        owner_tid: Some(owner),
                        kind: crate::model::LockWait::PTHREAD_MUTEX,
                        unavailable: None,
                        shared_mapping: None,
                    });
                }
                t
            };
            let mut sample = sample(
                t,
                2.0,
                vec![process(
                    100,
                    1,
                    vec![
                        thread(100, 'S', "futex_do_wait", 0.1),
                        owned_by(thread(101, state, wchan, run), 102),
                        owned_by(thread(102, state, wchan, run), 101),
                        thread(103, 'S', "hrtimer_nanosleep", 0.0),
                    ],
                )],
            );
            edit(&mut sample);
            timeline.push(sample);
            t += 1.0;
        }
        timeline
    }

    #[test]
    fn hang_is_found_after_the_window_not_before() {
        let early = deadlocking(5.0, 14.0);
        assert!(no_progress(&early, &config(10.0), &[]).is_empty());
        let late = deadlocking(5.0, 16.0);
        let findings = no_progress(&late, &config(10.0), &[]);
        assert_eq!(findings.len(), 1, "{findings:#?}");
        let f = &findings[0];
        assert_eq!(f.kind, FindingKind::NoProgress);
        assert_eq!(f.pids, vec![100]);
        assert_eq!(f.tids, vec![100, 101, 102]);
        assert_eq!(f.metrics["seconds_without_progress"], 11.0);
        assert!(f.confidence >= 0.9, "progress was seen before");
    }

    #[test]
    fn a_stall_counts_back_through_samples_that_had_the_process_stat_alone() {
        // Hung from the start; its threads read only from 8 s (a large tree's still
        // process): the stall counts from 0, not from the first read.
        let unread_until_8 = |sample: &mut Sample| {
            if sample.elapsed_seconds < 8.0 {
                let process = &mut sample.processes[0];
                process.num_threads = process.threads.len() as u32;
                process.threads.clear();
            }
        };
        let timeline = deadlocking_with(0.0, 12.0, unread_until_8);
        let findings = no_progress(&timeline, &config(10.0), &[]);
        assert_eq!(findings.len(), 1, "{findings:#?}");
        assert_eq!(findings[0].metrics["seconds_without_progress"], 12.0);
        // Unread while its CPU time grew is no stall: it counts from when that stopped.
        let moving = deadlocking_with(0.0, 12.0, |sample| {
            unread_until_8(sample);
            sample.processes[0].cpu_seconds = 0.1 + sample.elapsed_seconds.min(7.0);
        });
        assert!(no_progress(&moving, &config(10.0), &[]).is_empty());
    }

    /// [`deadlocking`] with no mutex owner read: workers in private waits beside a
    /// sleeping thread, which /proc alone cannot call hung.
    fn unowned(stuck_at: f64, until: f64) -> Timeline {
        deadlocking_with(stuck_at, until, |sample| {
            for t in sample.processes[0].threads.iter_mut() {
                t.lock = None;
            }
        })
    }

    #[test]
    fn private_waits_beside_a_sleeper_are_unconfirmed_without_stacks() {
        let findings = no_progress(&unowned(5.0, 16.0), &config(10.0), &[]);
        assert_eq!(findings.len(), 1, "{findings:#?}");
        assert_eq!(findings[0].kind, FindingKind::NoProgress);
        assert_eq!(findings[0].severity, Severity::Info);
        assert!(
            findings[0].summary.contains("not confirmed"),
            "{findings:#?}"
        );
        assert_eq!(hang_span(&unowned(5.0, 16.0), 100), None);
    }

    #[test]
    fn stacks_that_show_idle_waits_make_an_idle_finding() {
        use crate::model::stacks::WaitClass;
        use crate::model::verdict::{ProcessWaits, ThreadWait};
        let idle = std::sync::Arc::new(ProcessWaits {
            threads: [
                (100, WaitClass::IdleTimer, "MainThread sleeps at job.py:5"),
                (101, WaitClass::IdleWork, "w"),
                (102, WaitClass::IdleWork, "w"),
                (103, WaitClass::IdleTimer, "t103 sleeps"),
            ]
            .into_iter()
            .map(|(tid, class, line)| ThreadWait {
                tid,
                class,
                line: line.into(),
                pool: (class == WaitClass::IdleWork).then(|| "ThreadPoolExecutor".into()),
            })
            .collect(),
            ..ProcessWaits::default()
        });
        let timeline = deadlocking_with(5.0, 16.0, |sample| {
            let process = &mut sample.processes[0];
            process.waits = Some(std::sync::Arc::clone(&idle));
            for t in process.threads.iter_mut() {
                t.lock = None;
            }
        });
        let findings = no_progress(&timeline, &config(10.0), &[]);
        assert_eq!(findings.len(), 1, "{findings:#?}");
        assert_eq!(findings[0].kind, FindingKind::Idle);
        assert_eq!(findings[0].severity, Severity::Info);
        assert_eq!(
            findings[0].summary,
            "pid 100 (job) is idle: 2 ThreadPoolExecutor thread(s) wait for work; MainThread sleeps at job.py:5; t103 sleeps"
        );
    }

    #[test]
    fn already_hung_at_attach_is_reported() {
        let timeline = deadlocking(0.0, 12.0);
        let findings = no_progress(&timeline, &config(10.0), &[]);
        assert_eq!(findings.len(), 1);
        assert!(findings[0].confidence < 0.9);
    }

    #[test]
    fn idle_server_is_not_hung() {
        let mut timeline = Timeline::new(600.0);
        for t in 0..30 {
            timeline.push(sample(
                f64::from(t),
                2.0,
                vec![process(
                    7,
                    1,
                    vec![
                        thread(7, 'S', "do_epoll_wait", 1.0),
                        thread(8, 'S', "futex_do_wait", 1.0),
                        thread(9, 'S', "futex_do_wait", 1.0),
                    ],
                )],
            ));
        }
        assert!(no_progress(&timeline, &config(10.0), &[]).is_empty());
    }

    #[test]
    fn forked_child_blocked_on_inherited_lock() {
        let mut timeline = Timeline::new(600.0);
        for t in 0..4 {
            let t = f64::from(t);
            let mut parent = process(
                10,
                1,
                vec![
                    thread(10, 'R', "", t),
                    thread(11, 'S', "futex_do_wait", 0.0),
                ],
            );
            parent.cpu_seconds = t;
            let mut child = process(20, 10, vec![thread(20, 'S', "futex_do_wait", 0.0)]);
            child.start_time_seconds = 999.0;
            timeline.push(sample(t, 2.0, vec![parent, child]));
        }
        let findings = detect(&timeline, &config(60.0));
        assert_eq!(findings.len(), 1, "{findings:#?}");
        assert_eq!(findings[0].kind, FindingKind::ForkInheritedLock);
        assert_eq!(findings[0].pids, vec![20, 10]);
    }

    #[test]
    fn child_of_single_threaded_parent_or_other_program_is_not_flagged() {
        let mut timeline = Timeline::new(600.0);
        for t in 0..4 {
            let parent = process(10, 1, vec![thread(10, 'S', "do_wait", 0.0)]);
            let mut child = process(20, 10, vec![thread(20, 'S', "futex_do_wait", 0.0)]);
            child.exe = Some("/usr/bin/other".into());
            timeline.push(sample(f64::from(t), 2.0, vec![parent, child]));
        }
        assert!(fork_inherited_lock(&timeline, &config(60.0)).is_empty());
    }
}
