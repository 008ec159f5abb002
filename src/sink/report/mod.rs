//! The snapshot triage report: built from two samples and the findings, rendered as
//! text for people or JSON for scripts. Both come from one [`SnapshotReport`].
//!
//! The JSON field names are a stable schema (`schema: 1`): scripts rely on them.

mod stacks;

pub use stacks::verdict_line;

use std::collections::{BTreeMap, HashMap};
use std::io::Write;

use serde::Serialize;

use crate::engine::Diagnosis;
use crate::model::locks::{LockNote, LongerWatch};
use crate::model::stacks::StacksReport;
use crate::model::{
    CpuBudget, Finding, GpuSample, LockWait, ProcessSample, RuntimeAudit, Sample, Syscall,
    ThreadSample, Unavailable,
};
use crate::units::{format_bytes, format_seconds};

/// Version of the JSON schema; bumped only on incompatible changes.
pub const SCHEMA_VERSION: u32 = 1;

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct SnapshotReport {
    pub schema: u32,
    pub tfwatch_version: String,
    pub root_pid: i32,
    pub time_unix_seconds: f64,
    /// Seconds between the two samples that rates and progress compare.
    pub window_seconds: f64,
    pub cpus: CpuBudget,
    pub memory_limit_bytes: u64,
    pub memory_limit_source: String,
    /// RSS of the whole tree.
    pub tree_rss_bytes: u64,
    pub tree_threads: usize,
    /// Threads in state R at the second sample, over the whole tree.
    pub tree_runnable_threads: usize,
    /// Δ run-queue wait / Δ run time over the window, whole tree.
    pub runqueue_wait_ratio: Option<f64>,
    pub processes: Vec<ProcessReport>,
    /// Runtime audit per process (only processes whose audit was read).
    pub runtimes: Vec<ProcessRuntimes>,
    pub findings: Vec<Finding>,
    /// Findings a one-shot report cannot decide, with what was seen and how to decide.
    pub needs_longer_watch: Vec<LongerWatch>,
    pub unavailable: Vec<Unavailable>,
    /// The machine's GPUs (NVML), when they were read.
    pub gpu: Option<GpuSample>,
    /// Wall time of the second sample, seconds.
    pub sample_duration_seconds: f64,
    /// What the wait-for graph shows besides findings: lock chains that end in a running
    /// thread, waiters grouped by an address whose holder is unknown, the GIL heuristic.
    pub locks: Vec<LockNote>,
    /// Processes and threads that make no progress for a reason of their own (stopped by
    /// a signal, frozen, in uninterruptible sleep), with their wait channel: notes, not
    /// hangs.
    pub states: Vec<String>,
    /// Native and Python stacks, when asked for (`--stacks`) or on a hang in `run`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stacks: Option<StacksReport>,
}

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct ProcessReport {
    pub pid: i32,
    pub ppid: i32,
    pub comm: String,
    pub cmdline: Vec<String>,
    pub exe: Option<String>,
    pub state: char,
    pub num_threads: u32,
    pub rss_bytes: u64,
    /// RSS as a share of the effective memory limit, 0..1.
    pub memory_share: f64,
    pub cpu_seconds: f64,
    /// CPUs' worth of CPU used over the window (1.0 = one core busy).
    pub cpu_utilization: Option<f64>,
    /// Seconds since the process started.
    pub age_seconds: Option<f64>,
    pub threads: Vec<ThreadReport>,
    pub threads_by_state: BTreeMap<String, usize>,
    pub threads_by_wchan: Vec<ThreadGroup>,
    pub threads_by_name: Vec<ThreadGroup>,
    /// Why the threads are missing, when they are (a zombie, a vanished process).
    pub threads_unavailable: Option<String>,
    /// The process's rank in a distributed job (`rank 1/4`, `worker 0`), where its
    /// environment says.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rank: Option<String>,
}

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct ThreadReport {
    pub tid: i32,
    pub name: String,
    pub state: char,
    pub cpu_seconds: f64,
    pub cpu_utilization: Option<f64>,
    pub run_seconds: Option<f64>,
    pub runqueue_wait_seconds: Option<f64>,
    /// Δ wait / Δ run over the window.
    pub runqueue_wait_ratio: Option<f64>,
    pub timeslices: Option<u64>,
    pub voluntary_ctxt_switches: Option<u64>,
    pub nonvoluntary_ctxt_switches: Option<u64>,
    pub nonvoluntary_switches_per_second: Option<f64>,
    pub wchan: Option<String>,
    pub syscall: Option<Syscall>,
    pub details_age_seconds: f64,
    /// The lock a futex waiter waits on, with its owner where the lock records one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lock: Option<LockWait>,
}

/// Threads that share a wait channel or a name.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema, PartialEq)]
pub struct ThreadGroup {
    pub key: String,
    pub count: usize,
    /// For wait-channel groups: the thread names in the group with their counts.
    pub members: BTreeMap<String, usize>,
}

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct ProcessRuntimes {
    pub pid: i32,
    #[serde(flatten)]
    pub audit: RuntimeAudit,
}

