//! Histogram quantiles over the window between two scrapes, computed like Prometheus's
//! `histogram_quantile` (linear interpolation inside the bucket that holds the rank).

use std::collections::BTreeMap;

use super::text_format::{Labels, MetricFamily, MetricSample, parse_float};

/// Cumulative bucket counts of one histogram summed over its label sets: `(upper bound,
/// count)` sorted by bound. A usable histogram ends with the `+Inf` bucket.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Buckets(pub Vec<(f64, f64)>);

impl Buckets {
    /// Observations counted (the `+Inf` bucket), when there is one.
    pub fn total(&self) -> Option<f64> {
        self.0
            .last()
            .filter(|(bound, _)| *bound == f64::INFINITY)
            .map(|&(_, count)| count)
    }
}

/// The `_bucket` samples of a histogram family summed over label sets.
///
/// Label sets with different bounds are summed over the union of the bounds; a label
/// set contributes, at a bound it lacks, its count at its largest bound below it.
/// Buckets with a NaN bound or count are left out; see [`checked_histogram_buckets`]
/// for a version that refuses them with the reason.
pub fn histogram_buckets(family: &MetricFamily) -> Buckets {
    let mut series = bucket_series(family);
    for buckets in series.values_mut() {
        buckets.retain(|(bound, count)| !bound.is_nan() && !count.is_nan());
    }
    sum_series(series)
}

/// Like [`histogram_buckets`], but a histogram that cannot be a latency histogram is
/// refused with the reason: a NaN or infinite count, a negative count or bound, a `le`
/// that is not a number, or counts that decrease as the bound grows (not cumulative).
pub fn checked_histogram_buckets(family: &MetricFamily) -> Result<Buckets, String> {
    let bucket_name = format!("{}_bucket", family.name);
    if let Some(sample) = family
        .samples
        .iter()
        .filter(|s| s.name == bucket_name)
        .find(|s| s.label("le").and_then(parse_float).is_none())
    {
        return Err(format!(
            "histogram {}: bucket without a numeric `le` label ({:?})",
            family.name,
            sample.label("le").unwrap_or_default()
        ));
    }
    let series = bucket_series(family);
    for buckets in series.values() {
        let mut previous: Option<(f64, f64)> = None;
        for &(bound, count) in buckets {
            let le = show_bound(bound);
            if bound.is_nan() {
                return Err(format!("histogram {}: bucket bound le=NaN", family.name));
            }
            if bound < 0.0 {
                return Err(format!(
                    "histogram {}: negative bucket bound le={le} (a latency cannot be negative)",
                    family.name
                ));
            }
            if !count.is_finite() {
                return Err(format!(
                    "histogram {}: bucket le={le} has count {count} (not a finite number)",
                    family.name
                ));
            }
            if count < 0.0 {
                return Err(format!(
                    "histogram {}: bucket le={le} has a negative count {count}",
                    family.name
                ));
            }
            if let Some((before_bound, before)) = previous
                && count < before
            {
                return Err(format!(
                    "histogram {}: bucket counts decrease from {before} at le={} to {count} at le={le} (buckets must be cumulative)",
                    family.name,
                    show_bound(before_bound)
                ));
            }
            previous = Some((bound, count));
        }
    }
    Ok(sum_series(series))
}

fn show_bound(bound: f64) -> String {
    if bound == f64::INFINITY {
        "+Inf".to_string()
    } else {
        bound.to_string()
    }
}

/// Label set without `le` → its (bound, count) pairs sorted by bound (the order written
/// kept for equal bounds).
fn bucket_series(family: &MetricFamily) -> BTreeMap<Labels, Vec<(f64, f64)>> {
    let bucket_name = format!("{}_bucket", family.name);
    let mut series: BTreeMap<Labels, Vec<(f64, f64)>> = BTreeMap::new();
    for sample in family.samples.iter().filter(|s| s.name == bucket_name) {
        let Some(bound) = sample.label("le").and_then(parse_float) else {
            continue;
        };
        series
            .entry(labels_without(sample, "le"))
            .or_default()
            .push((bound, sample.value));
    }
    for buckets in series.values_mut() {
        buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    }
    series
}

/// Sums label sets over the union of their bounds in O(n log n): each series' count is
/// a step function of the bound, so the sum at a bound is the running sum of every
/// series' steps at or below it.
fn sum_series(series: BTreeMap<Labels, Vec<(f64, f64)>>) -> Buckets {
    let mut steps: Vec<(f64, f64)> = Vec::new();
    for buckets in series.values() {
        let mut before = 0.0;
        for &(bound, count) in buckets {
            steps.push((bound, count - before));
            before = count;
        }
    }
    steps.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut summed: Vec<(f64, f64)> = Vec::new();
    let mut running = 0.0;
    for (bound, step) in steps {
        running += step;
        match summed.last_mut() {
            Some(last) if last.0.total_cmp(&bound).is_eq() => last.1 = running,
            _ => summed.push((bound, running)),
        }
    }
    Buckets(summed)
}

