//! Stall with work pending: the application says work is queued (depth > 0 and not
//! falling) while nothing completes. Fed by the application's metrics endpoint.

use crate::model::{Finding, FindingKind, Severity};
use crate::timeline::Timeline;

use super::DetectConfig;

pub fn pending_work(timeline: &Timeline, config: &DetectConfig) -> Vec<Finding> {
    let window: Vec<_> = timeline
        .window(config.stall_window_seconds)
        .filter_map(|s| s.app.as_ref().map(|a| (s.elapsed_seconds, a)))
        .filter(|(_, a)| a.unavailable.is_none())
        .collect();
    let (Some(first), Some(last)) = (window.first(), window.last()) else {
        return Vec::new();
    };
    let span = last.0 - first.0;
    if span < config.stall_window_seconds * 0.9 {
        return Vec::new();
    }
    let depths: Option<Vec<f64>> = window.iter().map(|(_, a)| a.queue_depth).collect();
    let Some(depths) = depths else {
        return Vec::new();
    };
    let (Some(c0), Some(c1)) = (first.1.completions_total, last.1.completions_total) else {
        return Vec::new();
    };
    let (d0, d1) = (depths[0], depths[depths.len() - 1]);
    let pending = depths.iter().all(|&d| d > 0.0) && d1 >= d0;
    if !pending || c1 > c0 {
        return Vec::new();
    }
    let mut finding = Finding::new(
        FindingKind::StallPendingWork,
        Severity::Error,
        format!(
            "{d1:.0} requests queued and none completed in {span:.0} s ({})",
            last.1.source
        ),
    );
    finding.confidence = 0.9;
    finding.evidence.push(format!(
        "queue depth {d0:.0} → {d1:.0}; completions stayed at {c1:.0}"
    ));
    if let Some(p99) = last.1.latency_p99_seconds {
        finding.evidence.push(format!("latency p99 {p99:.2} s"));
    }
    finding.metrics.insert("queue_depth".into(), d1);
    finding.metrics.insert("stalled_seconds".into(), span);
    finding.pids = timeline
        .latest_summary()
        .map(|s| s.processes.iter().map(|p| p.pid).take(1).collect())
        .unwrap_or_default();
    finding.remedy = "The consumer has stopped: look at what the serving threads wait on (`tfwatch snapshot PID --stacks`); a hung device call, a deadlock, or a dead worker keep the queue from draining.".to_string();
    vec![finding]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::test_support::{process, sample, thread};
    use crate::model::AppMetrics;

    fn with_app(depths: &[f64], completions: &[f64]) -> Timeline {
        let mut timeline = Timeline::new(60.0);
        for (i, (&d, &c)) in depths.iter().zip(completions).enumerate() {
            let mut s = sample(
                i as f64,
                2.0,
                vec![process(1, 0, vec![thread(1, 'S', "", 0.0)])],
            );
            s.app = Some(AppMetrics {
                source: "http://127.0.0.1:1/metrics".into(),
                queue_depth: Some(d),
                completions_total: Some(c),
                ..AppMetrics::default()
            });
            timeline.push(s);
        }
        timeline
    }

    #[test]
    fn queued_work_without_completions_is_a_stall() {
        let config = DetectConfig {
            stall_window_seconds: 4.0,
            ..DetectConfig::default()
        };
        let stalled = with_app(&[5.0, 6.0, 6.0, 8.0, 9.0], &[10.0; 5]);
        assert_eq!(pending_work(&stalled, &config).len(), 1);
        let draining = with_app(&[5.0, 6.0, 6.0, 8.0, 9.0], &[10.0, 11.0, 12.0, 13.0, 14.0]);
        assert!(pending_work(&draining, &config).is_empty());
        let empty = with_app(&[0.0; 5], &[10.0; 5]);
        assert!(pending_work(&empty, &config).is_empty());
    }
}