/// The report of a running watch: its two newest samples and its own diagnosis (the
/// findings it reported, so a hang it raised is in the report); `None` before the
/// first sample.
pub fn from_watch(watch: &crate::engine::Watch) -> Option<SnapshotReport> {
    let after = watch.timeline.latest()?;
    let before = watch.timeline.previous().unwrap_or(after);
    Some(build_snapshot(before, after, watch.diagnosis()))
}

/// Builds the report from the sample at the start of the window and the one at its end.
pub fn build_snapshot(before: &Sample, after: &Sample, diagnosis: Diagnosis) -> SnapshotReport {
    let Diagnosis {
        findings,
        lock_notes,
        needs_longer_watch,
    } = diagnosis;
    let window = (after.elapsed_seconds - before.elapsed_seconds).max(0.0);
    let earlier: HashMap<i32, &ThreadSample> = before.threads().map(|(_, t)| (t.tid, t)).collect();
    let earlier_processes: HashMap<i32, &ProcessSample> =
        before.processes.iter().map(|p| (p.pid, p)).collect();
    let uptime = uptime_estimate(after);
    let limit = after.memory_limit.bytes;

    let processes: Vec<ProcessReport> = after
        .processes
        .iter()
        .map(|p| {
            let threads: Vec<ThreadReport> = p
                .threads
                .iter()
                .map(|t| thread_report(p, t, earlier.get(&t.tid).copied(), window))
                .collect();
            let cpu_utilization = earlier_processes
                .get(&p.pid)
                .and_then(|b| rate(p.cpu_seconds - b.cpu_seconds, window));
            ProcessReport {
                pid: p.pid,
                ppid: p.ppid,
                comm: p.comm.clone(),
                cmdline: p.cmdline.clone(),
                exe: p.exe.clone(),
                state: p.state,
                num_threads: p.num_threads,
                rss_bytes: p.rss_bytes,
                memory_share: share(p.rss_bytes, limit),
                cpu_seconds: p.cpu_seconds,
                cpu_utilization,
                age_seconds: uptime.map(|up| (up - p.start_time_seconds).max(0.0)),
                threads_by_state: count_by(&p.threads, |t| t.state.to_string()),
                threads_by_wchan: group_by_wait_channel(&p.threads),
                threads_by_name: group_threads(&p.threads, |t| t.name.clone()),
                rank: p
                    .audit
                    .as_ref()
                    .and_then(|a| a.rank.as_ref())
                    .map(crate::model::ranks::RankInfo::label),
                threads_unavailable: threads_unavailable(p),
                threads,
            }
        })
        .collect();

    let runtimes = after
        .processes
        .iter()
        .filter_map(|p| {
            p.audit.as_ref().map(|audit| ProcessRuntimes {
                pid: p.pid,
                audit: audit.clone(),
            })
        })
        .collect();

    SnapshotReport {
        schema: SCHEMA_VERSION,
        tfwatch_version: env!("CARGO_PKG_VERSION").to_string(),
        root_pid: after.root_pid,
        time_unix_seconds: after.time_unix_seconds,
        window_seconds: window,
        cpus: after.cpus.clone(),
        memory_limit_bytes: limit,
        memory_limit_source: after.memory_limit.source.clone(),
        tree_rss_bytes: after.processes.iter().map(|p| p.rss_bytes).sum(),
        tree_threads: after.thread_count(),
        tree_runnable_threads: after.threads().filter(|(_, t)| t.state == 'R').count(),
        runqueue_wait_ratio: tree_wait_ratio(before, after),
        processes,
        runtimes,
        findings,
        needs_longer_watch,
        unavailable: merged_unavailable(before, after),
        gpu: after.gpu.clone(),
        sample_duration_seconds: after.cost.duration_seconds,
        locks: lock_notes,
        states: state_notes(after),
        stacks: None,
    }
}

/// Says that `pid` is frozen by its cgroup (`how`: the freezer's state, which only the
/// cgroup tells: a frozen task shows state D) in place of what its states said, and in
/// the evidence of each finding about it.
pub fn note_frozen(report: &mut SnapshotReport, pid: i32, how: &str) {
    let (colon, space) = (format!("pid {pid}:"), format!("pid {pid} "));
    report
        .states
        .retain(|note| !note.starts_with(&colon) && !note.starts_with(&space));
    let frozen = crate::model::waits::frozen_process(pid, how);
    // A finding about its threads (a deadlock, a hang) says they are frozen, not asleep.
    for finding in report.findings.iter_mut().filter(|f| f.pids.contains(&pid)) {
        for line in &mut finding.evidence {
            if line.contains("asleep in a futex wait") {
                *line = line.replace(
                    "every thread of the cycle is asleep in a futex wait",
                    "the threads of the cycle are in futex calls, frozen by their cgroup now",
                );
            }
        }
        if !finding.evidence.contains(&frozen) {
            finding.evidence.push(frozen.clone());
        }
    }
    report.states.push(frozen);
}

