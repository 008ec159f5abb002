//! The state of a node watch between its ticks. Each tick scans the node, ends the jobs
//! whose last process ended, admits new ones and hands each job's sample to the pool of
//! collection threads; samples are judged as they come back, each by its own job's
//! [`Watch`], and the node is judged once the tick's samples are in.

use std::collections::{BTreeMap, BTreeSet, HashSet, VecDeque};
use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;

use super::sampling::{JobSampling, SampleResult, SampleTask};
use super::{NodeSettings, Output, admitted, figures, online_cpus, pids_text, ranks_among};
use crate::collect::pool::{Done, Pool};
use crate::detect::node::{JobLoad, NODE_WINDOW_INTERVALS, job_load, node_oversubscription};
use crate::engine::sink::Reason;
use crate::engine::{Event, ExitLine, PidRank, Watch};
use crate::model::Finding;
use crate::model::jobs::{JobLabels, MAX_JOBS, NodeProcess, group_all_jobs};
use crate::sink::export::NodeExporter;
use crate::sink::line::{ExitEvent, JobChange, JobLate, Line, NodeExit, NodeFindingLine, NodeLate};
use crate::sink::tui::node::NodeScreen;
use crate::source::clock::Clock;
use crate::source::proc::node::{NodeScanner, SCAN_KEPT_DESCRIPTORS, Scanned};
use crate::source::proc::shared_fd_budget;

/// Collection threads a node watch starts with.
pub const COLLECTION_THREADS: usize = 4;
/// Most collection threads: the usual ones plus one per job stuck in a read, bounded.
pub const MAX_COLLECTION_THREADS: usize = 16;
/// How long a wait for samples lasts while the dashboard reads keys.
const INPUT_POLL: Duration = Duration::from_millis(50);

struct JobWatch {
    watch: Watch,
    pids: Vec<i32>,
    ranks: Vec<PidRank>,
    /// Its samplers; `None` while its sample is out on a collection thread.
    sampling: Option<JobSampling>,
    /// When the sample that is out was due.
    out_due: Duration,
    /// Ticks missed while its sample was out.
    skipped: u64,
    /// Whether `job-started` was said (on its first sample).
    announced: bool,
}

/// What the watch counts besides its jobs.
#[derive(Debug, Default)]
struct Counts {
    seen: BTreeSet<String>,
    not_admitted: HashSet<String>,
    short_lived: usize,
    skipped_ticks: u64,
    job_skipped_ticks: u64,
}

/// The state of a node watch between its ticks.
pub struct NodeWatch<'a, W: Write> {
    settings: &'a NodeSettings,
    clock: Arc<dyn Clock>,
    output: &'a mut Output<W>,
    exporter: Option<&'a NodeExporter>,
    screen: Option<&'a mut dyn NodeScreen>,
    scanner: NodeScanner,
    pool: Pool<SampleResult>,
    /// Each job's share of the open-files limit for its samplers' kept descriptors.
    fd_share: usize,
    /// One stack budget for every job: a node of idle processes is classified a few at
    /// a time, each once per wait state; one not yet classified is unconfirmed, not hung.
    prober: crate::collect::waits::WaitProber,
    jobs: BTreeMap<JobLabels, JobWatch>,
    /// Jobs seen in a scan and not yet admitted: the tick they were first seen in.
    candidates: BTreeMap<JobLabels, u64>,
    counts: Counts,
    history: VecDeque<Vec<JobLoad>>,
    node_finding: Option<Finding>,
    node_cpus: f64,
    tick: u64,
    /// Samples of this tick not back yet; the node is judged when none are.
    tick_out: usize,
    loads: Vec<JobLoad>,
    judged: bool,
    scan_seconds: f64,
}

