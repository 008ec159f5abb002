//! `run-workload --verify`: every scenario, broken then fixed, as child processes of
//! this same executable, and a table of what each measured.
//!
//! Each run is a separate process so that a watcher can attach to its pid. The runner
//! reads the child's machine lines (`started`, `child`, `onset`, `metrics`, `result`),
//! watches CPU progress of the processes that should hang from `/proc/<pid>/stat`, and
//! hands every event to a [`ScenarioObserver`] — the hook through which the watch engine
//! adds its "detected" column and detection latency.

use std::io::{BufRead, BufReader, IsTerminal, Read};
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde::Serialize;

pub mod observer;

use crate::workload::common::{self, ScenarioResult, WorkloadLine};
use crate::workload::{Scenario, Variant, WorkloadOptions};

/// One running scenario process, as the observer sees it.
#[derive(Debug, Clone)]
pub struct RunInfo {
    pub scenario: Scenario,
    pub variant: Variant,
    /// The scenario's own process.
    pub pid: i32,
    /// Processes the scenario started, with their role.
    pub children: Vec<(i32, String)>,
    pub started: Instant,
    /// How long the run was told to last (`--duration`).
    pub duration: Duration,
    /// When the problem began (the scenario's `onset=` line); none for fixed variants.
    pub onset: Option<Instant>,
    pub metrics_url: Option<String>,
}

/// How a run ended.
#[derive(Debug, Clone)]
pub struct RunOutcome {
    pub exit_code: Option<i32>,
    pub result: Option<ScenarioResult>,
    /// What the runner saw from outside: processes with no CPU progress.
    pub hang: Option<HangObservation>,
    pub wall_seconds: f64,
    /// Why the run could not be measured (did not start, timed out, no result).
    pub error: Option<String>,
}

/// Processes that stopped making CPU progress, seen from `/proc/<pid>/stat`.
#[derive(Debug, Clone, PartialEq)]
pub struct HangObservation {
    pub pids: Vec<i32>,
    /// The shortest time any of them went without CPU progress, up to its last sighting.
    pub stalled_seconds: f64,
}

/// What a detector found in one run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Detection {
    /// Finding kind (e.g. `deadlock`) or `none`.
    pub finding: String,
    /// Seconds from the onset of the problem to the finding.
    pub latency_seconds: Option<f64>,
    /// Whether this is what the variant should give: the right finding for a broken
    /// variant, none for a fixed one.
    pub ok: bool,
}

/// Hook for each scenario run: the watch engine attaches to `run.pid` in `started`,
/// samples in `poll` (called about every 100 ms), and reports what it found in
/// `finished`.
pub trait ScenarioObserver {
    fn started(&mut self, _run: &RunInfo) {}
    fn child_started(&mut self, _run: &RunInfo, _pid: i32, _role: &str) {}
    fn onset(&mut self, _run: &RunInfo) {}
    fn poll(&mut self, _run: &RunInfo, _now: Instant) {}
    fn finished(&mut self, _run: &RunInfo, _outcome: &RunOutcome) -> Option<Detection> {
        None
    }
}

/// The observer that observes nothing (until the watch engine provides one).
pub struct NoObserver;

impl ScenarioObserver for NoObserver {}

/// One row of the verify table.
#[derive(Debug, Clone, Serialize)]
pub struct VerifyRow {
    pub scenario: String,
    pub variant: String,
    /// What was measured: `throughput`, `latency p99`, `peak threads`, `peak RSS`,
    /// `completion`.
    pub measured: String,
    /// The measurement for people (`627.0 units/s`, `hung (no CPU for 2.1s)`).
    pub value: String,
    /// Broken/fixed comparison, on the fixed row (`5.0× faster`).
    pub ratio: Option<String>,
    /// This row behaved as its variant should.
    pub pass: bool,
    pub note: String,
    pub detected: Option<String>,
    pub detection_latency_seconds: Option<f64>,
}

/// All rows and the verdict.
#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    pub rows: Vec<VerifyRow>,
    pub passed: bool,
    pub wall_seconds: f64,
}

/// What to verify and how long to let it run.
#[derive(Debug, Clone, Default)]
pub struct VerifyOptions {
    /// Only this scenario (default: all, in order).
    pub only: Option<Scenario>,
    /// Let every broken run last at least this long (a detector with a hang window
    /// needs the problem to outlast it); zero keeps the short defaults.
    pub min_broken_duration: Duration,
}

