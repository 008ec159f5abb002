//! Distributed jobs: ranks that stopped meeting.
//!
//! A rank waiting in a collective looks like an idle server to the hang detector: its
//! communication library keeps threads in `epoll_wait` on its sockets (gloo's
//! `gloo_tcp_loop`, the TCP store's `pt_tcpstore_uv`) while the thread that called the
//! collective waits on a futex. So ranks are judged by their own threads, the
//! communication library's left aside: a rank whose own threads made no progress for
//! the hang window is stalled, whatever its sockets do.
//!
//! One finding per job (the ranks that share a rendezvous or a run id): every watched
//! rank stalled is a hang (`distributed-hang`, error); some stalled while another
//! still computes is a `straggler` (warning). Which collective each rank waits in, and the verdict that
//! follows (collective mismatch, straggler, a peer outside the watch), come from the
//! ranks' stacks: [`verdict`] judges them, given each rank's innermost collective.

use std::collections::BTreeMap;

use crate::model::ranks::RankInfo;
use crate::model::{Finding, FindingKind, Severity};
use crate::timeline::Timeline;
use crate::units::format_seconds;

use super::DetectConfig;

/// CPU time per second of wall time below which a rank's own threads count as making
/// no progress (as for the hang detector: 1 % of one core).
const PROGRESS_CPU_SHARE: f64 = 0.01;

/// CPU time per second of wall time from which a rank counts as computing: the
/// straggler the others wait for.
const BUSY_CPU_SHARE: f64 = 0.25;

pub use crate::model::ranks::is_communication_thread;

/// What the timeline says of one rank over the hang window.
#[derive(Debug, Clone, PartialEq)]
pub struct RankProgress {
    pub pid: i32,
    pub rank: RankInfo,
    /// CPU seconds of the rank's own threads (communication threads left aside) over
    /// the window.
    pub own_cpu_seconds: f64,
    pub window_seconds: f64,
    /// Where the main thread sleeps now (`futex_wait_queue`, `do_epoll_wait`, …).
    pub main_wchan: Option<String>,
    pub main_state: char,
    /// The launcher that started the rank (its parent): the launcher's name and pid.
    pub launcher: Option<(String, i32)>,
}

impl RankProgress {
    /// No progress of its own in the window.
    pub fn stalled(&self) -> bool {
        self.own_cpu_seconds < PROGRESS_CPU_SHARE * self.window_seconds && self.main_state != 'R'
    }

    /// Computing through the window: at least a quarter of a core on average. A rank
    /// between stalled and busy (finishing a step, loading data) is neither: it makes a
    /// job neither hung nor a straggler's.
    pub fn busy(&self) -> bool {
        self.own_cpu_seconds >= BUSY_CPU_SHARE * self.window_seconds || self.main_state == 'R'
    }
}

/// Every rank of the newest sample with its progress over the last `window` seconds
/// (from the summaries, so a window of minutes holds); ranks younger than the window are
/// left out.
pub fn rank_progress(timeline: &Timeline, window: f64) -> Vec<RankProgress> {
    let Some(now) = timeline.latest() else {
        return Vec::new();
    };
    let summaries: Vec<&crate::timeline::Summary> = timeline.summaries().collect();
    let Some(newest) = summaries.last().map(|s| s.elapsed_seconds) else {
        return Vec::new();
    };
    // The summaries whose intervals make up the window, newest backwards.
    let Some(start) = summaries
        .iter()
        .rposition(|s| newest - s.elapsed_seconds >= window - 1e-9)
    else {
        return Vec::new();
    };
    let in_window = &summaries[start + 1..];
    let span = newest - summaries[start].elapsed_seconds;
    now.processes
        .iter()
        .filter_map(|p| {
            let rank = p.audit.as_ref()?.rank.clone()?;
            summaries[start]
                .process(p.pid)
                .filter(|o| (o.start_time_seconds - p.start_time_seconds).abs() < 0.5)?;
            let mut own = 0.0;
            for summary in in_window {
                let s = summary.process(p.pid)?;
                s.delta_cpu_seconds?;
                own += (s.delta_run_seconds - s.delta_library_run_seconds).max(0.0);
            }
            let main = p.threads.iter().find(|t| t.tid == p.pid);
            let launcher = now
                .processes
                .iter()
                .find(|parent| parent.pid == p.ppid)
                .and_then(|parent| {
                    crate::model::ranks::launcher_of(&parent.comm, &parent.cmdline)
                        .map(|name| (name.to_string(), parent.pid))
                });
            Some(RankProgress {
                pid: p.pid,
                rank,
                own_cpu_seconds: own,
                window_seconds: span,
                main_wchan: main.and_then(|t| t.wchan.clone()),
                main_state: main.map_or(p.state, |t| t.state),
                launcher,
            })
        })
        .collect()
}

/// The processes of the newest sample that started a live rank (its parent, itself no
/// rank): a launcher waits for its ranks, whose progress [`ranks_stalled`] judges, so
/// it is no hang of its own while they live. A launcher left with no live rank is
/// judged as any process.
pub fn launchers(timeline: &Timeline) -> Vec<i32> {
    let Some(now) = timeline.latest() else {
        return Vec::new();
    };
    let is_rank = |p: &crate::model::ProcessSample| {
        !matches!(p.state, 'Z' | 'X' | 'x') && p.audit.as_ref().is_some_and(|a| a.rank.is_some())
    };
    let mut pids: Vec<i32> = now
        .processes
        .iter()
        .filter(|p| is_rank(p))
        .filter_map(|rank| now.process(rank.ppid))
        .filter(|parent| !is_rank(parent))
        .map(|parent| parent.pid)
        .collect();
    pids.sort_unstable();
    pids.dedup();
    pids
}

/// The hang and straggler findings of the distributed jobs in the tree.
pub fn ranks_stalled(timeline: &Timeline, config: &DetectConfig) -> Vec<Finding> {
    if config.one_shot {
        return Vec::new();
    }
    let mut jobs: BTreeMap<String, Vec<RankProgress>> = BTreeMap::new();
    for progress in rank_progress(timeline, config.hang_after_seconds) {
        jobs.entry(progress.rank.job_key())
            .or_default()
            .push(progress);
    }
    let gpu = timeline
        .latest()
        .and_then(|s| s.gpu.as_ref())
        .filter(|g| g.unavailable.is_none() && config.pid_namespace.pids_comparable());
    jobs.into_iter()
        .filter_map(|(job, mut ranks)| {
            ranks.sort_by_key(|r| r.rank.rank);
            let mut finding = job_finding(&job, &ranks)?;
            if let Some(gpu) = gpu {
                finding.evidence.extend(gpu_evidence(&ranks, gpu));
            }
            Some(finding)
        })
        .collect()
}

