//! `queue-overload`: a micro-batching inference server fed faster than it serves.
//!
//! A batcher takes up to 32 requests, or fewer once the oldest has waited the 50 ms
//! batching window, and serves the batch in `--service-ms`. A producer offers
//! `--request-rate` requests per second (default 3 × what the server can serve).
//! Broken: the queue is unbounded, so depth and latency grow without limit. Fixed: the
//! queue is bounded (`--queue-cap`, default 1000) and requests beyond it are rejected at
//! once (backpressure), so latency stays bounded. Metrics are served in the Prometheus
//! text format on 127.0.0.1.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};

use super::common;
use super::metrics::{LatencyStats, MetricsView, render_metrics, serve_metrics};
use super::{Ctx, WorkloadOptions};

/// Largest batch the server takes.
pub const MAX_BATCH: usize = 32;
/// How long the oldest request waits for a batch to fill.
pub const BATCH_WINDOW: Duration = Duration::from_millis(50);
const PRODUCER_TICK: Duration = Duration::from_millis(10);

/// Whether a batch should be served now.
pub fn batch_ready(len: usize, oldest_age: Duration, max_batch: usize, window: Duration) -> bool {
    len >= max_batch || (len > 0 && oldest_age >= window)
}

/// Takes the oldest `max` requests off the queue.
pub fn take_batch<T>(queue: &mut VecDeque<T>, max: usize) -> Vec<T> {
    let take = queue.len().min(max);
    queue.drain(..take).collect()
}

/// Requests the server serves per second when every batch is full.
pub fn capacity_per_second(service: Duration) -> f64 {
    MAX_BATCH as f64 / service.as_secs_f64().max(1e-6)
}

/// How the server is configured.
#[derive(Debug, Clone, Copy)]
pub struct ServerConfig {
    pub service: Duration,
    pub request_rate: u64,
    /// `None`: unbounded queue.
    pub queue_cap: Option<usize>,
    pub metrics_port: u16,
}

#[derive(Default)]
struct QueueState {
    enqueued: VecDeque<Instant>,
    depth_max: u64,
}

/// The server's shared state.
pub struct InferenceServer {
    config: ServerConfig,
    queue: Mutex<QueueState>,
    ready: Condvar,
    latency: Mutex<LatencyStats>,
    requests_total: AtomicU64,
    rejected_total: AtomicU64,
    stop: AtomicBool,
}

/// What the server measured by the end of a run.
#[derive(Debug, Clone)]
pub struct ServerReport {
    pub latency: LatencyStats,
    pub requests_total: u64,
    pub rejected_total: u64,
    pub depth_at_end: u64,
    pub depth_max: u64,
    pub oldest_pending_seconds: f64,
    pub seconds: f64,
}

impl InferenceServer {
    pub fn new(config: ServerConfig) -> InferenceServer {
        InferenceServer {
            config,
            queue: Mutex::new(QueueState::default()),
            ready: Condvar::new(),
            latency: Mutex::new(LatencyStats::new()),
            requests_total: AtomicU64::new(0),
            rejected_total: AtomicU64::new(0),
            stop: AtomicBool::new(false),
        }
    }

    fn lock_queue(&self) -> MutexGuard<'_, QueueState> {
        self.queue
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Offers `count` requests; returns how many were rejected because the queue was full.
    pub fn submit(&self, count: u64, now: Instant) -> u64 {
        let mut rejected = 0;
        {
            let mut queue = self.lock_queue();
            for _ in 0..count {
                if self
                    .config
                    .queue_cap
                    .is_some_and(|cap| queue.enqueued.len() >= cap)
                {
                    rejected += 1;
                } else {
                    queue.enqueued.push_back(now);
                }
            }
            queue.depth_max = queue.depth_max.max(queue.enqueued.len() as u64);
        }
        self.rejected_total.fetch_add(rejected, Ordering::Relaxed);
        self.ready.notify_one();
        rejected
    }

    pub fn depth(&self) -> u64 {
        self.lock_queue().enqueued.len() as u64
    }