/// Notes on processes that are stopped or frozen and threads in uninterruptible sleep.
pub fn state_notes(sample: &Sample) -> Vec<String> {
    use crate::model::waits::{frozen_process, is_freezer_wait};
    let mut notes = Vec::new();
    for p in &sample.processes {
        if p.has_exited() {
            continue;
        }
        let live = || {
            p.threads
                .iter()
                .filter(|t| !matches!(t.state, 'Z' | 'X' | 'x'))
        };
        let frozen = live().find_map(|t| t.wchan.as_deref().filter(|w| is_freezer_wait(w)));
        if let Some(wchan) = frozen {
            notes.push(frozen_process(
                p.pid,
                &format!("its threads wait in {wchan}"),
            ));
            continue;
        }
        let stopped = p.state == 'T' || (live().next().is_some() && live().all(|t| t.state == 'T'));
        if stopped {
            notes.push(format!(
                "pid {} is stopped (SIGSTOP/SIGTSTP, state T): it makes no progress until SIGCONT",
                p.pid
            ));
        }
        if p.state == 't' {
            notes.push(format!("pid {} is stopped by a tracer (state t)", p.pid));
        }
        let asleep: Vec<&ThreadSample> = live().filter(|t| t.state == 'D').collect();
        if !asleep.is_empty() {
            let mut channels: Vec<&str> = asleep
                .iter()
                .map(|t| t.wchan.as_deref().filter(|w| *w != "0").unwrap_or("?"))
                .collect();
            channels.sort_unstable();
            channels.dedup();
            notes.push(format!(
                "pid {}: {} thread(s) in uninterruptible sleep (D) in {}",
                p.pid,
                asleep.len(),
                channels.join(", ")
            ));
        }
    }
    notes
}

/// Thread `t` of process `p` (whose carried time ages the thread's details).
fn thread_report(
    p: &ProcessSample,
    t: &ThreadSample,
    before: Option<&ThreadSample>,
    window: f64,
) -> ThreadReport {
    let delta = |now: Option<f64>, then: Option<f64>| match (now, then) {
        (Some(n), Some(b)) => Some(n - b),
        _ => None,
    };
    let (d_run, d_wait, d_nvcsw, d_cpu) = match before {
        Some(b) => (
            delta(t.run_seconds, b.run_seconds),
            delta(t.runqueue_wait_seconds, b.runqueue_wait_seconds),
            delta(
                t.nonvoluntary_ctxt_switches.map(|v| v as f64),
                b.nonvoluntary_ctxt_switches.map(|v| v as f64),
            ),
            Some(t.cpu_seconds - b.cpu_seconds),
        ),
        None => (None, None, None, None),
    };
    ThreadReport {
        tid: t.tid,
        name: t.name.clone(),
        state: t.state,
        cpu_seconds: t.cpu_seconds,
        cpu_utilization: d_run
            .or(d_cpu)
            .and_then(|d| rate(d, window))
            .map(|r| r.max(0.0)),
        run_seconds: t.run_seconds,
        runqueue_wait_seconds: t.runqueue_wait_seconds,
        runqueue_wait_ratio: match (d_wait, d_run) {
            (Some(w), Some(r)) => crate::model::runqueue_wait_ratio(w, r),
            _ => None,
        },
        timeslices: t.timeslices,
        voluntary_ctxt_switches: t.voluntary_ctxt_switches,
        nonvoluntary_ctxt_switches: t.nonvoluntary_ctxt_switches,
        nonvoluntary_switches_per_second: d_nvcsw.and_then(|d| rate(d, window)),
        wchan: t.wchan.clone(),
        syscall: t.syscall.clone(),
        details_age_seconds: p.details_age_seconds(t),
        lock: t.lock.clone(),
    }
}

/// Δ run-queue wait / Δ run time summed over threads present in both samples.
pub fn tree_wait_ratio(before: &Sample, after: &Sample) -> Option<f64> {
    let earlier: HashMap<i32, &ThreadSample> = before.threads().map(|(_, t)| (t.tid, t)).collect();
    let (mut wait, mut run) = (0.0, 0.0);
    for (_, t) in after.threads() {
        if let Some(b) = earlier.get(&t.tid)
            && let (Some(w1), Some(w0), Some(r1), Some(r0)) = (
                t.runqueue_wait_seconds,
                b.runqueue_wait_seconds,
                t.run_seconds,
                b.run_seconds,
            )
        {
            wait += (w1 - w0).max(0.0);
            run += (r1 - r0).max(0.0);
        }
    }
    crate::model::runqueue_wait_ratio(wait, run)
}

fn rate(delta: f64, window: f64) -> Option<f64> {
    (window > 0.0).then(|| delta / window)
}

fn share(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}

/// Seconds since boot at the time of the sample, from the newest thread start time and
/// the sample's own clock: not known from a sample alone, so taken from `/proc/uptime`
/// by the sampler when available. Falls back to `None`.
fn uptime_estimate(sample: &Sample) -> Option<f64> {
    sample.uptime_seconds
}

fn threads_unavailable(p: &ProcessSample) -> Option<String> {
    match p.state {
        'Z' if p.has_exited() => Some(format!(
            "zombie: exited, waiting for its parent (pid {}) to reap it",
            p.ppid
        )),
        'X' if p.has_exited() => Some("dead".to_string()),
        _ if p.threads.is_empty() => Some("threads could not be listed".to_string()),
        _ => None,
    }
}

fn count_by(
    threads: &[ThreadSample],
    key: impl Fn(&ThreadSample) -> String,
) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for t in threads {
        *counts.entry(key(t)).or_insert(0) += 1;
    }
    counts
}