/// Each rank's GPU and its utilisation (NCCL ranks waiting in a collective leave their
/// GPU at 0 %).
fn gpu_evidence(ranks: &[RankProgress], gpu: &crate::model::GpuSample) -> Vec<String> {
    ranks
        .iter()
        .flat_map(|r| {
            gpu.devices
                .iter()
                .filter(|d| d.processes.iter().any(|p| p.pid == r.pid))
                .map(move |d| {
                    let utilisation = d
                        .utilization_percent
                        .map_or("utilisation unknown".to_string(), |u| {
                            format!("{u} % utilisation")
                        });
                    format!(
                        "{} pid {}: GPU {} ({}) at {utilisation}",
                        r.rank.label(),
                        r.pid,
                        d.index,
                        d.name
                    )
                })
        })
        .collect()
}

fn job_finding(job: &str, ranks: &[RankProgress]) -> Option<Finding> {
    let stalled: Vec<&RankProgress> = ranks.iter().filter(|r| r.stalled()).collect();
    if stalled.is_empty() {
        return None;
    }
    let busy: Vec<&RankProgress> = ranks.iter().filter(|r| r.busy()).collect();
    if stalled.len() < ranks.len() && busy.is_empty() {
        // Some wait, the others move slowly: not (yet) a hang nor a straggler.
        return None;
    }
    let window = stalled[0].window_seconds;
    let world = ranks.iter().find_map(|r| r.rank.world_size);
    let labels = |set: &[&RankProgress]| {
        set.iter()
            .map(|r| format!("{} (pid {})", r.rank.label(), r.pid))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut finding = if busy.is_empty() {
        let mut f = Finding::new(
            FindingKind::DistributedHang,
            Severity::Error,
            format!(
                "distributed job hung: {} of {} rank(s) made no progress for {}",
                stalled.len(),
                world.map_or_else(|| stalled.len().to_string(), |n| n.to_string()),
                format_seconds(window)
            ),
        );
        f.remedy = format!("{} {TIMEOUT_ADVICE}", Verdict::Unknown.remedy());
        f
    } else {
        let mut f = Finding::new(
            FindingKind::Straggler,
            Severity::Warning,
            format!(
                "{} wait(s) with no progress for {} while {} still compute(s)",
                labels(&stalled),
                format_seconds(window),
                labels(&busy)
            ),
        );
        f.remedy = Verdict::Straggler(Vec::new()).remedy().to_string();
        f.confidence = 0.7;
        f
    };
    add_job_evidence(&mut finding, job, ranks);
    Some(finding)
}

/// The job's evidence (its launcher, each rank's progress, WORLD_SIZE against the ranks
/// watched, the Flight Recorder), metrics and pids.
fn add_job_evidence(finding: &mut Finding, job: &str, ranks: &[RankProgress]) {
    let stalled: Vec<&RankProgress> = ranks.iter().filter(|r| r.stalled()).collect();
    let window = ranks.first().map_or(0.0, |r| r.window_seconds);
    let world = ranks.iter().find_map(|r| r.rank.world_size);
    let launchers: std::collections::BTreeSet<String> = ranks
        .iter()
        .filter_map(|r| r.launcher.as_ref())
        .map(|(name, pid)| format!("{name} (pid {pid})"))
        .collect();
    if launchers.is_empty() {
        finding.evidence.push(format!("job {job}"));
    } else {
        let launchers: Vec<String> = launchers.into_iter().collect();
        finding
            .evidence
            .push(format!("job {job}, launched by {}", launchers.join(", ")));
    }
    for r in ranks {
        let state = if r.stalled() {
            format!(
                "no progress for {} ({:.3}s CPU of its own threads), main thread {} in {}",
                format_seconds(r.window_seconds),
                r.own_cpu_seconds,
                r.main_state,
                r.main_wchan.as_deref().unwrap_or("an unknown wait")
            )
        } else {
            format!(
                "still runs: {:.2}s CPU in {}",
                r.own_cpu_seconds,
                format_seconds(r.window_seconds)
            )
        };
        finding
            .evidence
            .push(format!("{} pid {}: {state}", r.rank.label(), r.pid));
    }
    if let Some(world) = world
        && (ranks.len() as u32) < world
    {
        finding.evidence.push(format!(
            "WORLD_SIZE is {world} but {} rank(s) are watched: the others run elsewhere \
             (another node, or outside the watched tree)",
            ranks.len()
        ));
    }
    for r in ranks {
        if let Some(recorder) = &r.rank.flight_recorder {
            finding
                .evidence
                .push(recorder.evidence(&format!("{} pid {}", r.rank.label(), r.pid)));
        }
    }
    finding
        .metrics
        .insert("ranks_stalled".to_string(), stalled.len() as f64);
    finding
        .metrics
        .insert("ranks_watched".to_string(), ranks.len() as f64);
    finding
        .metrics
        .insert("seconds_without_progress".to_string(), window);
    finding.pids = ranks.iter().map(|r| r.pid).collect();
    finding.tids = stalled.iter().map(|r| r.pid).collect();
}

/// `snapshot --stacks`: the cross-rank diagnosis of one short window (two samples) and
/// the stacks taken after it, one finding per job where a rank made no progress of its
/// own in the window and a rank's stacks show a collective.
///
/// One window cannot show "no progress for the hang window", so this is no hang
/// (`distributed-hang` at error is a watch's). What it does observe is said at the
/// severity it supports: every rank blocked in a collective with no progress of its own
/// in the window and the collectives differing (a collective mismatch: such ranks cannot
/// meet) is a **warning**; any other verdict over one window (the same collective
/// everywhere, a straggler, a peer outside the watch) is what ranks do between steps as
/// well, and is **info**. The finding says which watch decides.
pub fn observe_window(
    timeline: &Timeline,
    stacks: &crate::model::stacks::StacksReport,
) -> Vec<Finding> {
    let (Some(first), Some(now)) = (timeline.summaries().next(), timeline.latest()) else {
        return Vec::new();
    };
    let window = now.elapsed_seconds - first.elapsed_seconds;
    if window <= 0.0 {
        return Vec::new();
    }
    let progress = rank_progress(timeline, window);
    let mut jobs: BTreeMap<String, Vec<RankProgress>> = BTreeMap::new();
    for p in &progress {
        jobs.entry(p.rank.job_key()).or_default().push(p.clone());
    }
    let mut findings = Vec::new();
    for (job, mut ranks) in jobs {
        ranks.sort_by_key(|r| r.rank.rank);
        let stalled = ranks.iter().filter(|r| r.stalled()).count();
        if stalled == 0 {
            continue;
        }
        let waits = rank_waits(&ranks, stacks);
        if !waits.iter().any(|w| w.collective.is_some()) {
            continue;
        }
        let world = ranks.iter().find_map(|r| r.rank.world_size);
        let all_blocked = stalled == ranks.len()
            && waits.len() == ranks.len()
            && waits.iter().all(|w| w.collective.is_some());
        let mismatch = verdict(&waits, world) == Verdict::CollectiveMismatch;
        let busy = ranks.iter().any(RankProgress::busy);
        let (kind, severity) = match (busy, all_blocked && mismatch) {
            (true, _) => (FindingKind::Straggler, Severity::Info),
            (false, true) => (FindingKind::DistributedHang, Severity::Warning),
            (false, false) => (FindingKind::DistributedHang, Severity::Info),
        };
        let mut finding = Finding::new(
            kind,
            severity,
            format!(
                "distributed job: {stalled} of {} rank(s) made no progress of their own in the {} snapshot window",
                world.map_or_else(
                    || ranks.len().to_string(),
                    |n| n.max(stalled as u32).to_string()
                ),
                format_seconds(window)
            ),
        );
        finding.confidence = if severity == Severity::Warning {
            0.8
        } else {
            0.5
        };
        add_job_evidence(&mut finding, &job, &ranks);
        explain(&mut finding, &ranks, stacks);
        let target = ranks
            .iter()
            .find_map(|r| r.launcher.as_ref().map(|(_, pid)| *pid))
            .unwrap_or(now.root_pid);
        finding.evidence.push(format!(
            "seen in one {} window and one stack per thread, not over a hang window: \
             `tfwatch attach {target} --hang-after 60s` decides whether the ranks stay there (a hang)",
            format_seconds(window)
        ));
        findings.push(finding);
    }
    findings
}

/// How to make such a hang fail instead of wait.
const TIMEOUT_ADVICE: &str = "Pass a timeout to init_process_group (and, for NCCL, keep \
     TORCH_NCCL_ASYNC_ERROR_HANDLING on) so that such a hang fails with an error instead of \
     waiting forever.";

/// Where one rank waits, as its stacks tell.
#[derive(Debug, Clone, PartialEq)]
pub struct RankWait {
    pub pid: i32,
    pub rank: u32,
    pub label: String,
    /// The collective the rank waits in (`all_reduce`, `barrier`), or `None` when it is
    /// not in one.
    pub collective: Option<String>,
    /// The caller's file:line (the first frame outside the framework), where known.
    pub site: Option<String>,
    /// The function around that line.
    pub function: Option<String>,
    /// Whether the rank's own threads made progress in the window.
    pub busy: bool,
}

/// The cross-rank verdict.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Ranks wait in different collectives or at different call sites.
    CollectiveMismatch,
    /// One rank (or a few) is elsewhere while the others wait in a collective.
    Straggler(Vec<u32>),
    /// Every watched rank waits in the same collective at the same site, and WORLD_SIZE
    /// says more ranks exist: the missing one is outside the watch.
    PeerOutside,
    /// Every rank waits in the same collective at the same site and all are watched:
    /// a peer died or the communicator broke.
    SameCollective,
    /// The stacks do not tell (no collective seen in any rank).
    Unknown,
}

