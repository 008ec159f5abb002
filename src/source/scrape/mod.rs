//! Application metrics: queue depth, latency, completions and failures scraped from the
//! job's own Prometheus (or OpenMetrics) endpoint, once per interval.
//!
//! A [`Scraper`] owns one endpoint. [`Scraper::scrape`] never panics and never takes
//! longer than its timeout (plus the bounded cost of parsing at most
//! [`DEFAULT_MAX_SAMPLES`] series): an endpoint that is down, slow, returns garbage, a
//! huge body or a non-200 status yields [`AppMetrics`] with `unavailable` set to the
//! reason, and the next call simply tries again. [`worker::Background`] runs a scraper
//! on its own thread so that the sampler never waits for an endpoint.
//!
//! ```no_run
//! use std::time::Duration;
//! use tfwatch::model::metrics::MetricsMapping;
//! use tfwatch::source::scrape::{Scraper, expand_url};
//!
//! let url = expand_url("http://127.0.0.1:9000/metrics/{pid}", 4242);
//! let mut scraper = Scraper::new(&url, Duration::from_millis(500), MetricsMapping::default())?;
//! let metrics = scraper.scrape(); // once per interval
//! # Ok::<(), tfwatch::source::scrape::ScrapeError>(())
//! ```

pub mod http;
pub mod mapping;
pub mod quantile;
pub mod text_format;
pub mod worker;

use std::time::Duration;

use crate::model::AppMetrics;
use crate::model::metrics::MetricsMapping;

pub use http::{Client, FetchError, HttpUrl, UrlError};
pub use mapping::{Extracted, extract, pattern_matches};
pub use quantile::{Buckets, histogram_quantile};
pub use text_format::{
    Exposition, LimitedParseError, MetricFamily, MetricSample, MetricType, ParseError,
    parse_exposition, parse_exposition_bounded, parse_exposition_limited,
};

/// The largest body read from an endpoint by default.
pub const DEFAULT_MAX_BODY_BYTES: usize = 4 * 1024 * 1024;

/// The most series (sample lines, one per label set) parsed from one body by default;
/// more make the scrape "unavailable: too large". Bounds the time a scrape spends after
/// the body is in.
pub const DEFAULT_MAX_SAMPLES: usize = 50_000;

/// Why a scraper cannot be set up. Scraping itself never fails: see [`Scraper::scrape`].
#[derive(Debug, thiserror::Error)]
pub enum ScrapeError {
    #[error(transparent)]
    Url(#[from] UrlError),
    #[error(
        "metrics URL {url:?}: cannot resolve host {host:?}: {reason} (use an IP address such as 127.0.0.1)"
    )]
    Resolve {
        url: String,
        host: String,
        reason: String,
    },
    #[error("metrics timeout for {url:?} must be above zero (e.g. 500ms)")]
    ZeroTimeout { url: String },
}

/// `pattern` with every `{pid}` replaced by `pid`: one endpoint per watched process.
pub fn expand_url(pattern: &str, pid: i32) -> String {
    pattern.replace("{pid}", &pid.to_string())
}

/// Checks a URL or `{pid}` pattern without resolving it (for argument checking).
pub fn validate_url_pattern(pattern: &str) -> Result<(), UrlError> {
    HttpUrl::parse(&expand_url(pattern, 1)).map(drop)
}

/// Turns successive scrape bodies into [`AppMetrics`], keeping the previous latency
/// histogram so quantiles cover the window between scrapes. Free of I/O: the engine or a
/// test can feed it text directly.
#[derive(Debug, Clone, Default)]
pub struct MetricsWindow {
    pub mapping: MetricsMapping,
    previous_latency: Option<Buckets>,
    /// The most series parsed from one body (0: [`DEFAULT_MAX_SAMPLES`]).
    pub max_samples: usize,
}

impl MetricsWindow {
    pub fn new(mapping: MetricsMapping) -> MetricsWindow {
        MetricsWindow {
            mapping,
            previous_latency: None,
            max_samples: DEFAULT_MAX_SAMPLES,
        }
    }

    /// Reads one scraped body. A body that does not parse, or in which no mapped series
    /// is found, is "unavailable" with the reason.
    pub fn read(&mut self, source: &str, body: &str) -> AppMetrics {
        self.read_by(source, body, None)
    }

