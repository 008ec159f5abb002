//! The tree-level metric values of the newest sample: what rules compare and what the
//! `sample` lines and exports carry. Names are those of `crate::model::metrics`.

use std::collections::BTreeMap;

use crate::detect::{BUSY_MIN_CPUS, OVERSUBSCRIBED_MARGIN_THREADS, hang_span};
use crate::timeline::Timeline;

/// Window over which rates are taken, seconds: slow per-thread fields (context switches)
/// are read every few samples, so a one-interval rate would be spiky.
const RATE_WINDOW_SECONDS: f64 = 5.0;

/// Window over which thread growth is taken.
const GROWTH_WINDOW_SECONDS: f64 = 10.0;

/// Metric name → value; a metric missing from the map is unavailable in this sample.
pub type Values = BTreeMap<String, f64>;

pub fn metric_values(timeline: &Timeline) -> Values {
    let mut values = Values::new();
    let Some(last) = timeline.latest_summary() else {
        return values;
    };
    let mut put = |name: &str, value: f64| {
        if value.is_finite() {
            values.insert(name.to_string(), value);
        }
    };
    let usable = last.usable_cpus.max(1.0);
    let threads = f64::from(last.threads());
    let running = f64::from(last.running());
    put("threads", threads);
    put("threads_runnable", running);
    // Lock waiters are judged from wait channels and system calls: where the kernel hid
    // them (another user's process), the count is unknown, not 0.
    let waits_hidden = timeline.latest().is_some_and(|s| {
        s.unavailable
            .iter()
            .any(crate::model::Unavailable::hides_waits)
    });
    if !waits_hidden {
        put(
            "threads_blocked_lock",
            last.processes
                .iter()
                .map(|p| f64::from(p.lock_waiters))
                .sum(),
        );
    }
    put("processes", last.processes.len() as f64);
    put("usable_cpus", usable);
    // Time-averaged over the last interval where schedstat allows, else the point count.
    let runnable = crate::detect::runnable_average(last).unwrap_or(running);
    put("runnable_threads_per_usable_cpu", runnable / usable);

    let window: Vec<_> = timeline.window(RATE_WINDOW_SECONDS).collect();
    let (mut wait, mut run, mut nvcsw, mut cpu, mut seconds) = (0.0, 0.0, 0.0, 0.0, 0.0);
    for s in window.iter().skip(1) {
        seconds += s.interval_seconds;
        for p in &s.processes {
            wait += p.delta_wait_seconds;
            run += p.delta_run_seconds;
            nvcsw += p.delta_nonvoluntary_switches;
            cpu += p.delta_cpu_seconds.unwrap_or(0.0);
        }
    }
    // Nothing ran in the window: the ratio cannot be computed, and is left out.
    if let Some(ratio) = crate::model::runqueue_wait_ratio(wait, run) {
        put("runqueue_wait_ratio", ratio);
    }
    if seconds > 0.0 {
        // The job's own oversubscription: busy, and more runnable threads than CPUs.
        // Waits of an idle tree, or of one that fits its CPUs, are not its pools'.
        let busy = run / seconds >= BUSY_MIN_CPUS;
        let oversubscribed = (run + wait) / seconds > usable + OVERSUBSCRIBED_MARGIN_THREADS;
        let ratio = if run > 0.0 { wait / run } else { 0.0 };
        put(
            "runqueue_wait_ratio_busy",
            if busy && oversubscribed { ratio } else { 0.0 },
        );
        put("involuntary_switches_per_second", nvcsw / seconds);
        put("cpu_utilization_cpus", cpu / seconds);
    }

    if let Some(throttling) = &last.throttling {
        put("cpu_throttled_seconds_total", throttling.throttled_seconds);
        if let Some((periods, throttled, _)) =
            crate::timeline::throttling_delta(timeline.window(RATE_WINDOW_SECONDS))
        {
            let ratio = if periods > 0 {
                throttled as f64 / periods as f64
            } else {
                0.0
            };
            put("cpu_throttled_ratio", ratio);
        }
    }

    let rss = last.rss_bytes() as f64;
    put("rss_bytes", rss);
    if last.memory_limit_bytes > 0 {
        put("memory_limit_bytes", last.memory_limit_bytes as f64);
        put("memory_used_ratio", rss / last.memory_limit_bytes as f64);
    }
    if let Some(first) = timeline.window(GROWTH_WINDOW_SECONDS).next() {
        let span = last.elapsed_seconds - first.elapsed_seconds;
        if span > 0.0 {
            put(
                "thread_growth_per_second",
                (threads - f64::from(first.threads())) / span,
            );
        }
    }
    let stalled = last
        .processes
        .iter()
        .filter_map(|p| hang_span(timeline, p.pid))
        .map(|s| s.seconds)
        .fold(0.0, f64::max);
    put("seconds_without_progress", stalled);

    if let Some(gpu) = timeline
        .latest()
        .and_then(|s| s.gpu.as_ref())
        .filter(|g| g.unavailable.is_none())
    {
        let tree: Vec<i32> = last.processes.iter().map(|p| p.pid).collect();
        let mut per_device_max = 0usize;
        let mut used_ratio: Option<f64> = None;
        let mut tree_bytes = 0u64;
        for device in &gpu.devices {
            let ours: Vec<_> = device
                .processes
                .iter()
                .filter(|p| tree.contains(&p.pid))
                .collect();
            per_device_max = per_device_max.max(ours.len());
            tree_bytes += ours.iter().filter_map(|p| p.used_memory_bytes).sum::<u64>();
            if !ours.is_empty() && device.memory_total_bytes > 0 {
                let ratio = device.memory_used_bytes as f64 / device.memory_total_bytes as f64;
                used_ratio = Some(used_ratio.map_or(ratio, |r: f64| r.max(ratio)));
            }
        }
        put("gpu_processes_per_device_max", per_device_max as f64);
        put("gpu_memory_used_bytes", tree_bytes as f64);
        if let Some(r) = used_ratio {
            put("gpu_memory_used_ratio", r);
        }
    }
    if let Some(app) = last.app.as_ref().filter(|a| a.unavailable.is_none()) {
        if let Some(d) = app.queue_depth {
            put("queue_depth", d);
        }
        if let Some(l) = app.latency_p50_seconds {
            put("latency_p50_seconds", l);
        }
        if let Some(l) = app.latency_p99_seconds {
            put("latency_p99_seconds", l);
        }
        let counters: Vec<_> = timeline
            .window(RATE_WINDOW_SECONDS)
            .filter_map(|s| s.app.as_ref().map(|a| (s.elapsed_seconds, a)))
            .collect();
        if let (Some(first), Some(newest)) = (counters.first(), counters.last()) {
            let span = newest.0 - first.0;
            if span > 0.0 {
                if let (Some(c0), Some(c1)) =
                    (first.1.completions_total, newest.1.completions_total)
                {
                    put("completions_per_second", (c1 - c0).max(0.0) / span);
                }
                if let (Some(f0), Some(f1)) = (first.1.failures_total, newest.1.failures_total) {
                    put("failures_per_hour", (f1 - f0).max(0.0) / span * 3600.0);
                }
            }
        }
    }
    values
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{CpuBudget, MemoryLimit, ProcessSample, Sample, ThreadSample};

    fn sample(t: f64, runnable: usize, rss: u64) -> Sample {
        Sample {
            elapsed_seconds: t,
            root_pid: 1,
            processes: vec![ProcessSample {
                pid: 1,
                rss_bytes: rss,
                cpu_seconds: t * 2.0,
                threads: (0..runnable)
                    .map(|i| ThreadSample {
                        tid: i as i32 + 1,
                        state: 'R',
                        run_seconds: Some(t * 2.0 / runnable as f64),
                        // Always runnable: what it does not run, it waits.
                        runqueue_wait_seconds: Some(t - t * 2.0 / runnable as f64),
                        ..ThreadSample::default()
                    })
                    .collect(),
                ..ProcessSample::default()
            }],
            cpus: CpuBudget {
                usable: 2.0,
                ..CpuBudget::default()
            },
            memory_limit: MemoryLimit {
                bytes: 1000,
                ..MemoryLimit::default()
            },
            ..Sample::default()
        }
    }

    #[test]
    fn values_of_a_busy_tree() {
        let mut timeline = Timeline::new(60.0);
        for t in 0..=5 {
            timeline.push(sample(f64::from(t), 4, 800));
        }
        let v = metric_values(&timeline);
        assert_eq!(v["threads"], 4.0);
        assert!((v["runnable_threads_per_usable_cpu"] - 2.0).abs() < 1e-9);
        assert_eq!(v["memory_used_ratio"], 0.8);
        // Each second: 4 threads run 0.5 s and wait 0.5 s each.
        assert!((v["runqueue_wait_ratio"] - 1.0).abs() < 1e-9);
        assert!((v["cpu_utilization_cpus"] - 2.0).abs() < 1e-9);
        assert_eq!(v["seconds_without_progress"], 0.0);
        assert!(!v.contains_key("queue_depth"), "no app metrics, no value");
        assert_eq!(v["threads_blocked_lock"], 0.0);
    }

    #[test]
    fn hidden_wait_channels_leave_the_lock_count_absent() {
        let mut timeline = Timeline::new(60.0);
        for t in 0..=2 {
            let mut s = sample(f64::from(t), 2, 800);
            s.unavailable.push(crate::model::Unavailable {
                source: "wchan".into(),
                pid: Some(1),
                reason: "wait channels of pid 1 unreadable".into(),
                fix: None,
            });
            timeline.push(s);
        }
        let v = metric_values(&timeline);
        assert!(!v.contains_key("threads_blocked_lock"), "{v:?}");
        assert_eq!(v["threads"], 2.0);
    }

    #[test]
    fn the_wait_ratio_of_a_tree_that_did_not_run_is_left_out() {
        let mut timeline = Timeline::new(60.0);
        for t in 0..=3 {
            let mut s = sample(f64::from(t), 2, 800);
            for thread in &mut s.processes[0].threads {
                thread.state = 'S';
                thread.run_seconds = Some(1.0);
                thread.runqueue_wait_seconds = Some(0.5);
            }
            s.processes[0].cpu_seconds = 2.0;
            timeline.push(s);
        }
        let v = metric_values(&timeline);
        assert!(
            !v.contains_key("runqueue_wait_ratio"),
            "nothing ran: not computed, not 0 ({v:?})"
        );
        assert_eq!(v["threads"], 2.0);
    }

    /// `threads` threads each running `run` and waiting `wait` seconds per second, on 2
    /// usable CPUs, with the given cgroup counters at each second.
    fn rates(threads: usize, run: f64, wait: f64, throttling: Option<(u64, u64)>) -> Timeline {
        let mut timeline = Timeline::new(60.0);
        for t in 0..=5 {
            let t = f64::from(t);
            let mut s = sample(t, threads, 0);
            for th in &mut s.processes[0].threads {
                th.run_seconds = Some(t * run);
                th.runqueue_wait_seconds = Some(t * wait);
            }
            s.cpus.throttling =
                throttling.map(|(periods, throttled)| crate::model::CpuThrottling {
                    periods: periods * t as u64,
                    throttled_periods: throttled * t as u64,
                    throttled_seconds: t * 0.05,
                    path: "cpu/cpu.stat".into(),
                    source: "cgroup v1 cpu/cpu.stat".into(),
                });
            timeline.push(s);
        }
        timeline
    }

    #[test]
    fn waits_count_as_the_jobs_own_only_when_busy_and_oversubscribed() {
        // A nearly idle process: 2 ms of CPU per second, waiting 5 ms: ratio 2.5.
        let idle = metric_values(&rates(3, 0.002, 0.005, None));
        assert!(idle["runqueue_wait_ratio"] > 1.0);
        assert_eq!(idle["runqueue_wait_ratio_busy"], 0.0);
        // One busy thread per CPU, other processes load the machine: each runs 0.4 s
        // and waits 0.6 s per second. Runnable threads (2) fit the 2 CPUs.
        let contended = metric_values(&rates(2, 0.4, 0.6, None));
        assert!((contended["runqueue_wait_ratio"] - 1.5).abs() < 1e-9);
        assert_eq!(contended["runqueue_wait_ratio_busy"], 0.0);
        // Eight spinning threads on 2 CPUs: the job's own oversubscription.
        let own = metric_values(&rates(8, 0.25, 0.75, None));
        assert!((own["runqueue_wait_ratio_busy"] - 3.0).abs() < 1e-9);
        assert!(
            !own.contains_key("cpu_throttled_ratio"),
            "no quota, no value"
        );
    }

    #[test]
    fn throttled_share_of_periods_over_the_window() {
        // 10 periods a second, 3 of them throttled.
        let v = metric_values(&rates(2, 0.5, 0.0, Some((10, 3))));
        assert!((v["cpu_throttled_ratio"] - 0.3).abs() < 1e-9);
        assert!((v["cpu_throttled_seconds_total"] - 0.25).abs() < 1e-9);
        // A quota but no runnable work: no period passes, nothing is throttled.
        let quiet = metric_values(&rates(2, 0.0, 0.0, Some((0, 0))));
        assert_eq!(quiet["cpu_throttled_ratio"], 0.0);
    }
}
