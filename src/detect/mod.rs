//! Detectors: pure functions of a [`Timeline`] that name a problem with its evidence and
//! a remedy. They never read the system, so recorded timelines test them anywhere.

pub mod audit;
mod contention;
pub mod deadlock;
pub mod distributed;
mod event_loop;
mod gil;
pub mod gpu;

mod hang;
mod memory;
pub mod node;
mod oversubscription;
mod stall;
mod threads;

use crate::model::Finding;
use crate::model::locks::LockNote;
use crate::timeline::Timeline;

pub use hang::{StallSpan, explain_with_stacks, hang_span, proc_waits, stall_span, verdict};
pub use oversubscription::runnable_average;
pub use threads::thread_bound;

/// CPUs a tree must use on average for its run-queue waits to be judged at all (for
/// `cpu-contention`: want, i.e. run or wait for, since a loaded machine gives a busy
/// tree only a small share of what it wants).
pub const BUSY_MIN_CPUS: f64 = 0.5;

/// Runnable threads above the usable CPUs by more than this are the tree's own
/// oversubscription; at or below it, its waits are contention from other processes.
pub const OVERSUBSCRIBED_MARGIN_THREADS: f64 = 0.5;

/// Thresholds and windows of the detectors.
#[derive(Debug, Clone)]
pub struct DetectConfig {
    /// No progress for this long is a hang.
    pub hang_after_seconds: f64,
    /// A forked child must be seen blocked this long before it is reported.
    pub fork_lock_min_seconds: f64,
    /// Runnable threads must stay above the usable CPUs this long.
    pub oversubscription_window_seconds: f64,
    /// … and average at least this many times the usable CPUs.
    pub oversubscription_factor: f64,
    /// Threads above this are an explosion; `None`: [`crate::model::runtimes::default_thread_bound`],
    /// max(64, 4 × usable CPUs).
    pub thread_bound: Option<u32>,
    /// RSS share of the limit that is a warning, and an error.
    pub memory_warning_ratio: f64,
    pub memory_error_ratio: f64,
    /// Warn when growth would reach the limit within this many seconds.
    pub memory_horizon_seconds: f64,
    /// Judge memory against this many bytes instead of the sampled limit.
    pub memory_limit_override: Option<u64>,
    /// Pending work must be stuck this long to be a stall.
    pub stall_window_seconds: f64,
    /// One-shot mode (`snapshot`): hangs are reported as "needs a longer watch".
    pub one_shot: bool,
    /// tfwatch's pid namespace: whether NVML's host pids can be matched to the tree.
    pub pid_namespace: crate::model::PidNamespace,
    /// An event loop that stays away from its poll this long at a time is blocked
    /// (asyncio's `slow_callback_duration`).
    pub event_loop_block_seconds: f64,
}

impl Default for DetectConfig {
    fn default() -> Self {
        DetectConfig {
            hang_after_seconds: 60.0,
            fork_lock_min_seconds: 2.0,
            oversubscription_window_seconds: 2.0,
            oversubscription_factor: 2.0,
            thread_bound: None,
            memory_warning_ratio: 0.8,
            memory_error_ratio: 0.95,
            memory_horizon_seconds: 300.0,
            memory_limit_override: None,
            stall_window_seconds: 10.0,
            one_shot: false,
            pid_namespace: crate::model::PidNamespace::Host,
            event_loop_block_seconds: 0.1,
        }
    }
}

impl DetectConfig {
    /// The settings `snapshot` uses over its short window.
    pub fn one_shot(window_seconds: f64) -> Self {
        DetectConfig {
            fork_lock_min_seconds: window_seconds * 0.9,
            oversubscription_window_seconds: window_seconds,
            one_shot: true,
            ..DetectConfig::default()
        }
    }
}

/// What the detectors make of a timeline: the findings, most severe first, and the
/// notes of the wait-for graph of the newest sample (built once, for the report too).
#[derive(Debug, Clone, Default)]
pub struct Judgement {
    pub findings: Vec<Finding>,
    pub lock_notes: Vec<LockNote>,
}

