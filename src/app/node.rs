//! `tfwatch node`: every job of the machine. Each interval the node scan reads every
//! process's `stat` ([`NodeScanner`]); processes are grouped into jobs
//! ([`group_jobs`]: cgroup, else process tree); each job has its own samplers (one per
//! root of the job, sampling by level) and its own [`Watch`], so its findings, alerts
//! and lines are its own; the node is judged over the jobs' loads
//! ([`node_oversubscription`]). Every line carries the job's labels.

use std::collections::{BTreeMap, BTreeSet, HashSet, VecDeque};
use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use super::settings::{UsageError, WatchSettings, check_duration, sampler_config};
use super::signals::{catch_interrupts, interrupted};
use crate::cli::NodeArgs;
use crate::detect::node::{JobLoad, NODE_WINDOW_INTERVALS, job_load, node_oversubscription};
use crate::engine::sink::Reason;
use crate::engine::{Event, ExitLine, Watch};
use crate::model::jobs::{JobLabels, group_jobs};
use crate::model::{Finding, Sample};
use crate::sink::export::NodeExporter;
use crate::sink::line::{ExitEvent, JobChange, Line, NodeExit, NodeFindingLine};
use crate::sink::tui::CrosstermInput;
use crate::sink::tui::node::{JobFigures, NodeDashboard, NodeScreen};
use crate::sink::tui::terminal::TerminalGuard;
use crate::source::clock::{Clock, SystemClock};
use crate::source::proc::node::{NodeScanner, Scanned, uid_of_user};
use crate::source::proc::{SampleTime, Sampler, SamplerConfig, SharedFdBudget, shared_fd_budget};

/// Which processes of the node are watched.
#[derive(Debug, Default)]
pub struct NodeFilter {
    pub pattern: Option<regex::Regex>,
    pub cgroup: Option<String>,
    pub uid: Option<u32>,
}

impl NodeFilter {
    fn admits(&self, process: &Scanned) -> bool {
        self.pattern
            .as_ref()
            .is_none_or(|p| p.is_match(&process.cmdline))
            && self
                .cgroup
                .as_ref()
                .is_none_or(|prefix| process.process.cgroup.starts_with(prefix.as_str()))
            && self.uid.is_none_or(|uid| process.uid == Some(uid))
    }
}

pub struct NodeSettings {
    pub sampler: SamplerConfig,
    pub watch: WatchSettings,
    pub filter: NodeFilter,
    pub duration: Option<Duration>,
    pub json: bool,
    /// The node dashboard (stdout is a terminal, neither --json nor --no-tui).
    pub dashboard: bool,
}

impl NodeSettings {
    pub fn from_args(args: &NodeArgs, stdout_is_terminal: bool) -> Result<Self, UsageError> {
        Self::check(args, stdout_is_terminal).map_err(UsageError)
    }

    fn check(args: &NodeArgs, stdout_is_terminal: bool) -> Result<Self> {
        if let Some(duration) = args.duration {
            check_duration("--duration", duration)?;
        }
        let sampler = SamplerConfig {
            read_still_after_seconds: super::settings::read_still_after_seconds(
                args.hang_after.as_secs_f64(),
            ),
            // The node's own scan reads every process; no job's sampler scans them again.
            scan_other_processes: false,
            ..sampler_config(&args.source, true)
        };
        let no_sources = crate::cli::WatchSourceArgs {
            metrics_urls: Vec::new(),
            metrics_timeout: Duration::from_millis(500),
            no_gpu: true,
            loop_block: Duration::from_millis(100),
        };
        let watch = super::settings::watch(
            args.interval,
            args.hang_after,
            &args.rules,
            &no_sources,
            &args.listen,
            None,
            &sampler.proc_root,
        )?;
        let pattern =
            match &args.pattern {
                Some(text) => Some(regex::Regex::new(text).with_context(|| {
                    format!("--match {text:?} is not a valid regular expression")
                })?),
                None => None,
            };
        let uid = match &args.user {
            Some(name) => {
                Some(match name.parse::<u32>() {
                    Ok(uid) => uid,
                    Err(_) => {
                        let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
                        uid_of_user(&passwd, name).with_context(|| {
                        format!("--user {name:?}: no such user in /etc/passwd (give a name or a uid)")
                    })?
                    }
                })
            }
            None => None,
        };
        Ok(NodeSettings {
            sampler,
            watch,
            filter: NodeFilter {
                pattern,
                cgroup: args.cgroup.clone(),
                uid,
            },
            duration: args.duration,
            json: args.json || !stdout_is_terminal,
            dashboard: stdout_is_terminal && !args.json && !args.no_tui,
        })
    }
}

