//! Which series of an exposition mean queue depth, latency, completions and failures,
//! and reading them into [`AppMetrics`].

use super::quantile::{Buckets, checked_histogram_buckets, histogram_quantile, window};
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
    /// Series found but not used, with why (a NaN or infinite value, a negative or
    /// decreasing histogram): the quantity is left out, never reported wrong.
    pub skipped: Vec<String>,
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
            age_seconds: None,
            skipped: self.skipped,
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
    let mut skipped = Vec::new();
    let mut out = Extracted {
        queue_depth: scalar(
            exposition,
            mapping.queue_depth.as_deref(),
            &[MetricType::Gauge, MetricType::Untyped],
            "queue depth",
            &mut skipped,
        ),
        completions_total: scalar(
            exposition,
            mapping.completions.as_deref(),
            &[MetricType::Counter, MetricType::Untyped],
            "completions",
            &mut skipped,
        ),
        failures_total: scalar(
            exposition,
            mapping.failures.as_deref(),
            &[MetricType::Counter, MetricType::Untyped],
            "failures",
            &mut skipped,
        ),
        ..Extracted::default()
    };
    let latency = active(mapping.latency.as_deref()).and_then(|pattern| {
        exposition.families.iter().find(|f| {
            matches!(f.metric_type, MetricType::Histogram | MetricType::Summary)
                && pattern_matches(pattern, &f.name)
        })
    });
    let mut quantiles: [Option<f64>; 3] = [None; 3];
    match latency {
        Some(family) if family.metric_type == MetricType::Histogram => {
            match checked_histogram_buckets(family) {
                Ok(current) => {
                    let (windowed, _) = window(&current, previous_latency);
                    for (slot, q) in quantiles.iter_mut().zip(QUANTILES) {
                        *slot = histogram_quantile(q, &windowed);
                    }
                    out.latency_buckets = Some(current);
                }
                Err(reason) => skipped.push(format!("latency skipped: {reason}")),
            }
        }
        Some(family) => {
            for (slot, q) in quantiles.iter_mut().zip(QUANTILES) {
                *slot = summary_quantile(family, q, &mut skipped);
            }
        }
        None => {}
    }
    // Whatever the input, a latency is a finite number of seconds, never below zero.
    for (slot, q) in quantiles.iter_mut().zip(QUANTILES) {
        if let Some(value) = *slot
            && !(value.is_finite() && value >= 0.0)
        {
            skipped.push(format!(
                "latency p{} skipped: computed {value} s",
                q * 100.0
            ));
            *slot = None;
        }
    }
    [
        out.latency_p50_seconds,
        out.latency_p90_seconds,
        out.latency_p99_seconds,
    ] = quantiles;
    skipped.dedup();
    out.skipped = skipped;
    out
}

const QUANTILES: [f64; 3] = [0.5, 0.9, 0.99];

fn active(pattern: Option<&str>) -> Option<&str> {
    pattern.filter(|p| !p.trim().is_empty())
}

/// The sum over label sets of the first series whose sample name matches `pattern`, in
/// a family of one of `types`. `_created` samples (OpenMetrics) are not values. A NaN or
/// infinite value in any label set makes the sum meaningless: it is skipped with why.
fn scalar(
    exposition: &Exposition,
    pattern: Option<&str>,
    types: &[MetricType],
    what: &str,
    skipped: &mut Vec<String>,
) -> Option<f64> {
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
    let mut sum = 0.0;
    for sample in family.samples.iter().filter(|s| s.name == name) {
        if !sample.value.is_finite() {
            skipped.push(format!(
                "{what} skipped: {name} is {} (not a finite number)",
                sample.value
            ));
            return None;
        }
        sum += sample.value;
    }
    if !sum.is_finite() {
        skipped.push(format!("{what} skipped: the sum of {name} overflows"));
        return None;
    }
    Some(sum)
}