fn labels_without(sample: &MetricSample, skip: &str) -> Labels {
    let mut labels: Vec<_> = sample
        .labels
        .iter()
        .filter(|(n, _)| n != skip)
        .cloned()
        .collect();
    labels.sort();
    labels
}

/// The histogram of the observations made between `previous` and `current`: the
/// difference of the cumulative counts. Falls back to `current` itself (the whole
/// history) when there is no previous scrape, the bounds changed, or a count went down
/// (the application restarted). The flag says whether the result is a window.
pub fn window(current: &Buckets, previous: Option<&Buckets>) -> (Buckets, bool) {
    let Some(previous) = previous else {
        return (current.clone(), false);
    };
    let same_bounds = current.0.len() == previous.0.len()
        && current
            .0
            .iter()
            .zip(&previous.0)
            .all(|(c, p)| c.0.total_cmp(&p.0).is_eq());
    if !same_bounds {
        return (current.clone(), false);
    }
    let diff: Vec<(f64, f64)> = current
        .0
        .iter()
        .zip(&previous.0)
        .map(|(&(bound, now), &(_, before))| (bound, now - before))
        .collect();
    if diff.iter().any(|&(_, d)| d < 0.0) {
        return (current.clone(), false);
    }
    (Buckets(diff), true)
}