/// The ranks among `pids`, as the scan read them.
fn ranks_among(
    pids: &[i32],
    processes: &[crate::model::jobs::NodeProcess],
) -> Vec<crate::engine::PidRank> {
    processes
        .iter()
        .filter(|p| pids.contains(&p.pid))
        .filter_map(|p| {
            Some(crate::engine::PidRank {
                pid: p.pid,
                rank: p.rank.clone()?,
            })
        })
        .collect()
}

/// How a job's pids read in text: `pids [7, 8, 9]`, with each rank's: `rank 0/2 pid 8`.
fn pids_text(pids: &[i32], ranks: &[crate::engine::PidRank]) -> String {
    if ranks.is_empty() {
        return format!("pids {pids:?}");
    }
    let ranks: Vec<String> = ranks
        .iter()
        .map(|r| format!("{} pid {}", r.rank, r.pid))
        .collect();
    format!("pids {pids:?}; {}", ranks.join(", "))
}

struct JobWatch {
    samplers: BTreeMap<i32, Sampler>,
    watch: Watch,
    pids: Vec<i32>,
}

struct Output<W: Write> {
    out: W,
    json: bool,
}

impl<W: Write> Output<W> {
    fn line(&mut self, line: &Line, text: impl FnOnce() -> Option<String>) -> Result<()> {
        if self.json {
            line.write_json(&mut self.out)?;
        } else if let Some(text) = text() {
            self.out
                .write_all(crate::units::escape_controls(&text, true).as_bytes())?;
            self.out.write_all(b"\n")?;
        }
        self.out.flush()?;
        Ok(())
    }
}

/// `tfwatch node`.
pub fn command(args: &NodeArgs) -> Result<u8> {
    let settings = NodeSettings::from_args(args, std::io::stdout().is_terminal())?;
    catch_interrupts();
    let clock = SystemClock::new();
    let mut output = Output {
        out: std::io::stdout().lock(),
        json: settings.json,
    };
    let exporter = match settings.watch.listen {
        Some(address) => {
            let exporter = NodeExporter::serve(address, &settings.watch.rules)?;
            eprintln!("tfwatch: listening on {}", exporter.url());
            Some(exporter)
        }
        None => None,
    };
    let reason = if settings.dashboard {
        // A person at a terminal: the node view instead of lines (the lines go nowhere).
        let (guard, terminal) =
            TerminalGuard::enter().context("cannot open the dashboard on this terminal")?;
        let mut dashboard =
            NodeDashboard::new(terminal, CrosstermInput, online_cpus(&settings.sampler));
        let mut quiet = Output {
            out: std::io::sink(),
            json: true,
        };
        let reason = watch_node(
            &settings,
            &clock,
            &mut quiet,
            exporter.as_ref(),
            Some(&mut dashboard),
        );
        drop(dashboard);
        drop(guard);
        let reason = reason?;
        println!("tfwatch node: {}", reason.as_str());
        reason
    } else {
        watch_node(&settings, &clock, &mut output, exporter.as_ref(), None)?
    };
    Ok(exit_code(reason))
}

/// tfwatch's exit code after a node watch that ended for `reason`.
fn exit_code(reason: Reason) -> u8 {
    if matches!(
        reason,
        Reason::Interrupted | Reason::Duration | Reason::Stopped
    ) {
        super::exit::OK
    } else {
        super::exit::TFWATCH_FAILED
    }
}

/// The node's online CPUs, as the node's judgement and its view count them.
fn online_cpus(sampler: &SamplerConfig) -> f64 {
    crate::source::proc::cpu_budget(&sampler.proc_root, &sampler.cgroup_root, 1, None).online as f64
}

fn own_cpu_seconds() -> f64 {
    // SAFETY: getrusage writes into the zeroed struct passed by pointer.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    };
    let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    seconds(usage.ru_utime) + seconds(usage.ru_stime)
}