/// Threads by wait channel. A one-shot sample reads the channel of one thread per
/// system call that names its wait (the sampler checked that it sleeps where that call
/// does) and leaves out the others': those count under that thread's channel; without
/// one they show as "(in CALL)".
fn group_by_wait_channel(threads: &[ThreadSample]) -> Vec<ThreadGroup> {
    let number = |t: &ThreadSample| match &t.syscall {
        Some(crate::model::Syscall::InSyscall { number, .. }) if t.state == 'S' => Some(*number),
        _ => None,
    };
    let read: HashMap<i64, &str> = threads
        .iter()
        .filter_map(|t| Some((number(t)?, t.wchan.as_deref()?)))
        .collect();
    group_threads(threads, |t| match (&t.wchan, t.wait_name()) {
        (Some(wchan), _) => wchan.clone(),
        (None, Some(call)) if t.state == 'S' => number(t)
            .and_then(|n| read.get(&n))
            .map_or_else(|| format!("(in {call})"), |w| w.to_string()),
        _ => match t.state {
            'R' => "(running)".to_string(),
            _ => "(unknown)".to_string(),
        },
    })
}

/// Groups threads by a key, largest group first, with the names in each group.
pub fn group_threads(
    threads: &[ThreadSample],
    key: impl Fn(&ThreadSample) -> String,
) -> Vec<ThreadGroup> {
    let mut groups: BTreeMap<String, ThreadGroup> = BTreeMap::new();
    for t in threads {
        let k = key(t);
        let group = groups.entry(k.clone()).or_insert_with(|| ThreadGroup {
            key: k,
            count: 0,
            members: BTreeMap::new(),
        });
        group.count += 1;
        *group.members.entry(t.name.clone()).or_insert(0) += 1;
    }
    let mut list: Vec<ThreadGroup> = groups.into_values().collect();
    list.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.key.cmp(&b.key)));
    list
}

fn merged_unavailable(before: &Sample, after: &Sample) -> Vec<Unavailable> {
    let mut all: Vec<Unavailable> = before
        .unavailable
        .iter()
        .chain(after.unavailable.iter())
        .cloned()
        .collect();
    all.sort();
    all.dedup();
    all
}

/// Buffer of the report writers: the serializers write a few bytes at a time, and a
/// caller may hand an unbuffered writer (stderr, a file).
const WRITE_BUFFER: usize = 64 * 1024;

/// Writes the report as pretty JSON, in writes of 64 KiB, and flushes.
pub fn write_json(report: &SnapshotReport, out: &mut impl Write) -> std::io::Result<()> {
    let mut out = std::io::BufWriter::with_capacity(WRITE_BUFFER, out);
    crate::sink::json::to_writer_pretty(&mut out, report)?;
    writeln!(out)?;
    out.flush()
}

/// How many threads of one process the text report lists when `--all-threads` is off.
const NOTABLE_THREADS: usize = 12;

/// Writes the report for people, with the control characters a watched process put in
/// its names and command line escaped (`units::escape_controls`).
pub fn write_text(
    report: &SnapshotReport,
    all_threads: bool,
    out: &mut impl Write,
) -> std::io::Result<()> {
    crate::units::write_escaped(out, |buffer| render_text(report, all_threads, buffer))
}

fn render_text(
    report: &SnapshotReport,
    all_threads: bool,
    out: &mut impl Write,
) -> std::io::Result<()> {
    let root_comm = report
        .processes
        .first()
        .map(|p| p.comm.as_str())
        .unwrap_or("?");
    writeln!(
        out,
        "tfwatch snapshot of pid {} ({}) and {} descendant(s); window {}",
        report.root_pid,
        root_comm,
        report.processes.len().saturating_sub(1),
        format_seconds(report.window_seconds)
    )?;
    writeln!(out)?;
    // The verdict first: what the stacks say, before the budget and the findings.
    let verdict = match &report.stacks {
        Some(stacks) => stacks::write_verdict(stacks, &report.findings, out)?,
        None => false,
    };
    if verdict {
        writeln!(out)?;
    }
    write_budget(report, out)?;
    writeln!(out)?;
    write_findings(report, verdict, out)?;
    if !report.locks.is_empty() {
        writeln!(out)?;
        writeln!(out, "LOCKS")?;
        for note in &report.locks {
            writeln!(out, "  pid {}: {}", note.pid, note.text)?;
        }
    }
    if !report.states.is_empty() {
        writeln!(out)?;
        writeln!(out, "STATES")?;
        for note in &report.states {
            writeln!(out, "  {note}")?;
        }
    }
    writeln!(out)?;
    write_processes(report, out)?;
    for process in &report.processes {
        writeln!(out)?;
        write_threads(process, all_threads, out)?;
    }
    if !report.runtimes.is_empty() {
        writeln!(out)?;
        write_runtimes(report, out)?;
    }
    if let Some(stacks) = &report.stacks {
        writeln!(out)?;
        stacks::write_section(stacks, !verdict, out)?;
    }
    if !report.unavailable.is_empty() {
        writeln!(out)?;
        writeln!(out, "UNAVAILABLE")?;
        for u in &report.unavailable {
            let pid = u.pid.map(|p| format!(" (pid {p})")).unwrap_or_default();
            writeln!(out, "  {}{}: {}", u.source, pid, u.reason)?;
            if let Some(fix) = &u.fix {
                writeln!(out, "      fix: {fix}")?;
            }
        }
    }
    Ok(())
}