    pub fn metrics_text(&self) -> String {
        let depth = self.depth();
        let latency = self
            .latency
            .lock()
            .map(|stats| stats.clone())
            .unwrap_or_default();
        render_metrics(&MetricsView {
            queue_depth: depth,
            requests_total: self.requests_total.load(Ordering::Relaxed),
            rejected_total: self.rejected_total.load(Ordering::Relaxed),
            latency: &latency,
        })
    }

    /// Waits for the next batch; `None` once stopped.
    fn next_batch(&self) -> Option<Vec<Instant>> {
        let mut queue = self.lock_queue();
        loop {
            if self.stop.load(Ordering::Relaxed) {
                return None;
            }
            let wait = match queue.enqueued.front() {
                None => BATCH_WINDOW,
                Some(oldest) => {
                    let age = oldest.elapsed();
                    if batch_ready(queue.enqueued.len(), age, MAX_BATCH, BATCH_WINDOW) {
                        return Some(take_batch(&mut queue.enqueued, MAX_BATCH));
                    }
                    BATCH_WINDOW.saturating_sub(age)
                }
            };
            queue = match self.ready.wait_timeout(queue, wait) {
                Ok((queue, _)) => queue,
                Err(poisoned) => poisoned.into_inner().0,
            };
        }
    }

    fn batcher(&self) {
        while let Some(batch) = self.next_batch() {
            // The simulated model: one forward pass per batch.
            std::thread::sleep(self.config.service);
            let now = Instant::now();
            if let Ok(mut latency) = self.latency.lock() {
                for enqueued in &batch {
                    latency.record(now.duration_since(*enqueued).as_secs_f64());
                }
            }
            self.requests_total
                .fetch_add(batch.len() as u64, Ordering::Relaxed);
        }
    }

    fn producer(&self) {
        let per_tick = self.config.request_rate as f64 * PRODUCER_TICK.as_secs_f64();
        let start = Instant::now();
        let mut offered = 0.0_f64;
        let mut tick = 0u32;
        while !self.stop.load(Ordering::Relaxed) {
            tick += 1;
            common::sleep_until(start + PRODUCER_TICK * tick);
            offered += per_tick;
            let count = offered.floor();
            offered -= count;
            self.submit(count as u64, Instant::now());
        }
    }
}

/// Runs the server until `ctx.deadline`, printing depth once a second.
pub fn run_server(ctx: &Ctx, config: ServerConfig) -> Result<ServerReport> {
    let server = Arc::new(InferenceServer::new(config));
    let url = {
        let server = Arc::clone(&server);
        serve_metrics(config.metrics_port, Arc::new(move || server.metrics_text()))?
    };
    common::emit_metrics(&url);
    ctx.say(format!(
        "serving batches of ≤{MAX_BATCH} in {}ms (capacity {:.0} req/s), offered {} req/s, queue {}",
        config.service.as_millis(),
        capacity_per_second(config.service),
        config.request_rate,
        config
            .queue_cap
            .map_or("unbounded".to_string(), |cap| format!("bounded at {cap}"))
    ));
    let start = Instant::now();
    let batcher = {
        let server = Arc::clone(&server);
        std::thread::Builder::new()
            .name("batcher".to_string())
            .spawn(move || server.batcher())?
    };
    let producer = {
        let server = Arc::clone(&server);
        std::thread::Builder::new()
            .name("producer".to_string())
            .spawn(move || server.producer())?
    };
    if config.queue_cap.is_none()
        && config.request_rate as f64 > capacity_per_second(config.service)
    {
        common::emit_onset("queue-overload");
    }
    let mut second = 0;
    while Instant::now() < ctx.deadline {
        second += 1;
        common::sleep_until((start + Duration::from_secs(second)).min(ctx.deadline));
        if Instant::now() < ctx.deadline {
            ctx.say(format!(
                "queue depth {}, completed {}, rejected {}",
                server.depth(),
                server.requests_total.load(Ordering::Relaxed),
                server.rejected_total.load(Ordering::Relaxed)
            ));
        }
    }
    server.stop.store(true, Ordering::Relaxed);
    server.ready.notify_all();
    let _ = producer.join();
    let _ = batcher.join();
    let queue = server.lock_queue();
    let latency = server
        .latency
        .lock()
        .map(|stats| stats.clone())
        .unwrap_or_default();
    Ok(ServerReport {
        latency,
        requests_total: server.requests_total.load(Ordering::Relaxed),
        rejected_total: server.rejected_total.load(Ordering::Relaxed),
        depth_at_end: queue.enqueued.len() as u64,
        depth_max: queue.depth_max,
        oldest_pending_seconds: queue
            .enqueued
            .front()
            .map_or(0.0, |oldest| oldest.elapsed().as_secs_f64()),
        seconds: start.elapsed().as_secs_f64(),
    })
}