/// The watch itself; returns why it ended.
fn watch_node<'a, W: Write>(
    settings: &'a NodeSettings,
    clock: &dyn Clock,
    output: &'a mut Output<W>,
    exporter: Option<&'a NodeExporter>,
    screen: Option<&'a mut dyn NodeScreen>,
) -> Result<Reason> {
    let mut node = NodeWatch::new(settings, output, exporter, screen);
    let interval = settings.watch.interval;
    let started = Instant::now();
    let mut next = started;
    let reason = loop {
        if interrupted() {
            break Reason::Interrupted;
        }
        if settings.duration.is_some_and(|d| started.elapsed() >= d) {
            break Reason::Duration;
        }
        let lateness = Instant::now().saturating_duration_since(next).as_secs_f64();
        node.scan(SampleTime::on(clock, lateness), lateness)?;
        next += interval;
        let now = Instant::now();
        if next < now {
            // Late: the next sample is due at the next multiple, not at once.
            while next < now {
                next += interval;
            }
        }
        if node.wait_until(next, started)? {
            break Reason::Stopped;
        }
    };
    node.finish(clock, reason)?;
    Ok(reason)
}

/// The state of a node watch between its scans.
struct NodeWatch<'a, W: Write> {
    settings: &'a NodeSettings,
    output: &'a mut Output<W>,
    exporter: Option<&'a NodeExporter>,
    screen: Option<&'a mut dyn NodeScreen>,
    scanner: NodeScanner,
    /// One budget of kept descriptors for every job's samplers: together they stay
    /// under the open-files limit however many jobs there are.
    budget: SharedFdBudget,
    /// One stack budget for every job: a node of idle processes is classified a few at
    /// a time, each once per wait state; one not yet classified is unconfirmed, not hung.
    prober: crate::collect::waits::WaitProber,
    jobs: BTreeMap<JobLabels, JobWatch>,
    seen: BTreeSet<String>,
    history: VecDeque<Vec<JobLoad>>,
    node_finding: Option<Finding>,
    node_cpus: f64,
}

impl<'a, W: Write> NodeWatch<'a, W> {
    fn new(
        settings: &'a NodeSettings,
        output: &'a mut Output<W>,
        exporter: Option<&'a NodeExporter>,
        screen: Option<&'a mut dyn NodeScreen>,
    ) -> Self {
        use crate::collect::waits::{StackBudget, WaitProber};
        NodeWatch {
            settings,
            output,
            exporter,
            screen,
            scanner: NodeScanner::new(&settings.sampler.proc_root),
            budget: shared_fd_budget(settings.sampler.max_kept_descriptors),
            prober: WaitProber::new(
                &settings.sampler.proc_root,
                WaitProber::probe_after(settings.watch.detect.hang_after_seconds),
                StackBudget::NODE,
            )
            .classes_only()
            .probe_ranks(),
            jobs: BTreeMap::new(),
            seen: BTreeSet::new(),
            history: VecDeque::new(),
            node_finding: None,
            node_cpus: online_cpus(&settings.sampler),
        }
    }

    fn export(&self, change: &mut dyn FnMut(&mut crate::sink::export::NodeExportState)) {
        if let Some(exporter) = self.exporter {
            exporter.with(change);
        }
    }

    /// One scan of the node: jobs that ended, each job's sample, the node's judgement.
    fn scan(&mut self, at: SampleTime, lateness: f64) -> Result<()> {
        let scan_started = Instant::now();
        let scanned = admitted(self.scanner.scan(), &self.settings.filter);
        let processes: Vec<_> = scanned.iter().map(|s| s.process.clone()).collect();
        let groups = group_jobs(&processes);
        let parents: BTreeMap<i32, i32> = processes.iter().map(|p| (p.pid, p.ppid)).collect();
        self.end_jobs(&groups, &at)?;
        let mut loads = Vec::new();
        for (labels, pids) in &groups {
            if !self.jobs.contains_key(labels) {
                self.start_job(labels, pids, &processes, &at)?;
            }
            loads.extend(self.observe_job(labels, pids, &parents, at)?);
        }
        self.judge_node(loads, &at)?;
        let scan_seconds = scan_started.elapsed().as_secs_f64();
        let active: Vec<Finding> = self.node_finding.iter().cloned().collect();
        self.export(&mut |state| {
            state.record_scan(scan_seconds, lateness, &active.iter().collect::<Vec<_>>());
        });
        Ok(())
    }