impl<'a, W: Write> NodeWatch<'a, W> {
    pub fn new(
        settings: &'a NodeSettings,
        clock: Arc<dyn Clock>,
        output: &'a mut Output<W>,
        exporter: Option<&'a NodeExporter>,
        screen: Option<&'a mut dyn NodeScreen>,
    ) -> Self {
        use crate::collect::waits::{StackBudget, WaitProber};
        let limit =
            crate::source::proc::fds::FdBudget::from_rlimit(settings.sampler.max_kept_descriptors)
                .limit;
        NodeWatch {
            settings,
            clock,
            output,
            exporter,
            screen,
            // The first reads of new processes take at most a quarter of an interval.
            scanner: NodeScanner::new(&settings.sampler.proc_root)
                .with_detail_budget(settings.watch.interval / 4),
            pool: Pool::new(
                "tfwatch-node-collect",
                COLLECTION_THREADS,
                MAX_COLLECTION_THREADS,
            ),
            fd_share: (limit.saturating_sub(SCAN_KEPT_DESCRIPTORS) / MAX_JOBS).max(16),
            prober: WaitProber::new(
                &settings.sampler.proc_root,
                WaitProber::probe_after(settings.watch.detect.hang_after_seconds),
                StackBudget::NODE,
            )
            .classes_only()
            .probe_ranks(),
            jobs: BTreeMap::new(),
            candidates: BTreeMap::new(),
            counts: Counts::default(),
            history: VecDeque::new(),
            node_finding: None,
            node_cpus: online_cpus(&settings.sampler),
            tick: 0,
            tick_out: 0,
            loads: Vec::new(),
            judged: true,
            scan_seconds: 0.0,
        }
    }

    /// Collection threads started so far.
    #[cfg(test)]
    pub fn collection_threads(&self) -> usize {
        self.pool.threads()
    }

    fn export(&self, change: &mut dyn FnMut(&mut crate::sink::export::NodeExportState)) {
        if let Some(exporter) = self.exporter {
            exporter.with(change);
        }
    }

    /// One tick, due at `due` on the clock, after `skipped` whole ticks with no scan:
    /// scan the node, end and admit jobs, send each job's sample out.
    pub fn tick(&mut self, due: Duration, skipped: u64) -> Result<()> {
        // Samples back already are judged first: only a job whose sample is still out
        // misses this tick.
        while let Done::Finished(result) = self.pool.next(Duration::ZERO) {
            self.on_result(result)?;
        }
        let now = self.clock.elapsed();
        let lateness = now.saturating_sub(due).as_secs_f64();
        if !self.judged {
            // Some job's sample of the last tick is still out: judge without it.
            self.judge_node()?;
        }
        self.tick += 1;
        if skipped > 0 {
            self.counts.skipped_ticks += skipped;
            let line = Line::NodeLate(NodeLate {
                elapsed_seconds: now.as_secs_f64(),
                skipped_ticks: skipped,
                late_seconds: lateness,
                scan_seconds: self.scan_seconds,
            });
            self.output.line(&line, || {
                Some(format!(
                    "[node] {skipped} tick(s) skipped: the scan began {lateness:.1}s late"
                ))
            })?;
        }
        let scan_started = Instant::now();
        let scanned = admitted(self.scanner.scan(), &self.settings.filter);
        let uptime = self.scanner.uptime_seconds();
        let processes: Vec<NodeProcess> = scanned.iter().map(|s| s.process.clone()).collect();
        let groups = group_all_jobs(&processes);
        self.end_jobs(&groups, now)?;
        self.admit(&groups, &scanned, uptime);
        let parents: BTreeMap<i32, i32> = processes.iter().map(|p| (p.pid, p.ppid)).collect();
        self.dispatch(&groups, &parents, &processes, due, now)?;
        self.scan_seconds = scan_started.elapsed().as_secs_f64();
        let scan_seconds = self.scan_seconds;
        let active: Vec<Finding> = self.node_finding.iter().cloned().collect();
        self.export(&mut |state| {
            state.record_scan(scan_seconds, lateness, &active.iter().collect::<Vec<_>>());
        });
        Ok(())
    }