fn write_budget(report: &SnapshotReport, out: &mut impl Write) -> std::io::Result<()> {
    let cpus = &report.cpus;
    let affinity = match (cpus.affinity, &cpus.affinity_list) {
        (Some(n), Some(list)) => format!("{n} [{list}]"),
        (Some(n), None) => n.to_string(),
        _ => "unknown".to_string(),
    };
    let quota = match (cpus.quota, &cpus.quota_source) {
        (Some(q), Some(src)) => format!("{q:.2} ({src})"),
        (Some(q), None) => format!("{q:.2}"),
        _ => "none".to_string(),
    };
    writeln!(
        out,
        "CPUs     usable {} = min(online {}, affinity {}, cgroup quota {})",
        trim_float(cpus.usable),
        cpus.online,
        affinity,
        quota
    )?;
    if let Some(t) = &cpus.throttling {
        writeln!(
            out,
            "         quota throttled {} of {} periods since the cgroup began, {:.2} s held off the CPUs ({})",
            t.throttled_periods, t.periods, t.throttled_seconds, t.source
        )?;
    }
    writeln!(
        out,
        "         {} thread(s) in the tree, {} runnable; run-queue wait ratio {}",
        report.tree_threads,
        report.tree_runnable_threads,
        report
            .runqueue_wait_ratio
            .map(|r| format!("{r:.2}"))
            .unwrap_or_else(|| crate::model::RATIO_NOT_COMPUTED.to_string())
    )?;
    writeln!(
        out,
        "Memory   tree RSS {} = {:.1} % of {} ({})",
        format_bytes(report.tree_rss_bytes),
        100.0 * share(report.tree_rss_bytes, report.memory_limit_bytes),
        format_bytes(report.memory_limit_bytes),
        report.memory_limit_source
    )?;
    match &report.gpu {
        None => writeln!(out, "GPU      not read (--no-gpu)"),
        Some(gpu) => {
            if let Some(reason) = &gpu.unavailable {
                return writeln!(out, "GPU      unavailable ({reason})");
            }
            for d in &gpu.devices {
                let ours: Vec<String> = d
                    .processes
                    .iter()
                    .filter_map(|g| report.processes.iter().find(|p| p.pid == g.pid))
                    .map(|p| match &p.rank {
                        Some(rank) => format!("{} ({rank})", p.pid),
                        None => p.pid.to_string(),
                    })
                    .collect();
                writeln!(
                    out,
                    "GPU {}    {}: {} of {} used, utilisation {}; tree processes on it: {}",
                    d.index,
                    d.name,
                    format_bytes(d.memory_used_bytes),
                    format_bytes(d.memory_total_bytes),
                    d.utilization_percent
                        .map_or("n/a".to_string(), |u| format!("{u} %")),
                    if ours.is_empty() {
                        "none".to_string()
                    } else {
                        ours.join(", ")
                    }
                )?;
            }
            Ok(())
        }
    }
}

/// The findings; `verdict`: a VERDICT section from the stacks stands above them.
fn write_findings(
    report: &SnapshotReport,
    verdict: bool,
    out: &mut impl Write,
) -> std::io::Result<()> {
    writeln!(out, "FINDINGS")?;
    if report.findings.is_empty() {
        if verdict {
            writeln!(
                out,
                "  none from the window (the verdict of the stacks is above)"
            )?;
        } else {
            writeln!(out, "  none")?;
        }
    }
    for f in &report.findings {
        writeln!(
            out,
            "  [{}] {}: {} (confidence {:.0} %)",
            f.severity,
            f.kind,
            f.summary,
            f.confidence * 100.0
        )?;
        for line in &f.evidence {
            writeln!(out, "      - {line}")?;
        }
        if !f.remedy.is_empty() {
            writeln!(out, "      remedy: {}", f.remedy)?;
        }
    }
    if !report.needs_longer_watch.is_empty() {
        writeln!(out, "  needs a longer watch:")?;
        for w in &report.needs_longer_watch {
            writeln!(out, "  [?] {}: {}", w.kind, w.observed)?;
            if verdict && w.kind == crate::model::FindingKind::NoProgress {
                writeln!(
                    out,
                    "      the stacks taken since: see VERDICT above; to watch it: {}",
                    w.how
                )?;
            } else {
                writeln!(out, "      to decide: {}", w.how)?;
            }
        }
    }
    Ok(())
}

