//! The Prometheus side of tfwatch: an exposition endpoint (`--listen` on `attach` and
//! `run`) and the rules as Prometheus alerting rules (`tfwatch rules export`).
//!
//! - [`ExportState`]: the plain state the endpoint exposes, updated by the sampling loop
//!   once per sample ([`ExportState::record`]);
//! - [`exposition`]: renders it in the text exposition format 0.0.4;
//! - [`server`]: a tiny HTTP server thread that renders on each request of `/metrics`;
//! - [`alert_rules`]: rule files as a Prometheus alerting-rules YAML file.
//!
//! The sampling loop and the server share the state behind a mutex held only to copy
//! numbers in or to render a few kilobytes of text; the response is written with the
//! lock released, so a slow client never holds up sampling.

pub mod alert_rules;
pub mod exposition;
pub mod ranks;
pub mod server;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};

use crate::engine::{Event, SampleLine, Values, Watch};
use crate::model::jobs::JobLabels;
use crate::model::{Finding, Severity};
use crate::rules::RuleSet;
use crate::timeline::{ProcessSummary, Timeline};

pub use server::MetricsServer;

/// Why the endpoint could not be started.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error(
        "invalid --listen address {written:?}: expected IP:PORT such as 127.0.0.1:9464, or :PORT for loopback (port 0 picks a free port)"
    )]
    BadAddress { written: String },
    #[error(
        "--listen {address} is not a loopback address: the metrics would be reachable from other machines; listen on 127.0.0.1 or [::1], or add --allow-remote to serve them there (the endpoint is read-only and serves only /metrics)"
    )]
    NotLoopback { address: SocketAddr },
    #[error("cannot listen on {address}: {reason} (is another process using the port?)")]
    Bind { address: SocketAddr, reason: String },
}

/// Parses a `--listen` address (`IP:PORT`, `[IPv6]:PORT`, `localhost:PORT`, or `:PORT`
/// for loopback) and refuses a non-loopback one unless `allow_remote`.
pub fn listen_address(written: &str, allow_remote: bool) -> Result<SocketAddr, ExportError> {
    let bad = || ExportError::BadAddress {
        written: written.to_string(),
    };
    let trimmed = written.trim();
    let loopback_port = trimmed
        .strip_prefix("localhost:")
        .or_else(|| trimmed.strip_prefix(':'));
    let address = match loopback_port {
        Some(port) => SocketAddr::new(
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            port.parse().map_err(|_| bad())?,
        ),
        None => trimmed.parse::<SocketAddr>().map_err(|_| bad())?,
    };
    if !allow_remote && !is_loopback(address.ip()) {
        return Err(ExportError::NotLoopback { address });
    }
    Ok(address)
}

/// Whether `ip` is a loopback address, an IPv4 one written as IPv6
/// (`::ffff:127.0.0.1`) included.
fn is_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => {
            v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    }
}

/// At most this many processes get series of their own (the root first, then in tree
/// order); the tree's series count every process. Keeps the series bounded when a job
/// forks without bound.
pub const MAX_PROCESS_SERIES: usize = 200;

/// Threads counted by what they are doing (`crate::timeline::waits::classify`); `other`
/// holds the rest (stopped, zombie, unknown wait), so the six add up to all threads.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ThreadStates {
    pub running: u64,
    pub lock: u64,
    pub input: u64,
    pub sleep: u64,
    pub io: u64,
    pub other: u64,
}

