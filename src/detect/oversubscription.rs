//! Oversubscription: more runnable threads than usable CPUs, sustained, with the
//! run-queue wait ratio and involuntary switches as evidence and the runtime audit as
//! the explanation.

use crate::model::{Finding, FindingKind, Severity};
use crate::timeline::Timeline;

use super::DetectConfig;

/// Samples land a little late or early: the window reaches this much further back so
/// that jitter does not drop its oldest sample.
const WINDOW_SLACK: f64 = 1.25;

/// Window over which involuntary switches are counted, seconds.
const SWITCH_WINDOW_SECONDS: f64 = 6.0;

/// The summaries the oversubscription judgements look at: the last
/// `oversubscription_window_seconds` (with slack for late samples), or `None` while the
/// watch is shorter than that.
fn judged_window<'t>(
    timeline: &'t Timeline,
    config: &DetectConfig,
) -> Option<Vec<&'t crate::timeline::Summary>> {
    let window: Vec<_> = timeline
        .window(config.oversubscription_window_seconds * WINDOW_SLACK)
        .collect();
    let span = window.last()?.elapsed_seconds - window.first()?.elapsed_seconds;
    (window.len() >= 2 && span >= config.oversubscription_window_seconds * 0.9).then_some(window)
}

pub fn detect(timeline: &Timeline, config: &DetectConfig) -> Vec<Finding> {
    let Some(window) = judged_window(timeline, config) else {
        return Vec::new();
    };
    let (first, last) = (window[0], window[window.len() - 1]);
    let span = last.elapsed_seconds - first.elapsed_seconds;
    let usable = last.usable_cpus.max(1.0);
    // Runnable threads per interval: the larger of the threads in state R at the sample
    // and the time average from schedstat ((Δrun + Δwait) / Δt, the mean number of the
    // tree's threads on a CPU or waiting for one). A point count can miss threads that
    // nap between bursts; the average can miss threads that spin (OpenMP barriers).
    let counts: Vec<f64> = window[1..]
        .iter()
        .map(|s| {
            let point = f64::from(s.running());
            runnable_average(s).map_or(point, |average| average.max(point))
        })
        .collect();
    let mean = counts.iter().sum::<f64>() / counts.len() as f64;
    // Every interval well above the CPUs (a pool sized to the CPUs plus a few busy
    // helper threads stays below), and on average at least the factor above them.
    let sustained = counts.iter().all(|&c| c > usable * 1.5);
    let threshold = (usable * config.oversubscription_factor).max(usable + 1.0);
    if !sustained || mean <= threshold {
        return Vec::new();
    }
    // Deltas of the intervals inside the window (the first summary's delta is older).
    let (mut wait, mut run) = (0.0, 0.0);
    for s in &window[1..] {
        for p in &s.processes {
            wait += p.delta_wait_seconds;
            run += p.delta_run_seconds;
        }
    }
    // Context switches are read with the slow per-thread files, every few samples:
    // count them over a longer window so that one such read falls inside it.
    let (mut nvcsw, mut seconds) = (0.0, 0.0);
    for s in timeline.window(SWITCH_WINDOW_SECONDS.max(span)).skip(1) {
        seconds += s.interval_seconds;
        nvcsw += s
            .processes
            .iter()
            .map(|p| p.delta_nonvoluntary_switches)
            .sum::<f64>();
    }
    let wait_ratio = crate::model::runqueue_wait_ratio(wait, run);
    let switches_per_second = (seconds > 0.0).then(|| nvcsw / seconds);

    let severe = mean >= 3.0 * usable && wait_ratio.is_some_and(|r| r >= 1.0);
    let mut finding = Finding::new(
        FindingKind::Oversubscription,
        if severe {
            Severity::Error
        } else {
            Severity::Warning
        },
        format!(
            "{mean:.1} runnable threads on {} usable CPU(s) ({:.1}×), sustained for {:.0} s",
            trim(usable),
            mean / usable,
            span
        ),
    );
    finding.confidence = if wait_ratio.is_some_and(|r| r >= 1.0) {
        0.9
    } else {
        0.6
    };
    let busiest = last
        .processes
        .iter()
        .filter(|p| p.running > 0)
        .map(|p| format!("pid {} ({}): {} runnable", p.pid, p.comm, p.running))
        .collect::<Vec<_>>();
    finding.pids = last
        .processes
        .iter()
        .filter(|p| p.running > 0)
        .map(|p| p.pid)
        .collect();
    finding.evidence.push(format!(
        "runnable threads per interval: {} against {} usable CPU(s)",
        counts
            .iter()
            .map(|c| format!("{c:.1}"))
            .collect::<Vec<_>>()
            .join(", "),
        trim(usable)
    ));
    if let Some(r) = wait_ratio {
        finding.evidence.push(format!(
            "run-queue wait ratio {r:.2}: the tree's threads waited {wait:.2} s for a CPU while running {run:.2} s"
        ));
    }
    if let Some(s) = switches_per_second {
        finding
            .evidence
            .push(format!("{s:.0} involuntary context switches per second"));
    }
    finding.evidence.push(busiest.join("; "));
    if let Some(line) = throttling_line(&window) {
        finding.evidence.push(line);
    }
    let explanation = timeline
        .latest()
        .and_then(|sample| super::audit::pool_explanation(sample, &finding.pids));
    if let Some(explanation) = &explanation {
        finding
            .evidence
            .extend(explanation.evidence.iter().cloned());
    }
    finding.metrics.insert("runnable_threads".into(), mean);
    finding.metrics.insert("usable_cpus".into(), usable);
    if let Some(r) = wait_ratio {
        finding.metrics.insert("runqueue_wait_ratio".into(), r);
    }
    if let Some(s) = switches_per_second {
        finding
            .metrics
            .insert("involuntary_switches_per_second".into(), s);
    }
    let processes = last
        .processes
        .iter()
        .filter(|p| p.running > 0)
        .count()
        .max(1);
    let per_process = (usable / processes as f64).floor().max(1.0);
    finding.remedy = match &explanation {
        Some(explanation) => format!(
            "Size the thread pools to the usable CPUs: {}; pools that size themselves from the host's core count ignore cgroup quotas.",
            explanation.remedy
        ),
        None => format!(
            "Size the thread pools to the usable CPUs: with {processes} busy process(es) on {} CPU(s), give each a pool of {per_process:.0} (OMP_NUM_THREADS, MKL_NUM_THREADS, OPENBLAS_NUM_THREADS, torch.set_num_threads, TF_NUM_INTRAOP_THREADS), or run fewer processes; pools that size themselves from the host's core count ignore cgroup quotas.",
            trim(usable)
        ),
    };
    vec![finding]
}