/// How one scenario is run under verify.
#[derive(Debug, Clone)]
struct Plan {
    scenario: Scenario,
    args: Vec<String>,
    broken_duration: Duration,
    fixed_duration: Duration,
}

fn plans(only: Option<Scenario>) -> Vec<Plan> {
    let plan = |scenario, args: &[&str], broken: u64, fixed: u64| Plan {
        scenario,
        args: args.iter().map(|a| (*a).to_string()).collect(),
        broken_duration: Duration::from_millis(broken),
        fixed_duration: Duration::from_millis(fixed),
    };
    let all = vec![
        plan(Scenario::Deadlock, &[], 3000, 4000),
        plan(Scenario::ForkLock, &[], 2500, 2500),
        plan(Scenario::Oversubscribe, &["--units", "6000"], 6000, 6000),
        plan(Scenario::ThreadExplosion, &[], 2500, 2500),
        plan(Scenario::GpuContention, &[], 2500, 4000),
        plan(Scenario::QueueOverload, &[], 4000, 4000),
        plan(Scenario::MemoryGrowth, &["--rate", "96"], 3000, 3000),
        plan(Scenario::Healthy, &[], 0, 3000),
    ];
    all.into_iter()
        .filter(|plan| only.is_none_or(|scenario| scenario == plan.scenario))
        .collect()
}

/// Which processes of a run should hang in its broken variant.
fn hang_roles(scenario: Scenario) -> Option<&'static [&'static str]> {
    match scenario {
        Scenario::Deadlock => Some(&["main"]),
        Scenario::ForkLock => Some(&["forked-child"]),
        Scenario::GpuContention => Some(&["gpu-rank"]),
        _ => None,
    }
}

/// `tfwatch run-workload --verify`: prints the table; exit 0 only if every fix works.
pub fn run_verify(args: &WorkloadOptions) -> Result<i32> {
    let options = VerifyOptions {
        only: args.scenario,
        // The problem must outlast the hang window and two sampling intervals.
        min_broken_duration: Duration::from_secs_f64(
            crate::verify::observer::VERIFY_HANG_AFTER_SECONDS
                + 3.0 * crate::verify::observer::VERIFY_INTERVAL.as_secs_f64(),
        ),
    };
    let report = verify_with(&options, &mut crate::verify::observer::WatchObserver::new())?;
    common::emit(&render_table(&report.rows));
    let failed: Vec<&VerifyRow> = report.rows.iter().filter(|row| !row.pass).collect();
    if failed.is_empty() {
        common::emit(&format!(
            "verify: every fixed variant beats its broken one ({} runs in {:.1}s)",
            report.rows.len(),
            report.wall_seconds
        ));
        Ok(0)
    } else {
        for row in &failed {
            common::emit(&format!(
                "verify: FAILED {} {}: {}",
                row.scenario, row.variant, row.note
            ));
        }
        common::emit(&format!(
            "verify: {} of {} runs did not behave as expected ({:.1}s)",
            failed.len(),
            report.rows.len(),
            report.wall_seconds
        ));
        Ok(1)
    }
}

/// Runs the scenarios broken then fixed, with `observer` watching every run, and
/// returns the table rows.
pub fn verify_with(
    options: &VerifyOptions,
    observer: &mut dyn ScenarioObserver,
) -> Result<VerifyReport> {
    let start = Instant::now();
    let mut plans = plans(options.only);
    for plan in &mut plans {
        plan.broken_duration = plan.broken_duration.max(options.min_broken_duration);
    }
    let runs: u64 = plans
        .iter()
        .map(|plan| 1 + u64::from(plan.scenario.has_broken_variant()))
        .sum();
    let progress = progress_bar(runs);
    let mut rows = Vec::new();
    for plan in &plans {
        let mut outcomes = Vec::new();
        for variant in [Variant::Broken, Variant::Fixed] {
            if variant == Variant::Broken && !plan.scenario.has_broken_variant() {
                continue;
            }
            progress.set_message(format!("{} {}", plan.scenario.name(), variant.name()));
            let (info, outcome, detection) = run_one(plan, variant, observer)?;
            progress.inc(1);
            outcomes.push((variant, info, outcome, detection));
        }
        rows.extend(evaluate(plan.scenario, &outcomes));
    }
    progress.finish_and_clear();
    let passed = rows.iter().all(|row| row.pass);
    Ok(VerifyReport {
        rows,
        passed,
        wall_seconds: start.elapsed().as_secs_f64(),
    })
}