    /// Says the jobs of the last scan that are gone.
    fn end_jobs(&mut self, groups: &BTreeMap<JobLabels, Vec<i32>>, at: &SampleTime) -> Result<()> {
        let ended: Vec<JobLabels> = self
            .jobs
            .keys()
            .filter(|l| !groups.contains_key(*l))
            .cloned()
            .collect();
        for labels in ended {
            let Some(job) = self.jobs.remove(&labels) else {
                continue;
            };
            self.export(&mut |state| state.job_ended(&labels));
            if let Some(screen) = self.screen.as_mut() {
                screen.job_ended(&labels);
            }
            let change = Line::JobEnded(JobChange {
                labels: labels.clone(),
                elapsed_seconds: at.elapsed_seconds,
                pids: job.pids.clone(),
                ranks: Vec::new(),
            });
            self.output
                .line(&change, || Some(format!("job ended: {}", labels.job)))?;
        }
        Ok(())
    }

    /// Says a job new in this scan and gives it its watch.
    fn start_job(
        &mut self,
        labels: &JobLabels,
        pids: &[i32],
        processes: &[crate::model::jobs::NodeProcess],
        at: &SampleTime,
    ) -> Result<()> {
        self.seen.insert(labels.job.clone());
        let ranks = ranks_among(pids, processes);
        let text = format!("job started: {} ({})", labels.job, pids_text(pids, &ranks));
        let change = Line::JobStarted(JobChange {
            labels: labels.clone(),
            elapsed_seconds: at.elapsed_seconds,
            pids: pids.to_vec(),
            ranks,
        });
        self.output.line(&change, || Some(text))?;
        let detect = self.settings.watch.detect.clone();
        let rules = self.settings.watch.rules.clone();
        self.jobs.insert(
            labels.clone(),
            JobWatch {
                samplers: BTreeMap::new(),
                watch: Watch::new(detect, rules),
                pids: Vec::new(),
            },
        );
        Ok(())
    }

    /// Samples and judges one job; its load for the node's judgement.
    fn observe_job(
        &mut self,
        labels: &JobLabels,
        pids: &[i32],
        parents: &BTreeMap<i32, i32>,
        at: SampleTime,
    ) -> Result<Option<JobLoad>> {
        let Some(job) = self.jobs.get_mut(labels) else {
            return Ok(None);
        };
        job.pids = pids.to_vec();
        let pids = pids.to_vec();
        let Some(mut sample) = sample_job(
            job,
            &pids,
            parents,
            &self.settings.sampler,
            &self.budget,
            at,
        ) else {
            return Ok(None);
        };
        self.prober.fill(&mut sample);
        let events = job.watch.observe(sample);
        if let Some(line) = events.iter().find_map(|e| match e {
            Event::Sample(line) => Some(line),
            _ => None,
        }) {
            let findings = job.watch.active_findings();
            let timeline = &job.watch.timeline;
            if let Some(exporter) = self.exporter {
                exporter.with(|state: &mut crate::sink::export::NodeExportState| {
                    state.record_job(labels, line, timeline, &findings)
                });
            }
        }
        for event in &events {
            let text = || match event {
                Event::Sample(_) => None,
                other => {
                    let mut line = Vec::new();
                    crate::sink::events::write_text_event(&mut line, other).ok()?;
                    Some(format!(
                        "[{}] {}",
                        labels.job,
                        String::from_utf8_lossy(&line).trim_end()
                    ))
                }
            };
            self.output
                .line(&Line::labelled(event, Some(labels)), text)?;
        }
        let load = job_load(labels, &job.watch.timeline);
        if let Some(screen) = self.screen.as_mut() {
            screen.job_sample(
                labels,
                &job.watch,
                &events,
                figures(&job.watch, load.as_ref()),
            );
        }
        Ok(load)
    }