/// The quota's throttling over `window`, as an evidence line; `None` without counters or
/// when no period was throttled.
fn throttling_line(window: &[&crate::timeline::Summary]) -> Option<String> {
    let (periods, throttled, seconds) = crate::timeline::throttling_delta(window.iter().copied())?;
    if periods == 0 || throttled == 0 {
        return None;
    }
    let source = window
        .last()
        .and_then(|s| s.throttling.as_ref())
        .map_or(String::new(), |t| format!(" ({})", t.source));
    Some(format!(
        "CPU quota throttled the tree in {throttled} of {periods} periods ({:.0} %), holding it off the CPUs for {seconds:.2} s{source}",
        100.0 * throttled as f64 / periods as f64
    ))
}

/// Threads must wait at least this share of their run time for a wait to be contention.
const CONTENTION_MIN_WAIT_RATIO: f64 = 0.5;

/// Throttled in more than this share of periods, a wait is the quota's, not contention.
const CONTENTION_MAX_THROTTLED_RATIO: f64 = 0.05;

/// Contention from other processes: the tree is busy, its runnable threads fit the
/// usable CPUs, and still they wait for a CPU. An `info` finding that names the
/// machine's load, so the job's pools are not blamed for other processes' load.
pub fn contention(timeline: &Timeline, config: &DetectConfig) -> Vec<Finding> {
    let Some(window) = judged_window(timeline, config) else {
        return Vec::new();
    };
    let (first, last) = (window[0], window[window.len() - 1]);
    let span = last.elapsed_seconds - first.elapsed_seconds;
    let (mut wait, mut run, mut seconds) = (0.0, 0.0, 0.0);
    for s in &window[1..] {
        seconds += s.interval_seconds;
        for p in &s.processes {
            wait += p.delta_wait_seconds;
            run += p.delta_run_seconds;
        }
    }
    if seconds <= 0.0 || run <= 0.0 {
        return Vec::new();
    }
    let usable = last.usable_cpus.max(1.0);
    let runnable = (run + wait) / seconds;
    let ratio = wait / run;
    // Demand, not run time: on a machine loaded enough, a busy tree gets a small share
    // of the CPUs it wants, while a nearly idle one wants almost nothing.
    let busy = (run + wait) / seconds >= super::BUSY_MIN_CPUS;
    let fits = runnable <= usable + super::OVERSUBSCRIBED_MARGIN_THREADS;
    let throttled = crate::timeline::throttling_delta(window.iter().copied()).is_some_and(
        |(periods, throttled, _)| {
            periods > 0 && throttled as f64 / periods as f64 > CONTENTION_MAX_THROTTLED_RATIO
        },
    );
    if !busy || !fits || throttled || ratio < CONTENTION_MIN_WAIT_RATIO {
        return Vec::new();
    }
    let mut finding = Finding::new(
        FindingKind::CpuContention,
        Severity::Info,
        format!(
            "the tree's threads wait {ratio:.2}× as long for a CPU as they run, though its {runnable:.1} runnable threads fit {} usable CPU(s): other processes load the machine",
            trim(usable)
        ),
    );
    finding.confidence = 0.7;
    finding.evidence.push(format!(
        "over {span:.1} s the tree ran {run:.2} s ({:.2} CPUs) and waited {wait:.2} s for a CPU",
        run / seconds
    ));
    let machine = timeline.latest().and_then(|s| s.machine.as_ref());
    let mut load = Vec::new();
    if let Some(m) = machine {
        if let Some(l) = m.loadavg_1m {
            load.push(format!("load average {l:.2} (1 min)"));
        }
        if let (Some(r), Some(t)) = (m.runnable_tasks, m.total_tasks) {
            load.push(format!("{r} of {t} tasks of the machine runnable now"));
        }
        if let Some(p) = m.cpu_pressure_some_avg10 {
            load.push(format!(
                "CPU pressure: some task waited for a CPU {:.1} % of the last 10 s",
                p * 100.0
            ));
            finding.metrics.insert("cpu_pressure_some_avg10".into(), p);
        }
        if let Some(l) = m.loadavg_1m {
            finding.metrics.insert("loadavg_1m".into(), l);
        }
    }
    finding.evidence.push(if load.is_empty() {
        "machine load: not read (see unavailable)".to_string()
    } else {
        format!("machine: {}", load.join("; "))
    });
    if let Some(line) = machine.and_then(busiest_others_line) {
        finding.evidence.push(line);
    }
    finding.pids = last
        .processes
        .iter()
        .filter(|p| p.delta_wait_seconds > 0.0)
        .map(|p| p.pid)
        .collect();
    finding.metrics.insert("runqueue_wait_ratio".into(), ratio);
    finding.metrics.insert("runnable_threads".into(), runnable);
    finding.metrics.insert("usable_cpus".into(), usable);
    finding.remedy = "Nothing to change in the job's thread pools: they fit the CPUs. Find what else runs on these CPUs (`top`, sorted by CPU), give the job CPUs of its own (taskset, a cpuset, a dedicated node) or lower the others' priority (nice)."
        .to_string();
    vec![finding]
}