/// The `q` quantile (0 ≤ q ≤ 1) of a cumulative histogram, as Prometheus computes it;
/// `None` without a `+Inf` bucket, without observations, or for q outside [0, 1].
pub fn histogram_quantile(q: f64, buckets: &Buckets) -> Option<f64> {
    if !(0.0..=1.0).contains(&q) {
        return None;
    }
    let buckets = &buckets.0;
    if buckets.len() < 2 {
        // Only the +Inf bucket (or nothing): no bound to interpolate to.
        return None;
    }
    // Counts must not fall with the bound; repair as Prometheus does.
    let mut counts: Vec<f64> = Vec::with_capacity(buckets.len());
    let mut running = 0.0_f64;
    for &(_, count) in buckets {
        running = running.max(count);
        counts.push(running);
    }
    let observations = *counts.last()?;
    if buckets.last()?.0 != f64::INFINITY || observations <= 0.0 {
        return None;
    }
    let rank = q * observations;
    let index = counts.iter().position(|&c| c >= rank)?;
    if index == buckets.len() - 1 {
        // The rank falls in the +Inf bucket: the highest finite bound is the best answer.
        return Some(buckets[index - 1].0);
    }
    let upper = buckets[index].0;
    if index == 0 && upper <= 0.0 {
        return Some(upper);
    }
    let (lower, below) = if index == 0 {
        (0.0, 0.0)
    } else {
        (buckets[index - 1].0, counts[index - 1])
    };
    let in_bucket = counts[index] - below;
    if in_bucket <= 0.0 {
        return Some(upper);
    }
    Some(lower + (upper - lower) * ((rank - below) / in_bucket))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::scrape::text_format::parse_exposition;

    const INF: f64 = f64::INFINITY;

    fn close(a: Option<f64>, b: f64) -> bool {
        a.is_some_and(|a| (a - b).abs() < 1e-9)
    }

    #[test]
    fn interpolates_inside_the_bucket() {
        // 10 observations: 5 ≤ 0.1, 3 in (0.1, 0.5], 2 in (0.5, 1].
        let buckets = Buckets(vec![(0.1, 5.0), (0.5, 8.0), (1.0, 10.0), (INF, 10.0)]);
        // Rank 5 is the top of the first bucket.
        assert!(close(histogram_quantile(0.5, &buckets), 0.1));
        // Rank 9: halfway through (0.5, 1].
        assert!(close(histogram_quantile(0.9, &buckets), 0.75));
        // Rank 9.9: 95 % through (0.5, 1].
        assert!(close(histogram_quantile(0.99, &buckets), 0.975));
        // First bucket interpolates from 0.
        assert!(close(histogram_quantile(0.2, &buckets), 0.04));
    }

    #[test]
    fn rank_in_inf_bucket_gives_highest_finite_bound() {
        let buckets = Buckets(vec![(0.1, 1.0), (1.0, 2.0), (INF, 10.0)]);
        assert!(close(histogram_quantile(0.99, &buckets), 1.0));
    }

    #[test]
    fn undefined_cases() {
        assert_eq!(histogram_quantile(0.5, &Buckets::default()), None);
        assert_eq!(histogram_quantile(0.5, &Buckets(vec![(INF, 3.0)])), None);
        // No +Inf bucket.
        assert_eq!(histogram_quantile(0.5, &Buckets(vec![(1.0, 3.0)])), None);
        // No observations.
        assert_eq!(
            histogram_quantile(0.5, &Buckets(vec![(1.0, 0.0), (INF, 0.0)])),
            None
        );
        assert_eq!(
            histogram_quantile(1.5, &Buckets(vec![(1.0, 1.0), (INF, 1.0)])),
            None
        );
    }

    #[test]
    fn non_monotonic_counts_are_repaired() {
        let buckets = Buckets(vec![(1.0, 4.0), (2.0, 3.0), (INF, 4.0)]);
        assert!(close(histogram_quantile(0.5, &buckets), 0.5));
    }

    #[test]
    fn window_is_the_difference_and_falls_back() {
        let before = Buckets(vec![(1.0, 100.0), (10.0, 100.0), (INF, 100.0)]);
        // Since then: 10 slow observations in (1, 10].
        let now = Buckets(vec![(1.0, 100.0), (10.0, 110.0), (INF, 110.0)]);
        let (diff, windowed) = window(&now, Some(&before));
        assert!(windowed);
        assert_eq!(diff.total(), Some(10.0));
        // Over the window every request was slow; cumulatively the median is fast.
        assert!(histogram_quantile(0.5, &diff).unwrap() > 1.0);
        assert!(histogram_quantile(0.5, &now).unwrap() <= 1.0);

        // First scrape: the cumulative histogram.
        assert_eq!(window(&now, None), (now.clone(), false));
        // A reset (counts went down): the cumulative histogram again.
        assert_eq!(window(&before, Some(&now)), (before.clone(), false));
        // Changed bounds.
        let other = Buckets(vec![(5.0, 1.0), (INF, 1.0)]);
        assert_eq!(window(&other, Some(&now)), (other.clone(), false));
    }

    #[test]
    fn sums_label_sets_including_different_bounds() {
        let text = "# TYPE l histogram\nl_bucket{path=\"/a\",le=\"1\"} 2\nl_bucket{path=\"/a\",le=\"+Inf\"} 3\nl_bucket{path=\"/b\",le=\"1\"} 1\nl_bucket{path=\"/b\",le=\"+Inf\"} 1\nl_bucket{path=\"/c\",le=\"0.5\"} 4\nl_bucket{path=\"/c\",le=\"+Inf\"} 4\nl_sum 1\nl_count 8\n";
        let exposition = parse_exposition(text).unwrap();
        let buckets = histogram_buckets(exposition.family("l").unwrap());
        assert_eq!(buckets.0, vec![(0.5, 4.0), (1.0, 7.0), (INF, 8.0)]);
    }

    fn family(text: &str) -> MetricFamily {
        let exposition = parse_exposition(text).unwrap();
        exposition.family("l").unwrap().clone()
    }

    #[test]
    fn checked_buckets_refuse_what_is_not_a_latency_histogram() {
        for (body, needle) in [
            (
                "l_bucket{le=\"-5\"} 1\nl_bucket{le=\"+Inf\"} 3\n",
                "negative bucket bound le=-5",
            ),
            (
                "l_bucket{le=\"1\"} 5\nl_bucket{le=\"2\"} 3\nl_bucket{le=\"+Inf\"} 5\n",
                "decrease from 5 at le=1 to 3 at le=2",
            ),
            (
                "l_bucket{le=\"1\"} NaN\nl_bucket{le=\"+Inf\"} 3\n",
                "count NaN",
            ),
            (
                "l_bucket{le=\"1\"} 1\nl_bucket{le=\"+Inf\"} +Inf\n",
                "count inf",
            ),
            (
                "l_bucket{le=\"1\"} -1\nl_bucket{le=\"+Inf\"} 3\n",
                "negative count -1",
            ),
            (
                "l_bucket{le=\"NaN\"} 1\nl_bucket{le=\"+Inf\"} 3\n",
                "le=NaN",
            ),
        ] {
            let text = format!("# TYPE l histogram\n{body}");
            let err = checked_histogram_buckets(&family(&text)).expect_err(body);
            assert!(err.contains(needle), "{body}: {err}");
            assert!(err.starts_with("histogram l: "), "{err}");
        }
        let good = "# TYPE l histogram\nl_bucket{le=\"0\"} 0\nl_bucket{le=\"1\"} 2\nl_bucket{le=\"+Inf\"} 3\n";
        assert_eq!(
            checked_histogram_buckets(&family(good)).unwrap().0,
            vec![(0.0, 0.0), (1.0, 2.0), (INF, 3.0)]
        );
    }

    #[test]
    fn many_label_sets_with_distinct_bounds_sum_like_the_definition() {
        // 2,000 label sets, each with its own bound: the sum at each bound counts the
        // label sets whose bound is at or below it.
        let mut text = String::from("# TYPE l histogram\n");
        for i in 0..2000 {
            text.push_str(&format!(
                "l_bucket{{s=\"{i}\",le=\"{}\"}} 1\nl_bucket{{s=\"{i}\",le=\"+Inf\"}} 1\n",
                f64::from(i) / 1000.0
            ));
        }
        let buckets = histogram_buckets(&family(&text));
        assert_eq!(buckets.0.len(), 2001);
        for (k, &(bound, count)) in buckets.0.iter().take(2000).enumerate() {
            assert_eq!(bound, k as f64 / 1000.0);
            assert_eq!(count, (k + 1) as f64);
        }
        assert_eq!(buckets.total(), Some(2000.0));
    }
}
