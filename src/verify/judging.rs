//! Judging one run of a scenario: what it measured against what was expected.

use super::*;

/// Hung: the threads that should hang (see `hang_roles`) went ≥ 1 s without running at
/// all, together, and the scenario says its work did not complete.
pub(super) fn hung(outcome: &RunOutcome) -> Option<f64> {
    let result = outcome.result.as_ref()?;
    let hang = outcome.hang.as_ref()?;
    (!result.completed && hang.threads > 0 && hang.stalled_seconds >= 1.0)
        .then_some(hang.stalled_seconds)
}

pub(super) fn completed_ok(outcome: &RunOutcome) -> bool {
    outcome.exit_code == Some(0) && outcome.result.as_ref().is_some_and(|r| r.completed)
}

pub(super) fn evaluate(
    scenario: Scenario,
    outcomes: &[(Variant, RunInfo, RunOutcome, Option<Detection>)],
) -> Vec<VerifyRow> {
    let find = |variant| {
        outcomes
            .iter()
            .find(|(v, ..)| *v == variant)
            .map(|(_, _, outcome, detection)| (outcome, detection))
    };
    let broken = find(Variant::Broken);
    let fixed = find(Variant::Fixed);
    let mut rows = Vec::new();
    let mut row = |variant: Variant,
                   outcome: &RunOutcome,
                   detection: &Option<Detection>,
                   measured: &str,
                   value: String,
                   ratio: Option<String>,
                   pass: bool,
                   note: String| {
        let note = match &outcome.error {
            Some(error) => error.clone(),
            None => note,
        };
        rows.push(VerifyRow {
            scenario: scenario.name().to_string(),
            variant: variant.name().to_string(),
            measured: measured.to_string(),
            value,
            ratio,
            pass: pass && outcome.error.is_none() && detection.as_ref().is_none_or(|d| d.ok),
            note,
            detected: detection.as_ref().map(|d| d.finding.clone()),
            detection_latency_seconds: detection.as_ref().and_then(|d| d.latency_seconds),
        });
    };
    let detail = |outcome: &RunOutcome| {
        outcome
            .result
            .as_ref()
            .map_or(String::new(), |r| r.detail.clone())
    };
    let number = |outcome: &RunOutcome, get: fn(&ScenarioResult) -> Option<f64>| {
        outcome.result.as_ref().and_then(get)
    };
    match scenario {
        Scenario::Deadlock | Scenario::ForkLock | Scenario::GpuContention | Scenario::IdlePool => {
            if let Some((outcome, detection)) = broken {
                let stalled = hung(outcome);
                let value = match stalled {
                    Some(seconds) => format!("hung (no CPU for {seconds:.1}s)"),
                    None if completed_ok(outcome) => "completed".to_string(),
                    None => "no hang seen".to_string(),
                };
                row(
                    Variant::Broken,
                    outcome,
                    detection,
                    "completion",
                    value,
                    None,
                    stalled.is_some(),
                    detail(outcome),
                );
            }
            if let Some((outcome, detection)) = fixed {
                let ok = completed_ok(outcome);
                let value = if ok {
                    format!("completed in {:.1}s", outcome.wall_seconds)
                } else {
                    "did not complete".to_string()
                };
                let ratio = broken
                    .filter(|(b, _)| hung(b).is_some() && ok)
                    .map(|_| "hung → completed".to_string());
                row(
                    Variant::Fixed,
                    outcome,
                    detection,
                    "completion",
                    value,
                    ratio,
                    ok,
                    detail(outcome),
                );
            }
        }
        Scenario::Oversubscribe => {
            let get = |r: &ScenarioResult| r.throughput;
            let b = broken.and_then(|(o, _)| number(o, get));
            let f = fixed.and_then(|(o, _)| number(o, get));
            let ratio = ratio_of(f, b);
            let fmt = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.1} units/s"));
            if let Some((outcome, detection)) = broken {
                row(
                    Variant::Broken,
                    outcome,
                    detection,
                    "throughput",
                    fmt(b),
                    None,
                    b.is_some(),
                    detail(outcome),
                );
            }
            if let Some((outcome, detection)) = fixed {
                // Work per CPU-second: what spinning on an oversubscribed CPU wastes,
                // whatever share of the machine other processes leave each run. Wall
                // throughput alone depends on that share (a loaded machine gives the
                // eight threads of the broken run more of it than the two of the fixed).
                let per_cpu = |r: &ScenarioResult| match (r.work_units, r.cpu_seconds) {
                    (Some(u), Some(s)) if s > 0.0 => Some(u as f64 / s),
                    _ => None,
                };
                let efficiency = ratio_of(
                    number(outcome, per_cpu),
                    broken.and_then(|(o, _)| number(o, per_cpu)),
                );
                let pass = match efficiency {
                    Some(e) => e >= 1.5 && ratio.is_some_and(|r| r > 1.0),
                    None => ratio.is_some_and(|r| r >= 1.5),
                };
                let text = match (ratio, efficiency) {
                    (Some(r), Some(e)) => Some(format!("{r:.1}× faster, {e:.1}× work/CPU-s")),
                    (Some(r), None) => Some(format!("{r:.1}× faster")),
                    _ => None,
                };
                row(
                    Variant::Fixed,
                    outcome,
                    detection,
                    "throughput",
                    fmt(f),
                    text,
                    pass,
                    detail(outcome),
                );
            }
        }
        Scenario::LockContention => rows.extend(turn_taking_rows(
            Scenario::LockContention,
            "calls/s",
            broken,
            fixed,
        )),
        Scenario::Gil => rows.extend(turn_taking_rows(Scenario::Gil, "rounds/s", broken, fixed)),
        Scenario::EventLoop => {
            let get = |r: &ScenarioResult| r.latency_p99_seconds;
            let b = broken.and_then(|(o, _)| number(o, get));
            let f = fixed.and_then(|(o, _)| number(o, get));
            let requests = |o: &RunOutcome| number(o, |r| r.throughput);
            let fmt = |v: Option<f64>| v.map_or("-".to_string(), crate::units::format_seconds);
            if let Some((outcome, detection)) = broken {
                row(
                    Variant::Broken,
                    outcome,
                    detection,
                    "latency p99",
                    fmt(b),
                    None,
                    b.is_some(),
                    format!(
                        "{:.1} requests/s; {}",
                        requests(outcome).unwrap_or(0.0),
                        detail(outcome)
                    ),
                );
            }
            if let Some((outcome, detection)) = fixed {
                // Off the loop, a request waits only for its own call.
                let lower = ratio_of(b, f);
                let faster = ratio_of(requests(outcome), broken.and_then(|(o, _)| requests(o)));
                let text = match (lower, faster) {
                    (Some(l), Some(x)) => Some(format!("{l:.1}× lower, {x:.1}× requests/s")),
                    (Some(l), None) => Some(format!("{l:.1}× lower")),
                    _ => None,
                };
                row(
                    Variant::Fixed,
                    outcome,
                    detection,
                    "latency p99",
                    fmt(f),
                    text,
                    completed_ok(outcome) && lower.is_some_and(|l| l >= 1.3),
                    format!(
                        "{:.1} requests/s; {}",
                        requests(outcome).unwrap_or(0.0),
                        detail(outcome)
                    ),
                );
            }
        }
        Scenario::ThreadExplosion => {
            let get = |r: &ScenarioResult| r.peak_threads.map(|t| t as f64);
            let b = broken.and_then(|(o, _)| number(o, get));
            let f = fixed.and_then(|(o, _)| number(o, get));
            let fmt = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.0} threads"));
            // The detector's bound on this machine, which the broken variant must pass
            // (the default rule `threads > 50` alerts earlier, on its own).
            let bound = crate::workload::thread_explosion::thread_bound() as f64;
            if let Some((outcome, detection)) = broken {
                let pass = b.is_some_and(|b| b > bound);
                row(
                    Variant::Broken,
                    outcome,
                    detection,
                    "peak threads",
                    fmt(b),
                    None,
                    pass,
                    format!(
                        "detector bound {bound:.0} = max({}, {} × usable CPUs)",
                        crate::model::runtimes::MIN_THREAD_BOUND,
                        crate::model::runtimes::THREADS_PER_CPU_BOUND
                    ),
                );
            }
            if let Some((outcome, detection)) = fixed {
                let pass = completed_ok(outcome)
                    && f.is_some_and(|f| f <= bound)
                    && ratio_of(b, f).is_some_and(|r| r > 1.0);
                row(
                    Variant::Fixed,
                    outcome,
                    detection,
                    "peak threads",
                    fmt(f),
                    ratio_of(b, f).map(|r| format!("{r:.0}× fewer")),
                    pass,
                    detail(outcome),
                );
            }
        }
        Scenario::QueueOverload => {
            let get = |r: &ScenarioResult| r.latency_p99_seconds;
            let b = broken.and_then(|(o, _)| number(o, get));
            let f = fixed.and_then(|(o, _)| number(o, get));
            let depth = |o: &RunOutcome| o.result.as_ref().and_then(|r| r.queue_depth_max);
            let fmt = |v: Option<f64>| v.map_or("-".to_string(), crate::units::format_seconds);
            if let Some((outcome, detection)) = broken {
                let pass = depth(outcome).is_some_and(|d| d > 1000);
                row(
                    Variant::Broken,
                    outcome,
                    detection,
                    "latency p99",
                    fmt(b),
                    None,
                    pass,
                    format!("max queue depth {}", depth(outcome).unwrap_or(0)),
                );
            }
            if let Some((outcome, detection)) = fixed {
                let ratio = ratio_of(b, f);
                let pass =
                    ratio.is_some_and(|r| r > 1.5) && depth(outcome).is_some_and(|d| d <= 1000);
                row(
                    Variant::Fixed,
                    outcome,
                    detection,
                    "latency p99",
                    fmt(f),
                    ratio.map(|r| format!("{r:.1}× lower")),
                    pass,
                    format!(
                        "max queue depth {}, {} rejected",
                        depth(outcome).unwrap_or(0),
                        outcome
                            .result
                            .as_ref()
                            .and_then(|r| r.rejected)
                            .unwrap_or(0)
                    ),
                );
            }
        }
        Scenario::MemoryGrowth => {
            let get = |r: &ScenarioResult| r.peak_rss_bytes.map(|b| b as f64);
            let b = broken.and_then(|(o, _)| number(o, get));
            let f = fixed.and_then(|(o, _)| number(o, get));
            let fmt = |v: Option<f64>| {
                v.map_or("-".to_string(), |v| crate::units::format_bytes(v as u64))
            };
            if let Some((outcome, detection)) = broken {
                row(
                    Variant::Broken,
                    outcome,
                    detection,
                    "peak RSS",
                    fmt(b),
                    None,
                    b.is_some(),
                    detail(outcome),
                );
            }
            if let Some((outcome, detection)) = fixed {
                let ratio = ratio_of(b, f);
                row(
                    Variant::Fixed,
                    outcome,
                    detection,
                    "peak RSS",
                    fmt(f),
                    ratio.map(|r| format!("{r:.1}× smaller")),
                    ratio.is_some_and(|r| r >= 2.0),
                    detail(outcome),
                );
            }
        }
        Scenario::Healthy => {
            if let Some((outcome, detection)) = fixed {
                let p99 = number(outcome, |r| r.latency_p99_seconds);
                let pass = completed_ok(outcome) && p99.is_some_and(|p| p < 1.0);
                let throughput = number(outcome, |r| r.throughput).unwrap_or(0.0);
                row(
                    Variant::Fixed,
                    outcome,
                    detection,
                    "latency p99",
                    p99.map_or("-".to_string(), crate::units::format_seconds),
                    None,
                    pass,
                    format!("{throughput:.1} units/s; {}", detail(outcome)),
                );
            }
        }
    }
    rows
}

