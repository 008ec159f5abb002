//! Reading the watch into [`Data`]: header, chart series, thread rows.

use std::collections::{BTreeMap, HashMap};

use crate::engine::Watch;
use crate::model::{Sample, ThreadSample};
use crate::timeline::waits::classify;
use crate::units::{format_bytes, format_seconds};

use super::{
    CHART_SECONDS, Chart, Charts, Data, Header, Journal, ProcessData, Series, ThreadRow,
    short_number,
};

impl Data {
    /// Reads what the dashboard shows from the watch and the journal.
    pub fn capture(watch: &Watch, journal: &Journal) -> Data {
        let Some(latest) = watch.timeline.latest() else {
            return Data::default();
        };
        // Active ones first (those explained from stacks at the top), each part newest
        // first.
        let mut findings = journal.entries.clone();
        findings.reverse();
        findings.sort_by_key(|f| (f.resolved_after.is_some(), !f.explained));
        Data {
            header: header(latest),
            charts: charts(watch, journal),
            findings,
            processes: processes(watch, latest),
        }
    }
}

fn header(sample: &Sample) -> Header {
    let root = sample.process(sample.root_pid).or(sample.processes.first());
    let cpus = &sample.cpus;
    let mut limits = vec![format!("online {}", cpus.online)];
    if let Some(a) = cpus.affinity {
        limits.push(format!("affinity {a}"));
    }
    limits.push(match cpus.quota {
        Some(q) => format!("cgroup quota {}", short_number(q)),
        None => "no cgroup quota".to_string(),
    });
    let gpu = match &sample.gpu {
        None => "GPU: unavailable (GPU source off)".to_string(),
        Some(g) => match &g.unavailable {
            Some(why) => format!("GPU: unavailable ({why})"),
            None if g.devices.is_empty() => "GPU: none found".to_string(),
            None => g
                .devices
                .iter()
                .map(|d| {
                    format!(
                        "GPU {} {} {}/{}{}",
                        d.index,
                        d.name,
                        format_bytes(d.memory_used_bytes),
                        format_bytes(d.memory_total_bytes),
                        d.utilization_percent
                            .map(|u| format!(" {u}%"))
                            .unwrap_or_default()
                    )
                })
                .collect::<Vec<_>>()
                .join(" · "),
        },
    };
    let metrics = match &sample.app {
        None => "metrics: not configured".to_string(),
        Some(app) => match &app.unavailable {
            Some(why) => format!("metrics: unavailable ({why})"),
            None => format!("metrics: {}", app.source),
        },
    };
    let mut unavailable: BTreeMap<String, usize> = BTreeMap::new();
    // The GPU and metrics sources have their own place in the header.
    for u in sample
        .unavailable
        .iter()
        .filter(|u| u.source != "gpu" && u.source != "metrics")
    {
        let line = format!(
            "{}: {}{}",
            u.source,
            u.reason,
            u.fix
                .as_ref()
                .map(|f| format!(" — {f}"))
                .unwrap_or_default()
        );
        *unavailable.entry(line).or_default() += 1;
    }
    Header {
        pid: sample.root_pid,
        comm: root.map(|p| p.comm.clone()).unwrap_or_default(),
        // A `-c` script carries newlines and tabs: one line on screen.
        cmdline: root
            .map(|p| {
                p.cmdline.join(" ").replace(
                    |c: char| c.is_control() || crate::units::is_bidi_control(c),
                    " ",
                )
            })
            .unwrap_or_default(),
        uptime_seconds: sample
            .uptime_seconds
            .zip(root)
            .map(|(up, p)| (up - p.start_time_seconds).max(0.0)),
        watched_seconds: sample.elapsed_seconds,
        processes: sample.processes.len(),
        threads: sample.thread_count(),
        cpus: format!(
            "usable CPUs {} = min({})",
            short_number(cpus.usable),
            limits.join(", ")
        ),
        runtimes: runtimes(sample),
        gpu,
        metrics,
        unavailable: unavailable
            .into_iter()
            .map(|(line, n)| {
                if n > 1 {
                    format!("{line} ({n}×)")
                } else {
                    line
                }
            })
            .collect(),
    }
}