    /// Ends the jobs whose last process ended: said when the job was announced,
    /// counted as short-lived when it never gave a sample.
    fn end_jobs(&mut self, groups: &BTreeMap<JobLabels, Vec<i32>>, now: Duration) -> Result<()> {
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
            if !job.announced {
                self.counts.short_lived += 1;
                continue;
            }
            self.export(&mut |state| state.job_ended(&labels));
            if let Some(screen) = self.screen.as_mut() {
                screen.job_ended(&labels);
            }
            let change = Line::JobEnded(JobChange {
                labels: labels.clone(),
                elapsed_seconds: now.as_secs_f64(),
                pids: job.pids.clone(),
                ranks: Vec::new(),
            });
            self.output
                .line(&change, || Some(format!("job ended: {}", labels.job)))?;
        }
        Ok(())
    }

    /// Admits the jobs new in this scan that have lived an interval (their oldest
    /// process, or seen in an earlier scan), most threads first, while slots are free.
    /// An admitted job keeps its slot until its last process ends; the rest are
    /// counted and wait for a free slot.
    fn admit(
        &mut self,
        groups: &BTreeMap<JobLabels, Vec<i32>>,
        scanned: &[Scanned],
        uptime: Option<f64>,
    ) {
        let by_pid: BTreeMap<i32, &Scanned> = scanned.iter().map(|s| (s.process.pid, s)).collect();
        let gone: Vec<JobLabels> = self
            .candidates
            .keys()
            .filter(|l| !groups.contains_key(*l))
            .cloned()
            .collect();
        for labels in gone {
            self.candidates.remove(&labels);
            if !self.counts.not_admitted.contains(&labels.job) {
                self.counts.short_lived += 1;
            }
        }
        let interval = self.settings.watch.interval.as_secs_f64();
        let mut fresh: Vec<(u64, &JobLabels)> = Vec::new();
        for (labels, pids) in groups {
            if self.jobs.contains_key(labels) {
                continue;
            }
            let members = pids.iter().filter_map(|pid| by_pid.get(pid));
            let oldest = members.clone().map(|s| s.started_seconds).reduce(f64::min);
            let lived = uptime
                .zip(oldest)
                .is_some_and(|(up, started)| up - started >= interval);
            let first_seen = *self.candidates.entry(labels.clone()).or_insert(self.tick);
            if lived || first_seen < self.tick {
                let threads = members.map(|s| u64::from(s.process.num_threads)).sum();
                fresh.push((threads, labels));
            }
        }
        fresh.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(b.1)));
        for (_, labels) in fresh {
            if self.jobs.len() >= MAX_JOBS {
                self.counts.not_admitted.insert(labels.job.clone());
                continue;
            }
            self.candidates.remove(labels);
            self.counts.not_admitted.remove(&labels.job);
            self.counts.seen.insert(labels.job.clone());
            let budget = shared_fd_budget(Some(self.fd_share));
            self.jobs.insert(
                labels.clone(),
                JobWatch {
                    watch: Watch::new(
                        self.settings.watch.detect.clone(),
                        self.settings.watch.rules.clone(),
                    ),
                    pids: Vec::new(),
                    ranks: Vec::new(),
                    sampling: Some(JobSampling::new(budget)),
                    out_due: Duration::ZERO,
                    skipped: 0,
                    announced: false,
                },
            );
        }
    }

    /// Sends each admitted job's sample to the collection threads; a job whose last
    /// sample is still out misses this tick (said once, when it first does) and is
    /// not sent again, so its stuck read holds one thread at most.
    fn dispatch(
        &mut self,
        groups: &BTreeMap<JobLabels, Vec<i32>>,
        parents: &BTreeMap<i32, i32>,
        processes: &[NodeProcess],
        due: Duration,
        now: Duration,
    ) -> Result<()> {
        let mut sent = 0;
        let mut stuck = 0;
        let mut late = Vec::new();
        for (labels, job) in &mut self.jobs {
            let Some(pids) = groups.get(labels) else {
                continue;
            };
            job.pids.clone_from(pids);
            if !job.announced {
                job.ranks = ranks_among(pids, processes);
            }
            let Some(sampling) = job.sampling.take() else {
                stuck += 1;
                job.skipped += 1;
                self.counts.job_skipped_ticks += 1;
                if job.skipped == 1 {
                    late.push((labels.clone(), now.saturating_sub(job.out_due)));
                }
                continue;
            };
            job.out_due = due;
            let task = SampleTask {
                labels: labels.clone(),
                tick: self.tick,
                sampling,
                roots: SampleTask::roots_of(pids, parents),
                members: Arc::new(pids.iter().copied().collect()),
                config: self.settings.sampler.clone(),
                clock: Arc::clone(&self.clock),
                due,
            };
            self.pool.submit(move || task.run());
            sent += 1;
        }
        self.pool.grow_to(COLLECTION_THREADS + stuck);
        self.tick_out = sent;
        self.judged = false;
        for (labels, waited) in late {
            self.say_late(&labels, 1, waited, false, now)?;
        }
        if sent == 0 {
            self.judge_node()?;
        }
        Ok(())
    }

    fn say_late(
        &mut self,
        labels: &JobLabels,
        skipped: u64,
        waited: Duration,
        resumed: bool,
        now: Duration,
    ) -> Result<()> {
        let late = waited.as_secs_f64();
        let line = Line::JobLate(JobLate {
            labels: labels.clone(),
            elapsed_seconds: now.as_secs_f64(),
            skipped_ticks: skipped,
            late_seconds: late,
            resumed,
        });
        let text = if resumed {
            format!(
                "[{}] sample back after {late:.1}s; {skipped} tick(s) skipped",
                labels.job
            )
        } else {
            format!(
                "[{}] sample late by {late:.1}s (a read of its /proc blocks); its ticks are skipped until it returns",
                labels.job
            )
        };
        self.output.line(&line, || Some(text))
    }

    /// Waits up to `wait` for samples, judging each as it comes back (the dashboard
    /// draws and reads keys meanwhile). Whether to quit.
    pub fn pump(&mut self, wait: Duration) -> Result<bool> {
        let mut quit = false;
        let mut wait = wait;
        if let Some(screen) = self.screen.as_mut() {
            let jobs = &self.jobs;
            let watch_of = |labels: &JobLabels| jobs.get(labels).map(|job| &job.watch);
            quit = screen.idle(wait.min(INPUT_POLL), &watch_of)?;
            wait = Duration::ZERO;
        }
        while let Done::Finished(result) = self.pool.next(wait) {
            self.on_result(result)?;
            wait = Duration::ZERO;
        }
        Ok(quit)
    }

    /// One job's sample back from its collection thread.
    fn on_result(&mut self, result: SampleResult) -> Result<()> {
        let now = self.clock.elapsed();
        let Some(job) = self.jobs.get_mut(&result.labels) else {
            // The job ended while its sample was out.
            return Ok(());
        };
        let labels = result.labels;
        if result.tick == self.tick {
            self.tick_out = self.tick_out.saturating_sub(1);
        }
        job.sampling = Some(result.sampling);
        let skipped = std::mem::take(&mut job.skipped);
        let waited = now.saturating_sub(job.out_due);
        if let Some(sample) = result.sample {
            self.observe(&labels, sample)?;
        }
        // Said after the late sample: the ticks it skipped are the ones after it.
        if skipped > 0 {
            self.say_late(&labels, skipped, waited, true, now)?;
        }
        if self.tick_out == 0 && !self.judged {
            self.judge_node()?;
        }
        Ok(())
    }

    /// Judges one job's sample; says the job first, on its first sample.
    fn observe(&mut self, labels: &JobLabels, mut sample: crate::model::Sample) -> Result<()> {
        let Some(job) = self.jobs.get_mut(labels) else {
            return Ok(());
        };
        if !job.announced {
            job.announced = true;
            let text = format!(
                "job started: {} ({})",
                labels.job,
                pids_text(&job.pids, &job.ranks)
            );
            let change = Line::JobStarted(JobChange {
                labels: labels.clone(),
                elapsed_seconds: sample.elapsed_seconds,
                pids: job.pids.clone(),
                ranks: job.ranks.clone(),
            });
            self.output.line(&change, || Some(text))?;
        }
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
        self.loads.extend(load);
        Ok(())
    }

    /// The node's own finding over the jobs' loads: said when it appears and resolves.
    fn judge_node(&mut self) -> Result<()> {
        self.judged = true;
        let elapsed_seconds = self.clock.elapsed().as_secs_f64();
        self.history.push_back(std::mem::take(&mut self.loads));
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
                        elapsed_seconds,
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
                        elapsed_seconds,
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

    /// The closing `exit` line.
    pub fn finish(self, reason: Reason) -> Result<()> {
        let counts = &self.counts;
        let seen = counts.seen.len();
        let text = format!(
            "tfwatch node: {}; {seen} jobs seen, {} not admitted, {} short-lived",
            reason.as_str(),
            counts.not_admitted.len(),
            counts.short_lived
        );
        let exit = Line::Exit(ExitEvent {
            node: Some(NodeExit {
                jobs_seen: seen,
                jobs_not_admitted: counts.not_admitted.len(),
                jobs_short_lived: counts.short_lived,
                skipped_ticks: counts.skipped_ticks,
                job_skipped_ticks: counts.job_skipped_ticks,
                cpu_seconds: super::own_cpu_seconds(),
            }),
            ..ExitEvent::of(ExitLine {
                time_unix_seconds: self.clock.unix_seconds(),
                elapsed_seconds: self.clock.elapsed().as_secs_f64(),
                pid: None,
                reason,
                exit_code: Some(i32::from(super::exit_code(reason))),
                message: format!("{}; {seen} jobs seen", reason.as_str()),
            })
        });
        self.output.line(&exit, || Some(text))?;
        Ok(())
    }
}