    /// [`MetricsWindow::read`] that gives up parsing at `deadline`.
    pub fn read_by(
        &mut self,
        source: &str,
        body: &str,
        deadline: Option<std::time::Instant>,
    ) -> AppMetrics {
        let max_samples = match self.max_samples {
            0 => DEFAULT_MAX_SAMPLES,
            n => n,
        };
        let exposition = match parse_exposition_bounded(body, max_samples, deadline) {
            Ok(exposition) => exposition,
            Err(LimitedParseError::Parse(err)) => {
                return unavailable(source, format!("not a Prometheus text exposition: {err}"));
            }
            Err(err) => return unavailable(source, err.to_string()),
        };
        let mut extracted = extract(&exposition, &self.mapping, self.previous_latency.as_ref());
        if extracted.is_empty() && !extracted.skipped.is_empty() {
            return unavailable(source, extracted.skipped.join("; "));
        }
        if extracted.is_empty() {
            return unavailable(
                source,
                format!(
                    "none of the mapped series found among {} families (looked for {}); set them in the [metrics] section of the rules file",
                    exposition.families.len(),
                    self.mapping.describe()
                ),
            );
        }
        if let Some(buckets) = extracted.latency_buckets.take() {
            self.previous_latency = Some(buckets);
        }
        extracted.into_app_metrics(source)
    }
}

fn unavailable(source: &str, reason: String) -> AppMetrics {
    AppMetrics {
        source: source.to_string(),
        unavailable: Some(reason),
        ..AppMetrics::default()
    }
}

/// One metrics endpoint, scraped once per interval.
#[derive(Debug, Clone)]
pub struct Scraper {
    url: String,
    client: Client,
    timeout: Duration,
    max_body_bytes: usize,
    window: MetricsWindow,
}

impl Scraper {
    /// Checks the URL (only `http://host[:port][/path]`) and resolves its host once (an
    /// IP address needs no lookup). `timeout` bounds each whole scrape.
    pub fn new(
        url: &str,
        timeout: Duration,
        mapping: MetricsMapping,
    ) -> Result<Scraper, ScrapeError> {
        let target = HttpUrl::parse(url)?;
        if timeout.is_zero() {
            return Err(ScrapeError::ZeroTimeout {
                url: url.to_string(),
            });
        }
        let resolve_error = |reason: String| ScrapeError::Resolve {
            url: url.to_string(),
            host: target.host.clone(),
            reason,
        };
        let addresses = target
            .resolve()
            .map_err(|err| resolve_error(err.to_string()))?;
        if addresses.is_empty() {
            return Err(resolve_error("no address".to_string()));
        }
        Ok(Scraper {
            url: url.to_string(),
            client: Client::new(&target, &addresses, timeout),
            timeout,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            window: MetricsWindow::new(mapping),
        })
    }

    /// Bodies larger than this are refused (default [`DEFAULT_MAX_BODY_BYTES`]).
    pub fn with_max_body_bytes(mut self, max_body_bytes: usize) -> Scraper {
        self.max_body_bytes = max_body_bytes;
        self
    }

