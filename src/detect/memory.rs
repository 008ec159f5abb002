//! Memory pressure: the tree's RSS against the effective limit, and how soon growth
//! would reach it.

use crate::model::{Finding, FindingKind, Severity};
use crate::timeline::Timeline;
use crate::units::{format_bytes, format_seconds};

use super::DetectConfig;

/// Window over which the growth rate is fitted.
const GROWTH_WINDOW_SECONDS: f64 = 10.0;

/// Growth rate in bytes per second over the window (least squares), when there are
/// enough points.
pub fn growth_rate(timeline: &Timeline) -> Option<f64> {
    let points: Vec<(f64, f64)> = timeline
        .window(GROWTH_WINDOW_SECONDS)
        .map(|s| (s.elapsed_seconds, s.rss_bytes() as f64))
        .collect();
    if points.len() < 3 {
        return None;
    }
    let n = points.len() as f64;
    let mean_t = points.iter().map(|p| p.0).sum::<f64>() / n;
    let mean_y = points.iter().map(|p| p.1).sum::<f64>() / n;
    let var: f64 = points.iter().map(|p| (p.0 - mean_t).powi(2)).sum();
    if var <= 0.0 {
        return None;
    }
    let cov: f64 = points.iter().map(|p| (p.0 - mean_t) * (p.1 - mean_y)).sum();
    Some(cov / var)
}

pub fn pressure(timeline: &Timeline, config: &DetectConfig) -> Vec<Finding> {
    let Some(last) = timeline.latest_summary() else {
        return Vec::new();
    };
    let limit = config
        .memory_limit_override
        .unwrap_or(last.memory_limit_bytes);
    if limit == 0 {
        return Vec::new();
    }
    let rss = last.rss_bytes();
    let ratio = rss as f64 / limit as f64;
    let growth = growth_rate(timeline).filter(|g| *g > 0.0);
    let time_to_limit = growth.map(|g| (limit.saturating_sub(rss)) as f64 / g);
    let over = ratio >= config.memory_warning_ratio;
    let soon = ratio >= 0.5 && time_to_limit.is_some_and(|t| t < config.memory_horizon_seconds);
    if !over && !soon {
        return Vec::new();
    }
    let severity = if ratio >= config.memory_error_ratio {
        Severity::Error
    } else {
        Severity::Warning
    };
    let mut finding = Finding::new(
        FindingKind::MemoryPressure,
        severity,
        format!(
            "tree RSS {} is {:.0} % of the {} limit{}",
            format_bytes(rss),
            ratio * 100.0,
            format_bytes(limit),
            time_to_limit
                .map(|t| format!(
                    ", reached in about {} at the current rate",
                    format_seconds(t)
                ))
                .unwrap_or_default()
        ),
    );
    finding.confidence = if growth.is_some() { 0.9 } else { 0.7 };
    let mut largest: Vec<_> = last.processes.iter().collect();
    largest.sort_by_key(|p| std::cmp::Reverse(p.rss_bytes));
    finding.pids = largest.iter().take(3).map(|p| p.pid).collect();
    finding.evidence.push(format!(
        "largest: {}",
        largest
            .iter()
            .take(3)
            .map(|p| format!("pid {} ({}) {}", p.pid, p.comm, format_bytes(p.rss_bytes)))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    if let Some(g) = growth {
        finding.evidence.push(format!(
            "growing {}/s over the last {GROWTH_WINDOW_SECONDS:.0} s",
            format_bytes(g as u64)
        ));
        finding
            .metrics
            .insert("rss_growth_bytes_per_second".into(), g);
    }
    if config.memory_limit_override.is_some() {
        finding
            .evidence
            .push("judged against a limit set for this watch".to_string());
    }
    if let Some(t) = time_to_limit {
        finding.metrics.insert("seconds_to_limit".into(), t);
    }
    finding.metrics.insert("rss_bytes".into(), rss as f64);
    finding
        .metrics
        .insert("memory_limit_bytes".into(), limit as f64);
    finding.metrics.insert("memory_used_ratio".into(), ratio);
    finding.remedy = "Bound what grows: caches with a size limit (functools.lru_cache(maxsize=…), a bounded dict), bounded queues, release references to tensors and batches; then check the limit itself (the container's memory limit, or fewer/lighter workers).".to_string();
    vec![finding]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::test_support::{process, sample, thread};

    fn growing(per_second: u64, seconds: u32) -> Timeline {
        let mut timeline = Timeline::new(60.0);
        for t in 0..=seconds {
            let mut p = process(1, 0, vec![thread(1, 'R', "", 0.0)]);
            p.rss_bytes = (100 << 20) + per_second * u64::from(t);
            timeline.push(sample(f64::from(t), 2.0, vec![p]));
        }
        timeline
    }

    #[test]
    fn over_the_share_of_the_limit() {
        // 1 GiB limit; 100 MiB + 10 × 80 MiB = 900 MiB ≈ 88 %.
        let findings = pressure(&growing(80 << 20, 10), &DetectConfig::default());
        assert_eq!(findings.len(), 1);
        let f = &findings[0];
        assert!((f.metrics["rss_growth_bytes_per_second"] - (80u64 << 20) as f64).abs() < 1.0);
        assert_eq!(f.severity, Severity::Warning);
    }

    #[test]
    fn flat_and_small_is_quiet() {
        assert!(pressure(&growing(0, 10), &DetectConfig::default()).is_empty());
    }

    #[test]
    fn an_override_limit_is_used() {
        let config = DetectConfig {
            memory_limit_override: Some(110 << 20),
            ..DetectConfig::default()
        };
        let findings = pressure(&growing(0, 3), &config);
        assert_eq!(findings.len(), 1);
        assert_eq!(findings[0].severity, Severity::Warning);
    }
}
