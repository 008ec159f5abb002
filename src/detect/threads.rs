//! Thread explosion: the thread count past a bound, its growth, grouped by name.

use std::collections::BTreeMap;

use crate::model::runtimes::{MIN_THREAD_BOUND, THREADS_PER_CPU_BOUND, default_thread_bound};
use crate::model::{Finding, FindingKind, Severity};
use crate::timeline::Timeline;

use super::DetectConfig;

/// Window over which growth is measured.
const GROWTH_WINDOW_SECONDS: f64 = 10.0;

/// The bound in force: the configured one, or [`default_thread_bound`].
pub fn thread_bound(config: &DetectConfig, usable_cpus: f64) -> u32 {
    config
        .thread_bound
        .unwrap_or_else(|| default_thread_bound(usable_cpus))
}

pub fn explosion(timeline: &Timeline, config: &DetectConfig) -> Vec<Finding> {
    let (Some(last), Some(sample)) = (timeline.latest_summary(), timeline.latest()) else {
        return Vec::new();
    };
    let bound = thread_bound(config, last.usable_cpus);
    let count = last.threads();
    if count <= bound {
        return Vec::new();
    }
    let first = timeline
        .window(GROWTH_WINDOW_SECONDS)
        .next()
        .unwrap_or(last);
    let span = last.elapsed_seconds - first.elapsed_seconds;
    let growth = (span > 0.0).then(|| (f64::from(count) - f64::from(first.threads())) / span);

    let mut by_name: BTreeMap<&str, usize> = BTreeMap::new();
    for (_, t) in sample.threads() {
        *by_name.entry(t.name.as_str()).or_insert(0) += 1;
    }
    let mut groups: Vec<(&str, usize)> = by_name.into_iter().collect();
    groups.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));

    let severe = count > 2 * bound && growth.is_some_and(|g| g > 0.0);
    let mut finding = Finding::new(
        FindingKind::ThreadExplosion,
        if severe {
            Severity::Error
        } else {
            Severity::Warning
        },
        format!(
            "{count} threads, above the thread-explosion bound of {bound}{}",
            growth
                .filter(|g| *g > 0.0)
                .map(|g| format!(", growing {g:.1}/s"))
                .unwrap_or_default()
        ),
    );
    finding.confidence = if growth.is_some_and(|g| g > 0.0) {
        0.9
    } else {
        0.7
    };
    finding.pids = last
        .processes
        .iter()
        .filter(|p| p.threads > 1)
        .map(|p| p.pid)
        .collect();
    let top: Vec<String> = groups
        .iter()
        .take(5)
        .map(|(name, n)| format!("{n} named `{name}`"))
        .collect();
    finding
        .evidence
        .push(format!("threads by name: {}", top.join(", ")));
    let per_process: Vec<String> = last
        .processes
        .iter()
        .map(|p| format!("pid {}: {}", p.pid, p.threads))
        .collect();
    finding
        .evidence
        .push(format!("threads by process: {}", per_process.join(", ")));
    if let Some(g) = growth {
        finding.evidence.push(format!(
            "{} → {} threads in {span:.0} s",
            first.threads(),
            count
        ));
        finding.metrics.insert("thread_growth_per_second".into(), g);
    }
    finding.metrics.insert("threads".into(), f64::from(count));
    finding.metrics.insert("bound".into(), f64::from(bound));
    finding.evidence.push(match config.thread_bound {
        Some(_) => format!("bound {bound}: configured"),
        None => format!(
            "bound {bound} = max({MIN_THREAD_BOUND}, {THREADS_PER_CPU_BOUND} × {} usable CPU(s))",
            last.usable_cpus
        ),
    });
    finding.remedy = format!(
        "Run tasks on a bounded pool (a fixed-size ThreadPoolExecutor, tf.data/torch workers capped to the usable CPUs) instead of a thread per task; the biggest group is `{}`.",
        groups.first().map_or("", |g| g.0)
    );
    vec![finding]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::test_support::{process, sample, thread};

    #[test]
    fn climbing_past_the_bound_is_reported_with_names_and_rate() {
        let mut timeline = Timeline::new(60.0);
        for t in 0..=4 {
            let threads = (0..(50 + 20 * t))
                .map(|i| thread(i, 'S', "futex_do_wait", 0.0))
                .collect();
            timeline.push(sample(f64::from(t), 2.0, vec![process(1, 0, threads)]));
        }
        let findings = explosion(&timeline, &DetectConfig::default());
        assert_eq!(findings.len(), 1);
        let f = &findings[0];
        assert_eq!(f.metrics["threads"], 130.0);
        assert_eq!(f.metrics["bound"], 64.0);
        assert_eq!(f.metrics["thread_growth_per_second"], 20.0);
        assert_eq!(f.severity, Severity::Error);
    }

    #[test]
    fn under_the_bound_is_quiet() {
        let mut timeline = Timeline::new(60.0);
        let threads = (0..60)
            .map(|i| thread(i, 'S', "futex_do_wait", 0.0))
            .collect();
        timeline.push(sample(0.0, 2.0, vec![process(1, 0, threads)]));
        assert!(explosion(&timeline, &DetectConfig::default()).is_empty());
        assert_eq!(thread_bound(&DetectConfig::default(), 64.0), 256);
        assert_eq!(default_thread_bound(2.0), 64);
    }

    #[test]
    fn sixty_one_sleeping_threads_of_an_idle_interpreter_are_no_explosion() {
        // An idle `import tensorflow` process on 2 CPUs: 61 threads, none growing. The
        // default rule (threads > 50) alerts on it; the detector's bound is 64.
        let mut timeline = Timeline::new(60.0);
        for t in 0..=3 {
            let threads = (0..61)
                .map(|i| thread(i, 'S', "futex_do_wait", 0.0))
                .collect();
            timeline.push(sample(f64::from(t), 2.0, vec![process(1, 0, threads)]));
        }
        assert!(explosion(&timeline, &DetectConfig::default()).is_empty());
        // Past the bound, the finding states the bound and how it was reached.
        let threads = (0..70)
            .map(|i| thread(i, 'S', "futex_do_wait", 0.0))
            .collect();
        timeline.push(sample(4.0, 2.0, vec![process(1, 0, threads)]));
        let findings = explosion(&timeline, &DetectConfig::default());
        assert_eq!(findings.len(), 1);
        assert!(
            findings[0]
                .summary
                .starts_with("70 threads, above the thread-explosion bound of 64"),
            "{}",
            findings[0].summary
        );
        assert!(
            findings[0]
                .evidence
                .iter()
                .any(|e| e == "bound 64 = max(64, 4 × 2 usable CPU(s))"),
            "{:?}",
            findings[0].evidence
        );
    }
}