    /// Bodies with more series than this are refused (default [`DEFAULT_MAX_SAMPLES`]).
    pub fn with_max_samples(mut self, max_samples: usize) -> Scraper {
        self.window.max_samples = max_samples.max(1);
        self
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Scrapes the endpoint once, within the timeout. Never panics; any failure is
    /// `AppMetrics { unavailable: Some(reason), .. }` and the next call retries.
    pub fn scrape(&mut self) -> AppMetrics {
        let deadline = std::time::Instant::now() + self.timeout;
        let body = match self.client.get(self.max_body_bytes) {
            Ok(body) => body,
            Err(err) => return unavailable(&self.url, err.to_string()),
        };
        match std::str::from_utf8(&body) {
            Ok(text) => match self.window.read_by(&self.url, text, Some(deadline)) {
                metrics
                    if metrics
                        .unavailable
                        .as_deref()
                        .is_some_and(|u| u.starts_with("parsing did not finish")) =>
                {
                    unavailable(
                        &self.url,
                        format!(
                            "no complete response within {} ms: {}",
                            self.timeout.as_millis(),
                            metrics.unavailable.unwrap_or_default()
                        ),
                    )
                }
                metrics => metrics,
            },
            Err(err) => unavailable(
                &self.url,
                format!(
                    "body is not UTF-8 text (invalid byte at offset {})",
                    err.valid_up_to()
                ),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expands_pid_patterns() {
        assert_eq!(
            expand_url("http://127.0.0.1:9{pid}/m?p={pid}", 42),
            "http://127.0.0.1:942/m?p=42"
        );
        assert_eq!(expand_url("http://h/m", 42), "http://h/m");
        assert!(validate_url_pattern("http://127.0.0.1:8000/pid/{pid}").is_ok());
        assert!(validate_url_pattern("https://h/{pid}").is_err());
    }

    #[test]
    fn new_refuses_bad_urls_and_zero_timeout() {
        let err = Scraper::new(
            "ftp://x/",
            Duration::from_secs(1),
            MetricsMapping::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("\"ftp://x/\"") && err.contains("http://"),
            "{err}"
        );
        let err = Scraper::new(
            "http://127.0.0.1:1/",
            Duration::ZERO,
            MetricsMapping::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("above zero"), "{err}");
    }

    #[test]
    fn window_reports_garbage_and_missing_series() {
        let mut window = MetricsWindow::default();
        let metrics = window.read("src", "<html>\n");
        assert!(
            metrics.unavailable.as_deref().unwrap().contains("line 1"),
            "{metrics:?}"
        );
        assert_eq!(metrics.source, "src");
        let metrics = window.read("src", "other_metric 1\n");
        assert!(
            metrics
                .unavailable
                .unwrap()
                .contains("none of the mapped series")
        );
        let metrics = window.read("src", "a_queue_depth 3\n");
        assert_eq!(metrics.queue_depth, Some(3.0));
        assert_eq!(metrics.unavailable, None);
    }

    #[test]
    fn window_reports_only_bad_series_as_unavailable() {
        let mut window = MetricsWindow::default();
        let metrics = window.read(
            "src",
            "x_queue_depth NaN\n# TYPE x_latency_seconds histogram\nx_latency_seconds_bucket{le=\"-1\"} 1\nx_latency_seconds_bucket{le=\"+Inf\"} 1\n",
        );
        let reason = metrics.unavailable.expect("unavailable");
        assert!(
            reason.contains("x_queue_depth is NaN") && reason.contains("negative bucket bound"),
            "{reason}"
        );
        assert_eq!(metrics.latency_p50_seconds, None);
    }

    #[test]
    fn window_refuses_more_series_than_the_cap() {
        let mut window = MetricsWindow {
            max_samples: 100,
            ..MetricsWindow::default()
        };
        let body: String = (0..101)
            .map(|i| format!("a_queue_depth{{i=\"{i}\"}} 1\n"))
            .collect();
        let reason = window.read("src", &body).unavailable.expect("unavailable");
        assert!(
            reason.contains("too large: more than 100 series") && reason.contains("line 101"),
            "{reason}"
        );
        let within: String = (0..100)
            .map(|i| format!("a_queue_depth{{i=\"{i}\"}} 1\n"))
            .collect();
        let metrics = window.read("src", &within);
        assert_eq!(metrics.unavailable, None, "{metrics:?}");
        assert_eq!(metrics.queue_depth, Some(100.0));
    }

    #[test]
    fn window_stops_parsing_at_the_deadline() {
        let body: String = (0..5000)
            .map(|i| format!("a_queue_depth{{i=\"{i}\"}} 1\n"))
            .collect();
        let mut window = MetricsWindow::default();
        let past = std::time::Instant::now();
        let reason = window
            .read_by("src", &body, Some(past))
            .unavailable
            .expect("unavailable");
        assert!(
            reason.contains("parsing did not finish in time; stopped at line 1024"),
            "{reason}"
        );
        let metrics = window.read_by(
            "src",
            &body,
            Some(past + std::time::Duration::from_secs(3600)),
        );
        assert_eq!(metrics.queue_depth, Some(5000.0), "{metrics:?}");
    }
}