/// Runs every detector over the timeline; most severe first.
pub fn detect(timeline: &Timeline, config: &DetectConfig) -> Vec<Finding> {
    judge(timeline, config).findings
}

/// Runs every detector over the timeline, keeping the lock notes beside the findings.
pub fn judge(timeline: &Timeline, config: &DetectConfig) -> Judgement {
    let mut findings = Vec::new();
    // Proofs first: lock cycles and inherited locks read from the mutex owners.
    let locks = timeline.latest().map(deadlock::analyse).unwrap_or_default();
    let fork_locked = deadlock::merge_fork_findings(
        locks.fork_inherited.clone(),
        hang::fork_inherited_lock(timeline, config),
    );
    let mut excluded: Vec<i32> = fork_locked.iter().flat_map(|f| f.pids.clone()).collect();
    excluded.extend(locks.proven_pids());
    findings.extend(locks.deadlocks.iter().cloned());
    findings.extend(fork_locked);
    let distributed = distributed::ranks_stalled(timeline, config);
    excluded.extend(
        distributed
            .iter()
            .filter(|f| f.severity == crate::model::Severity::Error)
            .flat_map(|f| f.pids.clone()),
    );
    findings.extend(distributed);
    // A launcher waits for its ranks, judged above: their hang is the diagnosis.
    excluded.extend(distributed::launchers(timeline));
    if !config.one_shot {
        let mut hangs = hang::no_progress(timeline, config, &excluded);
        for finding in &mut hangs {
            for pid in finding.pids.clone() {
                finding
                    .evidence
                    .extend(locks.notes_for(pid).map(|n| n.text.clone()));
            }
        }
        findings.extend(hangs);
    }
    findings.extend(oversubscription::detect(timeline, config));
    findings.extend(oversubscription::contention(timeline, config));
    findings.extend(threads::explosion(timeline, config));
    findings.extend(threads::unreaped_children(timeline));
    findings.extend(memory::pressure(timeline, config));
    findings.extend(stall::pending_work(timeline, config));
    findings.extend(contention::lock_convoy(timeline, config));
    findings.extend(event_loop::blocked_loops(timeline, config));
    findings.extend(gil::gil_contention(timeline, config));
    findings.extend(gpu(timeline, config));
    sort_findings(&mut findings);
    Judgement {
        findings,
        lock_notes: locks.notes,
    }
}

/// The one order of findings everywhere: most severe first, then by kind.
pub fn sort_findings(findings: &mut [Finding]) {
    findings.sort_by(severity_order);
}

/// Most severe first, then by kind.
pub fn severity_order(a: &Finding, b: &Finding) -> std::cmp::Ordering {
    b.severity.cmp(&a.severity).then(a.kind.cmp(&b.kind))
}

/// GPU findings: several processes of the tree on one device, and memory held on an
/// idle device by a process that makes no progress.
fn gpu(timeline: &Timeline, config: &DetectConfig) -> Vec<Finding> {
    let Some(sample) = timeline.latest() else {
        return Vec::new();
    };
    let Some(reading) = sample.gpu.as_ref().filter(|g| g.unavailable.is_none()) else {
        return Vec::new();
    };
    let tree: Vec<i32> = sample.processes.iter().map(|p| p.pid).collect();
    let mut findings = crate::detect::gpu::gpu_shared(reading, &tree, &config.pid_namespace);
    let stuck_for = if config.one_shot {
        0.0
    } else {
        config.hang_after_seconds.min(10.0)
    };
    let no_progress: Vec<i32> = tree
        .iter()
        .copied()
        .filter(|&pid| {
            stall_span(timeline, pid).is_some_and(|s| s.seconds > 0.0 && s.seconds >= stuck_for)
        })
        .collect();
    let window: Vec<&crate::model::GpuSample> =
        timeline.recent().filter_map(|s| s.gpu.as_ref()).collect();
    findings.extend(crate::detect::gpu::gpu_idle_held(
        &window,
        &tree,
        &no_progress,
        &config.pid_namespace,
    ));
    findings
}