pub fn run(ctx: &Ctx, args: &WorkloadOptions) -> Result<i32> {
    if args.service_ms == 0 || args.service_ms > 10_000 {
        bail!(
            "--service-ms {} is out of range: 1 to 10000",
            args.service_ms
        );
    }
    if args.queue_cap == 0 {
        bail!("--queue-cap must be at least 1");
    }
    let service = Duration::from_millis(args.service_ms);
    let request_rate = args
        .request_rate
        .unwrap_or((3.0 * capacity_per_second(service)).ceil() as u64);
    let config = ServerConfig {
        service,
        request_rate,
        queue_cap: ctx.fixed().then_some(args.queue_cap),
        metrics_port: args.metrics_port,
    };
    let report = run_server(ctx, config)?;
    ctx.say(format!("latency {}", report.latency.summary()));
    ctx.say(format!(
        "end: {} requests still queued (oldest waited {:.2}s), {} rejected",
        report.depth_at_end, report.oldest_pending_seconds, report.rejected_total
    ));
    Ok(ctx.finish(&server_result(ctx, &report)))
}

/// The result line of a server run.
pub fn server_result(ctx: &Ctx, report: &ServerReport) -> common::ScenarioResult {
    let mut result = ctx.result(true);
    result.latency_p50_seconds = report.latency.quantile(0.5);
    result.latency_p99_seconds = report.latency.quantile(0.99);
    result.latency_max_seconds = report.latency.max();
    result.queue_depth_max = Some(report.depth_max);
    result.rejected = Some(report.rejected_total);
    result.work_units = Some(report.requests_total);
    result.throughput = Some(report.requests_total as f64 / report.seconds.max(1e-9));
    result.detail = format!(
        "{} queued at the end, oldest waiting {:.2}s",
        report.depth_at_end, report.oldest_pending_seconds
    );
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_fill_or_wait_for_the_window() {
        let window = BATCH_WINDOW;
        assert!(!batch_ready(0, Duration::from_secs(1), 32, window));
        assert!(!batch_ready(5, Duration::from_millis(10), 32, window));
        assert!(batch_ready(5, Duration::from_millis(50), 32, window));
        assert!(batch_ready(32, Duration::ZERO, 32, window));
        let mut queue: VecDeque<u32> = (0..40).collect();
        assert_eq!(take_batch(&mut queue, 32), (0..32).collect::<Vec<_>>());
        assert_eq!(take_batch(&mut queue, 32), (32..40).collect::<Vec<_>>());
        assert!(take_batch(&mut queue, 32).is_empty());
        assert!((capacity_per_second(Duration::from_millis(20)) - 1600.0).abs() < 1e-6);
    }

    #[test]
    fn bounded_queue_rejects_and_unbounded_grows() {
        let config = ServerConfig {
            service: Duration::from_millis(1),
            request_rate: 0,
            queue_cap: Some(10),
            metrics_port: 0,
        };
        let bounded = InferenceServer::new(config);
        assert_eq!(bounded.submit(25, Instant::now()), 15);
        assert_eq!(bounded.depth(), 10);
        assert!(
            bounded
                .metrics_text()
                .contains("inference_rejected_total 15\n")
        );
        let unbounded = InferenceServer::new(ServerConfig {
            queue_cap: None,
            ..config
        });
        assert_eq!(unbounded.submit(25, Instant::now()), 0);
        assert_eq!(unbounded.depth(), 25);
        let batch = unbounded.next_batch().unwrap();
        assert_eq!(batch.len(), 25.min(MAX_BATCH));
    }
}
