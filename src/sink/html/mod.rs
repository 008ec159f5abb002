//! The HTML report (`run --html`, `snapshot --html`, `replay --html`): one self-contained
//! page — inline SVG charts drawn with plotters and inline CSS, nothing fetched — with
//! the watch over time (threads by state, CPU against usable CPUs, run-queue wait and
//! throttling, RSS against the memory limit, GPU memory, queue depth and latency), the
//! findings and alerts marked on the time axis, then the diagnosis.
//!
//! [`ChartData`] gathers what the charts need from each judged sample (the
//! [`HtmlSink`] feeds it from the watch loop; `snapshot` feeds it its two samples);
//! [`Page`] is the small view model [`write_page`] renders. Every string that may come
//! from a watched process is escaped ([`escape`]).

mod charts;
mod page;

#[cfg(test)]
mod tests;

use anyhow::Result;

use crate::engine::sink::{Control, Sink};
use crate::engine::{Event, Values, Watch};
use crate::model::{Finding, Sample, Severity};
use crate::timeline::Timeline;

pub use page::{COMMAND_SHOWN_CHARS, Page, TITLE_CHARS, escape, isolate, shorten, write_page};

/// The most points a chart keeps: past it, every other point is dropped and only every
/// second sample is kept from then on (a watch of days stays a few hundred KiB).
pub const MAX_POINTS: usize = 4096;
/// The most marks kept on the time axis; later ones are counted, not drawn.
pub const MAX_MARKS: usize = 500;

/// What the charts show of one sample.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Point {
    pub elapsed_seconds: f64,
    /// Threads by what they do (the timeline's wait classification).
    pub running: u32,
    pub lock_waiters: u32,
    pub io_waiters: u32,
    pub input_waiters: u32,
    pub sleepers: u32,
    pub unknown_waiters: u32,
    /// CPUs' worth of CPU the tree used (`cpu_utilization_cpus`).
    pub cpu_used: Option<f64>,
    pub usable_cpus: f64,
    pub runqueue_wait_ratio: Option<f64>,
    /// Share of the quota's periods in which the cgroup was throttled.
    pub throttled_ratio: Option<f64>,
    pub rss_bytes: f64,
    pub memory_limit_bytes: Option<f64>,
    /// GPU memory used and in total over the machine's GPUs, where read.
    pub gpu_used_bytes: Option<f64>,
    pub gpu_total_bytes: Option<f64>,
    /// From the application's own metrics, where scraped.
    pub queue_depth: Option<f64>,
    pub latency_p50_seconds: Option<f64>,
    pub latency_p99_seconds: Option<f64>,
}

/// A finding or an alert, placed on the time axis.
#[derive(Debug, Clone, PartialEq)]
pub struct Mark {
    pub elapsed_seconds: f64,
    pub severity: Severity,
    /// The finding's kind ("deadlock") or "alert RULE".
    pub what: String,
    pub summary: String,
}

/// The series behind the charts, gathered sample by sample.
#[derive(Debug, Clone, Default)]
pub struct ChartData {
    points: Vec<Point>,
    /// Keep one sample in `stride` (doubles each time the points are thinned).
    stride: usize,
    samples: usize,
    marks: Vec<Mark>,
    marks_left_out: usize,
    /// Why the GPUs could not be read, as the newest sample said.
    gpu_note: Option<String>,
    /// Why the application's metrics could not be read, as the newest sample said.
    app_note: Option<String>,
    first_elapsed: Option<f64>,
    last_elapsed: f64,
}

impl ChartData {
    pub fn new() -> Self {
        ChartData {
            stride: 1,
            ..ChartData::default()
        }
    }