impl Verdict {
    pub fn text(&self, ranks: &[RankWait]) -> String {
        match self {
            Verdict::CollectiveMismatch => {
                let parts: Vec<String> = ranks
                    .iter()
                    .filter_map(|r| {
                        r.collective
                            .as_ref()
                            .map(|c| format!("{} in {c}{}", r.label, at(r)))
                    })
                    .collect();
                format!(
                    "collective mismatch: the ranks wait in different collectives ({})",
                    parts.join("; ")
                )
            }
            Verdict::Straggler(stragglers) => {
                let parts: Vec<String> = ranks
                    .iter()
                    .filter(|r| stragglers.contains(&r.rank))
                    .map(|r| {
                        let doing = if r.busy { "still computing" } else { "blocked" };
                        format!("{} is {doing} outside any collective{}", r.label, at(r))
                    })
                    .collect();
                format!(
                    "straggler: {}, while the others wait for it",
                    parts.join("; ")
                )
            }
            Verdict::PeerOutside => "every watched rank waits in the same collective at the \
                 same line: the rank they wait for is outside the watch (see WORLD_SIZE)"
                .to_string(),
            Verdict::SameCollective => "every rank waits in the same collective at the same line: \
                 a peer left the communicator (died, or timed out) or the network broke"
                .to_string(),
            Verdict::Unknown => {
                "the stacks show no collective: the ranks wait elsewhere".to_string()
            }
        }
    }

    pub fn remedy(&self) -> &'static str {
        match self {
            Verdict::CollectiveMismatch => {
                "Every rank must call the same collectives in the same order. Look for a \
                 branch on the rank or an uneven last batch (drop_last=True in the \
                 DataLoader/DistributedSampler, or join() / the Join context manager for \
                 uneven inputs)."
            }
            Verdict::Straggler(_) => {
                "The others wait for the straggler. See what it does at the line shown: \
                 slow I/O or data loading, uneven work per rank, or a sleep/lock on that \
                 rank only."
            }
            Verdict::PeerOutside => {
                "Watch the other ranks too (their node, or their launcher's process tree) \
                 to see which one does not arrive."
            }
            Verdict::SameCollective => {
                "Check the logs of every rank for an error and the network between them; \
                 set a timeout in init_process_group so the job fails instead of waiting."
            }
            Verdict::Unknown => {
                "Compare where each rank waits (`tfwatch snapshot --stacks PID` per rank): \
                 ranks in different collectives or at different lines mean a collective \
                 mismatch (a rank skipped or added a call: uneven batches, a rank-dependent \
                 branch); one rank elsewhere is the straggler."
            }
        }
    }
}

