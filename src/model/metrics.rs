//! The catalogue of tree-level metrics: what rules can compare, and what the Prometheus
//! exposition exports as `tfwatch_<name>`. Values are computed per sample elsewhere; a
//! metric missing from a sample's [`MetricValues`] is unavailable in that sample.
//!
//! `docs/metrics.md` documents the same list for people; a test keeps the two in step.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// One metric: its name (without the `tfwatch_` export prefix), its unit and what it
/// measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetricInfo {
    pub name: &'static str,
    /// Base units only: `seconds`, `bytes`, `ratio` (a quotient; 0–1 unless the help says
    /// otherwise), counts and rates.
    pub unit: &'static str,
    pub help: &'static str,
}

impl MetricInfo {
    /// True for a ratio (a threshold may be written as a percentage, "80%").
    pub fn is_ratio(&self) -> bool {
        self.unit == UNIT_RATIO
    }
}

/// Unit of the dimensionless ratios.
pub const UNIT_RATIO: &str = "ratio";
pub const UNIT_SECONDS: &str = "seconds";
pub const UNIT_BYTES: &str = "bytes";

/// The values of the metrics in one sample, by name. A metric absent from the map is
/// unavailable in that sample: a rule on it neither fires nor resolves.
pub type MetricValues = BTreeMap<String, f64>;

/// Every metric rules may use, in the order the documentation lists them.
pub const METRICS: &[MetricInfo] = &[
    MetricInfo {
        name: "threads",
        unit: "threads",
        help: "Threads in the watched process tree.",
    },
    MetricInfo {
        name: "threads_runnable",
        unit: "threads",
        help: "Threads of the tree that are running or waiting for a CPU (state R).",
    },
    MetricInfo {
        name: "threads_blocked_lock",
        unit: "threads",
        help: "Threads of the tree sleeping in a futex or other lock wait.",
    },
    MetricInfo {
        name: "processes",
        unit: "processes",
        help: "Processes in the watched tree (the root and its descendants).",
    },
    MetricInfo {
        name: "usable_cpus",
        unit: "cpus",
        help: "CPUs the tree may use: the smallest of online CPUs, the affinity mask and the cgroup CPU quota.",
    },
    MetricInfo {
        name: "runnable_threads_per_usable_cpu",
        unit: "threads per cpu",
        help: "Runnable threads (time-averaged over the last interval from schedstat: (Δrun + Δwait) / Δt) divided by usable CPUs; above 1 threads queue for a CPU.",
    },
    MetricInfo {
        name: "runqueue_wait_ratio",
        unit: "ratio",
        help: "Time spent waiting for a CPU divided by time spent on a CPU since the previous sample, summed over the tree (schedstat); above 1 threads wait longer than they run. Absent when no thread ran in the interval (the ratio cannot be computed; outputs say `n/a (nothing ran)`).",
    },
    MetricInfo {
        name: "runqueue_wait_ratio_busy",
        unit: "ratio",
        help: "The run-queue wait ratio when the tree oversubscribes its own CPUs: it ran at least 0.5 CPU over the window and its runnable threads ((Δrun + Δwait) / Δt) exceed the usable CPUs by more than half a thread; 0 otherwise (an idle tree, or one that fits its CPUs and waits on other processes). What the default `runqueue-wait` rule watches.",
    },
    MetricInfo {
        name: "cpu_throttled_ratio",
        unit: "ratio",
        help: "Share of the CFS enforcement periods over the window in which the quota's cgroup was throttled (Δnr_throttled / Δnr_periods of its cpu.stat); 0 when no period passed; absent without a quota.",
    },
    MetricInfo {
        name: "cpu_throttled_seconds_total",
        unit: "seconds",
        help: "Total time the quota's cgroup was held off the CPUs by its quota (cpu.stat throttled_time or throttled_usec), a counter.",
    },
    MetricInfo {
        name: "involuntary_switches_per_second",
        unit: "switches per second",
        help: "Involuntary context switches per second over the tree: threads preempted while they still had work.",
    },
    MetricInfo {
        name: "cpu_utilization_cpus",
        unit: "cpus",
        help: "CPU time used by the tree per second of wall time, in CPUs (2.0 = two CPUs busy).",
    },
    MetricInfo {
        name: "rss_bytes",
        unit: "bytes",
        help: "Resident memory of the tree.",
    },
    MetricInfo {
        name: "memory_limit_bytes",
        unit: "bytes",
        help: "The effective memory limit: the cgroup limit where set, else MemTotal.",
    },
    MetricInfo {
        name: "memory_used_ratio",
        unit: "ratio",
        help: "Resident memory of the tree divided by the effective memory limit.",
    },
    MetricInfo {
        name: "thread_growth_per_second",
        unit: "threads per second",
        help: "Change in the tree's thread count per second over the recent window.",
    },
    MetricInfo {
        name: "seconds_without_progress",
        unit: "seconds",
        help: "Time since any thread of the tree last made CPU progress or moved its I/O counters.",
    },
    MetricInfo {
        name: "gpu_processes_per_device_max",
        unit: "processes",
        help: "The most processes of the tree found on any one GPU.",
    },
    MetricInfo {
        name: "gpu_memory_used_ratio",
        unit: "ratio",
        help: "Highest GPU memory use divided by the GPU's memory, over the GPUs the tree uses.",
    },
    MetricInfo {
        name: "gpu_memory_used_bytes",
        unit: "bytes",
        help: "GPU memory held by the tree's processes, summed over the GPUs.",
    },
    MetricInfo {
        name: "queue_depth",
        unit: "items",
        help: "Work waiting in the application's queue, scraped from its metrics endpoint.",
    },
    MetricInfo {
        name: "latency_p50_seconds",
        unit: "seconds",
        help: "Median request or step latency, scraped from the application's metrics endpoint.",
    },
    MetricInfo {
        name: "latency_p99_seconds",
        unit: "seconds",
        help: "99th-percentile request or step latency, scraped from the application's metrics endpoint.",
    },
    MetricInfo {
        name: "completions_per_second",
        unit: "completions per second",
        help: "Requests or steps completed per second, from the application's counter.",
    },
    MetricInfo {
        name: "failures_per_hour",
        unit: "failures per hour",
        help: "Failures per hour, from the application's failure counter over the last hour.",
    },
];