fn progress_bar(len: u64) -> indicatif::ProgressBar {
    if !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::with_draw_target(
        Some(len),
        indicatif::ProgressDrawTarget::stderr(),
    );
    if let Ok(style) =
        indicatif::ProgressStyle::with_template("verify [{bar:30}] {pos}/{len} {msg} ({elapsed})")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

enum Event {
    Line(Box<WorkloadLine>),
    Text(String),
    Closed,
}

/// Last sighting of a process's CPU time: when it last changed.
struct Progress {
    ticks: u64,
    last_change: Instant,
    last_seen: Instant,
}

fn run_one(
    plan: &Plan,
    variant: Variant,
    observer: &mut dyn ScenarioObserver,
) -> Result<(RunInfo, RunOutcome, Option<Detection>)> {
    let duration = match variant {
        Variant::Broken => plan.broken_duration,
        Variant::Fixed => plan.fixed_duration,
    };
    let mut args = vec![
        "--scenario".to_string(),
        plan.scenario.name().to_string(),
        "--duration".to_string(),
        format!("{}ms", duration.as_millis()),
    ];
    if variant == Variant::Fixed {
        args.push("--fixed".to_string());
    }
    args.extend(plan.args.iter().cloned());
    let mut command = common::workload_command(&args)?;
    command.stdout(Stdio::piped()).stderr(Stdio::piped());
    let started = Instant::now();
    let mut child = command.spawn().context("cannot start a scenario process")?;
    let mut info = RunInfo {
        scenario: plan.scenario,
        variant,
        pid: child.id() as i32,
        children: Vec::new(),
        started,
        duration,
        onset: None,
        metrics_url: None,
    };
    observer.started(&info);
    let events = read_events(&mut child);
    let stderr = read_stderr(&mut child);
    let watch_roles = match variant {
        Variant::Broken => hang_roles(plan.scenario),
        Variant::Fixed => None,
    };
    let mut watched: Vec<(i32, Progress)> = Vec::new();
    if watch_roles.is_some_and(|roles| roles.contains(&"main")) {
        watched.push((info.pid, new_progress(info.pid)));
    }
    let mut result = None;
    let mut tail: Vec<String> = Vec::new();
    let mut closed = false;
    let hard_deadline = started + duration + Duration::from_secs(15);
    let mut exit_code = None;
    let mut error = None;
    loop {
        while let Ok(event) = events.try_recv() {
            let event = match event {
                Event::Line(line) => Ok(*line),
                other => Err(other),
            };
            match event {
                Ok(WorkloadLine::Child { pid, role }) => {
                    info.children.push((pid, role.clone()));
                    observer.child_started(&info, pid, &role);
                    if watch_roles.is_some_and(|roles| roles.iter().any(|r| role.starts_with(r))) {
                        watched.push((pid, new_progress(pid)));
                    }
                }
                Ok(WorkloadLine::Onset { .. }) => {
                    if info.onset.is_none() {
                        info.onset = Some(Instant::now());
                        observer.onset(&info);
                    }
                }
                Ok(WorkloadLine::Metrics { url }) => info.metrics_url = Some(url),
                Ok(WorkloadLine::Result(found)) => result = Some(found),
                Ok(WorkloadLine::Started { .. }) => {}
                Err(Event::Text(text)) => {
                    tail.push(text);
                    if tail.len() > 5 {
                        tail.remove(0);
                    }
                }
                Err(Event::Closed) => closed = true,
                Err(Event::Line(_)) => {}
            }
        }
        let now = Instant::now();
        for (pid, progress) in &mut watched {
            if let Some(ticks) = common::process_cpu_ticks(*pid) {
                if ticks != progress.ticks {
                    progress.ticks = ticks;
                    progress.last_change = now;
                }
                progress.last_seen = now;
            }
        }
        observer.poll(&info, now);
        if let Ok(Some(status)) = child.try_wait() {
            exit_code = status.code();
            if closed || now > hard_deadline {
                break;
            }
        }
        if now > hard_deadline {
            error = Some(format!(
                "did not end within 15s of its {:.1}s duration",
                duration.as_secs_f64()
            ));
            let _ = child.kill();
            let _ = child.wait();
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    // Drain what is left of the output.
    while let Ok(event) = events.recv_timeout(Duration::from_millis(200)) {
        match event {
            Event::Line(line) => {
                if let WorkloadLine::Result(found) = *line {
                    result = Some(found);
                }
            }
            Event::Closed => break,
            _ => {}
        }
    }
    let stderr = stderr.join().unwrap_or_default();
    if error.is_none() && result.is_none() {
        let said = stderr.trim();
        error = Some(if said.is_empty() {
            format!(
                "no result line (exit {exit_code:?}); last output: {}",
                tail.join(" | ")
            )
        } else {
            format!("no result line: {said}")
        });
    }
    let hang = (!watched.is_empty()).then(|| HangObservation {
        pids: watched.iter().map(|(pid, _)| *pid).collect(),
        stalled_seconds: watched
            .iter()
            .map(|(_, p)| p.last_seen.duration_since(p.last_change).as_secs_f64())
            .fold(f64::INFINITY, f64::min),
    });
    let outcome = RunOutcome {
        exit_code,
        result,
        hang,
        wall_seconds: started.elapsed().as_secs_f64(),
        error,
    };
    let detection = observer.finished(&info, &outcome);
    Ok((info, outcome, detection))
}

fn new_progress(pid: i32) -> Progress {
    let now = Instant::now();
    Progress {
        ticks: common::process_cpu_ticks(pid).unwrap_or(0),
        last_change: now,
        last_seen: now,
    }
}

fn read_events(child: &mut Child) -> mpsc::Receiver<Event> {
    let (sender, receiver) = mpsc::channel();
    if let Some(stdout) = child.stdout.take() {
        let spawned = std::thread::Builder::new()
            .name("verify-reader".to_string())
            .spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    let event = match common::parse_line(&line) {
                        Some(parsed) => Event::Line(Box::new(parsed)),
                        None => Event::Text(line),
                    };
                    if sender.send(event).is_err() {
                        return;
                    }
                }
                let _ = sender.send(Event::Closed);
            });
        if spawned.is_err() {
            common::say("verify", "cannot start a reader thread");
        }
    }
    receiver
}