/// "GNU OpenMP → 4 threads (OMP_NUM_THREADS) · OpenBLAS → 8 threads (default)" over the
/// tree, each runtime once, then the thread variables set.
fn runtimes(sample: &Sample) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut env: BTreeMap<&str, &str> = BTreeMap::new();
    let mut audited = false;
    for audit in sample.processes.iter().filter_map(|p| p.audit.as_ref()) {
        audited = true;
        for runtime in &audit.runtimes {
            let pool = audit.pools.iter().find(|p| p.runtime == runtime.name);
            let part = match pool {
                Some(pool) => format!(
                    "{} → {} threads ({})",
                    runtime.name,
                    pool.threads,
                    pool.variable.as_deref().unwrap_or("default")
                ),
                None => runtime.name.clone(),
            };
            if !parts.contains(&part) {
                parts.push(part);
            }
        }
        for (k, v) in &audit.env {
            env.insert(k, v);
        }
    }
    if !audited {
        return "runtimes: not audited yet".to_string();
    }
    let mut text = if parts.is_empty() {
        "runtimes: none loaded".to_string()
    } else {
        format!("runtimes: {}", parts.join(" · "))
    };
    if !env.is_empty() {
        let settings: Vec<String> = env.iter().map(|(k, v)| format!("{k}={v}")).collect();
        text.push_str(&format!("  env: {}", settings.join(" ")));
    }
    text
}

