//! The Prometheus text exposition format (version 0.0.4) of an [`ExportState`].
//!
//! Every family has HELP and TYPE lines; names carry the `tfwatch_` prefix and base units,
//! counters end in `_total`. Series are per tree and per process (labels `pid`, `comm`,
//! and `rank` for a rank of a distributed job), per GPU (`gpu`), per finding kind and per
//! rule: never per thread. In `tfwatch node` ([`render_node`]) each job's series carry
//! the job's labels ([`job_labels`]) besides their own.

use std::fmt::Write;

use super::{ExportState, GpuSeries, NodeExportState, ProcessSeries, ThreadStates};
use crate::model::jobs::JobLabels;
use crate::model::metrics::METRICS;

/// `Content-Type` of the text format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Prefix of every exported name.
pub const PREFIX: &str = "tfwatch_";

/// The catalogue metric exported as a family of its own with a `state` label rather than
/// as a single gauge: its series add up to the metric.
const THREADS_BY_STATE: &str = "threads";

/// The PromQL expression that reads catalogue metric `name` from the exposition, with
/// the same meaning as in tfwatch's rules.
pub fn metric_expression(name: &str) -> String {
    if name == THREADS_BY_STATE {
        format!("sum without (state) ({PREFIX}{name})")
    } else {
        format!("{PREFIX}{name}")
    }
}

/// A per-process family: name, type, help and the value of one process.
type ProcessFamily = (&'static str, Kind, &'static str, fn(&ProcessSeries) -> f64);

/// A per-GPU family: name, help and the value of one GPU, where known.
type GpuFamily = (&'static str, &'static str, fn(&GpuSeries) -> Option<f64>);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Gauge,
    Counter,
}

/// One family: its HELP and TYPE lines, then its samples.
struct Family {
    header: String,
    samples: String,
}

/// Collects families in the order they are first named; a family named again (by the
/// next job of `tfwatch node`) takes further samples under its one HELP and TYPE, as the
/// format requires. `base` labels come first on every sample (a job's labels).
#[derive(Default)]
struct Writer {
    families: Vec<Family>,
    index: std::collections::HashMap<String, usize>,
    base: Vec<(&'static str, String)>,
}

impl Writer {
    fn family(&mut self, name: &str, kind: Kind, help: &str) {
        if self.index.contains_key(name) {
            return;
        }
        let kind = match kind {
            Kind::Gauge => "gauge",
            Kind::Counter => "counter",
        };
        let mut header = String::new();
        let _ = writeln!(header, "# HELP {PREFIX}{name} {}", escape_help(help));
        let _ = writeln!(header, "# TYPE {PREFIX}{name} {kind}");
        self.index.insert(name.to_string(), self.families.len());
        self.families.push(Family {
            header,
            samples: String::new(),
        });
    }

    /// A sample of family `name`, which [`Writer::family`] named before.
    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        let Some(&at) = self.index.get(name) else {
            debug_assert!(false, "sample of {name} before its family");
            return;
        };
        let out = &mut self.families[at].samples;
        out.push_str(PREFIX);
        out.push_str(name);
        let all = self
            .base
            .iter()
            .map(|(label, value)| (*label, value.as_str()))
            .chain(labels.iter().copied());
        let mut first = true;
        for (label, value) in all {
            out.push(if first { '{' } else { ',' });
            first = false;
            let _ = write!(out, "{label}=\"{}\"", escape_label_value(value));
        }
        if !first {
            out.push('}');
        }
        out.push(' ');
        out.push_str(&format_value(value));
        out.push('\n');
    }

    /// A family with one unlabelled sample (labelled by `base` only).
    fn single(&mut self, name: &str, kind: Kind, help: &str, value: f64) {
        self.family(name, kind, help);
        self.sample(name, &[], value);
    }

    /// The text: every family with its samples, in order.
    fn finish(self) -> String {
        let mut out = String::with_capacity(
            self.families
                .iter()
                .map(|f| f.header.len() + f.samples.len())
                .sum(),
        );
        for family in self.families {
            out.push_str(&family.header);
            out.push_str(&family.samples);
        }
        out
    }
}

/// HELP text: backslash and line feed escaped.
pub fn escape_help(text: &str) -> String {
    text.replace('\\', "\\\\").replace('\n', "\\n")
}