impl ThreadStates {
    /// The `state` label values, in exposition order.
    pub const LABELS: [&'static str; 6] = ["running", "lock", "input", "sleep", "io", "other"];

    fn of(process: &ProcessSummary) -> ThreadStates {
        let known = [
            process.running,
            process.lock_waiters,
            process.input_waiters,
            process.sleepers,
            process.io_waiters,
        ];
        let counted: u64 = known.iter().map(|&n| u64::from(n)).sum();
        ThreadStates {
            running: u64::from(process.running),
            lock: u64::from(process.lock_waiters),
            input: u64::from(process.input_waiters),
            sleep: u64::from(process.sleepers),
            io: u64::from(process.io_waiters),
            other: u64::from(process.threads).saturating_sub(counted),
        }
    }

    fn add(&mut self, other: &ThreadStates) {
        self.running += other.running;
        self.lock += other.lock;
        self.input += other.input;
        self.sleep += other.sleep;
        self.io += other.io;
        self.other += other.other;
    }

    /// `(state label, count)` in exposition order.
    pub fn by_label(&self) -> [(&'static str, u64); 6] {
        let [running, lock, input, sleep, io, other] = Self::LABELS;
        [
            (running, self.running),
            (lock, self.lock),
            (input, self.input),
            (sleep, self.sleep),
            (io, self.io),
            (other, self.other),
        ]
    }

    pub fn total(&self) -> u64 {
        self.by_label().iter().map(|(_, n)| n).sum()
    }
}

/// One process of the tree.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProcessSeries {
    pub pid: i32,
    pub comm: String,
    /// The process's global rank in a distributed job (the `rank` label), where its
    /// environment names one.
    pub rank: Option<u32>,
    pub threads: ThreadStates,
    pub rss_bytes: u64,
    /// utime + stime from the kernel (a counter for the life of the process).
    pub cpu_seconds_total: f64,
    /// Involuntary switches of its threads, summed from the changes tfwatch saw (so
    /// threads that exit do not make it go down).
    pub involuntary_switches_total: f64,
}

/// One GPU of the machine.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GpuSeries {
    /// NVML index, the `gpu` label.
    pub index: u32,
    pub memory_used_bytes: u64,
    pub memory_total_bytes: u64,
    /// All processes with a context on the GPU.
    pub processes: u64,
    /// Processes of the watched tree on the GPU.
    pub tree_processes: u64,
    /// GPU memory held by the tree's processes on this GPU.
    pub tree_memory_used_bytes: u64,
    pub utilization_ratio: Option<f64>,
}

/// A rule and whether it is firing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertSeries {
    pub severity: Severity,
    pub active: bool,
}

/// Everything the endpoint exposes: plain numbers, updated once per sample.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ExportState {
    /// True once a sample of the target was taken.
    pub up: bool,
    pub samples_total: u64,
    pub sample_duration_seconds: Option<f64>,
    pub sample_lateness_seconds: Option<f64>,
    /// The catalogue metrics of the newest sample (`crate::model::metrics`); a metric missing
    /// here is unavailable and not exported.
    pub tree: Values,
    pub tree_threads: ThreadStates,
    /// Tree counters accumulated from the per-sample changes.
    pub involuntary_switches_total: f64,
    pub cpu_seconds_total: f64,
    pub processes: Vec<ProcessSeries>,
    /// The ranks of distributed jobs in the tree (`tfwatch_rank_*`).
    pub ranks: Vec<ranks::RankSeries>,
    pub gpus: Vec<GpuSeries>,
    /// Finding kind → active; a kind once seen stays (at false after it resolves).
    pub findings_active: BTreeMap<String, bool>,
    /// Rule name → its severity and whether it fires; every loaded rule is present.
    pub alerts_active: BTreeMap<String, AlertSeries>,
    /// Source → unavailable in the newest sample; a source once seen stays.
    pub sources_unavailable: BTreeMap<String, bool>,
}

impl ExportState {
    /// The state before the first sample: every rule present and not firing.
    pub fn new(rules: &RuleSet) -> ExportState {
        ExportState {
            alerts_active: rules
                .rules()
                .iter()
                .map(|rule| {
                    (
                        rule.name.clone(),
                        AlertSeries {
                            severity: rule.severity,
                            active: false,
                        },
                    )
                })
                .collect(),
            ..ExportState::default()
        }
    }