    /// The node's own finding over the jobs' loads: said when it appears and resolves.
    fn judge_node(&mut self, loads: Vec<JobLoad>, at: &SampleTime) -> Result<()> {
        self.history.push_back(loads);
        while self.history.len() > NODE_WINDOW_INTERVALS {
            self.history.pop_front();
        }
        let history: Vec<Vec<JobLoad>> = self.history.iter().cloned().collect();
        match (
            node_oversubscription(&history, self.node_cpus),
            self.node_finding.take(),
        ) {
            (Some(finding), None) => {
                let text = format!(
                    "[node] {}: {}\n  {}",
                    finding.kind,
                    finding.summary,
                    finding.evidence.join("\n  ")
                );
                self.output.line(
                    &Line::NodeFinding(NodeFindingLine {
                        elapsed_seconds: at.elapsed_seconds,
                        finding: finding.clone(),
                    }),
                    || Some(text),
                )?;
                self.node_finding = Some(finding);
            }
            (Some(finding), Some(_)) => self.node_finding = Some(finding),
            (None, Some(old)) => {
                self.output.line(
                    &Line::NodeResolved(NodeFindingLine {
                        elapsed_seconds: at.elapsed_seconds,
                        finding: old.clone(),
                    }),
                    || Some(format!("[node] resolved: {}", old.summary)),
                )?;
            }
            (None, None) => {}
        }
        if let Some(screen) = self.screen.as_mut() {
            screen.node_finding(self.node_finding.as_ref());
        }
        Ok(())
    }

    /// Waits in short steps until `next`, so an interrupt or the end of --duration is
    /// seen soon; the dashboard draws and reads keys meanwhile. Whether to quit.
    fn wait_until(&mut self, next: Instant, started: Instant) -> Result<bool> {
        let mut quit = false;
        while Instant::now() < next && !interrupted() {
            let left = next.saturating_duration_since(Instant::now());
            let step = left.min(Duration::from_millis(100));
            match self.screen.as_mut() {
                Some(screen) => {
                    let jobs = &self.jobs;
                    let watch_of = |labels: &JobLabels| jobs.get(labels).map(|job| &job.watch);
                    quit = screen.idle(step, &watch_of)?;
                }
                None => std::thread::sleep(step),
            }
            if quit
                || self
                    .settings
                    .duration
                    .is_some_and(|d| started.elapsed() >= d)
            {
                break;
            }
        }
        Ok(quit)
    }

    /// The closing `exit` line.
    fn finish(self, clock: &dyn Clock, reason: Reason) -> Result<()> {
        let seen = self.seen.len();
        let exit = Line::Exit(ExitEvent {
            node: Some(NodeExit {
                jobs_seen: seen,
                cpu_seconds: own_cpu_seconds(),
            }),
            ..ExitEvent::of(ExitLine {
                time_unix_seconds: clock.unix_seconds(),
                elapsed_seconds: clock.elapsed().as_secs_f64(),
                pid: None,
                reason,
                exit_code: Some(i32::from(exit_code(reason))),
                message: format!("{}; {seen} jobs seen", reason.as_str()),
            })
        });
        self.output.line(&exit, || {
            Some(format!(
                "tfwatch node: {}; {seen} jobs seen",
                reason.as_str()
            ))
        })?;
        Ok(())
    }
}

/// The figures of a job's row in the node view: its counts as its summary has them (so
/// threads not read yet count, as everywhere), its load as the node judges it.
fn figures(watch: &Watch, load: Option<&JobLoad>) -> JobFigures {
    let summary = watch.timeline.latest_summary();
    JobFigures {
        pids: summary.map_or(0, |s| s.processes.len()),
        threads: summary.map_or(0, |s| s.threads() as usize),
        cpus_used: load.map_or(0.0, |l| l.cpus_used),
        runnable: load.map_or(0.0, |l| l.runnable),
        waiting: load.map_or(0.0, |l| l.waiting),
        quota: load.and_then(|l| l.quota),
    }
}