/// The busiest processes outside the tree, as an evidence line; `None` when none was
/// seen busy.
fn busiest_others_line(machine: &crate::model::MachineLoad) -> Option<String> {
    if machine.busiest_others.is_empty() {
        return None;
    }
    let named: Vec<String> = machine
        .busiest_others
        .iter()
        .map(|p| {
            format!(
                "pid {} ({}) {:.0} % of a CPU",
                p.pid,
                p.comm,
                p.cpu_share * 100.0
            )
        })
        .collect();
    Some(format!(
        "busiest processes outside the tree: {}",
        named.join(", ")
    ))
}

/// Mean runnable threads of the tree over the interval ending at `summary`, from
/// schedstat; `None` without schedstat data.
pub fn runnable_average(summary: &crate::timeline::Summary) -> Option<f64> {
    if summary.interval_seconds <= 0.0 {
        return None;
    }
    let busy: f64 = summary
        .processes
        .iter()
        .map(|p| p.delta_run_seconds + p.delta_wait_seconds)
        .sum();
    (busy > 0.0).then(|| busy / summary.interval_seconds)
}

fn trim(value: f64) -> String {
    if value.fract() == 0.0 {
        format!("{value:.0}")
    } else {
        format!("{value:.2}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::test_support::{process, sample, thread};
    use crate::model::ThreadSample;

    fn busy(runnable: usize, usable: f64, seconds: u32) -> Timeline {
        let mut timeline = Timeline::new(60.0);
        for t in 0..=seconds {
            let t = f64::from(t);
            let threads: Vec<ThreadSample> = (0..runnable)
                .map(|i| {
                    let mut th = thread(100 + i as i32, 'R', "", t * usable / runnable as f64);
                    th.runqueue_wait_seconds = Some(t * (1.0 - usable / runnable as f64));
                    th
                })
                .collect();
            timeline.push(sample(t, usable, vec![process(100, 1, threads)]));
        }
        timeline
    }

    #[test]
    fn eight_runnable_on_two_cpus_is_oversubscribed() {
        let findings = detect(&busy(8, 2.0, 4), &DetectConfig::default());
        assert_eq!(findings.len(), 1);
        let f = &findings[0];
        assert_eq!(f.kind, FindingKind::Oversubscription);
        assert_eq!(f.metrics["runnable_threads"], 8.0);
        assert!((f.metrics["runqueue_wait_ratio"] - 3.0).abs() < 1e-9);
        assert_eq!(f.severity, Severity::Error);
    }

    #[test]
    fn pools_sized_to_the_cpus_are_fine() {
        assert!(detect(&busy(2, 2.0, 4), &DetectConfig::default()).is_empty());
        assert!(detect(&busy(3, 2.0, 4), &DetectConfig::default()).is_empty());
    }

    #[test]
    fn late_samples_do_not_push_the_window_out() {
        // Samples that land a few milliseconds late each time: the third one is more
        // than 2 s after the first, which must still count as a 2 s window.
        let mut timeline = Timeline::new(60.0);
        for t in 0..3 {
            let at = f64::from(t) * 1.004;
            let threads: Vec<ThreadSample> =
                (0..8).map(|i| thread(100 + i, 'R', "", at / 4.0)).collect();
            timeline.push(sample(at, 2.0, vec![process(100, 1, threads)]));
        }
        assert_eq!(detect(&timeline, &DetectConfig::default()).len(), 1);
    }

    /// `threads` threads each running `run` and waiting `wait` per second, on 2 CPUs.
    fn rates(threads: usize, run: f64, wait: f64) -> Timeline {
        let mut timeline = Timeline::new(60.0);
        for t in 0..=4 {
            let t = f64::from(t);
            let threads: Vec<ThreadSample> = (0..threads)
                .map(|i| {
                    let mut th = thread(100 + i as i32, 'R', "", t * run);
                    th.runqueue_wait_seconds = Some(t * wait);
                    th
                })
                .collect();
            let mut s = sample(t, 2.0, vec![process(100, 1, threads)]);
            s.machine = Some(crate::model::MachineLoad {
                loadavg_1m: Some(5.5),
                runnable_tasks: Some(6),
                total_tasks: Some(200),
                cpu_pressure_some_avg10: Some(0.6),
                busiest_others: vec![crate::model::OtherProcess {
                    pid: 4242,
                    comm: "cc1plus".into(),
                    cpu_share: 0.93,
                }],
            });
            timeline.push(s);
        }
        timeline
    }

    #[test]
    fn one_busy_thread_per_cpu_on_a_loaded_machine_is_contention_not_oversubscription() {
        let timeline = rates(2, 0.4, 0.6);
        let config = DetectConfig::default();
        assert!(detect(&timeline, &config).is_empty());
        let findings = contention(&timeline, &config);
        assert_eq!(findings.len(), 1);
        let f = &findings[0];
        assert_eq!(f.kind, FindingKind::CpuContention);
        assert_eq!(f.severity, Severity::Info);
        assert!(
            f.summary.contains("other processes load the machine"),
            "{}",
            f.summary
        );
        assert!(
            f.evidence
                .iter()
                .any(|e| e.contains("load average 5.50") && e.contains("60.0 % of the last 10 s")),
            "{:?}",
            f.evidence
        );
        assert!(
            f.evidence
                .iter()
                .any(|e| e.contains("pid 4242 (cc1plus) 93 % of a CPU")),
            "the busiest other process is named: {:?}",
            f.evidence
        );
        assert!(!f.remedy.contains("OMP_NUM_THREADS"), "{}", f.remedy);
    }

    #[test]
    fn a_busy_tree_that_gets_a_tenth_of_its_cpus_is_contention() {
        // Two busy threads, each running 0.1 s and waiting 0.9 s a second: 0.2 CPU of
        // run time, but a demand of two CPUs.
        let findings = contention(&rates(2, 0.1, 0.9), &DetectConfig::default());
        assert_eq!(findings.len(), 1, "{findings:?}");
        assert_eq!(findings[0].severity, Severity::Info);
    }

    #[test]
    fn an_idle_or_oversubscribed_tree_is_not_contention() {
        let config = DetectConfig::default();
        // Nearly idle: 2 ms of CPU a second, waiting 5 ms.
        assert!(contention(&rates(3, 0.002, 0.005), &config).is_empty());
        // Its own eight threads on two CPUs: oversubscription, not contention.
        let own = rates(8, 0.25, 0.75);
        assert!(contention(&own, &config).is_empty());
        assert_eq!(detect(&own, &config).len(), 1);
        // Busy, fits, hardly waits: healthy.
        assert!(contention(&rates(2, 0.95, 0.05), &config).is_empty());
    }

    #[test]
    fn oversubscription_carries_the_audit_and_the_throttling() {
        let mut timeline = Timeline::new(60.0);
        for t in 0..=4 {
            let t = f64::from(t);
            let threads: Vec<ThreadSample> = (0..8)
                .map(|i| {
                    let mut th = thread(100 + i, 'R', "", t / 4.0);
                    th.runqueue_wait_seconds = Some(t * 0.75);
                    th
                })
                .collect();
            let mut p = process(100, 1, threads);
            p.audit = Some(crate::model::RuntimeAudit {
                pools: vec![crate::model::PoolPrediction {
                    runtime: "GNU OpenMP".into(),
                    threads: 8,
                    variable: None,
                    reason: "OMP_NUM_THREADS unset: libgomp uses the 8 CPUs".into(),
                }],
                ..crate::model::RuntimeAudit::default()
            });
            let mut s = sample(t, 2.0, vec![p]);
            s.cpus.throttling = Some(crate::model::CpuThrottling {
                periods: 10 * t as u64,
                throttled_periods: 4 * t as u64,
                throttled_seconds: 0.5 * t,
                path: "cpu/cpu.stat".into(),
                source: "cgroup v1 cpu/cpu.stat".into(),
            });
            timeline.push(s);
        }
        let findings = detect(&timeline, &DetectConfig::default());
        assert_eq!(findings.len(), 1);
        let f = &findings[0];
        assert!(
            f.evidence
                .iter()
                .any(|e| e.starts_with("audit: pid 100 (job): largest pool GNU OpenMP, 8 threads")),
            "{:?}",
            f.evidence
        );
        assert!(
            f.evidence
                .iter()
                .any(|e| e.starts_with("CPU quota throttled the tree in 8 of 20 periods (40 %)")),
            "{:?}",
            f.evidence
        );
        assert!(f.remedy.contains("set OMP_NUM_THREADS=2"), "{}", f.remedy);
    }

    #[test]
    fn a_short_burst_is_not_sustained() {
        assert!(detect(&busy(8, 2.0, 1), &DetectConfig::default()).is_empty());
    }
}