    /// Adds the newest sample of `timeline` (judged, with its metric `values`) and the
    /// findings and alerts among `events`.
    pub fn observe(&mut self, timeline: &Timeline, values: &Values, events: &[Event]) {
        for event in events {
            match event {
                Event::Finding(f) => self.mark(Mark {
                    elapsed_seconds: f.elapsed_seconds,
                    severity: f.finding.severity,
                    what: f.finding.kind.to_string(),
                    summary: f.finding.summary.clone(),
                }),
                Event::Alert(a) => self.mark(Mark {
                    elapsed_seconds: a.elapsed_seconds,
                    severity: a.alert.severity,
                    what: format!("alert {}", a.alert.rule),
                    summary: a.alert.message.clone(),
                }),
                _ => {}
            }
        }
        let Some(summary) = timeline.latest_summary() else {
            return;
        };
        let latest = timeline.latest();
        if let Some(gpu) = latest.and_then(|s| s.gpu.as_ref()) {
            self.gpu_note = gpu.unavailable.clone();
        }
        if let Some(app) = &summary.app {
            self.app_note = app.unavailable.clone();
        }
        self.first_elapsed.get_or_insert(summary.elapsed_seconds);
        self.last_elapsed = summary.elapsed_seconds;
        self.samples += 1;
        if !(self.samples - 1).is_multiple_of(self.stride.max(1)) {
            return;
        }
        let get = |name: &str| values.get(name).copied().filter(|v| v.is_finite());
        let gpu = latest
            .and_then(|s| s.gpu.as_ref())
            .filter(|g| !g.devices.is_empty());
        let app = summary.app.as_ref().filter(|a| a.unavailable.is_none());
        let mut point = Point {
            elapsed_seconds: summary.elapsed_seconds,
            cpu_used: get("cpu_utilization_cpus"),
            usable_cpus: get("usable_cpus").unwrap_or(summary.usable_cpus),
            runqueue_wait_ratio: get("runqueue_wait_ratio"),
            throttled_ratio: get("cpu_throttled_ratio"),
            rss_bytes: summary.rss_bytes() as f64,
            memory_limit_bytes: get("memory_limit_bytes"),
            gpu_used_bytes: gpu.map(|g| g.devices.iter().map(|d| d.memory_used_bytes as f64).sum()),
            gpu_total_bytes: gpu
                .map(|g| g.devices.iter().map(|d| d.memory_total_bytes as f64).sum()),
            queue_depth: app.and_then(|a| a.queue_depth),
            latency_p50_seconds: app.and_then(|a| a.latency_p50_seconds),
            latency_p99_seconds: app.and_then(|a| a.latency_p99_seconds),
            ..Point::default()
        };
        for p in &summary.processes {
            point.running += p.running;
            point.lock_waiters += p.lock_waiters;
            point.io_waiters += p.io_waiters;
            point.input_waiters += p.input_waiters;
            point.sleepers += p.sleepers;
            point.unknown_waiters += p.unknown_waiters;
        }
        self.points.push(point);
        if self.points.len() >= MAX_POINTS {
            // Thin out: keep every other point, and from now on every other sample.
            let mut index = 0;
            self.points.retain(|_| {
                index += 1;
                index % 2 == 1
            });
            self.stride = self.stride.saturating_mul(2);
        }
    }

    /// The series of a few samples judged on their own (`snapshot`'s two): each is
    /// pushed onto a timeline and its metric values taken as a watch would.
    pub fn from_samples<'s>(samples: impl IntoIterator<Item = &'s Sample>) -> Self {
        let mut data = ChartData::new();
        let mut timeline = Timeline::new(f64::INFINITY);
        for sample in samples {
            timeline.push(sample.clone());
            let values = crate::engine::metric_values(&timeline);
            data.observe(&timeline, &values, &[]);
        }
        data
    }

    /// Marks `findings` on the time axis at `elapsed_seconds` (a one-shot diagnosis).
    pub fn mark_findings(&mut self, elapsed_seconds: f64, findings: &[Finding]) {
        for finding in findings {
            self.mark(Mark {
                elapsed_seconds,
                severity: finding.severity,
                what: finding.kind.to_string(),
                summary: finding.summary.clone(),
            });
        }
    }

    fn mark(&mut self, mark: Mark) {
        if self.marks.len() < MAX_MARKS {
            self.marks.push(mark);
        } else {
            self.marks_left_out += 1;
        }
    }

    pub fn points(&self) -> &[Point] {
        &self.points
    }

    pub fn marks(&self) -> &[Mark] {
        &self.marks
    }

    /// Samples seen (more than [`ChartData::points`] holds once thinned).
    pub fn samples(&self) -> usize {
        self.samples
    }

    /// Seconds from the first sample to the last.
    pub fn span_seconds(&self) -> f64 {
        self.first_elapsed
            .map_or(0.0, |first| (self.last_elapsed - first).max(0.0))
    }
}

/// The watch loop's side of the page: gathers the [`ChartData`] of every sample.
#[derive(Debug, Default)]
pub struct HtmlSink {
    pub data: ChartData,
}

impl HtmlSink {
    pub fn new() -> Self {
        HtmlSink {
            data: ChartData::new(),
        }
    }
}

impl Sink for HtmlSink {
    fn sample(&mut self, watch: &Watch, events: &[Event]) -> Result<Control> {
        self.data
            .observe(&watch.timeline, watch.last_values(), events);
        Ok(Control::Continue)
    }
}
