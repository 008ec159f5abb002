//! The optional sources read next to each sample: the machine's GPUs (NVML) and the
//! application's own metrics endpoints. Each is optional; what cannot be read becomes
//! a visible "unavailable" entry in the sample, never an error.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::model::metrics::MetricsMapping;
use crate::model::{AppMetrics, Sample, Unavailable};
use crate::source::gpu::GpuSource;
use crate::source::scrape::{Scraper, expand_url};

/// The application's metrics endpoints and how to read them (checked settings).
#[derive(Debug, Clone)]
pub struct ScrapeSettings {
    /// URLs, or patterns with `{pid}`.
    pub urls: Vec<String>,
    /// How long one scrape may take.
    pub timeout: Duration,
    pub mapping: MetricsMapping,
}

/// Metrics endpoints to scrape: fixed URLs, or patterns with `{pid}` expanded for each
/// process of the tree.
pub struct Scrapes {
    patterns: Vec<String>,
    timeout: Duration,
    mapping: MetricsMapping,
    /// URL → its scraper (a scraper keeps the previous histogram for windowed quantiles).
    scrapers: BTreeMap<String, Scraper>,
    /// URLs whose scraper could not be made, with why (reported once per sample).
    refused: BTreeMap<String, String>,
}

impl Scrapes {
    pub fn new(patterns: Vec<String>, timeout: Duration, mapping: MetricsMapping) -> Self {
        Scrapes {
            patterns,
            timeout,
            mapping,
            scrapers: BTreeMap::new(),
            refused: BTreeMap::new(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// Scrapes every endpoint of the tree once; their figures are merged (depths,
    /// completions and failures added up, latencies the worst).
    pub fn scrape(&mut self, pids: &[i32]) -> Option<AppMetrics> {
        if self.patterns.is_empty() {
            return None;
        }
        let mut urls: Vec<String> = Vec::new();
        for pattern in &self.patterns {
            if pattern.contains("{pid}") {
                urls.extend(pids.iter().map(|&pid| expand_url(pattern, pid)));
            } else {
                urls.push(pattern.clone());
            }
        }
        urls.sort();
        urls.dedup();
        self.scrapers.retain(|url, _| urls.contains(url));
        let mut readings = Vec::new();
        for url in &urls {
            if !self.scrapers.contains_key(url) {
                match Scraper::new(url, self.timeout, self.mapping.clone()) {
                    Ok(scraper) => {
                        self.scrapers.insert(url.clone(), scraper);
                    }
                    Err(e) => {
                        self.refused.insert(url.clone(), e.to_string());
                        continue;
                    }
                }
            }
            if let Some(scraper) = self.scrapers.get_mut(url) {
                readings.push(scraper.scrape());
            }
        }
        // With a `{pid}` pattern most processes serve nothing: keep the ones that answer.
        let answered: Vec<&AppMetrics> = readings
            .iter()
            .filter(|r| r.unavailable.is_none())
            .collect();
        if answered.is_empty() {
            let why: Vec<String> = readings
                .iter()
                .filter_map(|r| r.unavailable.as_ref().map(|u| format!("{}: {u}", r.source)))
                .chain(
                    self.refused
                        .iter()
                        .map(|(url, why)| format!("{url}: {why}")),
                )
                .collect();
            return Some(AppMetrics {
                source: urls.join(" "),
                unavailable: Some(if why.is_empty() {
                    "no endpoint to scrape".to_string()
                } else {
                    why.join("; ")
                }),
                ..AppMetrics::default()
            });
        }
        Some(merge(&answered))
    }
}

fn merge(readings: &[&AppMetrics]) -> AppMetrics {
    let sum = |get: fn(&AppMetrics) -> Option<f64>| {
        let values: Vec<f64> = readings.iter().filter_map(|r| get(r)).collect();
        (!values.is_empty()).then(|| values.iter().sum())
    };
    let max = |get: fn(&AppMetrics) -> Option<f64>| {
        readings.iter().filter_map(|r| get(r)).reduce(f64::max)
    };
    AppMetrics {
        source: readings
            .iter()
            .map(|r| r.source.as_str())
            .collect::<Vec<_>>()
            .join(" "),
        queue_depth: sum(|r| r.queue_depth),
        completions_total: sum(|r| r.completions_total),
        failures_total: sum(|r| r.failures_total),
        latency_p50_seconds: max(|r| r.latency_p50_seconds),
        latency_p90_seconds: max(|r| r.latency_p90_seconds),
        latency_p99_seconds: max(|r| r.latency_p99_seconds),
        unavailable: None,
    }
}

/// The optional sources of a watch.
pub struct Sources {
    pub gpu: Option<Box<dyn GpuSource>>,
    pub scrapes: Scrapes,
}

impl Sources {
    /// No GPU, no metrics endpoint.
    pub fn none() -> Self {
        Sources {
            gpu: None,
            scrapes: Scrapes::new(
                Vec::new(),
                Duration::from_secs(1),
                MetricsMapping::default(),
            ),
        }
    }

    /// The GPUs (unless `gpu` is off) and the endpoints of `scrape`.
    pub fn open(gpu: bool, scrape: &ScrapeSettings) -> Self {
        Sources {
            gpu: gpu.then(crate::source::gpu::open_gpu_source),
            scrapes: Scrapes::new(scrape.urls.clone(), scrape.timeout, scrape.mapping.clone()),
        }
    }

    /// Reads the GPUs and the endpoints into `sample`, with "unavailable" entries for
    /// what could not be read.
    pub fn fill(&mut self, sample: &mut Sample) {
        if let Some(gpu) = self.gpu.as_mut() {
            let reading = gpu.sample();
            if let Some(reason) = &reading.unavailable {
                sample.unavailable.push(Unavailable {
                    source: "gpu".to_string(),
                    pid: None,
                    reason: reason.clone(),
                    fix: None,
                });
            }
            sample.gpu = Some(reading);
        }
        let pids: Vec<i32> = sample.processes.iter().map(|p| p.pid).collect();
        if let Some(app) = self.scrapes.scrape(&pids) {
            if let Some(reason) = &app.unavailable {
                sample.unavailable.push(Unavailable {
                    source: "metrics".to_string(),
                    pid: None,
                    reason: reason.clone(),
                    fix: Some("check --metrics-url and that the endpoint serves the Prometheus text format".to_string()),
                });
            }
            sample.app = Some(app);
        }
    }
}
