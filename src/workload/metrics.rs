//! Latency recording (hdrhistogram) and the Prometheus text-format endpoint the
//! inference server scenarios serve on 127.0.0.1.

use std::fmt::Write as _;
use std::sync::Arc;

use anyhow::{Result, anyhow};
use hdrhistogram::Histogram;

/// Upper bounds (seconds) of the latency histogram buckets; `+Inf` is added.
pub const LATENCY_BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
];
/// Largest latency the histogram tracks exactly (one hour, in microseconds).
const MAX_MICROS: u64 = 3_600_000_000;

/// Latencies of completed requests: quantiles from hdrhistogram, Prometheus buckets,
/// sum and count.
#[derive(Debug, Clone)]
pub struct LatencyStats {
    histogram: Histogram<u64>,
    bucket_counts: [u64; LATENCY_BUCKETS.len()],
    sum_seconds: f64,
    count: u64,
}

impl Default for LatencyStats {
    fn default() -> Self {
        LatencyStats::new()
    }
}

impl LatencyStats {
    pub fn new() -> LatencyStats {
        let histogram = Histogram::new_with_bounds(1, MAX_MICROS, 3)
            .expect("constant histogram bounds are valid");
        LatencyStats {
            histogram,
            bucket_counts: [0; LATENCY_BUCKETS.len()],
            sum_seconds: 0.0,
            count: 0,
        }
    }

    pub fn record(&mut self, seconds: f64) {
        let seconds = seconds.max(0.0);
        let micros = (seconds * 1e6).round() as u64;
        self.histogram
            .saturating_record(micros.clamp(1, MAX_MICROS));
        for (bound, count) in LATENCY_BUCKETS.iter().zip(self.bucket_counts.iter_mut()) {
            if seconds <= *bound {
                *count += 1;
            }
        }
        self.sum_seconds += seconds;
        self.count += 1;
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    /// The latency at quantile `q` (0..=1) in seconds; `None` before any request.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        (self.count > 0).then(|| self.histogram.value_at_quantile(q) as f64 / 1e6)
    }

    pub fn max(&self) -> Option<f64> {
        (self.count > 0).then(|| self.histogram.max() as f64 / 1e6)
    }

    /// `p50 12.0ms, p99 1.20s, max 1.31s` for people.
    pub fn summary(&self) -> String {
        let fmt = |v: Option<f64>| v.map_or("-".to_string(), crate::units::format_seconds);
        format!(
            "p50 {}, p99 {}, max {} ({} requests)",
            fmt(self.quantile(0.5)),
            fmt(self.quantile(0.99)),
            fmt(self.max()),
            self.count
        )
    }
}

/// What the endpoint exposes at one moment.
#[derive(Debug, Clone)]
pub struct MetricsView<'a> {
    pub queue_depth: u64,
    pub requests_total: u64,
    pub rejected_total: u64,
    pub latency: &'a LatencyStats,
}

/// The Prometheus text exposition format (version 0.0.4).
pub fn render_metrics(view: &MetricsView<'_>) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# HELP inference_queue_depth Requests waiting in the inference queue.\n\
         # TYPE inference_queue_depth gauge\n\
         inference_queue_depth {}",
        view.queue_depth
    );
    let _ = writeln!(
        out,
        "# HELP inference_latency_seconds Time from enqueue to response of completed requests.\n\
         # TYPE inference_latency_seconds histogram"
    );
    for (bound, count) in LATENCY_BUCKETS.iter().zip(view.latency.bucket_counts) {
        let _ = writeln!(
            out,
            "inference_latency_seconds_bucket{{le=\"{bound}\"}} {count}"
        );
    }
    let _ = writeln!(
        out,
        "inference_latency_seconds_bucket{{le=\"+Inf\"}} {}\n\
         inference_latency_seconds_sum {}\n\
         inference_latency_seconds_count {}",
        view.latency.count, view.latency.sum_seconds, view.latency.count
    );
    let _ = writeln!(
        out,
        "# HELP inference_requests_total Requests completed.\n\
         # TYPE inference_requests_total counter\n\
         inference_requests_total {}",
        view.requests_total
    );
    let _ = writeln!(
        out,
        "# HELP inference_rejected_total Requests rejected because the queue was full.\n\
         # TYPE inference_rejected_total counter\n\
         inference_rejected_total {}",
        view.rejected_total
    );
    out
}