/// A summary's quantile; over label sets the largest (summaries cannot be summed).
/// NaN (a summary with no observations yet) gives none; an infinite or negative value
/// is skipped with why.
fn summary_quantile(family: &MetricFamily, q: f64, skipped: &mut Vec<String>) -> Option<f64> {
    let mut best: Option<f64> = None;
    for sample in family
        .samples
        .iter()
        .filter(|s| s.name == family.name)
        .filter(|s| {
            s.label("quantile")
                .and_then(parse_float)
                .is_some_and(|sq| (sq - q).abs() < 1e-9)
        })
    {
        let value = sample.value;
        if value.is_nan() {
            skipped.push(format!(
                "latency p{} skipped: summary {} is NaN (no observations)",
                q * 100.0,
                family.name
            ));
            continue;
        }
        if !value.is_finite() || value < 0.0 {
            skipped.push(format!(
                "latency p{} skipped: summary {} is {value} (a latency is a finite number of seconds, at least 0)",
                q * 100.0,
                family.name
            ));
            return None;
        }
        best = Some(best.map_or(value, |b: f64| b.max(value)));
    }
    best
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

    #[test]
    fn negative_buckets_never_give_a_negative_latency() {
        // The body that used to give p50 = -2.9 s.
        let text = "app_queue_depth 2\n# TYPE app_latency_seconds histogram\napp_latency_seconds_bucket{le=\"-5\"} 2\napp_latency_seconds_bucket{le=\"-1\"} 10\napp_latency_seconds_bucket{le=\"+Inf\"} 10\n";
        let out = extract(
            &parse_exposition(text).unwrap(),
            &MetricsMapping::default(),
            None,
        );
        assert_eq!(out.latency_p50_seconds, None, "{out:?}");
        assert_eq!(out.latency_p99_seconds, None, "{out:?}");
        assert_eq!(out.latency_buckets, None);
        assert_eq!(out.queue_depth, Some(2.0));
        assert_eq!(out.skipped.len(), 1, "{out:?}");
        assert!(
            out.skipped[0].contains("latency skipped")
                && out.skipped[0].contains("negative bucket bound le=-5"),
            "{out:?}"
        );
    }

    #[test]
    fn decreasing_buckets_are_skipped_with_the_reason() {
        let text = "# TYPE app_latency_seconds histogram\napp_latency_seconds_bucket{le=\"0.1\"} 9\napp_latency_seconds_bucket{le=\"1\"} 4\napp_latency_seconds_bucket{le=\"+Inf\"} 9\n";
        let out = extract(
            &parse_exposition(text).unwrap(),
            &MetricsMapping::default(),
            None,
        );
        assert_eq!(out.latency_p50_seconds, None);
        assert!(out.skipped[0].contains("decrease"), "{out:?}");
    }

    #[test]
    fn nan_and_inf_values_are_skipped_with_the_reason() {
        let text = "a_queue_depth{m=\"x\"} 1\na_queue_depth{m=\"y\"} NaN\n# TYPE a_requests_total counter\na_requests_total +Inf\n# TYPE a_errors_total counter\na_errors_total 3\n# TYPE a_latency_seconds summary\na_latency_seconds{quantile=\"0.5\"} -Inf\na_latency_seconds{quantile=\"0.99\"} NaN\n";
        let out = extract(
            &parse_exposition(text).unwrap(),
            &MetricsMapping::default(),
            None,
        );
        assert_eq!(out.queue_depth, None);
        assert_eq!(out.completions_total, None);
        assert_eq!(out.failures_total, Some(3.0));
        assert_eq!(out.latency_p50_seconds, None);
        assert_eq!(out.latency_p99_seconds, None);
        let all = out.skipped.join("\n");
        assert!(
            all.contains("queue depth skipped: a_queue_depth is NaN"),
            "{all}"
        );
        assert!(
            all.contains("completions skipped: a_requests_total is inf"),
            "{all}"
        );
        assert!(
            all.contains("latency p50 skipped: summary a_latency_seconds is -inf"),
            "{all}"
        );
        assert!(
            all.contains("latency p99 skipped: summary a_latency_seconds is NaN"),
            "{all}"
        );
        let metrics = out.into_app_metrics("src");
        assert_eq!(metrics.failures_total, Some(3.0));
        assert_eq!(metrics.skipped.len(), 4, "{metrics:?}");
    }
}
