//! The optional sources read next to each sample: the machine's GPUs (NVML) and the
//! application's own metrics endpoints. Each is optional; what cannot be read becomes
//! a visible "unavailable" entry in the sample, never an error.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::model::metrics::MetricsMapping;
use crate::model::{AppMetrics, Sample, Unavailable};
use crate::source::gpu::GpuSource;
use crate::source::scrape::worker::{Background, Status};
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

/// The most endpoints scraped at once (one thread each); more are reported, not scraped.
pub const MAX_ENDPOINTS: usize = 32;

/// A scrape result older than this many intervals is not used: the sample says the
/// endpoint gave no answer in time instead.
const MAX_AGE_INTERVALS: u32 = 2;

/// Metrics endpoints to scrape: fixed URLs, or patterns with `{pid}` expanded for each
/// process of the tree.
///
/// Each endpoint is scraped on its own thread ([`Background`]); [`Scrapes::scrape`]
/// asks for the next scrape and takes the newest finished one, so it never waits for an
/// endpoint however slow, hung or large it is.
pub struct Scrapes {
    patterns: Vec<String>,
    timeout: Duration,
    mapping: MetricsMapping,
    /// The sampling interval: results older than two of them are stale.
    interval: Duration,
    /// URL → its scraper thread (a scraper keeps the previous histogram for windowed
    /// quantiles).
    scrapers: BTreeMap<String, Background>,
    /// URLs whose scraper could not be made, with why (reported once per sample).
    refused: BTreeMap<String, String>,
}

impl Scrapes {
    pub fn new(patterns: Vec<String>, timeout: Duration, mapping: MetricsMapping) -> Self {
        Scrapes {
            patterns,
            timeout,
            mapping,
            interval: Duration::from_secs(1),
            scrapers: BTreeMap::new(),
            refused: BTreeMap::new(),
        }
    }

    /// The sampling interval (default 1 s): a result is used while it is at most two
    /// intervals old.
    pub fn set_interval(&mut self, interval: Duration) {
        if !interval.is_zero() {
            self.interval = interval;
        }
    }

    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// Asks every endpoint of the tree for a scrape and takes the newest finished
    /// results, without waiting; their figures are merged (depths, completions and
    /// failures added up, latencies the worst). A result older than two intervals, or
    /// none yet, is "unavailable: no answer within …".
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
        let mut over_cap = 0_usize;
        for url in &urls {
            if !self.scrapers.contains_key(url) {
                if self.refused.contains_key(url) {
                    continue;
                }
                if self.scrapers.len() >= MAX_ENDPOINTS {
                    over_cap += 1;
                    continue;
                }
                let started = Scraper::new(url, self.timeout, self.mapping.clone())
                    .map_err(|e| e.to_string())
                    .and_then(|scraper| {
                        Background::start(scraper)
                            .map_err(|e| format!("cannot start a scraper thread: {e}"))
                    });
                match started {
                    Ok(background) => {
                        self.scrapers.insert(url.clone(), background);
                    }
                    Err(why) => {
                        self.refused.insert(url.clone(), why);
                        continue;
                    }
                }
            }
            if let Some(background) = self.scrapers.get(url) {
                background.request();
                readings.push(self.reading(url, &background.status(), Instant::now()));
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
                .chain((over_cap > 0).then(|| {
                    format!("{over_cap} more endpoints not scraped (at most {MAX_ENDPOINTS})")
                }))
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

    /// What one endpoint's newest result says at `now`.
    fn reading(&self, url: &str, status: &Status, now: Instant) -> AppMetrics {
        let max_age = self.interval * MAX_AGE_INTERVALS;
        if let Some(latest) = &status.latest {
            let age = now.saturating_duration_since(latest.finished);
            if age <= max_age {
                let mut metrics = latest.metrics.clone();
                metrics.age_seconds = Some(age.as_secs_f64());
                return metrics;
            }
        }
        // Stable texts (no running counts): a sample lists each new reason once.
        let reason = match &status.latest {
            None if status
                .first_request
                .is_none_or(|first| now.saturating_duration_since(first) <= max_age) =>
            {
                "no answer yet (the first scrape is under way)".to_string()
            }
            _ => format!(
                "no answer within {} ms (2 intervals){}; --metrics-timeout is {} ms",
                max_age.as_millis(),
                if status.busy_since.is_some() {
                    ", a scrape is still waiting"
                } else {
                    ""
                },
                self.timeout.as_millis()
            ),
        };
        AppMetrics {
            source: url.to_string(),
            unavailable: Some(reason),
            ..AppMetrics::default()
        }
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
        age_seconds: readings
            .iter()
            .filter_map(|r| r.age_seconds)
            .reduce(f64::max),
        skipped: readings
            .iter()
            .flat_map(|r| r.skipped.iter().map(|why| format!("{}: {why}", r.source)))
            .collect(),
    }
}

/// The optional sources of a watch.
pub struct Sources {
    pub gpu: Option<Box<dyn GpuSource>>,
    pub scrapes: Scrapes,
    /// Stacks of processes whose waits /proc cannot judge (`None`: /proc alone).
    pub waits: Option<crate::collect::waits::WaitProber>,
    /// Bursts of GIL reads from the memory of CPython processes that look contended
    /// (`None`: /proc alone).
    pub gil: Option<crate::collect::gil::GilProber>,
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
            waits: None,
            gil: None,
        }
    }

    /// The GPUs (unless `gpu` is off) and the endpoints of `scrape`.
    pub fn open(gpu: bool, scrape: &ScrapeSettings) -> Self {
        Sources {
            gpu: gpu.then(crate::source::gpu::open_gpu_source),
            scrapes: Scrapes::new(scrape.urls.clone(), scrape.timeout, scrape.mapping.clone()),
            waits: None,
            gil: Some(crate::collect::gil::GilProber::standard()),
        }
    }

    /// Takes the stacks of processes /proc cannot judge with `prober`.
    pub fn with_waits(mut self, prober: Option<crate::collect::waits::WaitProber>) -> Self {
        self.waits = prober;
        self
    }

    /// The sampling interval, against which scrape results are judged stale.
    pub fn set_interval(&mut self, interval: Duration) {
        self.scrapes.set_interval(interval);
    }

    /// Reads the GPUs and the newest finished scrapes into `sample`, with "unavailable"
    /// entries for what could not be read. Never waits for an endpoint; the time spent
    /// here is added to the sample's duration.
    pub fn fill(&mut self, sample: &mut Sample) {
        let started = Instant::now();
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
            for why in &app.skipped {
                sample.unavailable.push(Unavailable {
                    source: "metrics".to_string(),
                    pid: None,
                    reason: why.clone(),
                    fix: None,
                });
            }
            sample.app = Some(app);
        }
        if let Some(waits) = self.waits.as_mut() {
            waits.fill(sample);
        }
        if let Some(gil) = self.gil.as_mut() {
            gil.fill(sample);
        }
        sample.cost.duration_seconds += started.elapsed().as_secs_f64();
    }
}