/// Serves `render()` at `/metrics` on 127.0.0.1:`port` (0 picks a free port) from a
/// background thread; returns the URL.
pub fn serve_metrics(port: u16, render: Arc<dyn Fn() -> String + Send + Sync>) -> Result<String> {
    let server = tiny_http::Server::http(("127.0.0.1", port))
        .map_err(|err| anyhow!("cannot listen on 127.0.0.1:{port}: {err}"))?;
    let address = server
        .server_addr()
        .to_ip()
        .ok_or_else(|| anyhow!("metrics server has no IP address"))?;
    let url = format!("http://{address}/metrics");
    std::thread::Builder::new()
        .name("metrics-http".to_string())
        .spawn(move || {
            for request in server.incoming_requests() {
                let response = if request.url() == "/metrics" {
                    let body = render();
                    let header = tiny_http::Header::from_bytes(
                        &b"Content-Type"[..],
                        &b"text/plain; version=0.0.4; charset=utf-8"[..],
                    );
                    let response = tiny_http::Response::from_string(body);
                    match header {
                        Ok(header) => response.with_header(header),
                        Err(()) => response,
                    }
                } else {
                    tiny_http::Response::from_string("not found: try /metrics\n")
                        .with_status_code(404)
                };
                let _ = request.respond(response);
            }
        })?;
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_of_known_latencies() {
        let mut stats = LatencyStats::new();
        assert_eq!(stats.quantile(0.5), None);
        for ms in 1..=100 {
            stats.record(ms as f64 / 1000.0);
        }
        let p50 = stats.quantile(0.5).unwrap();
        let p99 = stats.quantile(0.99).unwrap();
        assert!((p50 - 0.050).abs() < 0.001, "{p50}");
        assert!((p99 - 0.099).abs() < 0.001, "{p99}");
        assert!((stats.max().unwrap() - 0.100).abs() < 0.001);
        assert_eq!(stats.count(), 100);
        assert!(stats.summary().contains("100 requests"));
    }

    #[test]
    fn text_format_has_help_type_buckets_sum_and_count() {
        let mut stats = LatencyStats::new();
        stats.record(0.004);
        stats.record(0.2);
        stats.record(7.0);
        let text = render_metrics(&MetricsView {
            queue_depth: 42,
            requests_total: 3,
            rejected_total: 5,
            latency: &stats,
        });
        assert!(text.contains("# TYPE inference_queue_depth gauge\ninference_queue_depth 42\n"));
        assert!(text.contains("# TYPE inference_latency_seconds histogram\n"));
        assert!(text.contains("inference_latency_seconds_bucket{le=\"0.005\"} 1\n"));
        assert!(text.contains("inference_latency_seconds_bucket{le=\"0.25\"} 2\n"));
        assert!(text.contains("inference_latency_seconds_bucket{le=\"5\"} 2\n"));
        assert!(text.contains("inference_latency_seconds_bucket{le=\"10\"} 3\n"));
        assert!(text.contains("inference_latency_seconds_bucket{le=\"+Inf\"} 3\n"));
        assert!(text.contains("inference_latency_seconds_count 3\n"));
        assert!(text.contains("inference_latency_seconds_sum 7.204"));
        assert!(
            text.contains("# TYPE inference_requests_total counter\ninference_requests_total 3\n")
        );
        assert!(text.contains("inference_rejected_total 5\n"));
        // Every metric line is `name{labels} value` or a comment.
        for line in text.lines() {
            assert!(
                line.starts_with('#') || line.split(' ').count() == 2,
                "{line}"
            );
        }
    }
}