fn read_stderr(child: &mut Child) -> std::thread::JoinHandle<String> {
    let stderr = child.stderr.take();
    std::thread::spawn(move || {
        let mut text = String::new();
        if let Some(mut stderr) = stderr {
            let _ = stderr.read_to_string(&mut text);
        }
        text
    })
}

/// Hung: processes that should hang went ≥ 1 s without CPU progress and the scenario
/// says its work did not complete.
fn hung(outcome: &RunOutcome) -> Option<f64> {
    let result = outcome.result.as_ref()?;
    let hang = outcome.hang.as_ref()?;
    (!result.completed && hang.stalled_seconds >= 1.0).then_some(hang.stalled_seconds)
}

fn completed_ok(outcome: &RunOutcome) -> bool {
    outcome.exit_code == Some(0) && outcome.result.as_ref().is_some_and(|r| r.completed)
}

fn evaluate(
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
        Scenario::Deadlock | Scenario::ForkLock | Scenario::GpuContention => {
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
                let pass = ratio.is_some_and(|r| r >= 1.5);
                row(
                    Variant::Fixed,
                    outcome,
                    detection,
                    "throughput",
                    fmt(f),
                    ratio.map(|r| format!("{r:.1}× faster")),
                    pass,
                    detail(outcome),
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
                        crate::detect::MIN_THREAD_BOUND,
                        crate::detect::THREADS_PER_CPU_BOUND
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

/// `numerator / denominator` when both are positive.
fn ratio_of(numerator: Option<f64>, denominator: Option<f64>) -> Option<f64> {
    match (numerator, denominator) {
        (Some(n), Some(d)) if n > 0.0 && d > 0.0 => Some(n / d),
        _ => None,
    }
}

/// The table for people; the detected columns appear once an observer fills them.
pub fn render_table(rows: &[VerifyRow]) -> String {
    let with_detection = rows.iter().any(|row| row.detected.is_some());
    let mut header = vec![
        "scenario",
        "variant",
        "measured",
        "value",
        "broken/fixed",
        "ok",
    ];
    if with_detection {
        header.extend(["detected", "latency"]);
    }
    header.push("note");
    let mut table: Vec<Vec<String>> = vec![header.iter().map(|h| h.to_string()).collect()];
    for row in rows {
        let mut cells = vec![
            row.scenario.clone(),
            row.variant.clone(),
            row.measured.clone(),
            row.value.clone(),
            row.ratio.clone().unwrap_or_else(|| "-".to_string()),
            if row.pass { "ok" } else { "FAIL" }.to_string(),
        ];
        if with_detection {
            cells.push(row.detected.clone().unwrap_or_else(|| "-".to_string()));
            cells.push(
                row.detection_latency_seconds
                    .map_or("-".to_string(), |s| format!("{s:.1}s")),
            );
        }
        cells.push(row.note.clone());
        table.push(cells);
    }
    let columns = table[0].len();
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            table
                .iter()
                .map(|r| r[c].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for cells in &table {
        let line: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(c, cell)| {
                if c + 1 == columns {
                    cell.clone()
                } else {
                    format!("{cell:<width$}", width = widths[c])
                }
            })
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out.pop();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(result: ScenarioResult, stalled: Option<f64>) -> RunOutcome {
        RunOutcome {
            exit_code: Some(0),
            result: Some(result),
            hang: stalled.map(|s| HangObservation {
                pids: vec![1],
                stalled_seconds: s,
            }),
            wall_seconds: 2.0,
            error: None,
        }
    }

    fn info(variant: Variant) -> RunInfo {
        RunInfo {
            scenario: Scenario::Deadlock,
            variant,
            pid: 1,
            children: vec![],
            started: Instant::now(),
            duration: Duration::from_secs(1),
            onset: None,
            metrics_url: None,
        }
    }

    #[test]
    fn hang_scenarios_pass_when_broken_hangs_and_fixed_completes() {
        let broken = outcome(
            ScenarioResult::new("deadlock", "broken", false, 3.0),
            Some(2.5),
        );
        let fixed = outcome(ScenarioResult::new("deadlock", "fixed", true, 1.0), None);
        let rows = evaluate(
            Scenario::Deadlock,
            &[
                (Variant::Broken, info(Variant::Broken), broken.clone(), None),
                (Variant::Fixed, info(Variant::Fixed), fixed, None),
            ],
        );
        assert!(rows.iter().all(|r| r.pass), "{rows:?}");
        assert_eq!(rows[1].ratio.as_deref(), Some("hung → completed"));
        // A broken run that kept making progress is not a hang.
        let busy = outcome(
            ScenarioResult::new("deadlock", "broken", false, 3.0),
            Some(0.1),
        );
        let rows = evaluate(
            Scenario::Deadlock,
            &[(Variant::Broken, info(Variant::Broken), busy, None)],
        );
        assert!(!rows[0].pass);
    }

    #[test]
    fn throughput_ratio_decides_oversubscribe() {
        let mut b = ScenarioResult::new("oversubscribe", "broken", true, 5.0);
        b.throughput = Some(100.0);
        let mut f = ScenarioResult::new("oversubscribe", "fixed", true, 1.0);
        f.throughput = Some(500.0);
        let rows = evaluate(
            Scenario::Oversubscribe,
            &[
                (
                    Variant::Broken,
                    info(Variant::Broken),
                    outcome(b, None),
                    None,
                ),
                (
                    Variant::Fixed,
                    info(Variant::Fixed),
                    outcome(f.clone(), None),
                    None,
                ),
            ],
        );
        assert!(rows[1].pass);
        assert_eq!(rows[1].ratio.as_deref(), Some("5.0× faster"));
        f.throughput = Some(110.0);
        let mut b = ScenarioResult::new("oversubscribe", "broken", true, 5.0);
        b.throughput = Some(100.0);
        let rows = evaluate(
            Scenario::Oversubscribe,
            &[
                (
                    Variant::Broken,
                    info(Variant::Broken),
                    outcome(b, None),
                    None,
                ),
                (Variant::Fixed, info(Variant::Fixed), outcome(f, None), None),
            ],
        );
        assert!(!rows[1].pass);
    }

    #[test]
    fn table_shows_detection_columns_only_when_filled() {
        let mut row = VerifyRow {
            scenario: "deadlock".into(),
            variant: "broken".into(),
            measured: "completion".into(),
            value: "hung".into(),
            ratio: None,
            pass: true,
            note: "x".into(),
            detected: None,
            detection_latency_seconds: None,
        };
        let table = render_table(std::slice::from_ref(&row));
        assert!(table.starts_with("scenario"));
        assert!(!table.contains("detected"));
        row.detected = Some("deadlock".into());
        row.detection_latency_seconds = Some(1.25);
        let table = render_table(&[row]);
        assert!(
            table.contains("detected") && table.contains("1.2s"),
            "{table}"
        );
    }

    #[test]
    fn plans_cover_every_scenario() {
        let names: Vec<&str> = plans(None).iter().map(|p| p.scenario.name()).collect();
        assert_eq!(names, crate::workload::scenario_names());
        assert_eq!(plans(Some(Scenario::Healthy)).len(), 1);
    }
}