fn charts(watch: &Watch, journal: &Journal) -> Charts {
    let summaries: Vec<_> = watch.timeline.window(CHART_SECONDS).collect();
    let newest = summaries.last().map_or(0.0, |s| s.elapsed_seconds);
    let oldest = summaries.first().map_or(0.0, |s| s.elapsed_seconds);
    let x_bounds = (oldest.min(newest - 1.0).max(newest - CHART_SECONDS), newest);

    let mut running = Series {
        name: "running",
        ..Series::default()
    };
    let mut lock = Series {
        name: "lock",
        ..Series::default()
    };
    let mut io = Series {
        name: "io",
        ..Series::default()
    };
    let mut other = Series {
        name: "other",
        ..Series::default()
    };
    let mut ratio = Series {
        name: "wait/run",
        ..Series::default()
    };
    // The newest sample's ratio: `Some(None)` when nothing ran in it.
    let mut last_ratio: Option<Option<f64>> = None;
    let mut cpu = Series {
        name: "CPU used",
        ..Series::default()
    };
    let mut usable = Series {
        name: "usable",
        ..Series::default()
    };
    let mut rss = Series {
        name: "RSS",
        ..Series::default()
    };
    let mut limit = Series {
        name: "limit",
        ..Series::default()
    };
    let mut depth = Series {
        name: "queue",
        ..Series::default()
    };
    let mut p50 = Series {
        name: "p50",
        ..Series::default()
    };
    let mut p99 = Series {
        name: "p99",
        ..Series::default()
    };
    for s in &summaries {
        let t = s.elapsed_seconds;
        let (run, lck, ioq, all) = s.processes.iter().fold((0, 0, 0, 0), |acc, p| {
            (
                acc.0 + p.running,
                acc.1 + p.lock_waiters,
                acc.2 + p.io_waiters,
                acc.3 + p.threads,
            )
        });
        running.points.push((t, f64::from(run)));
        lock.points.push((t, f64::from(lck)));
        io.points.push((t, f64::from(ioq)));
        other
            .points
            .push((t, f64::from(all.saturating_sub(run + lck + ioq))));
        if s.interval_seconds > 0.0 {
            let (wait, ran, used) = s.processes.iter().fold((0.0, 0.0, 0.0), |acc, p| {
                (
                    acc.0 + p.delta_wait_seconds,
                    acc.1 + p.delta_run_seconds,
                    acc.2 + p.delta_cpu_seconds.unwrap_or(0.0),
                )
            });
            let computed = crate::model::runqueue_wait_ratio(wait, ran);
            // The chart stays continuous at 0; the title says when it was not computed.
            ratio.points.push((t, computed.unwrap_or(0.0)));
            last_ratio = Some(computed);
            cpu.points.push((t, used / s.interval_seconds));
        }
        usable.points.push((t, s.usable_cpus));
        rss.points.push((t, s.rss_bytes() as f64));
        if s.memory_limit_bytes > 0 {
            limit.points.push((t, s.memory_limit_bytes as f64));
        }
        if let Some(app) = s.app.as_ref().filter(|a| a.unavailable.is_none()) {
            if let Some(d) = app.queue_depth {
                depth.points.push((t, d));
            }
            if let Some(l) = app.latency_p50_seconds {
                p50.points.push((t, l));
            }
            if let Some(l) = app.latency_p99_seconds {
                p99.points.push((t, l));
            }
        }
    }
    let last = |s: &Series| s.points.last().map(|p| p.1);
    let max = |series: &[&Series]| {
        series
            .iter()
            .flat_map(|s| s.points.iter().map(|p| p.1))
            .fold(0.0, f64::max)
    };
    let latest = watch.timeline.latest();

    let threads = Chart {
        title: format!(
            "threads run {}·lock {}·io {}·other {}",
            last(&running).unwrap_or(0.0),
            last(&lock).unwrap_or(0.0),
            last(&io).unwrap_or(0.0),
            last(&other).unwrap_or(0.0)
        ),
        y_max: max(&[&running, &lock, &io, &other]).max(1.0),
        series: vec![running, lock, io, other],
        unavailable: None,
    };
    let wait_ratio = Chart {
        title: format!(
            "run-queue wait ratio {}",
            match last_ratio {
                Some(Some(r)) => format!("{r:.2}"),
                Some(None) => crate::model::RATIO_NOT_COMPUTED.to_string(),
                None => "-".to_string(),
            }
        ),
        y_max: max(&[&ratio]).max(1.0),
        unavailable: ratio
            .points
            .is_empty()
            .then(|| "no schedstat readings yet".to_string()),
        series: vec![ratio],
    };
    let cpu_chart = Chart {
        title: format!(
            "CPU {} of {} usable",
            last(&cpu).map_or("-".to_string(), |c| format!("{c:.1}")),
            last(&usable).map_or("-".to_string(), short_number)
        ),
        y_max: max(&[&cpu, &usable]).max(1.0),
        series: vec![cpu, usable],
        unavailable: None,
    };
    let memory = Chart {
        title: format!(
            "RSS {} of {}",
            format_bytes(last(&rss).unwrap_or(0.0) as u64),
            last(&limit).map_or("no limit".to_string(), |l| format_bytes(l as u64))
        ),
        y_max: max(&[&rss, &limit]).max(1.0),
        series: vec![rss, limit],
        unavailable: None,
    };
    let gpu_unavailable = match latest.and_then(|s| s.gpu.as_ref()) {
        None => Some("GPU: unavailable (GPU source off)".to_string()),
        Some(g) => g
            .unavailable
            .as_ref()
            .map(|why| format!("GPU: unavailable ({why})")),
    };
    let gpu_series = Series {
        name: "GPU memory",
        points: journal
            .gpu_memory
            .iter()
            .filter(|(t, _)| *t >= x_bounds.0)
            .copied()
            .collect(),
    };
    let gpu = Chart {
        title: match (&gpu_unavailable, last(&gpu_series)) {
            (Some(_), _) => "GPU memory".to_string(),
            (None, Some(b)) => format!("GPU memory of the job {}", format_bytes(b as u64)),
            (None, None) => "GPU memory: no process of the job on a GPU".to_string(),
        },
        y_max: max(&[&gpu_series]).max(1.0),
        series: vec![gpu_series],
        unavailable: gpu_unavailable,
    };
    let app_unavailable = match latest.and_then(|s| s.app.as_ref()) {
        None => Some("metrics: not configured (--metrics-url)".to_string()),
        Some(app) => app
            .unavailable
            .as_ref()
            .map(|why| format!("metrics: unavailable ({why})")),
    };
    let app = Chart {
        title: format!(
            "queue {} · p50 {} · p99 {}",
            last(&depth).map_or("-".to_string(), short_number),
            last(&p50).map_or("-".to_string(), format_seconds),
            last(&p99).map_or("-".to_string(), format_seconds)
        ),
        y_max: max(&[&depth, &p50, &p99]).max(1.0),
        series: vec![depth, p50, p99],
        unavailable: app_unavailable,
    };
    Charts {
        x_bounds,
        threads,
        wait_ratio,
        cpu: cpu_chart,
        memory,
        gpu,
        app,
    }
}