/// A stable identity for a finding, so a watch can tell a new one from one still active:
/// its kind and the processes it concerns.
/// Puts `finding` among `findings` raised so far, unless a more severe version of it
/// (the same [`finding_key`]) is there: what a watch raised in all keeps the most
/// severe version of each (the newest among equals), so a warning seen still counts
/// after its cause ended.
pub fn keep_most_severe(findings: &mut Vec<Finding>, finding: &Finding) {
    let key = finding_key(finding);
    match findings.iter().position(|old| finding_key(old) == key) {
        Some(at) if findings[at].severity > finding.severity => {}
        Some(at) => findings[at] = finding.clone(),
        None => findings.push(finding.clone()),
    }
}

pub fn finding_key(finding: &Finding) -> String {
    let mut pids = finding.pids.clone();
    pids.sort_unstable();
    let pids: Vec<String> = pids.iter().map(i32::to_string).collect();
    format!("{}:{}", finding.kind, pids.join(","))
}

#[cfg(test)]
pub(crate) mod test_support {
    //! Builders of synthetic timelines for detector tests.
    use crate::model::{CpuBudget, MemoryLimit, ProcessSample, Sample, ThreadSample};

    pub fn thread(tid: i32, state: char, wchan: &str, run: f64) -> ThreadSample {
        ThreadSample {
            tid,
            name: format!("t{tid}"),
            state,
            cpu_seconds: run,
            run_seconds: Some(run),
            runqueue_wait_seconds: Some(0.0),
            nonvoluntary_ctxt_switches: Some(0),
            wchan: (!wchan.is_empty()).then(|| wchan.to_string()),
            ..ThreadSample::default()
        }
    }

    pub fn process(pid: i32, ppid: i32, threads: Vec<ThreadSample>) -> ProcessSample {
        ProcessSample {
            pid,
            ppid,
            comm: "job".to_string(),
            exe: Some("/usr/bin/job".to_string()),
            state: 'S',
            num_threads: threads.len() as u32,
            cpu_seconds: threads.iter().map(|t| t.cpu_seconds).sum(),
            rss_bytes: 100 << 20,
            threads: threads.into(),
            ..ProcessSample::default()
        }
    }

    pub fn sample(elapsed: f64, usable: f64, processes: Vec<ProcessSample>) -> Sample {
        Sample {
            elapsed_seconds: elapsed,
            root_pid: processes.first().map_or(0, |p| p.pid),
            processes,
            cpus: CpuBudget {
                online: usable as u32,
                usable,
                ..CpuBudget::default()
            },
            memory_limit: MemoryLimit {
                bytes: 1 << 30,
                source: "MemTotal".to_string(),
                mem_total_bytes: 1 << 30,
            },
            uptime_seconds: Some(1000.0 + elapsed),
            ..Sample::default()
        }
    }
}

#[cfg(test)]
mod raised_tests {
    use super::*;
    use crate::model::{FindingKind, Severity};

    fn gil(severity: Severity, summary: &str) -> Finding {
        let mut f = Finding::new(FindingKind::GilContention, severity, summary.to_string());
        f.pids = vec![7];
        f
    }

    #[test]
    fn a_warning_seen_stays_after_its_finding_falls_back_to_info() {
        let mut findings = Vec::new();
        keep_most_severe(&mut findings, &gil(Severity::Info, "1 of 1 readings"));
        keep_most_severe(&mut findings, &gil(Severity::Warning, "3 of 4 readings"));
        keep_most_severe(&mut findings, &gil(Severity::Info, "3 of 5 readings"));
        assert_eq!(findings.len(), 1);
        assert_eq!(findings[0].severity, Severity::Warning);
        assert_eq!(findings[0].summary, "3 of 4 readings");
        // A newer version as severe replaces it; another process's is another finding.
        keep_most_severe(&mut findings, &gil(Severity::Warning, "4 of 5 readings"));
        assert_eq!(findings[0].summary, "4 of 5 readings");
        let mut other = gil(Severity::Info, "elsewhere");
        other.pids = vec![8];
        keep_most_severe(&mut findings, &other);
        assert_eq!(findings.len(), 2);
    }
}