    /// Takes in one sample: its `sample` line, the timeline it was pushed to, and the
    /// findings active after it.
    pub fn record(&mut self, line: &SampleLine, timeline: &Timeline, findings: &[&Finding]) {
        self.up = true;
        self.samples_total += 1;
        self.sample_duration_seconds = Some(line.sample_duration_seconds);
        self.sample_lateness_seconds = Some(line.lateness_seconds);
        self.tree = line.metrics.clone();

        if let Some(summary) = timeline.latest_summary() {
            let rank_of = |pid: i32| {
                timeline
                    .latest()?
                    .processes
                    .iter()
                    .find(|p| p.pid == pid)?
                    .audit
                    .as_ref()?
                    .rank
                    .as_ref()
                    .map(|r| r.rank)
            };
            let mut tree_threads = ThreadStates::default();
            let mut processes = Vec::with_capacity(summary.processes.len());
            for p in &summary.processes {
                let threads = ThreadStates::of(p);
                tree_threads.add(&threads);
                let switches_before = self
                    .processes
                    .iter()
                    .find(|old| old.pid == p.pid)
                    .map_or(0.0, |old| old.involuntary_switches_total);
                processes.push(ProcessSeries {
                    pid: p.pid,
                    comm: p.comm.clone(),
                    rank: rank_of(p.pid),
                    threads,
                    rss_bytes: p.rss_bytes,
                    cpu_seconds_total: p.cpu_seconds,
                    involuntary_switches_total: switches_before + p.delta_nonvoluntary_switches,
                });
                self.involuntary_switches_total += p.delta_nonvoluntary_switches;
                self.cpu_seconds_total += p.delta_cpu_seconds.unwrap_or(0.0);
            }
            processes.truncate(MAX_PROCESS_SERIES);
            self.tree_threads = tree_threads;
            self.processes = processes;
        }

        self.ranks = ranks::rank_series(timeline);

        if let Some(sample) = timeline.latest() {
            let tree: Vec<i32> = sample.processes.iter().map(|p| p.pid).collect();
            self.gpus = sample
                .gpu
                .as_ref()
                .filter(|gpu| gpu.unavailable.is_none())
                .map(|gpu| {
                    gpu.devices
                        .iter()
                        .map(|device| {
                            let ours = device.processes.iter().filter(|p| tree.contains(&p.pid));
                            GpuSeries {
                                index: device.index,
                                memory_used_bytes: device.memory_used_bytes,
                                memory_total_bytes: device.memory_total_bytes,
                                processes: device.processes.len() as u64,
                                tree_processes: ours.clone().count() as u64,
                                tree_memory_used_bytes: ours
                                    .filter_map(|p| p.used_memory_bytes)
                                    .sum(),
                                utilization_ratio: device
                                    .utilization_percent
                                    .map(|u| f64::from(u) / 100.0),
                            }
                        })
                        .collect()
                })
                .unwrap_or_default();
            for unavailable in self.sources_unavailable.values_mut() {
                *unavailable = false;
            }
            for u in &sample.unavailable {
                self.sources_unavailable.insert(u.source.clone(), true);
            }
        }

        for active in self.findings_active.values_mut() {
            *active = false;
        }
        for finding in findings {
            self.findings_active
                .insert(finding.kind.as_str().to_string(), true);
        }
        for alert in self.alerts_active.values_mut() {
            alert.active = false;
        }
        for rule in &line.alerts_active {
            if let Some(alert) = self.alerts_active.get_mut(rule) {
                alert.active = true;
            }
        }
    }
}

/// Per job, at most this many processes get series of their own in `tfwatch node` (the
/// job's series count every process): with [`crate::model::jobs::MAX_JOBS`] jobs it
/// bounds the node's process series at 64 × 16.
pub const MAX_NODE_PROCESS_SERIES: usize = 16;

/// What the endpoint renders on each request.
pub trait Render: Send + 'static {
    fn render(&self) -> String;
}

impl Render for ExportState {
    fn render(&self) -> String {
        exposition::render(self)
    }
}

/// Everything `tfwatch node --listen` exposes: the scan's health, each job's
/// [`ExportState`] (its series labelled by the job) and the node's own findings.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NodeExportState {
    pub up: bool,
    pub scans_total: u64,
    pub scan_duration_seconds: Option<f64>,
    pub scan_lateness_seconds: Option<f64>,
    /// The jobs watched now; a job that ends leaves with its series.
    pub jobs: BTreeMap<JobLabels, ExportState>,
    /// Node finding kind → active; a kind once seen stays (at false after it resolves).
    pub findings_active: BTreeMap<String, bool>,
    /// A new job's state: every rule present and not firing.
    fresh: ExportState,
}

impl NodeExportState {
    pub fn new(rules: &RuleSet) -> NodeExportState {
        NodeExportState {
            fresh: ExportState::new(rules),
            ..NodeExportState::default()
        }
    }