fn processes(watch: &Watch, latest: &Sample) -> Vec<ProcessData> {
    let previous = watch.timeline.previous();
    let interval = previous.map_or(0.0, |p| latest.elapsed_seconds - p.elapsed_seconds);
    let before: HashMap<i32, &ThreadSample> = previous
        .map(|p| p.threads().map(|(_, t)| (t.tid, t)).collect())
        .unwrap_or_default();
    // Context switches are read every few samples: take their rate over all recent ones.
    let switches_before: HashMap<i32, (f64, u64)> = watch
        .timeline
        .switches_before_latest()
        .map(|(at, counts)| counts.iter().map(|&(tid, n)| (tid, (at, n))).collect())
        .unwrap_or_default();
    let mut depth: HashMap<i32, usize> = HashMap::new();
    latest
        .processes
        .iter()
        .map(|p| {
            let d = depth.get(&p.ppid).map_or(0, |d| d + 1);
            depth.insert(p.pid, d);
            let cpu_percent = previous
                .and_then(|prev| prev.process(p.pid))
                .filter(|_| interval > 0.0)
                .map(|prev| (p.cpu_seconds - prev.cpu_seconds).max(0.0) / interval * 100.0);
            let threads = p
                .threads
                .iter()
                .map(|t| {
                    let earlier = before.get(&t.tid).filter(|_| interval > 0.0);
                    let rate = |now: Option<f64>, then: Option<f64>| {
                        Some((now? - then?).max(0.0) / interval * 100.0)
                    };
                    ThreadRow {
                        tid: t.tid,
                        name: t.name.clone(),
                        state: thread_state(p, t),
                        cpu_percent: earlier.and_then(|e| {
                            rate(t.run_seconds, e.run_seconds)
                                .or_else(|| rate(Some(t.cpu_seconds), Some(e.cpu_seconds)))
                        }),
                        wait_percent: earlier
                            .and_then(|e| rate(t.runqueue_wait_seconds, e.runqueue_wait_seconds)),
                        switches_per_second: switches_before.get(&t.tid).and_then(|(then, n)| {
                            let span = latest.elapsed_seconds - then;
                            let now = t.nonvoluntary_ctxt_switches?;
                            (span > 0.0).then(|| now.saturating_sub(*n) as f64 / span)
                        }),
                        wchan: t
                            .wchan
                            .clone()
                            .or_else(|| syscall_name(t))
                            .unwrap_or_else(|| "-".to_string()),
                        count: 1,
                    }
                })
                .collect();
            // A rank of a distributed job shows its rank next to its name.
            let comm = match p.audit.as_ref().and_then(|a| a.rank.as_ref()) {
                Some(rank) => format!("{} ({})", p.comm, rank.label()),
                None => p.comm.clone(),
            };
            ProcessData {
                pid: p.pid,
                ppid: p.ppid,
                comm,
                state: p.state,
                depth: d,
                rss_bytes: p.rss_bytes,
                cpu_percent,
                threads,
            }
        })
        .collect()
}

fn syscall_name(t: &ThreadSample) -> Option<String> {
    match &t.syscall {
        Some(crate::model::Syscall::InSyscall { name, number, .. }) => Some(
            name.clone()
                .map_or(format!("syscall {number}"), |n| format!("{n}()")),
        ),
        _ => None,
    }
}

/// A thread's state in the table: what /proc shows, or `idle` for a futex waiter its
/// stacks show waiting for work, time or input (not red, as a lock would be).
fn thread_state(
    process: &crate::model::ProcessSample,
    thread: &crate::model::ThreadSample,
) -> String {
    let kind = classify(thread);
    let idle = kind == crate::timeline::waits::WaitKind::Lock
        && process
            .waits
            .as_ref()
            .and_then(|w| w.class_of(thread.tid))
            .is_some_and(|c| c.is_idle());
    if idle { "idle" } else { kind.as_str() }.to_string()
}

#[cfg(test)]
mod state_tests {
    use super::*;
    use crate::model::stacks::WaitClass;
    use crate::model::verdict::{ProcessWaits, ThreadWait};
    use crate::model::{ProcessSample, ThreadSample};

    #[test]
    fn a_futex_waiter_its_stacks_call_idle_is_not_shown_as_a_lock() {
        let waiter = |tid| ThreadSample {
            tid,
            state: 'S',
            wchan: Some("futex_do_wait".into()),
            ..ThreadSample::default()
        };
        let mut process = ProcessSample {
            threads: vec![waiter(1), waiter(2)].into(),
            ..ProcessSample::default()
        };
        assert_eq!(thread_state(&process, &waiter(1)), "lock");
        process.waits = Some(std::sync::Arc::new(ProcessWaits {
            threads: vec![ThreadWait {
                tid: 1,
                class: WaitClass::IdleWork,
                line: "worker waits for work".into(),
                pool: None,
            }],
            ..ProcessWaits::default()
        }));
        assert_eq!(thread_state(&process, &waiter(1)), "idle");
        assert_eq!(thread_state(&process, &waiter(2)), "lock");
    }
}