/// A label value: backslash, double quote and line feed escaped.
pub fn escape_label_value(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// A sample value as Go's ParseFloat reads it: `NaN`, `+Inf`, `-Inf` or a decimal.
pub fn format_value(value: f64) -> String {
    if value.is_nan() {
        "NaN".to_string()
    } else if value.is_infinite() {
        if value > 0.0 { "+Inf" } else { "-Inf" }.to_string()
    } else {
        format!("{value}")
    }
}

fn bool_value(active: bool) -> f64 {
    if active { 1.0 } else { 0.0 }
}

/// Renders `state` in the text format.
pub fn render(state: &ExportState) -> String {
    let mut w = Writer::default();
    write_health(
        &mut w,
        &Health {
            up: state.up,
            samples_total: state.samples_total,
            duration_seconds: state.sample_duration_seconds,
            lateness_seconds: state.sample_lateness_seconds,
        },
        "1 while tfwatch samples the watched process tree, 0 before the first sample.",
    );
    write_watched(&mut w, state);
    w.finish()
}

/// The labels a job's series carry in `tfwatch node`. Not `job`, `pod` or `namespace`:
/// Prometheus sets `job` on every series itself, and the Kubernetes relabelling of
/// docs/prometheus.md sets `pod` and `namespace` to tfwatch's own pod.
pub fn job_labels(labels: &JobLabels) -> Vec<(&'static str, String)> {
    let mut out = vec![("watched_job", labels.job.clone())];
    for (name, value) in [
        ("watched_pod", &labels.pod),
        ("watched_container", &labels.container),
        ("watched_namespace", &labels.namespace),
    ] {
        if let Some(value) = value {
            out.push((name, value.clone()));
        }
    }
    out
}

/// Renders the state of `tfwatch node --listen`: the scan's health, then every job's
/// series labelled by [`job_labels`], then the node's own findings.
pub fn render_node(node: &NodeExportState) -> String {
    let mut w = Writer::default();
    write_health(
        &mut w,
        &Health {
            up: node.up,
            samples_total: node.scans_total,
            duration_seconds: node.scan_duration_seconds,
            lateness_seconds: node.scan_lateness_seconds,
        },
        "1 while tfwatch scans the node, 0 before the first scan.",
    );
    w.single(
        "node_jobs",
        Kind::Gauge,
        "Jobs tfwatch node watches now (each has series labelled watched_job).",
        node.jobs.len() as f64,
    );
    for (labels, job) in &node.jobs {
        w.base = job_labels(labels);
        write_watched(&mut w, job);
    }
    w.base.clear();
    if !node.findings_active.is_empty() {
        w.family(
            "node_finding_active",
            Kind::Gauge,
            "1 while a finding about the node as a whole (jobs that together oversubscribe it) is active, 0 after it resolved.",
        );
        for (kind, active) in &node.findings_active {
            w.sample(
                "node_finding_active",
                &[("kind", kind)],
                bool_value(*active),
            );
        }
    }
    w.finish()
}

/// tfwatch's own health: what is measured, how often, how late.
struct Health {
    up: bool,
    /// Samples of the tree (`attach`), or scans of the node (`node`).
    samples_total: u64,
    duration_seconds: Option<f64>,
    lateness_seconds: Option<f64>,
}

fn write_health(w: &mut Writer, health: &Health, up_help: &str) {
    w.single("up", Kind::Gauge, up_help, bool_value(health.up));
    w.family(
        "build_info",
        Kind::Gauge,
        "tfwatch's version, as a label; always 1.",
    );
    w.sample("build_info", &[("version", env!("CARGO_PKG_VERSION"))], 1.0);
    w.single(
        "samples_total",
        Kind::Counter,
        "Samples of the watched tree taken.",
        health.samples_total as f64,
    );
    if let Some(seconds) = health.duration_seconds {
        w.single(
            "sample_duration_seconds",
            Kind::Gauge,
            "Wall time the newest sample took.",
            seconds,
        );
    }
    if let Some(seconds) = health.lateness_seconds {
        w.single(
            "sample_lateness_seconds",
            Kind::Gauge,
            "How late the newest sample started against its target time.",
            seconds,
        );
    }
}

/// The series of one watched tree (of `attach`, or of one job of `node`).
fn write_watched(w: &mut Writer, state: &ExportState) {
    if !state.sources_unavailable.is_empty() {
        w.family(
            "source_unavailable",
            Kind::Gauge,
            "1 while a source (schedstat, syscall, environ, gpu, metrics, ...) could not be read in the newest sample; 0 once it reads again. Why and how to fix it is in the JSON events.",
        );
        for (source, unavailable) in &state.sources_unavailable {
            w.sample(
                "source_unavailable",
                &[("source", source)],
                bool_value(*unavailable),
            );
        }
    }
    if !state.up {
        // Nothing measured yet: only the rule states.
        write_rules_and_findings(w, state);
        return;
    }

    // The tree.
    w.family(
        THREADS_BY_STATE,
        Kind::Gauge,
        "Threads in the watched process tree by state: running (on or waiting for a CPU), lock (futex or other lock wait), input (epoll, poll, socket or pipe read), sleep (timer), io (uninterruptible, state D), other (stopped, zombie or unknown wait). The states add up to all threads.",
    );
    write_states(w, THREADS_BY_STATE, &[], &state.tree_threads);
    for metric in METRICS.iter().filter(|m| m.name != THREADS_BY_STATE) {
        if let Some(&value) = state.tree.get(metric.name) {
            // `*_total` catalogue metrics are cumulative counters (cgroup throttled time).
            let kind = if metric.name.ends_with("_total") {
                Kind::Counter
            } else {
                Kind::Gauge
            };
            w.single(metric.name, kind, metric.help, value);
        }
    }
    w.single(
        "involuntary_switches_total",
        Kind::Counter,
        "Involuntary context switches of the tree's threads since the watch began (threads preempted while they still had work).",
        state.involuntary_switches_total,
    );
    w.single(
        "cpu_seconds_total",
        Kind::Counter,
        "CPU time used by the tree since the watch began.",
        state.cpu_seconds_total,
    );

    // Each process of the tree.
    if !state.processes.is_empty() {
        let pids: Vec<String> = state.processes.iter().map(|p| p.pid.to_string()).collect();
        let ranks: Vec<Option<String>> = state
            .processes
            .iter()
            .map(|p| p.rank.map(|r| r.to_string()))
            .collect();
        // `pid`, `comm` and, for a rank of a distributed job, `rank`.
        let labels = |at: usize| {
            let p = &state.processes[at];
            let mut labels: Vec<(&str, &str)> = vec![("pid", &pids[at]), ("comm", &p.comm)];
            if let Some(rank) = &ranks[at] {
                labels.push(("rank", rank));
            }
            labels
        };
        w.family(
            "process_threads",
            Kind::Gauge,
            "Threads of one process of the tree by state (as tfwatch_threads).",
        );
        for (at, p) in state.processes.iter().enumerate() {
            write_states(w, "process_threads", &labels(at), &p.threads);
        }
        let per_process: [ProcessFamily; 3] = [
            (
                "process_rss_bytes",
                Kind::Gauge,
                "Resident memory of one process of the tree.",
                |p| p.rss_bytes as f64,
            ),
            (
                "process_cpu_seconds_total",
                Kind::Counter,
                "CPU time (user + system) used by one process of the tree since it started.",
                |p| p.cpu_seconds_total,
            ),
            (
                "process_involuntary_switches_total",
                Kind::Counter,
                "Involuntary context switches of one process's threads since tfwatch first saw it.",
                |p| p.involuntary_switches_total,
            ),
        ];
        for (name, kind, help, value) in per_process {
            w.family(name, kind, help);
            for (at, p) in state.processes.iter().enumerate() {
                w.sample(name, &labels(at), value(p));
            }
        }
    }

    write_ranks(w, &state.ranks);

    // Each GPU of the machine.
    if !state.gpus.is_empty() {
        let indices: Vec<String> = state.gpus.iter().map(|g| g.index.to_string()).collect();
        let per_gpu: [GpuFamily; 6] = [
            (
                "gpu_device_memory_used_bytes",
                "GPU memory in use on the device, by all processes.",
                |g| Some(g.memory_used_bytes as f64),
            ),
            (
                "gpu_device_memory_total_bytes",
                "GPU memory of the device.",
                |g| Some(g.memory_total_bytes as f64),
            ),
            (
                "gpu_device_processes",
                "Processes with a context on the device, all of them.",
                |g| Some(g.processes as f64),
            ),
            (
                "gpu_device_tree_processes",
                "Processes of the watched tree with a context on the device.",
                |g| Some(g.tree_processes as f64),
            ),
            (
                "gpu_device_tree_memory_used_bytes",
                "GPU memory held on the device by the watched tree's processes.",
                |g| Some(g.tree_memory_used_bytes as f64),
            ),
            (
                "gpu_device_utilization_ratio",
                "Fraction of time a kernel ran on the device over the driver's last sample period.",
                |g| g.utilization_ratio,
            ),
        ];
        for (name, help, value) in per_gpu {
            let values: Vec<(&String, f64)> = state
                .gpus
                .iter()
                .zip(&indices)
                .filter_map(|(g, index)| value(g).map(|v| (index, v)))
                .collect();
            if values.is_empty() {
                continue;
            }
            w.family(name, Kind::Gauge, help);
            for (index, v) in values {
                w.sample(name, &[("gpu", index)], v);
            }
        }
    }

    write_rules_and_findings(w, state);
}

fn write_states(w: &mut Writer, name: &str, labels: &[(&str, &str)], states: &ThreadStates) {
    for (state, count) in states.by_label() {
        let mut all = labels.to_vec();
        all.push(("state", state));
        w.sample(name, &all, count as f64);
    }
}

fn write_rules_and_findings(w: &mut Writer, state: &ExportState) {
    if !state.findings_active.is_empty() {
        w.family(
            "finding_active",
            Kind::Gauge,
            "1 while a finding of this kind is active on the watched tree, 0 after it resolved.",
        );
        for (kind, active) in &state.findings_active {
            w.sample("finding_active", &[("kind", kind)], bool_value(*active));
        }
    }
    if !state.alerts_active.is_empty() {
        w.family(
            "alert_active",
            Kind::Gauge,
            "1 while the tfwatch rule fires, else 0 (every loaded rule is listed).",
        );
        for (rule, alert) in &state.alerts_active {
            w.sample(
                "alert_active",
                &[("rule", rule), ("severity", alert.severity.as_str())],
                bool_value(alert.active),
            );
        }
    }
}

/// The series of each rank of a distributed job (`super::ranks`): one per rank and
/// family. `distributed_job` is the job's identity across nodes (not `job`, which
/// Prometheus sets itself).
fn write_ranks(w: &mut Writer, ranks: &[super::ranks::RankSeries]) {
    if ranks.is_empty() {
        return;
    }
    w.family(
        "rank_info",
        Kind::Gauge,
        "1 for each rank of a distributed job tfwatch sees: distributed_job (the rendezvous and run id every node agrees on), rank, local_rank, world_size, pid, and what it does now: state (collective, computing, blocked outside any collective, waiting without stacks, running) with its collective, call_site and function where its stacks were taken.",
    );
    for r in ranks {
        let (rank, pid) = (r.rank.to_string(), r.pid.to_string());
        let local = r.local_rank.map_or_else(String::new, |n| n.to_string());
        let world = r.world_size.map_or_else(String::new, |n| n.to_string());
        w.sample(
            "rank_info",
            &[
                ("distributed_job", &r.job),
                ("rank", &rank),
                ("local_rank", &local),
                ("world_size", &world),
                ("pid", &pid),
                ("state", r.state.as_str()),
                ("collective", &r.collective),
                ("call_site", &r.call_site),
                ("function", &r.function),
            ],
            1.0,
        );
    }
    w.family(
        "rank_seconds_without_progress",
        Kind::Gauge,
        "Seconds the rank's own threads (its communication library's left aside) made no progress, up to now; 0 while it progresses.",
    );
    for r in ranks {
        let (rank, pid) = (r.rank.to_string(), r.pid.to_string());
        w.sample(
            "rank_seconds_without_progress",
            &[("distributed_job", &r.job), ("rank", &rank), ("pid", &pid)],
            r.seconds_without_progress,
        );
    }
    let sized: Vec<&super::ranks::RankSeries> =
        ranks.iter().filter(|r| r.world_size.is_some()).collect();
    if !sized.is_empty() {
        w.family(
            "rank_world_size",
            Kind::Gauge,
            "The world size the rank's environment gives (WORLD_SIZE or its launcher's): fewer ranks of a job than this across the nodes is a missing rank.",
        );
        for r in sized {
            let (rank, pid) = (r.rank.to_string(), r.pid.to_string());
            w.sample(
                "rank_world_size",
                &[("distributed_job", &r.job), ("rank", &rank), ("pid", &pid)],
                f64::from(r.world_size.unwrap_or_default()),
            );
        }
    }
}