    /// Takes in one sample of job `labels` (as [`ExportState::record`]), keeping at most
    /// [`MAX_NODE_PROCESS_SERIES`] of its processes.
    pub fn record_job(
        &mut self,
        labels: &JobLabels,
        line: &SampleLine,
        timeline: &Timeline,
        findings: &[&Finding],
    ) {
        let job = self
            .jobs
            .entry(labels.clone())
            .or_insert_with(|| self.fresh.clone());
        job.record(line, timeline, findings);
        job.processes.truncate(MAX_NODE_PROCESS_SERIES);
    }

    /// A job ended: its series go.
    pub fn job_ended(&mut self, labels: &JobLabels) {
        self.jobs.remove(labels);
    }

    /// Takes in the end of one scan of the node: how long it took, how late it began,
    /// and the node findings active after it.
    pub fn record_scan(
        &mut self,
        duration_seconds: f64,
        lateness_seconds: f64,
        findings: &[&Finding],
    ) {
        self.up = true;
        self.scans_total += 1;
        self.scan_duration_seconds = Some(duration_seconds);
        self.scan_lateness_seconds = Some(lateness_seconds);
        for active in self.findings_active.values_mut() {
            *active = false;
        }
        for finding in findings {
            self.findings_active
                .insert(finding.kind.as_str().to_string(), true);
        }
    }
}

impl Render for NodeExportState {
    fn render(&self) -> String {
        exposition::render_node(self)
    }
}

/// The endpoint of `tfwatch node --listen`: the shared node state and its server.
pub struct NodeExporter {
    state: Arc<Mutex<NodeExportState>>,
    server: MetricsServer,
}

impl NodeExporter {
    /// Serves the node's metrics with `rules` on `address` (checked by
    /// [`listen_address`]).
    pub fn serve(address: SocketAddr, rules: &RuleSet) -> Result<NodeExporter, ExportError> {
        let state = Arc::new(Mutex::new(NodeExportState::new(rules)));
        let server = MetricsServer::start(address, Arc::clone(&state))?;
        Ok(NodeExporter { state, server })
    }

    pub fn url(&self) -> String {
        format!("http://{}/metrics", self.server.address())
    }

    /// Changes the state under its lock (held only to copy numbers in).
    pub fn with(&self, change: impl FnOnce(&mut NodeExportState)) {
        change(&mut self.state.lock().unwrap_or_else(PoisonError::into_inner));
    }
}

/// The running endpoint: the shared state and the server thread that exposes it.
pub struct Exporter {
    state: Arc<Mutex<ExportState>>,
    server: MetricsServer,
}

impl Exporter {
    /// Starts serving `state` on `address` (already checked by [`listen_address`]).
    pub fn start(address: SocketAddr, state: ExportState) -> Result<Exporter, ExportError> {
        let state = Arc::new(Mutex::new(state));
        let server = MetricsServer::start(address, Arc::clone(&state))?;
        Ok(Exporter { state, server })
    }

    /// Serves the metrics of a watch with `rules` on `address` (checked by
    /// [`listen_address`]).
    pub fn serve(address: SocketAddr, rules: &RuleSet) -> Result<Exporter, ExportError> {
        Exporter::start(address, ExportState::new(rules))
    }

    /// The address bound (the real port where `--listen` asked for port 0).
    pub fn address(&self) -> SocketAddr {
        self.server.address()
    }

    pub fn url(&self) -> String {
        format!("http://{}/metrics", self.address())
    }

    /// Takes in the events of one `Watch::observe` call.
    pub fn update(&self, watch: &Watch, events: &[Event]) {
        let Some(line) = events.iter().find_map(|event| match event {
            Event::Sample(line) => Some(line),
            _ => None,
        }) else {
            return;
        };
        let findings = watch.active_findings();
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .record(line, &watch.timeline, &findings);
    }
}

impl crate::engine::sink::Sink for Exporter {
    fn sample(
        &mut self,
        watch: &Watch,
        events: &[Event],
    ) -> anyhow::Result<crate::engine::sink::Control> {
        self.update(watch, events);
        Ok(crate::engine::sink::Control::Continue)
    }
}

#[cfg(test)]
mod tests;
