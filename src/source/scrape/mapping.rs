//! Which series of an exposition mean queue depth, latency, completions and failures,
//! and reading them into [`AppMetrics`].

use super::quantile::{Buckets, histogram_buckets, histogram_quantile, window};
use super::text_format::{Exposition, MetricFamily, MetricType, parse_float};
use crate::model::AppMetrics;
use crate::model::metrics::MetricsMapping;

/// Whether `name` matches `pattern` (`*` wildcards, `|` alternatives).
pub fn pattern_matches(pattern: &str, name: &str) -> bool {
    pattern
        .split('|')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .any(|p| glob(p.as_bytes(), name.as_bytes()))
}

fn glob(pattern: &[u8], text: &[u8]) -> bool {
    // Iterative wildcard match with one backtrack point: linear in practice.
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && pattern[p] == b'*' {
            star = Some((p, t));
            p += 1;
        } else if p < pattern.len() && pattern[p] == text[t] {
            p += 1;
            t += 1;
        } else if let Some((star_p, star_t)) = star {
            p = star_p + 1;
            t = star_t + 1;
            star = Some((star_p, star_t + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

/// What one scrape yielded, before it is put into [`AppMetrics`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Extracted {
    pub queue_depth: Option<f64>,
    pub completions_total: Option<f64>,
    pub failures_total: Option<f64>,
    pub latency_p50_seconds: Option<f64>,
    pub latency_p90_seconds: Option<f64>,
    pub latency_p99_seconds: Option<f64>,
    /// The latency histogram's cumulative buckets, to difference at the next scrape.
    pub latency_buckets: Option<Buckets>,
}

impl Extracted {
    pub fn is_empty(&self) -> bool {
        self.queue_depth.is_none()
            && self.completions_total.is_none()
            && self.failures_total.is_none()
            && self.latency_p50_seconds.is_none()
            && self.latency_p90_seconds.is_none()
            && self.latency_p99_seconds.is_none()
            && self.latency_buckets.is_none()
    }

    pub fn into_app_metrics(self, source: &str) -> AppMetrics {
        AppMetrics {
            source: source.to_string(),
            queue_depth: self.queue_depth,
            completions_total: self.completions_total,
            failures_total: self.failures_total,
            latency_p50_seconds: self.latency_p50_seconds,
            latency_p90_seconds: self.latency_p90_seconds,
            latency_p99_seconds: self.latency_p99_seconds,
            unavailable: None,
        }
    }
}

/// Reads the mapped quantities from an exposition. Histogram quantiles cover the window
/// since `previous_latency` (the buckets of the previous scrape), or the whole history
/// when there is none; a window with no observations gives no quantiles.
pub fn extract(
    exposition: &Exposition,
    mapping: &MetricsMapping,
    previous_latency: Option<&Buckets>,
) -> Extracted {
    let mut out = Extracted {
        queue_depth: scalar(
            exposition,
            mapping.queue_depth.as_deref(),
            &[MetricType::Gauge, MetricType::Untyped],
        ),
        completions_total: scalar(
            exposition,
            mapping.completions.as_deref(),
            &[MetricType::Counter, MetricType::Untyped],
        ),
        failures_total: scalar(
            exposition,
            mapping.failures.as_deref(),
            &[MetricType::Counter, MetricType::Untyped],
        ),
        ..Extracted::default()
    };
    let latency = active(mapping.latency.as_deref()).and_then(|pattern| {
        exposition.families.iter().find(|f| {
            matches!(f.metric_type, MetricType::Histogram | MetricType::Summary)
                && pattern_matches(pattern, &f.name)
        })
    });
    match latency {
        Some(family) if family.metric_type == MetricType::Histogram => {
            let current = histogram_buckets(family);
            let (windowed, _) = window(&current, previous_latency);
            out.latency_p50_seconds = histogram_quantile(0.5, &windowed);
            out.latency_p90_seconds = histogram_quantile(0.9, &windowed);
            out.latency_p99_seconds = histogram_quantile(0.99, &windowed);
            out.latency_buckets = Some(current);
        }
        Some(family) => {
            out.latency_p50_seconds = summary_quantile(family, 0.5);
            out.latency_p90_seconds = summary_quantile(family, 0.9);
            out.latency_p99_seconds = summary_quantile(family, 0.99);
        }
        None => {}
    }
    out
}

fn active(pattern: Option<&str>) -> Option<&str> {
    pattern.filter(|p| !p.trim().is_empty())
}

/// The sum over label sets of the first series whose sample name matches `pattern`, in
/// a family of one of `types`. `_created` samples (OpenMetrics) are not values.
fn scalar(exposition: &Exposition, pattern: Option<&str>, types: &[MetricType]) -> Option<f64> {
    let pattern = active(pattern)?;
    let (family, name) = exposition
        .families
        .iter()
        .filter(|f| types.contains(&f.metric_type))
        .find_map(|f| {
            f.samples
                .iter()
                .find(|s| !s.name.ends_with("_created") && pattern_matches(pattern, &s.name))
                .map(|s| (f, s.name.as_str()))
        })?;
    let values: Vec<f64> = family
        .samples
        .iter()
        .filter(|s| s.name == name)
        .map(|s| s.value)
        .collect();
    // NaN in any label set makes the sum meaningless: report nothing rather than NaN.
    (!values.iter().any(|v| v.is_nan())).then(|| values.iter().sum())
}

/// A summary's quantile; over label sets the largest (summaries cannot be summed).
fn summary_quantile(family: &MetricFamily, q: f64) -> Option<f64> {
    family
        .samples
        .iter()
        .filter(|s| s.name == family.name)
        .filter(|s| {
            s.label("quantile")
                .and_then(parse_float)
                .is_some_and(|sq| (sq - q).abs() < 1e-9)
        })
        .map(|s| s.value)
        .filter(|v| !v.is_nan())
        .reduce(f64::max)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::scrape::text_format::parse_exposition;

    #[test]
    fn patterns() {
        assert!(pattern_matches("*_queue_depth", "app_queue_depth"));
        assert!(!pattern_matches("*_queue_depth", "app_queue_depth_max"));
        assert!(pattern_matches(
            "*_failures_total|*_errors_total",
            "x_errors_total"
        ));
        assert!(pattern_matches("exact", "exact"));
        assert!(!pattern_matches("exact", "exactly"));
        assert!(pattern_matches("a*b*c", "a_x_b_y_c"));
        assert!(!pattern_matches("a*b*c", "a_x_c"));
        assert!(pattern_matches("*", "anything"));
        assert!(!pattern_matches("", "anything"));
        assert!(!pattern_matches("|", "anything"));
    }

    const SERVER: &str = "\
# TYPE infer_queue_depth gauge
infer_queue_depth{model=\"a\"} 3
infer_queue_depth{model=\"b\"} 4
# TYPE infer_requests_total counter
infer_requests_total{code=\"200\"} 90
infer_requests_total{code=\"500\"} 10
# TYPE infer_errors_total counter
infer_errors_total 10
# TYPE infer_latency_seconds histogram
infer_latency_seconds_bucket{le=\"0.1\"} 50
infer_latency_seconds_bucket{le=\"1\"} 90
infer_latency_seconds_bucket{le=\"10\"} 100
infer_latency_seconds_bucket{le=\"+Inf\"} 100
infer_latency_seconds_sum 120
infer_latency_seconds_count 100
";

    #[test]
    fn defaults_find_common_names_and_sum_label_sets() {
        let exposition = parse_exposition(SERVER).unwrap();
        let out = extract(&exposition, &MetricsMapping::default(), None);
        assert_eq!(out.queue_depth, Some(7.0));
        assert_eq!(out.completions_total, Some(100.0));
        assert_eq!(out.failures_total, Some(10.0));
        assert_eq!(out.latency_p50_seconds, Some(0.1));
        assert!((out.latency_p90_seconds.unwrap() - 1.0).abs() < 1e-9);
        assert!((out.latency_p99_seconds.unwrap() - 9.1).abs() < 1e-9);
        assert!(out.latency_buckets.is_some());
    }

    #[test]
    fn second_scrape_uses_the_window() {
        let first = extract(
            &parse_exposition(SERVER).unwrap(),
            &MetricsMapping::default(),
            None,
        );
        // Ten more requests since, all slower than a second.
        let later = SERVER
            .replace("le=\"10\"} 100", "le=\"10\"} 110")
            .replace("le=\"+Inf\"} 100", "le=\"+Inf\"} 110");
        let second = extract(
            &parse_exposition(&later).unwrap(),
            &MetricsMapping::default(),
            first.latency_buckets.as_ref(),
        );
        assert!(second.latency_p50_seconds.unwrap() > 1.0);
        // No new observations: no quantiles for the window.
        let third = extract(
            &parse_exposition(&later).unwrap(),
            &MetricsMapping::default(),
            second.latency_buckets.as_ref(),
        );
        assert_eq!(third.latency_p99_seconds, None);
    }

    #[test]
    fn openmetrics_counters_and_summaries() {
        let text = "# TYPE jobs_requests counter\njobs_requests_total 5\njobs_requests_created 1.7e9\n# TYPE rpc_latency_seconds summary\nrpc_latency_seconds{quantile=\"0.5\",shard=\"1\"} 0.2\nrpc_latency_seconds{quantile=\"0.5\",shard=\"2\"} 0.4\nrpc_latency_seconds{quantile=\"0.99\"} 3\nrpc_latency_seconds_count 9\n# EOF\n";
        let exposition = parse_exposition(text).unwrap();
        let out = extract(&exposition, &MetricsMapping::default(), None);
        assert_eq!(out.completions_total, Some(5.0));
        assert_eq!(out.latency_p50_seconds, Some(0.4));
        assert_eq!(out.latency_p90_seconds, None);
        assert_eq!(out.latency_p99_seconds, Some(3.0));
        assert_eq!(out.queue_depth, None);
    }

    #[test]
    fn types_must_fit() {
        // A counter named like a queue depth is not taken as one.
        let text = "# TYPE x_queue_depth counter\nx_queue_depth 5\nuntyped_queue_depth 2\n";
        let exposition = parse_exposition(text).unwrap();
        let out = extract(&exposition, &MetricsMapping::default(), None);
        assert_eq!(out.queue_depth, Some(2.0));
    }

    #[test]
    fn custom_mapping_from_toml_and_unknown_fields_refused() {
        #[derive(serde::Deserialize)]
        struct File {
            metrics: MetricsMapping,
        }
        let file: File =
            toml::from_str("[metrics]\nqueue_depth = \"pending\"\nlatency = \"\"\n").unwrap();
        assert_eq!(file.metrics.queue_depth.as_deref(), Some("pending"));
        // Unset fields keep the defaults; an empty pattern is off.
        assert_eq!(
            file.metrics.completions.as_deref(),
            Some("*_requests_total")
        );
        let exposition = parse_exposition(SERVER).unwrap();
        let out = extract(&exposition, &file.metrics, None);
        assert_eq!(out.queue_depth, None);
        assert_eq!(out.latency_p50_seconds, None);
        assert!(file.metrics.describe().contains("latency off"));

        let err = toml::from_str::<File>("[metrics]\nqueue = \"x\"\n")
            .err()
            .unwrap();
        assert!(err.to_string().contains("unknown field"), "{err}");
    }

    #[test]
    fn nan_values_are_not_reported() {
        let exposition = parse_exposition("a_queue_depth NaN\n").unwrap();
        let out = extract(&exposition, &MetricsMapping::default(), None);
        assert_eq!(out.queue_depth, None);
        assert!(out.is_empty());
    }
}