/// The rows of threads that take turns (a lock convoy, the GIL): work per second (in
/// `unit`), and the cores used beside them (the lock holds the process to one thread's
/// work whatever its CPUs).
fn turn_taking_rows(
    scenario: Scenario,
    unit: &str,
    broken: Option<(&RunOutcome, &Option<Detection>)>,
    fixed: Option<(&RunOutcome, &Option<Detection>)>,
) -> Vec<VerifyRow> {
    let throughput = |o: &RunOutcome| o.result.as_ref().and_then(|r| r.throughput);
    let cores = |o: &RunOutcome| {
        let r = o.result.as_ref()?;
        (r.elapsed_seconds > 0.0).then(|| r.cpu_seconds.unwrap_or(0.0) / r.elapsed_seconds)
    };
    let fmt = |o: &RunOutcome| match (throughput(o), cores(o)) {
        (Some(t), Some(c)) => format!("{t:.1} {unit} on {c:.2} cores"),
        (Some(t), None) => format!("{t:.1} {unit}"),
        _ => "-".to_string(),
    };
    let detail = |o: &RunOutcome| {
        o.result
            .as_ref()
            .map_or(String::new(), |r| r.detail.clone())
    };
    let mut rows = Vec::new();
    let mut row = |variant: Variant,
                   outcome: &RunOutcome,
                   detection: &Option<Detection>,
                   ratio: Option<String>,
                   pass: bool| {
        rows.push(VerifyRow {
            scenario: scenario.name().to_string(),
            variant: variant.name().to_string(),
            measured: "throughput".to_string(),
            value: fmt(outcome),
            ratio,
            pass: pass && outcome.error.is_none() && detection.as_ref().is_none_or(|d| d.ok),
            note: outcome.error.clone().unwrap_or_else(|| detail(outcome)),
            detected: detection.as_ref().map(|d| d.finding.clone()),
            detection_latency_seconds: detection.as_ref().and_then(|d| d.latency_seconds),
        });
    };
    if let Some((outcome, detection)) = broken {
        row(
            Variant::Broken,
            outcome,
            detection,
            None,
            throughput(outcome).is_some(),
        );
    }
    if let Some((outcome, detection)) = fixed {
        let faster = ratio_of(throughput(outcome), broken.and_then(|(b, _)| throughput(b)));
        let more_cores = ratio_of(cores(outcome), broken.and_then(|(b, _)| cores(b)));
        // Without the lock (or with a GIL each) the threads run side by side: more calls on more cores. On
        // a machine that other processes load past its CPUs, the CPUs the fix frees go
        // to them: there its throughput must hold, and the row says the machine was
        // loaded. On one usable CPU there is nothing to gain.
        let usable = common::usable_cpus();
        let load = machine_load();
        let loaded = load.is_some_and(|l| l > 1.5 * usable as f64);
        let pass = completed_ok(outcome)
            && match faster {
                // Not judged on speed: the fixed run's share of a loaded machine is not
                // its own doing (the row says so).
                Some(_) if loaded => true,
                Some(f) if usable <= 1 => f >= 0.9,
                Some(f) => f >= 1.3,
                None => false,
            };
        let text = match (faster, more_cores) {
            (Some(f), Some(c)) => Some(format!("{f:.1}× faster, {c:.1}× cores")),
            (Some(f), None) => Some(format!("{f:.1}× faster")),
            _ => None,
        };
        let mut outcome = outcome.clone();
        if let (true, Some(load), Some(result)) = (loaded, load, outcome.result.as_mut()) {
            result.detail = format!(
                "{}; machine loaded (load {load:.1} on {usable} CPUs): speed not judged",
                result.detail
            );
        }
        let outcome = &outcome;
        row(Variant::Fixed, outcome, detection, text, pass);
    }
    rows
}

/// The machine's one-minute load average.
fn machine_load() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// `numerator / denominator` when both are positive.
pub(super) fn ratio_of(numerator: Option<f64>, denominator: Option<f64>) -> Option<f64> {
    match (numerator, denominator) {
        (Some(n), Some(d)) if n > 0.0 && d > 0.0 => Some(n / d),
        _ => None,
    }
}