fn at(r: &RankWait) -> String {
    match (&r.site, &r.function) {
        (Some(site), Some(function)) => format!(" at {site} in {function}"),
        (Some(site), None) => format!(" at {site}"),
        _ => String::new(),
    }
}

/// Judges where the ranks of one job wait. `world_size` is the job's WORLD_SIZE where
/// known.
pub fn verdict(ranks: &[RankWait], world_size: Option<u32>) -> Verdict {
    let waiting: Vec<&RankWait> = ranks.iter().filter(|r| r.collective.is_some()).collect();
    if waiting.is_empty() {
        return Verdict::Unknown;
    }
    let elsewhere: Vec<u32> = ranks
        .iter()
        .filter(|r| r.collective.is_none())
        .map(|r| r.rank)
        .collect();
    let first = waiting[0];
    let same = waiting
        .iter()
        .all(|r| r.collective == first.collective && r.site == first.site);
    if !same {
        return Verdict::CollectiveMismatch;
    }
    if !elsewhere.is_empty() {
        return Verdict::Straggler(elsewhere);
    }
    match world_size {
        Some(world) if (ranks.len() as u32) < world => Verdict::PeerOutside,
        _ => Verdict::SameCollective,
    }
}

pub use crate::model::collectives::collective_of;

/// Where each rank of a stalled job waits, from the stacks taken on the hang. A rank
/// without stacks is left out.
pub fn rank_waits(
    progress: &[RankProgress],
    stacks: &crate::model::stacks::StacksReport,
) -> Vec<RankWait> {
    progress
        .iter()
        .filter_map(|r| {
            let place = crate::model::collectives::rank_place(stacks, r.pid)?;
            Some(RankWait {
                pid: r.pid,
                rank: r.rank.rank,
                label: format!("{} (pid {})", r.rank.label(), r.pid),
                collective: place.collective,
                site: place.site,
                function: place.function,
                busy: !r.stalled(),
            })
        })
        .collect()
}

/// Adds the cross-rank verdict to the job's finding: for every rank, where it waits,
/// then the verdict and its remedy. Returns whether the stacks told anything.
pub fn explain(
    finding: &mut Finding,
    progress: &[RankProgress],
    stacks: &crate::model::stacks::StacksReport,
) -> bool {
    let ranks: Vec<RankProgress> = progress
        .iter()
        .filter(|r| finding.pids.contains(&r.pid))
        .cloned()
        .collect();
    let waits = rank_waits(&ranks, stacks);
    if waits.is_empty() {
        return false;
    }
    let world = ranks.iter().find_map(|r| r.rank.world_size);
    let verdict = verdict(&waits, world);
    for w in &waits {
        let place = match &w.collective {
            Some(c) => format!("waits in {c}{}", at(w)),
            None if w.busy => format!("still computing{}", at(w)),
            None => format!("not in a collective{}", at(w)),
        };
        finding.evidence.push(format!("{}: {place}", w.label));
    }
    if verdict != Verdict::Unknown {
        finding.summary = format!("{}: {}", finding.summary, verdict.text(&waits));
        finding.remedy = if finding.kind == FindingKind::DistributedHang {
            format!("{} {TIMEOUT_ADVICE}", verdict.remedy())
        } else {
            verdict.remedy().to_string()
        };
    }
    true
}

