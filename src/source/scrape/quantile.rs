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
pub fn histogram_buckets(family: &MetricFamily) -> Buckets {
    let bucket_name = format!("{}_bucket", family.name);
    // Label set without `le` → its (bound, count) pairs.
    let mut series: BTreeMap<Labels, Vec<(f64, f64)>> = BTreeMap::new();
    for sample in family.samples.iter().filter(|s| s.name == bucket_name) {
        let Some(bound) = sample.label("le").and_then(parse_float) else {
            continue;
        };
        if bound.is_nan() || sample.value.is_nan() {
            continue;
        }
        series
            .entry(labels_without(sample, "le"))
            .or_default()
            .push((bound, sample.value));
    }
    let mut bounds: Vec<f64> = series.values().flatten().map(|&(b, _)| b).collect();
    bounds.sort_by(f64::total_cmp);
    bounds.dedup();
    for buckets in series.values_mut() {
        buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    }
    let summed = bounds
        .iter()
        .map(|&bound| {
            let count = series
                .values()
                .map(|buckets| {
                    buckets
                        .iter()
                        .take_while(|(b, _)| *b <= bound)
                        .last()
                        .map_or(0.0, |&(_, c)| c)
                })
                .sum();
            (bound, count)
        })
        .collect();
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
}