fn write_processes(report: &SnapshotReport, out: &mut impl Write) -> std::io::Result<()> {
    writeln!(out, "PROCESSES")?;
    writeln!(
        out,
        "  {:<8} {:<8} {:>7} {:<5} {:>6} {:>10} {:>6}  COMMAND",
        "PID", "PPID", "THREADS", "STATE", "CPU%", "RSS", "MEM%"
    )?;
    for p in &report.processes {
        let mut command = if p.cmdline.is_empty() {
            format!("[{}]", p.comm)
        } else {
            p.cmdline.join(" ")
        };
        if let Some(rank) = &p.rank {
            command = format!("({rank}) {command}");
        }
        writeln!(
            out,
            "  {:<8} {:<8} {:>7} {:<5} {:>6} {:>10} {:>6.1}  {}",
            p.pid,
            p.ppid,
            p.threads.len().max(p.num_threads as usize),
            p.state,
            p.cpu_utilization
                .map(|u| format!("{:.1}", u * 100.0))
                .unwrap_or_else(|| "-".to_string()),
            format_bytes(p.rss_bytes),
            p.memory_share * 100.0,
            truncate(&command, 80)
        )?;
    }
    Ok(())
}

fn write_threads(p: &ProcessReport, all: bool, out: &mut impl Write) -> std::io::Result<()> {
    writeln!(
        out,
        "THREADS of pid {} ({}{}): {}",
        p.pid,
        p.comm,
        p.rank
            .as_ref()
            .map(|r| format!(", {r}"))
            .unwrap_or_default(),
        p.threads.len()
    )?;
    if let Some(why) = &p.threads_unavailable {
        writeln!(out, "  {why}")?;
        return Ok(());
    }
    let states: Vec<String> = p
        .threads_by_state
        .iter()
        .map(|(s, n)| format!("{s} {n}"))
        .collect();
    writeln!(out, "  by state: {}", states.join(", "))?;
    writeln!(out, "  by wait channel:")?;
    for g in p.threads_by_wchan.iter().take(8) {
        writeln!(out, "    {:>5}  {:<28} {}", g.count, g.key, members(g))?;
    }
    writeln!(out, "  by name:")?;
    for g in p.threads_by_name.iter().take(8) {
        writeln!(out, "    {:>5}  {}", g.count, g.key)?;
    }
    let mut listed: Vec<&ThreadReport> = p.threads.iter().collect();
    listed.sort_by(|a, b| {
        let busy = |t: &ThreadReport| t.cpu_utilization.unwrap_or(0.0);
        busy(b).total_cmp(&busy(a)).then(a.tid.cmp(&b.tid))
    });
    let shown = if all {
        listed.len()
    } else {
        NOTABLE_THREADS.min(listed.len())
    };
    writeln!(
        out,
        "  {:<8} {:<16} {:<2} {:>6} {:>9} {:>7} {:>9}  {:<24} SYSCALL",
        "TID", "NAME", "ST", "CPU%", "CPU-TIME", "RQWAIT", "NVCSW/s", "WCHAN"
    )?;
    for t in listed.iter().take(shown) {
        writeln!(
            out,
            "  {:<8} {:<16} {:<2} {:>6} {:>9} {:>7} {:>9}  {:<24} {}",
            t.tid,
            truncate(&t.name, 16),
            t.state,
            t.cpu_utilization
                .map(|u| format!("{:.1}", u * 100.0))
                .unwrap_or_else(|| "-".to_string()),
            format_seconds(t.cpu_seconds),
            t.runqueue_wait_ratio
                .map(|r| format!("{r:.2}"))
                .unwrap_or_else(|| "-".to_string()),
            t.nonvoluntary_switches_per_second
                .map(|r| format!("{r:.1}"))
                .unwrap_or_else(|| "-".to_string()),
            truncate(t.wchan.as_deref().unwrap_or("-"), 24),
            syscall_text(t.syscall.as_ref())
                + &t.lock
                    .as_ref()
                    .and_then(|l| l.owner_tid)
                    .map(|o| format!(" mutex held by {o}"))
                    .unwrap_or_default()
        )?;
    }
    if shown < listed.len() {
        writeln!(
            out,
            "  … {} more thread(s); --all-threads lists them",
            listed.len() - shown
        )?;
    }
    Ok(())
}

fn write_runtimes(report: &SnapshotReport, out: &mut impl Write) -> std::io::Result<()> {
    writeln!(out, "THREAD RUNTIMES")?;
    for r in &report.runtimes {
        let names: Vec<String> = r
            .audit
            .runtimes
            .iter()
            .map(|rt| match &rt.version {
                Some(v) => format!("{} {v}", rt.name),
                None => rt.name.clone(),
            })
            .collect();
        writeln!(
            out,
            "  pid {}{}: {}",
            r.pid,
            r.audit
                .rank
                .as_ref()
                .map(|rank| format!(" ({})", rank.label()))
                .unwrap_or_default(),
            if names.is_empty() {
                "no known thread runtime loaded".to_string()
            } else {
                names.join(", ")
            }
        )?;
        if let Some(why) = &r.audit.env_unavailable {
            writeln!(out, "      environment: unavailable ({why})")?;
        } else if r.audit.env.is_empty() {
            writeln!(out, "      environment: no thread variables set")?;
        } else {
            let vars: Vec<String> = r
                .audit
                .env
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            writeln!(
                out,
                "      environment ({}): {}",
                r.audit.env_source.as_str(),
                vars.join(" ")
            )?;
        }
        if let Some(why) = &r.audit.env_memory_unavailable {
            writeln!(
                out,
                "      live environment unavailable ({why}): used /proc/{}/environ",
                r.pid
            )?;
        }
        for change in &r.audit.env_changes {
            let text = match (&change.at_start, &change.now) {
                (None, Some(now)) => format!("{}={now} set after start", change.variable),
                (Some(was), Some(now)) => {
                    format!("{}={now} changed after start (was {was})", change.variable)
                }
                (Some(was), None) => {
                    format!("{} removed after start (was {was})", change.variable)
                }
                (None, None) => continue,
            };
            writeln!(out, "      {text}")?;
        }
        for pool in &r.audit.pools {
            writeln!(
                out,
                "      pool {:<18} {:>4} thread(s): {}",
                pool.runtime, pool.threads, pool.reason
            )?;
        }
        for pool in &r.audit.observed_pools {
            writeln!(
                out,
                "      seen {:<18} {:>4} thread(s), {} ran in the last interval",
                pool.runtime, pool.threads, pool.running
            )?;
        }
    }
    Ok(())
}