/// The processes the filter admits, with their descendants (a job's workers need not
/// match `--match` themselves), less tfwatch itself.
fn admitted(all: Vec<Scanned>, filter: &NodeFilter) -> Vec<Scanned> {
    let own = std::process::id() as i32;
    let parent: BTreeMap<i32, i32> = all
        .iter()
        .map(|s| (s.process.pid, s.process.ppid))
        .collect();
    let matched: BTreeSet<i32> = all
        .iter()
        .filter(|s| filter.admits(s))
        .map(|s| s.process.pid)
        .collect();
    let admits = |mut pid: i32| {
        // Bounded: a torn scan cannot make the walk loop.
        for _ in 0..parent.len() {
            if matched.contains(&pid) {
                return true;
            }
            match parent.get(&pid) {
                Some(&ppid) if ppid > 0 && ppid != pid => pid = ppid,
                _ => return false,
            }
        }
        false
    };
    all.into_iter()
        .filter(|s| s.process.pid != own && admits(s.process.pid))
        .collect()
}

/// One sample of a job: each root of the job (a pid whose parent is not in it) has a
/// sampler that follows those of its descendants that are the job's (a job nested in
/// the tree is read by its own samplers only); their samples are merged. `None` when no
/// root could be sampled.
fn sample_job(
    job: &mut JobWatch,
    pids: &[i32],
    parents: &BTreeMap<i32, i32>,
    config: &SamplerConfig,
    budget: &SharedFdBudget,
    at: SampleTime,
) -> Option<Sample> {
    let members: Arc<HashSet<i32>> = Arc::new(pids.iter().copied().collect());
    let roots: BTreeSet<i32> = pids
        .iter()
        .copied()
        .filter(|pid| parents.get(pid).is_none_or(|ppid| !members.contains(ppid)))
        .collect();
    job.samplers.retain(|root, _| roots.contains(root));
    for &root in &roots {
        if !job.samplers.contains_key(&root)
            && let Ok(sampler) = Sampler::with_budget(root, config.clone(), Arc::clone(budget))
        {
            job.samplers.insert(root, sampler);
        }
    }
    for sampler in job.samplers.values_mut() {
        sampler.set_members(Some(Arc::clone(&members)));
    }
    let mut merged: Option<Sample> = None;
    let mut gone = Vec::new();
    for (&root, sampler) in &mut job.samplers {
        match sampler.sample(at) {
            Ok(sample) => match merged.as_mut() {
                None => merged = Some(sample),
                Some(into) => {
                    let known: BTreeSet<i32> = into.processes.iter().map(|p| p.pid).collect();
                    into.processes.extend(
                        sample
                            .processes
                            .into_iter()
                            .filter(|p| !known.contains(&p.pid)),
                    );
                    into.unavailable.extend(sample.unavailable);
                    into.cost.duration_seconds += sample.cost.duration_seconds;
                }
            },
            Err(_) => gone.push(root),
        }
    }
    for root in gone {
        job.samplers.remove(&root);
    }
    merged
}

#[cfg(test)]
mod rank_tests {
    use super::*;
    use crate::model::jobs::NodeProcess;

    #[test]
    fn a_job_that_starts_names_the_rank_of_each_of_its_ranks() {
        let processes = [
            NodeProcess {
                pid: 7,
                ..NodeProcess::default()
            },
            NodeProcess {
                pid: 8,
                rank: Some("rank 0/2".to_string()),
                ..NodeProcess::default()
            },
            NodeProcess {
                pid: 9,
                rank: Some("rank 1/2".to_string()),
                ..NodeProcess::default()
            },
            NodeProcess {
                pid: 50,
                rank: Some("rank 0/4".to_string()),
                ..NodeProcess::default()
            },
        ];
        let pids = [7, 8, 9];
        let change = JobChange {
            labels: JobLabels::default(),
            elapsed_seconds: 0.0,
            pids: pids.to_vec(),
            ranks: ranks_among(&pids, &processes),
        };
        let json = serde_json::to_value(&change).unwrap();
        assert_eq!(
            json["ranks"],
            serde_json::json!([{"pid": 8, "rank": "rank 0/2"}, {"pid": 9, "rank": "rank 1/2"}])
        );
        assert_eq!(
            pids_text(&pids, &change.ranks),
            "pids [7, 8, 9]; rank 0/2 pid 8, rank 1/2 pid 9"
        );
        assert_eq!(pids_text(&[7], &[]), "pids [7]");
        let none = JobChange {
            labels: JobLabels::default(),
            elapsed_seconds: 1.0,
            pids: pids.to_vec(),
            ranks: Vec::new(),
        };
        assert!(serde_json::to_value(&none).unwrap().get("ranks").is_none());
    }
}