/// The metric called `name`.
pub fn metric_info(name: &str) -> Option<&'static MetricInfo> {
    METRICS.iter().find(|metric| metric.name == name)
}

/// Known metric names close to `name` (typos, missing or extra words), best first.
pub fn similar_metrics(name: &str) -> Vec<&'static str> {
    let wanted = name.to_ascii_lowercase();
    let mut scored: Vec<(usize, &'static str)> = METRICS
        .iter()
        .filter_map(|metric| {
            let distance = edit_distance(&wanted, metric.name);
            let close = distance <= (metric.name.len() / 3).max(2);
            let contains = wanted.len() >= 3
                && (metric.name.contains(wanted.as_str()) || wanted.contains(metric.name));
            (close || contains).then_some((distance, metric.name))
        })
        .collect();
    scored.sort();
    scored.into_iter().take(3).map(|(_, name)| name).collect()
}

/// Levenshtein distance over bytes (metric names are ASCII).
pub(crate) fn edit_distance(a: &str, b: &str) -> usize {
    let b = b.as_bytes();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, &ca) in a.as_bytes().iter().enumerate() {
        let mut current = vec![i + 1];
        for (j, &cb) in b.iter().enumerate() {
            let substitute = previous[j] + usize::from(ca != cb);
            current.push(substitute.min(previous[j + 1] + 1).min(current[j] + 1));
        }
        previous = current;
    }
    previous[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_prometheus_safe() {
        let mut names: Vec<&str> = METRICS.iter().map(|m| m.name).collect();
        assert!(names.iter().all(|n| {
            n.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        }));
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), METRICS.len());
    }

    #[test]
    fn lookup_and_units() {
        assert_eq!(metric_info("threads").map(|m| m.unit), Some("threads"));
        assert!(metric_info("memory_used_ratio").is_some_and(MetricInfo::is_ratio));
        assert!(!metric_info("rss_bytes").is_some_and(MetricInfo::is_ratio));
        assert_eq!(metric_info("thread"), None);
    }

    #[test]
    fn suggestions() {
        assert_eq!(similar_metrics("thread")[0], "threads");
        assert_eq!(similar_metrics("memory_ratio")[0], "memory_used_ratio");
        assert!(similar_metrics("latency").contains(&"latency_p99_seconds"));
        assert!(similar_metrics("zzzzzzzzzzzz").is_empty());
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }

    #[test]
    fn documentation_lists_every_metric() {
        let docs = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/metrics.md"));
        for metric in METRICS {
            assert!(
                docs.contains(&format!("`{}`", metric.name)),
                "docs/metrics.md lacks {}",
                metric.name
            );
        }
    }
}

/// Name patterns of the series that carry each quantity. A pattern is a metric name in
/// which `*` matches any run of characters; `|` separates alternatives. The first series
/// in the exposition that matches wins, summed over its label sets. An empty pattern
/// turns the quantity off.
///
/// It is the `[metrics]` section of a rules file:
///
/// ```toml
/// [metrics]
/// queue_depth = "inference_pending_requests"
/// latency = "*_request_duration_seconds"
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsMapping {
    /// A gauge (or untyped series).
    pub queue_depth: Option<String>,
    /// A histogram (quantiles over the window between scrapes) or a summary.
    pub latency: Option<String>,
    /// A counter of completed requests.
    pub completions: Option<String>,
    /// A counter of failed requests.
    pub failures: Option<String>,
}

impl Default for MetricsMapping {
    fn default() -> Self {
        MetricsMapping {
            queue_depth: Some("*_queue_depth".to_string()),
            latency: Some("*_latency_seconds".to_string()),
            completions: Some("*_requests_total".to_string()),
            failures: Some("*_failures_total|*_errors_total".to_string()),
        }
    }
}

impl MetricsMapping {
    /// The patterns as one line for messages.
    pub fn describe(&self) -> String {
        let show = |p: &Option<String>| match p.as_deref() {
            Some(p) if !p.is_empty() => format!("`{p}`"),
            _ => "off".to_string(),
        };
        format!(
            "queue depth {}, latency {}, completions {}, failures {}",
            show(&self.queue_depth),
            show(&self.latency),
            show(&self.completions),
            show(&self.failures)
        )
    }
}
