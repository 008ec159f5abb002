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
    // A zombie's one dead thread is no thread (the count above leaves it out too).
    for (_, t) in sample.threads().filter(|(p, _)| !p.has_exited()) {
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
    // The processes with the most threads first, at most a few of them named.
    let mut with_threads: Vec<_> = last.processes.iter().filter(|p| p.threads > 0).collect();
    with_threads.sort_by(|a, b| b.threads.cmp(&a.threads).then(a.pid.cmp(&b.pid)));
    let per_process: Vec<String> = with_threads
        .iter()
        .take(PIDS_SHOWN)
        .map(|p| format!("pid {}: {}", p.pid, p.threads))
        .collect();
    let others = with_threads.len().saturating_sub(PIDS_SHOWN);
    finding.evidence.push(format!(
        "threads by process: {}{}",
        per_process.join(", "),
        if others > 0 {
            format!(" and {others} more process(es)")
        } else {
            String::new()
        }
    ));
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

/// A process with at least this many exited, unreaped children gets an `info` note.
pub const UNREAPED_CHILDREN_NOTE: usize = 10;

/// At most this many pids are listed in one line of evidence (unreaped children,
/// threads by process).
const PIDS_SHOWN: usize = 10;

/// `unreaped-children` (info): a live process of the tree whose exited children wait to
/// be reaped (zombies). They are not threads; they hold a pid each until their parent
/// waits for them.
pub fn unreaped_children(timeline: &Timeline) -> Vec<Finding> {
    let Some(sample) = timeline.latest() else {
        return Vec::new();
    };
    let mut zombies: BTreeMap<i32, Vec<i32>> = BTreeMap::new();
    for p in sample.processes.iter().filter(|p| p.has_exited()) {
        zombies.entry(p.ppid).or_default().push(p.pid);
    }
    let mut findings = Vec::new();
    for (ppid, pids) in zombies {
        let Some(parent) = sample.process(ppid).filter(|p| !p.has_exited()) else {
            continue;
        };
        if pids.len() < UNREAPED_CHILDREN_NOTE {
            continue;
        }
        let shown: Vec<String> = pids.iter().take(PIDS_SHOWN).map(i32::to_string).collect();
        let more = pids.len().saturating_sub(PIDS_SHOWN);
        let mut finding = Finding::new(
            FindingKind::UnreapedChildren,
            Severity::Info,
            format!(
                "pid {ppid} ({}) has {} exited children it has not waited for (zombies: not threads, they hold a pid each)",
                parent.comm,
                pids.len()
            ),
        );
        finding.confidence = 0.9;
        finding.pids = vec![ppid];
        finding.evidence.push(format!(
            "zombie children: pid {}{}",
            shown.join(", "),
            if more > 0 {
                format!(" and {more} more")
            } else {
                String::new()
            }
        ));
        finding
            .metrics
            .insert("unreaped_children".into(), pids.len() as f64);
        finding.remedy = "Wait for child processes when they end (waitpid, subprocess.Popen.wait, multiprocessing's join, or SIGCHLD set to SIG_IGN); run the job under an init that reaps (tini, `docker run --init`) when it starts children it never waits for.".into();
        findings.push(finding);
    }
    findings
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
    fn zombie_children_are_not_threads_and_get_a_capped_note() {
        let mut timeline = Timeline::new(60.0);
        let mut processes = vec![process(1, 0, vec![thread(1, 'S', "do_wait", 0.0)])];
        for pid in 100..170 {
            let mut zombie = process(pid, 1, vec![thread(pid, 'Z', "", 0.0)]);
            zombie.state = 'Z';
            processes.push(zombie);
        }
        timeline.push(sample(0.0, 2.0, processes.clone()));
        timeline.push(sample(1.0, 2.0, processes));
        assert_eq!(timeline.latest_summary().unwrap().threads(), 1);
        assert!(explosion(&timeline, &DetectConfig::default()).is_empty());
        let notes = unreaped_children(&timeline);
        assert_eq!(notes.len(), 1);
        let note = &notes[0];
        assert_eq!(note.kind, FindingKind::UnreapedChildren);
        assert_eq!(note.severity, Severity::Info);
        assert!(
            note.summary.contains("70 exited children"),
            "{}",
            note.summary
        );
        assert_eq!(note.evidence.len(), 1);
        assert_eq!(
            note.evidence[0],
            "zombie children: pid 100, 101, 102, 103, 104, 105, 106, 107, 108, 109 and 60 more"
        );
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
