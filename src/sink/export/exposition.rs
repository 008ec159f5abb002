//! The Prometheus text exposition format (version 0.0.4) of an [`ExportState`].
//!
//! Every family has HELP and TYPE lines; names carry the `tfwatch_` prefix and base units,
//! counters end in `_total`. Series are per tree and per process (labels `pid`, `comm`,
//! and `rank` for a rank of a distributed job), per GPU (`gpu`), per finding kind and per
//! rule: never per thread.

use std::fmt::Write;

use super::{ExportState, GpuSeries, ProcessSeries, ThreadStates};
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

/// Writes families in order; a family's HELP and TYPE come before its first sample.
struct Writer {
    out: String,
}

impl Writer {
    fn family(&mut self, name: &str, kind: Kind, help: &str) {
        let kind = match kind {
            Kind::Gauge => "gauge",
            Kind::Counter => "counter",
        };
        let _ = writeln!(self.out, "# HELP {PREFIX}{name} {}", escape_help(help));
        let _ = writeln!(self.out, "# TYPE {PREFIX}{name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.out.push_str(PREFIX);
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (label, value)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{label}=\"{}\"", escape_label_value(value));
            }
            self.out.push('}');
        }
        self.out.push(' ');
        self.out.push_str(&format_value(value));
        self.out.push('\n');
    }

    /// A family with one unlabelled sample.
    fn single(&mut self, name: &str, kind: Kind, help: &str, value: f64) {
        self.family(name, kind, help);
        self.sample(name, &[], value);
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
    let mut w = Writer {
        out: String::with_capacity(8 * 1024),
    };

    // tfwatch's own health.
    w.single(
        "up",
        Kind::Gauge,
        "1 while tfwatch samples the watched process tree, 0 before the first sample.",
        bool_value(state.up),
    );
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
        state.samples_total as f64,
    );
    if let Some(seconds) = state.sample_duration_seconds {
        w.single(
            "sample_duration_seconds",
            Kind::Gauge,
            "Wall time the newest sample took.",
            seconds,
        );
    }
    if let Some(seconds) = state.sample_lateness_seconds {
        w.single(
            "sample_lateness_seconds",
            Kind::Gauge,
            "How late the newest sample started against its target time.",
            seconds,
        );
    }
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
        // Nothing measured yet: only the health families and the rule states.
        write_rules_and_findings(&mut w, state);
        return w.out;
    }

    // The tree.
    w.family(
        THREADS_BY_STATE,
        Kind::Gauge,
        "Threads in the watched process tree by state: running (on or waiting for a CPU), lock (futex or other lock wait), input (epoll, poll, socket or pipe read), sleep (timer), io (uninterruptible, state D), other (stopped, zombie or unknown wait). The states add up to all threads.",
    );
    write_states(&mut w, THREADS_BY_STATE, &[], &state.tree_threads);
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
            write_states(&mut w, "process_threads", &labels(at), &p.threads);
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

    write_rules_and_findings(&mut w, state);
    w.out
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
