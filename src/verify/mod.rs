//! `run-workload --verify`: every scenario, broken then fixed, as child processes of
//! this same executable, and a table of what each measured.
//!
//! Each run is a separate process so that a watcher can attach to its pid. The runner
//! reads the child's machine lines (`started`, `child`, `onset`, `metrics`, `result`),
//! watches the CPU progress of the threads that should hang (their `schedstat` run
//! time, not the whole process's, whose watchdog and reporter threads keep running), and
//! hands every event to a [`ScenarioObserver`] — the hook through which the watch engine
//! adds its "detected" column and detection latency.

use std::io::{BufRead, BufReader, IsTerminal, Read};
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde::Serialize;

pub mod frameworks;
mod judging;
pub mod observer;
mod table;

use judging::*;
pub use table::render_table;

use crate::workload::common::{self, ScenarioResult, ThreadPick, WorkloadLine};
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

/// Threads that stopped making CPU progress, seen from their
/// `/proc/<pid>/task/<tid>/schedstat` run time.
#[derive(Debug, Clone, PartialEq)]
pub struct HangObservation {
    pub pids: Vec<i32>,
    /// How many threads of those processes were watched (the scenario's hung threads).
    pub threads: usize,
    /// The longest stretch in which none of the watched threads ran at all.
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
        // Convoy readings on several samples (a warning needs three).
        plan(Scenario::LockContention, &[], 7000, 5000),
        // The loop idles 2 s in its poll before its clients connect.
        plan(Scenario::EventLoop, &[], 8000, 6000),
        // GIL readings on several samples (a warning needs three), the interpreter's
        // start, and the burst of reads from its memory (1 s).
        plan(Scenario::Gil, &[], 12000, 6000),
        plan(Scenario::Healthy, &[], 0, 3000),
        // Idle longer than the hang window (0.8 of 8 s) between its batches.
        plan(Scenario::IdlePool, &[], 6000, 8000),
    ];
    all.into_iter()
        .filter(|plan| only.is_none_or(|scenario| scenario == plan.scenario))
        .collect()
}

/// Which processes (by role) of a run should hang in its broken variant, and which of
/// their threads: the deadlock's `worker-*` threads in the scenario's own process, the
/// forked child's only thread, each rank's main thread.
fn hang_roles(scenario: Scenario) -> Option<&'static [(&'static str, ThreadPick)]> {
    match scenario {
        Scenario::Deadlock => Some(&[("main", ThreadPick::NamedPrefix("worker-"))]),
        Scenario::ForkLock => Some(&[("forked-child", ThreadPick::Main)]),
        Scenario::IdlePool => Some(&[("main", ThreadPick::NamedPrefix("pool-worker-"))]),
        Scenario::GpuContention => Some(&[("gpu-rank", ThreadPick::Main)]),
        _ => None,
    }
}

/// The run time of the watched threads over the polls of one run, and the longest
/// stretch in which none of them ran.
#[derive(Debug, Default)]
struct ThreadProgress {
    /// Last run time (ns) of each watched (pid, tid).
    runs: std::collections::BTreeMap<(i32, i32), u64>,
    /// When the current stretch without progress began.
    still_since: Option<Instant>,
    longest: Duration,
}

impl ThreadProgress {
    /// One poll's readings of every watched thread. A thread that ran, appeared or
    /// went away is progress; a poll that read no thread says nothing.
    fn observe(&mut self, now: Instant, readings: &[((i32, i32), u64)]) {
        if readings.is_empty() {
            return;
        }
        let changed = readings.len() != self.runs.len()
            || readings
                .iter()
                .any(|(key, run)| self.runs.get(key) != Some(run));
        if changed {
            self.runs = readings.iter().copied().collect();
            self.still_since = Some(now);
        } else if let Some(since) = self.still_since {
            self.longest = self.longest.max(now.duration_since(since));
        }
    }

    fn threads(&self) -> usize {
        self.runs
            .keys()
            .map(|key| key.1)
            .collect::<std::collections::BTreeSet<_>>()
            .len()
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
    let mut observer = crate::verify::observer::WatchObserver::new();
    let mut report = verify_with(&options, &mut observer)?;
    // The real frameworks, after the built-in scenarios, unless one scenario was asked
    // for or they were left out.
    let skipped = if args.skip_frameworks {
        vec!["framework scenarios skipped: --skip-frameworks".to_string()]
    } else if let Some(only) = args.scenario {
        vec![format!(
            "framework scenarios skipped: only --scenario {}{}",
            only.name(),
            args.python
                .as_ref()
                .map(|p| format!(" (--python {} is {})", p.command.display(), p.describe()))
                .unwrap_or_default()
        )]
    } else {
        // The interpreter asked for was checked by the command layer; else python3.
        let python = match &args.python {
            Some(python) => Ok(python.clone()),
            None => crate::workload::frameworks::probe(std::path::Path::new("python3")),
        };
        match python {
            Ok(python) => {
                let start = Instant::now();
                let (rows, mut skipped) = frameworks::verify_frameworks(&mut observer, &python);
                report.rows.extend(rows);
                report.wall_seconds += start.elapsed().as_secs_f64();
                skipped.insert(
                    0,
                    format!(
                        "framework scenarios under {} (--python chooses another)",
                        python.describe()
                    ),
                );
                skipped
            }
            Err(why) => vec![format!(
                "framework scenarios skipped: {why} (--python PATH names an interpreter)"
            )],
        }
    };
    report.passed = report.rows.iter().all(|row| row.pass);
    common::emit(&render_table(&report.rows));
    for line in &skipped {
        common::emit(&format!("verify: {line}"));
    }
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
    let mut watched: Vec<(i32, ThreadPick)> = Vec::new();
    if let Some((_, pick)) = watch_roles.and_then(|roles| roles.iter().find(|(r, _)| *r == "main"))
    {
        watched.push((info.pid, *pick));
    }
    let mut progress = ThreadProgress::default();
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
                    if let Some((_, pick)) = watch_roles
                        .and_then(|roles| roles.iter().find(|(r, _)| role.starts_with(r)))
                    {
                        watched.push((pid, *pick));
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
        let proc_root = std::path::Path::new(common::PROC_ROOT);
        let readings: Vec<((i32, i32), u64)> = watched
            .iter()
            .flat_map(|(pid, pick)| {
                common::picked_thread_run_ns(proc_root, *pid, *pick)
                    .into_iter()
                    .map(move |(tid, run)| ((*pid, tid), run))
            })
            .collect();
        progress.observe(now, &readings);
        observer.poll(&info, now);
        if let Some(status) = crate::source::exited(&mut child) {
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
        threads: progress.threads(),
        stalled_seconds: progress.longest.as_secs_f64(),
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

#[cfg(test)]
mod tests;