fn members(group: &ThreadGroup) -> String {
    let parts: Vec<String> = group
        .members
        .iter()
        .map(|(name, n)| format!("{name} ×{n}"))
        .collect();
    truncate(&format!("named {}", parts.join(", ")), 60)
}

/// How a system call reads to a person.
pub fn syscall_text(syscall: Option<&Syscall>) -> String {
    match syscall {
        None => "-".to_string(),
        Some(Syscall::Running) => "running".to_string(),
        Some(Syscall::NotInSyscall) => "(not in a syscall)".to_string(),
        Some(Syscall::InSyscall { number, name, args }) => {
            let first = args
                .first()
                .map(|a| format!("(0x{a:x}, …)"))
                .unwrap_or_default();
            match name {
                Some(n) => format!("{n}{first}"),
                None => format!("syscall {number}{first}"),
            }
        }
    }
}

/// A table cell: one line (a newline or tab a process put in its command line or names
/// is escaped, as every control character of the report is), at most `width` wide.
fn truncate(text: &str, width: usize) -> String {
    let text = crate::units::escape_controls(text, false);
    if text.chars().count() <= width {
        text.to_string()
    } else {
        let cut: String = text.chars().take(width.saturating_sub(1)).collect();
        format!("{cut}…")
    }
}

fn trim_float(value: f64) -> String {
    if value.fract() == 0.0 {
        format!("{value:.0}")
    } else {
        format!("{value:.2}")
    }
}

#[cfg(test)]
mod state_tests {
    use super::*;
    use crate::model::ProcessSample;

    fn thread(tid: i32, state: char, wchan: Option<&str>) -> ThreadSample {
        ThreadSample {
            tid,
            state,
            wchan: wchan.map(str::to_string),
            ..ThreadSample::default()
        }
    }

    fn sample(state: char, threads: Vec<ThreadSample>) -> Sample {
        Sample {
            root_pid: 9,
            processes: vec![ProcessSample {
                pid: 9,
                state,
                num_threads: threads.len() as u32,
                threads: threads.into(),
                ..ProcessSample::default()
            }],
            ..Sample::default()
        }
    }

    #[test]
    fn a_process_its_cgroup_froze_is_said_frozen_in_notes_and_findings() {
        // A recent kernel shows a frozen task in D, in the wait it was in.
        let frozen = sample('D', vec![thread(9, 'D', Some("futex_wait_queue"))]);
        let mut report = build_snapshot(&frozen, &frozen, Diagnosis::default());
        assert!(
            report.states[0].contains("uninterruptible sleep"),
            "{:?}",
            report.states
        );
        let mut deadlock = Finding::new(
            crate::model::FindingKind::Deadlock,
            crate::model::Severity::Error,
            "lock cycle",
        );
        deadlock.pids = vec![9];
        deadlock
            .evidence
            .push("owners read; every thread of the cycle is asleep in a futex wait".to_string());
        report.findings.push(deadlock);
        note_frozen(&mut report, 9, "cgroup-v1 freezer /job is FROZEN");
        let said = crate::model::waits::frozen_process(9, "cgroup-v1 freezer /job is FROZEN");
        assert_eq!(report.states, std::slice::from_ref(&said));
        let evidence = &report.findings[0].evidence;
        assert!(!evidence[0].contains("asleep"), "{evidence:?}");
        assert!(
            evidence[0].contains("frozen by their cgroup"),
            "{evidence:?}"
        );
        assert_eq!(evidence[1], said);
    }

    #[test]
    fn stopped_frozen_and_uninterruptible_are_named() {
        let stopped = sample('T', vec![thread(9, 'T', Some("do_signal_stop"))]);
        assert_eq!(
            state_notes(&stopped),
            ["pid 9 is stopped (SIGSTOP/SIGTSTP, state T): it makes no progress until SIGCONT"]
        );
        let asleep = sample(
            'S',
            vec![
                thread(9, 'S', Some("futex_wait_queue")),
                thread(10, 'D', Some("nfs_wait_bit_killable")),
                thread(11, 'D', Some("nfs_wait_bit_killable")),
            ],
        );
        assert_eq!(
            state_notes(&asleep),
            ["pid 9: 2 thread(s) in uninterruptible sleep (D) in nfs_wait_bit_killable"]
        );
        let frozen = sample('D', vec![thread(9, 'D', Some("__refrigerator"))]);
        let notes = state_notes(&frozen);
        assert_eq!(notes.len(), 1);
        assert!(notes[0].contains("pid 9 is frozen"), "{notes:?}");
        let running = sample('R', vec![thread(9, 'R', None)]);
        assert!(state_notes(&running).is_empty());
    }