/// [`explain`] for every distributed finding of `findings`, with the ranks' progress
/// over the hang window of `timeline`.
pub fn explain_all(
    findings: &mut [Finding],
    timeline: &Timeline,
    hang_after_seconds: f64,
    stacks: &crate::model::stacks::StacksReport,
) {
    let progress = rank_progress(timeline, hang_after_seconds);
    for finding in findings.iter_mut().filter(|f| {
        matches!(
            f.kind,
            FindingKind::DistributedHang | FindingKind::Straggler
        )
    }) {
        explain(finding, &progress, stacks);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::test_support::{process, sample, thread};
    use crate::model::stacks::StackFrame;
    use crate::model::{ProcessSample, RuntimeAudit};

    fn rank_env(rank: u32, world: u32) -> RankInfo {
        RankInfo {
            rank,
            world_size: Some(world),
            rendezvous: Some("127.0.0.1:29500".to_string()),
            source: "RANK".to_string(),
            launcher: "manual".to_string(),
            ..RankInfo::default()
        }
    }

    /// A rank at time `t`: its main thread ran `main_cpu` seconds, its gloo thread
    /// `t` × 0.005 (polling), its TCP-store thread sits in epoll.
    fn rank_process(pid: i32, rank: u32, world: u32, main_cpu: f64, t: f64) -> ProcessSample {
        let mut main = thread(pid, 'S', "futex_wait_queue", main_cpu);
        main.name = "python3".to_string();
        let mut gloo = thread(pid + 1, 'S', "do_epoll_wait", 0.005 * t);
        gloo.name = "gloo_tcp_loop".to_string();
        let mut store = thread(pid + 2, 'S', "do_epoll_wait", 0.001 * t);
        store.name = "pt_tcpstore_uv".to_string();
        let mut p = process(pid, 1, vec![main, gloo, store]);
        p.audit = Some(RuntimeAudit {
            rank: Some(rank_env(rank, world)),
            ..RuntimeAudit::default()
        });
        p
    }

    fn timeline(samples: impl Fn(f64) -> Vec<ProcessSample>, seconds: u32) -> Timeline {
        let mut timeline = Timeline::new(600.0);
        for t in 0..=seconds {
            let t = f64::from(t);
            timeline.push(sample(t, 2.0, samples(t)));
        }
        timeline
    }

    fn config(hang_after: f64) -> DetectConfig {
        DetectConfig {
            hang_after_seconds: hang_after,
            ..DetectConfig::default()
        }
    }

    /// Issue 18: the by-hand launcher waits for its two ranks, and its wait reads as
    /// unknown beside its idle pool thread's futex (the shape a wait misread gave it).
    /// While its ranks live, the ranks' hang is the diagnosis, not the launcher's.
    #[test]
    fn a_launcher_waiting_for_its_ranks_is_no_hang_of_its_own() {
        let launcher = || {
            let mut main = thread(10, 'S', "", 1.5);
            main.name = "python3".to_string();
            let pool = thread(11, 'S', "futex_do_wait", 0.01);
            process(10, 1, vec![main, pool])
        };
        let with_ranks = timeline(
            |t| {
                let mut ranks = vec![
                    launcher(),
                    rank_process(100, 0, 2, 3.0, t),
                    rank_process(200, 1, 2, 2.0, t),
                ];
                for rank in &mut ranks[1..] {
                    rank.ppid = 10;
                }
                ranks
            },
            12,
        );
        assert_eq!(launchers(&with_ranks), vec![10]);
        let findings = crate::detect::judge(&with_ranks, &config(5.0)).findings;
        assert_eq!(
            findings[0].kind,
            FindingKind::DistributedHang,
            "{findings:#?}"
        );
        assert!(
            findings
                .iter()
                .all(|f| !(f.kind == FindingKind::NoProgress && f.pids.contains(&10))),
            "{findings:#?}"
        );

        // Its ranks gone (reaped, or never started), the same launcher is judged.
        let alone = timeline(|_| vec![launcher()], 12);
        assert!(launchers(&alone).is_empty());
        let findings = crate::detect::judge(&alone, &config(5.0)).findings;
        assert!(
            findings
                .iter()
                .any(|f| f.kind == FindingKind::NoProgress && f.pids == vec![10]),
            "{findings:#?}"
        );
    }

    /// Two ranks of one job whose own threads stopped for 12 s.
    fn two_stalled_ranks() -> Timeline {
        timeline(
            |t| {
                vec![
                    rank_process(100, 0, 2, 3.0, t),
                    rank_process(200, 1, 2, 2.0, t),
                ]
            },
            12,
        )
    }

    /// The hang of [`two_stalled_ranks`] explained by `threads`.
    fn explained(threads: Vec<crate::model::stacks::ThreadStack>) -> Finding {
        let tl = two_stalled_ranks();
        let mut finding = ranks_stalled(&tl, &config(10.0)).remove(0);
        let stacks = crate::model::stacks::StacksReport {
            threads,
            ..Default::default()
        };
        assert!(explain(&mut finding, &rank_progress(&tl, 10.0), &stacks));
        finding
    }

    #[test]
    fn ranks_whose_own_threads_stopped_are_hung_although_their_sockets_poll() {
        let tl = two_stalled_ranks();
        let findings = ranks_stalled(&tl, &config(10.0));
        assert_eq!(findings.len(), 1, "{findings:#?}");
        let f = &findings[0];
        assert_eq!(f.kind, FindingKind::DistributedHang);
        assert_eq!(f.severity, Severity::Error);
        assert!(f.summary.contains("2 of 2 rank(s)"), "{}", f.summary);
        assert_eq!(f.pids, vec![100, 200]);
        assert!(
            f.evidence
                .iter()
                .any(|e| e.starts_with("rank 1/2 pid 200: no progress")),
            "{:#?}",
            f.evidence
        );
    }

    #[test]
    fn a_rank_that_computes_is_the_straggler_the_others_wait_for() {
        let tl = timeline(
            |t| {
                vec![
                    rank_process(100, 0, 2, 3.0, t),
                    rank_process(200, 1, 2, 2.0 + 0.9 * t, t),
                ]
            },
            12,
        );
        let findings = ranks_stalled(&tl, &config(10.0));
        assert_eq!(findings.len(), 1, "{findings:#?}");
        assert_eq!(findings[0].severity, Severity::Warning);
        assert_eq!(findings[0].kind, FindingKind::Straggler);
        assert!(
            findings[0]
                .summary
                .starts_with("rank 0/2 (pid 100) wait(s)"),
            "{}",
            findings[0].summary
        );
        assert!(
            findings[0]
                .summary
                .contains("rank 1/2 (pid 200) still compute")
        );
    }

    #[test]
    fn a_rank_that_only_moves_slowly_makes_no_straggler() {
        // Rank 1 finishes its step at 5 % of a core: rank 0 waits, but for nobody busy.
        let tl = timeline(
            |t| {
                vec![
                    rank_process(100, 0, 2, 3.0, t),
                    rank_process(200, 1, 2, 2.0 + 0.05 * t, t),
                ]
            },
            12,
        );
        assert!(ranks_stalled(&tl, &config(10.0)).is_empty());
    }

    fn frame(function: &str, file: &str, line: u32) -> StackFrame {
        StackFrame {
            function: Some(function.to_string()),
            file: Some(file.to_string()),
            line: Some(line),
            ..StackFrame::default()
        }
    }

    const C10D: &str = "/usr/lib/python3.11/site-packages/torch/distributed/distributed_c10d.py";
    const LOGGER: &str = "/usr/lib/python3.11/site-packages/torch/distributed/c10d_logger.py";

    fn python_stack(pid: i32, frames: Vec<StackFrame>) -> crate::model::stacks::ThreadStack {
        crate::model::stacks::ThreadStack {
            pid,
            tid: pid,
            name: Some("MainThread".to_string()),
            kind: crate::model::stacks::StackKind::Python,
            frames,
            ..Default::default()
        }
    }

    #[test]
    fn the_collective_and_its_caller_come_from_the_python_frames() {
        let frames = vec![
            frame("all_reduce", C10D, 4181),
            frame("wrapper", LOGGER, 83),
            frame("main", "/job/train.py", 40),
            frame("<module>", "/job/train.py", 63),
        ];
        let (name, caller) = collective_of(&frames).expect("a collective");
        assert_eq!(name, "all_reduce");
        assert_eq!(caller.and_then(|f| f.line), Some(40));
        let native = vec![StackFrame {
            function: Some("ncclAllReduce".to_string()),
            ..StackFrame::default()
        }];
        assert_eq!(
            collective_of(&native).map(|(n, _)| n).as_deref(),
            Some("all_reduce (NCCL)")
        );
        // In a merged stack the native gloo frames come first; the Python API and its
        // caller still name the collective and the site.
        let mut merged = vec![StackFrame {
            function: Some("gloo::transport::tcp::UnboundBuffer::waitRecv".to_string()),
            ..StackFrame::default()
        }];
        merged.extend(frames.iter().cloned().map(|mut f| {
            f.python = true;
            f
        }));
        let (name, caller) = collective_of(&merged).expect("a collective");
        assert_eq!(
            (name.as_str(), caller.and_then(|f| f.line)),
            ("all_reduce", Some(40))
        );
        assert!(collective_of(&[frame("main", "/job/train.py", 44)]).is_none());
    }

    #[test]
    fn explain_names_each_rank_and_the_mismatch() {
        let finding = explained(vec![
            python_stack(
                100,
                vec![
                    frame("all_reduce", C10D, 4181),
                    frame("main", "/job/train.py", 40),
                ],
            ),
            python_stack(
                200,
                vec![
                    frame("barrier", C10D, 6614),
                    frame("main", "/job/train.py", 41),
                ],
            ),
        ]);
        assert!(
            finding.summary.contains("collective mismatch")
                && finding
                    .summary
                    .contains("rank 0/2 (pid 100) in all_reduce at /job/train.py:40 in main")
                && finding.summary.contains("in barrier at /job/train.py:41"),
            "{}",
            finding.summary
        );
        assert!(
            finding.remedy.starts_with("Every rank must call"),
            "{}",
            finding.remedy
        );
        assert!(
            finding.evidence.contains(
                &"rank 1/2 (pid 200): waits in barrier at /job/train.py:41 in main".to_string()
            ),
            "{:#?}",
            finding.evidence
        );
    }

    #[test]
    fn explain_names_the_straggler_where_it_sleeps() {
        let finding = explained(vec![
            python_stack(
                100,
                vec![
                    frame("all_reduce", C10D, 4181),
                    frame("main", "/job/train.py", 45),
                ],
            ),
            python_stack(200, vec![frame("main", "/job/train.py", 44)]),
        ]);
        assert!(
            finding.summary.contains(
                "straggler: rank 1/2 (pid 200) is blocked outside any collective at /job/train.py:44 in main"
            ),
            "{}",
            finding.summary
        );
        assert!(
            finding
                .remedy
                .starts_with("The others wait for the straggler")
        );
    }

    #[test]
    fn ranks_that_progress_raise_nothing_and_a_short_watch_judges_nothing() {
        let healthy = timeline(
            |t| {
                vec![
                    rank_process(100, 0, 2, 0.5 * t, t),
                    rank_process(200, 1, 2, 0.5 * t, t),
                ]
            },
            12,
        );
        assert!(ranks_stalled(&healthy, &config(10.0)).is_empty());
        let short = timeline(|t| vec![rank_process(100, 0, 2, 3.0, t)], 5);
        assert!(ranks_stalled(&short, &config(10.0)).is_empty());
    }

    #[test]
    fn a_rank_alone_in_the_watch_says_the_others_are_outside() {
        let tl = timeline(|t| vec![rank_process(100, 0, 4, 3.0, t)], 12);
        let findings = ranks_stalled(&tl, &config(10.0));
        assert_eq!(findings.len(), 1);
        assert!(
            findings[0]
                .evidence
                .iter()
                .any(|e| e.contains("WORLD_SIZE is 4 but 1 rank(s) are watched")),
            "{:#?}",
            findings[0].evidence
        );
    }

    /// Two ranks stalled for 12 s, each on its own GPU at 0 % utilisation.
    fn two_ranks_on_idle_gpus() -> Timeline {
        let mut tl = Timeline::new(600.0);
        for t in 0..=12 {
            let t = f64::from(t);
            let mut s = sample(
                t,
                2.0,
                vec![
                    rank_process(100, 0, 2, 3.0, t),
                    rank_process(200, 1, 2, 2.0, t),
                ],
            );
            s.gpu = Some(crate::model::GpuSample {
                devices: (0..2)
                    .map(|i| crate::model::GpuDevice {
                        index: i,
                        name: "H200".to_string(),
                        utilization_percent: Some(0),
                        processes: vec![crate::model::GpuProcess {
                            pid: 100 + 100 * i as i32,
                            kind: crate::model::GpuProcessKind::Compute,
                            used_memory_bytes: Some(1 << 30),
                        }],
                        ..crate::model::GpuDevice::default()
                    })
                    .collect(),
                unavailable: None,
            });
            tl.push(s);
        }
        tl
    }

    #[test]
    fn each_ranks_gpu_and_its_idle_utilisation_are_evidence() {
        let tl2 = two_ranks_on_idle_gpus();
        let findings = ranks_stalled(&tl2, &config(10.0));
        assert!(
            findings[0]
                .evidence
                .contains(&"rank 1/2 pid 200: GPU 1 (H200) at 0 % utilisation".to_string()),
            "{:#?}",
            findings[0].evidence
        );
    }

    #[test]
    fn processes_without_a_rank_are_left_to_the_hang_detector() {
        let tl = timeline(
            |t| {
                let mut p = rank_process(100, 0, 2, 3.0, t);
                p.audit = None;
                vec![p]
            },
            12,
        );
        assert!(ranks_stalled(&tl, &config(10.0)).is_empty());
    }

    fn wait(rank: u32, collective: Option<&str>, site: &str) -> RankWait {
        RankWait {
            pid: 100 + rank as i32,
            rank,
            label: format!("rank {rank}"),
            collective: collective.map(str::to_string),
            site: Some(site.to_string()),
            function: Some("main".to_string()),
            busy: false,
        }
    }

    #[test]
    fn different_collectives_are_a_mismatch() {
        let ranks = [
            wait(0, Some("all_reduce"), "train.py:12"),
            wait(1, Some("barrier"), "train.py:13"),
        ];
        let v = verdict(&ranks, Some(2));
        assert_eq!(v, Verdict::CollectiveMismatch);
        let text = v.text(&ranks);
        assert!(
            text.contains("rank 0 in all_reduce at train.py:12 in main"),
            "{text}"
        );
        assert!(text.contains("rank 1 in barrier at train.py:13"), "{text}");
        let same_op_other_line = [
            wait(0, Some("all_reduce"), "train.py:12"),
            wait(1, Some("all_reduce"), "train.py:20"),
        ];
        assert_eq!(
            verdict(&same_op_other_line, Some(2)),
            Verdict::CollectiveMismatch
        );
    }

    #[test]
    fn a_rank_outside_any_collective_is_the_straggler() {
        let ranks = [
            wait(0, Some("all_reduce"), "train.py:45"),
            wait(1, Some("all_reduce"), "train.py:45"),
            wait(2, None, "train.py:44"),
        ];
        let v = verdict(&ranks, Some(3));
        assert_eq!(v, Verdict::Straggler(vec![2]));
        assert!(
            v.text(&ranks)
                .contains("rank 2 is blocked outside any collective at train.py:44"),
            "{}",
            v.text(&ranks)
        );
    }

    #[test]
    fn the_same_collective_everywhere_points_outside_or_to_a_broken_peer() {
        let ranks = [
            wait(0, Some("all_reduce"), "train.py:45"),
            wait(1, Some("all_reduce"), "train.py:45"),
        ];
        assert_eq!(verdict(&ranks, Some(4)), Verdict::PeerOutside);
        assert_eq!(verdict(&ranks, Some(2)), Verdict::SameCollective);
        assert_eq!(
            verdict(&[wait(0, None, "x.py:1")], Some(2)),
            Verdict::Unknown
        );
    }

    fn native(names: &[&str]) -> Vec<StackFrame> {
        names
            .iter()
            .map(|name| StackFrame {
                function: Some(name.to_string()),
                ..StackFrame::default()
            })
            .collect()
    }

    fn native_stack(pid: i32, names: &[&str]) -> crate::model::stacks::ThreadStack {
        crate::model::stacks::ThreadStack {
            pid,
            tid: pid,
            name: Some("python3".to_string()),
            kind: crate::model::stacks::StackKind::Native,
            frames: native(names),
            ..Default::default()
        }
    }

    /// A NCCL rank's main thread blocked in a work's wait: the CUDA driver's stream
    /// synchronisation under c10d's NCCL work.
    const NCCL_WORK_WAIT: &[&str] = &[
        "cuStreamSynchronize",
        "cudaStreamSynchronize",
        "c10d::ProcessGroupNCCL::WorkNCCL::synchronizeStream()",
        "c10d::ProcessGroupNCCL::WorkNCCL::wait(std::chrono::duration<long, std::ratio<1l, 1000l> >)",
        "c10d::ProcessGroupNCCL::allreduce(std::vector<at::Tensor>&, c10d::AllreduceOptions const&)",
        "_PyEval_EvalFrameDefault",
    ];

    #[test]
    fn nccl_frames_name_the_collective_in_every_spelling() {
        let op = |names: &[&str]| collective_of(&native(names)).map(|(name, _)| name);
        for (frames, expected) in [
            (&["ncclAllReduce"][..], "all_reduce (NCCL)"),
            (
                &["ncclKernel_AllReduce_RING_LL_Sum_float(ncclDevComm*, unsigned long, ncclWork*)"]
                    [..],
                "all_reduce (NCCL)",
            ),
            (
                &["ncclDevKernel_AllGather_RING_LL"][..],
                "all_gather (NCCL)",
            ),
            (
                &[
                    "ncclBroadcast",
                    "c10d::ProcessGroupNCCL::broadcast(std::vector<at::Tensor>&)",
                ][..],
                "broadcast (NCCL)",
            ),
            (NCCL_WORK_WAIT, "all_reduce (NCCL)"),
            (
                &[
                    "c10d::ProcessGroupNCCL::WorkNCCL::wait(std::chrono::duration<long, std::ratio<1l, 1000l> >)",
                    "c10d::ProcessGroupNCCL::barrier(c10d::BarrierOptions const&)",
                ][..],
                "barrier (NCCL)",
            ),
            (
                &[
                    "c10d::ProcessGroupNCCL::WorkNCCL::wait(std::chrono::duration<long, std::ratio<1l, 1000l> >)",
                ][..],
                "a NCCL collective",
            ),
            (
                &[
                    "cudaStreamSynchronize",
                    "c10d::Reducer::finalize_backward()",
                ][..],
                "a c10d collective",
            ),
        ] {
            assert_eq!(op(frames).as_deref(), Some(expected), "{frames:?}");
        }
        // A stream synchronisation outside c10d is the program's own GPU wait.
        assert_eq!(
            op(&[
                "cudaStreamSynchronize",
                "at::native::_local_scalar_dense_cuda(at::Tensor const&)"
            ]),
            None
        );
    }

    #[test]
    fn the_verdict_works_from_nccl_frames_and_idle_gpus_are_evidence() {
        let tl = two_ranks_on_idle_gpus();
        let mut finding = ranks_stalled(&tl, &config(10.0)).remove(0);
        for rank in 0..2 {
            let line = format!(
                "rank {rank}/2 pid {}: GPU {rank} (H200) at 0 % utilisation",
                100 + 100 * rank
            );
            assert!(
                finding.evidence.contains(&line),
                "{line} in {:#?}",
                finding.evidence
            );
        }
        // Rank 0 waits on its all_reduce's stream; rank 1 sits in a NCCL broadcast (its
        // NCCL watchdog thread, in the library whatever the rank does, is left aside).
        let mut watchdog = native_stack(201, &["ncclAllReduce"]);
        watchdog.pid = 200;
        watchdog.name = Some("pt_nccl_watchdg".to_string());
        let stacks = crate::model::stacks::StacksReport {
            threads: vec![
                native_stack(100, NCCL_WORK_WAIT),
                watchdog,
                native_stack(
                    200,
                    &[
                        "ncclBroadcast",
                        "c10d::ProcessGroupNCCL::broadcast(std::vector<at::Tensor>&)",
                    ],
                ),
            ],
            ..Default::default()
        };
        assert!(explain(&mut finding, &rank_progress(&tl, 10.0), &stacks));
        assert!(
            finding.summary.contains("collective mismatch")
                && finding
                    .summary
                    .contains("rank 0/2 (pid 100) in all_reduce (NCCL)")
                && finding
                    .summary
                    .contains("rank 1/2 (pid 200) in broadcast (NCCL)"),
            "{}",
            finding.summary
        );
        // The same kernel on both ranks: the same collective everywhere.
        let same = crate::model::stacks::StacksReport {
            threads: vec![
                native_stack(
                    100,
                    &[
                        "ncclKernel_AllReduce_RING_LL_Sum_float(ncclDevComm*, unsigned long, ncclWork*)",
                    ],
                ),
                native_stack(200, NCCL_WORK_WAIT),
            ],
            ..Default::default()
        };
        let mut again = ranks_stalled(&tl, &config(10.0)).remove(0);
        assert!(explain(&mut again, &rank_progress(&tl, 10.0), &same));
        assert!(
            again
                .summary
                .contains("every rank waits in the same collective"),
            "{}",
            again.summary
        );
    }

    /// Two samples `window` seconds apart of two ranks that ran `cpu` seconds of their
    /// own in it.
    fn snapshot_window(window: f64, cpu: [f64; 2]) -> Timeline {
        let mut tl = Timeline::new(600.0);
        tl.push(sample(
            0.0,
            2.0,
            vec![
                rank_process(100, 0, 2, 3.0, 0.0),
                rank_process(200, 1, 2, 2.0, 0.0),
            ],
        ));
        tl.push(sample(
            window,
            2.0,
            vec![
                rank_process(100, 0, 2, 3.0 + cpu[0], window),
                rank_process(200, 1, 2, 2.0 + cpu[1], window),
            ],
        ));
        tl
    }

    fn stacks(
        threads: Vec<crate::model::stacks::ThreadStack>,
    ) -> crate::model::stacks::StacksReport {
        crate::model::stacks::StacksReport {
            threads,
            ..Default::default()
        }
    }

    #[test]
    fn a_snapshot_of_ranks_blocked_in_different_collectives_is_a_warning_with_the_verdict() {
        let tl = snapshot_window(1.0, [0.0, 0.0]);
        let findings = observe_window(
            &tl,
            &stacks(vec![
                python_stack(
                    100,
                    vec![
                        frame("all_reduce", C10D, 4181),
                        frame("main", "/job/train.py", 40),
                    ],
                ),
                python_stack(
                    200,
                    vec![
                        frame("barrier", C10D, 6614),
                        frame("main", "/job/train.py", 41),
                    ],
                ),
            ]),
        );
        assert_eq!(findings.len(), 1, "{findings:#?}");
        let f = &findings[0];
        assert_eq!(
            (f.kind, f.severity),
            (FindingKind::DistributedHang, Severity::Warning)
        );
        assert!(
            f.summary.starts_with("distributed job: 2 of 2 rank(s) made no progress of their own in the 1.00s snapshot window: collective mismatch")
                && f.summary.contains("rank 0/2 (pid 100) in all_reduce at /job/train.py:40 in main")
                && f.summary.contains("rank 1/2 (pid 200) in barrier at /job/train.py:41 in main"),
            "{}",
            f.summary
        );
        assert!(f.remedy.starts_with("Every rank must call"), "{}", f.remedy);
        assert!(
            f.evidence
                .iter()
                .any(|e| e.starts_with("rank 1/2 pid 200: no progress for 1.00s")),
            "{:#?}",
            f.evidence
        );
        assert!(
            f.evidence.last().is_some_and(|e| e.contains("not over a hang window") && e.contains("--hang-after")),
            "{:#?}",
            f.evidence
        );
        assert_eq!(f.pids, vec![100, 200]);
    }

    #[test]
    fn other_verdicts_over_one_window_are_info_and_ranks_that_compute_or_show_no_collective_raise_nothing()
     {
        let same = stacks(vec![
            python_stack(
                100,
                vec![
                    frame("all_reduce", C10D, 4181),
                    frame("main", "/job/train.py", 40),
                ],
            ),
            python_stack(
                200,
                vec![
                    frame("all_reduce", C10D, 4181),
                    frame("main", "/job/train.py", 40),
                ],
            ),
        ]);
        let blocked = observe_window(&snapshot_window(1.0, [0.0, 0.0]), &same);
        assert_eq!(blocked.len(), 1);
        assert_eq!(blocked[0].severity, Severity::Info, "{:#?}", blocked[0]);
        assert!(
            blocked[0]
                .summary
                .contains("every rank waits in the same collective")
        );
        // Rank 1 computes while rank 0 waits: what ranks do between steps.
        let straggler = observe_window(
            &snapshot_window(1.0, [0.0, 0.9]),
            &stacks(vec![
                python_stack(
                    100,
                    vec![
                        frame("all_reduce", C10D, 4181),
                        frame("main", "/job/train.py", 40),
                    ],
                ),
                python_stack(200, vec![frame("main", "/job/train.py", 39)]),
            ]),
        );
        assert_eq!(straggler.len(), 1);
        assert_eq!(
            (straggler[0].kind, straggler[0].severity),
            (FindingKind::Straggler, Severity::Info)
        );
        assert!(
            straggler[0]
                .summary
                .contains("straggler: rank 1/2 (pid 200) is still computing"),
            "{}",
            straggler[0].summary
        );
        // Both compute: nothing to say.
        assert!(observe_window(&snapshot_window(1.0, [0.9, 0.9]), &same).is_empty());
        // No collective in any stack.
        let elsewhere = stacks(vec![
            python_stack(100, vec![frame("main", "/job/train.py", 30)]),
            python_stack(200, vec![frame("main", "/job/train.py", 30)]),
        ]);
        assert!(observe_window(&snapshot_window(1.0, [0.0, 0.0]), &elsewhere).is_empty());
        // A window of 0 shows no progress at all.
        let mut zero = Timeline::new(600.0);
        zero.push(sample(0.0, 2.0, vec![rank_process(100, 0, 2, 3.0, 0.0)]));
        assert!(observe_window(&zero, &same).is_empty());
    }

    #[test]
    fn the_flight_recorder_dump_of_each_rank_is_evidence() {
        let tl = timeline(
            |t| {
                let mut ranks = vec![
                    rank_process(100, 0, 2, 3.0, t),
                    rank_process(200, 1, 2, 2.0, t),
                ];
                for (i, p) in ranks.iter_mut().enumerate() {
                    let rank = p.audit.as_mut().and_then(|a| a.rank.as_mut()).unwrap();
                    rank.flight_recorder = Some(crate::model::ranks::FlightRecorder {
                        setting: "TORCH_NCCL_TRACE_BUFFER_SIZE=2000".to_string(),
                        dump_file: format!("/scratch/fr_{i}"),
                        looked: true,
                        dump_bytes: (i == 0).then_some(4096),
                        ..Default::default()
                    });
                }
                ranks
            },
            12,
        );
        let f = &ranks_stalled(&tl, &config(10.0))[0];
        assert!(
            f.evidence.iter().any(|e| e.starts_with(
                "rank 0/2 pid 100: its Flight Recorder dump is /scratch/fr_0 (4096 bytes"
            )),
            "{:#?}",
            f.evidence
        );
        assert!(
            f.evidence.iter().any(|e| e
                .starts_with("rank 1/2 pid 200: the job records a Flight Recorder trace")
                && e.contains("it will be /scratch/fr_1 once dumped")),
            "{:#?}",
            f.evidence
        );
    }

    #[test]
    fn communication_threads_are_told_by_their_names() {
        for name in [
            "gloo_tcp_loop",
            "pt_gloo_runloop",
            "pt_tcpstore_uv",
            "pt_nccl_watchdg",
        ] {
            assert!(is_communication_thread(name), "{name}");
        }
        for name in ["python3", "pt_data_worker", "tf_Compute"] {
            assert!(!is_communication_thread(name), "{name}");
        }
    }
}