    /// A command line with a newline (`python3 -c` of a script) stays on its row.
    #[test]
    fn table_cells_stay_on_one_line() {
        assert_eq!(
            truncate("python3 -c \nimport os\tx", 80),
            "python3 -c \\x0aimport os\\x09x"
        );
        assert_eq!(truncate("a\nbcdef", 5), "a\\x0…");
    }

    /// Threads whose channel a one-shot sample left out count under the channel read
    /// for their system call; without one, under the call.
    #[test]
    fn threads_left_without_a_channel_group_by_their_system_call() {
        let in_call =
            |tid: i32, number: i64, name: &'static str, wchan: Option<&str>| ThreadSample {
                syscall: Some(crate::model::Syscall::InSyscall {
                    number,
                    name: Some(name.into()),
                    args: [0; 6],
                }),
                ..thread(tid, 'S', wchan)
            };
        let threads = [
            in_call(1, 202, "futex", None),
            in_call(2, 202, "futex", Some("futex_wait_queue")),
            in_call(3, 202, "futex", None),
            in_call(4, 34, "pause", None),
            thread(5, 'R', None),
            thread(6, 'S', None),
        ];
        let groups: Vec<(String, usize)> = group_by_wait_channel(&threads)
            .into_iter()
            .map(|g| (g.key, g.count))
            .collect();
        assert_eq!(
            groups,
            [
                ("futex_wait_queue".to_string(), 3),
                ("(in pause)".to_string(), 1),
                ("(running)".to_string(), 1),
                ("(unknown)".to_string(), 1),
            ]
        );
    }
}

#[cfg(test)]
mod rank_tests {
    use super::*;
    use crate::model::ranks::RankInfo;
    use crate::model::{GpuDevice, GpuProcess, ProcessSample};

    /// A launcher (pid 9) and its rank 1 of 2 (pid 10) on GPU 0.
    fn sample(t: f64) -> Sample {
        let rank = RankInfo {
            rank: 1,
            world_size: Some(2),
            source: "RANK".to_string(),
            launcher: "manual".to_string(),
            ..RankInfo::default()
        };
        let process = |pid: i32, rank: Option<RankInfo>| ProcessSample {
            pid,
            ppid: 9,
            comm: "python3".to_string(),
            cmdline: vec!["python3".to_string(), "train.py".to_string()],
            state: 'S',
            num_threads: 1,
            threads: vec![ThreadSample {
                tid: pid,
                state: 'S',
                ..ThreadSample::default()
            }]
            .into(),
            audit: Some(RuntimeAudit {
                rank,
                ..RuntimeAudit::default()
            }),
            ..ProcessSample::default()
        };
        Sample {
            root_pid: 9,
            elapsed_seconds: t,
            processes: vec![process(9, None), process(10, Some(rank))],
            gpu: Some(GpuSample {
                devices: vec![GpuDevice {
                    index: 0,
                    name: "H200".to_string(),
                    processes: vec![GpuProcess {
                        pid: 10,
                        kind: crate::model::GpuProcessKind::Compute,
                        used_memory_bytes: None,
                    }],
                    ..GpuDevice::default()
                }],
                unavailable: None,
            }),
            ..Sample::default()
        }
    }

    fn report() -> SnapshotReport {
        build_snapshot(&sample(0.0), &sample(1.0), Diagnosis::default())
    }

    #[test]
    fn the_rank_stands_next_to_its_pid_in_every_part_of_the_text_report() {
        let mut text = Vec::new();
        write_text(&report(), false, &mut text).unwrap();
        let text = String::from_utf8(text).unwrap();
        let line = |start: &str| {
            text.lines()
                .find(|l| l.trim_start().starts_with(start))
                .unwrap_or_else(|| panic!("no line {start:?} in\n{text}"))
                .trim()
                .to_string()
        };
        assert!(
            line("10 ").contains("(rank 1/2) python3 train.py"),
            "{text}"
        );
        assert!(!line("9 ").contains("rank"), "{text}");
        assert_eq!(
            line("THREADS of pid 10"),
            "THREADS of pid 10 (python3, rank 1/2): 1"
        );
        assert_eq!(line("THREADS of pid 9"), "THREADS of pid 9 (python3): 1");
        assert!(line("pid 10").starts_with("pid 10 (rank 1/2):"), "{text}");
        assert!(
            line("GPU 0").ends_with("tree processes on it: 10 (rank 1/2)"),
            "{text}"
        );
    }

    #[test]
    fn the_json_report_carries_the_rank_of_each_process() {
        let mut json = Vec::new();
        write_json(&report(), &mut json).unwrap();
        let value: serde_json::Value = serde_json::from_slice(&json).unwrap();
        assert_eq!(value["processes"][1]["rank"], "rank 1/2");
        assert!(value["processes"][0].get("rank").is_none());
        assert_eq!(value["runtimes"][1]["rank"]["rank"], 1);
    }
}
