//! `tfwatch run -- <cmd>`: run a command under watch. The CI regression gate and hang
//! watchdog: on a hang or a timeout it writes the diagnosis, ends the command's tree
//! and exits with a documented code; after the command ends it applies the rule gate
//! and the baseline comparison.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::{Child, Command, ExitStatus};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde::Serialize;

use crate::app::attach::{catch_interrupts, interrupted, load_rules};
use crate::app::snapshot::report_from_samples;
use crate::cli::{FailOn, RunArgs};
use crate::collect::sources::Sources;
use crate::collect::{Collected, Collector, Next};
use crate::detect::DetectConfig;
use crate::engine::{Event, Watch};
use crate::model::{Finding, FindingKind, Severity};
use crate::sink::events::EventSink;
use crate::sink::report::{self, SnapshotReport};
use crate::source::proc::{Sampler, SamplerConfig};

use crate::sink::junit::{self, FiredRule};
use crate::sink::summary::{self, Comparison, RunSummary, SummaryBuilder};

/// Exit codes of `tfwatch run` (the README has the table).
pub mod exit {
    /// The command ran past `--timeout` (as coreutils `timeout`).
    pub const TIMEOUT: u8 = 124;
    /// tfwatch itself failed.
    pub const TFWATCH_FAILED: u8 = 125;
    /// The command was found but could not be executed.
    pub const CANNOT_EXECUTE: u8 = 126;
    /// The command was not found.
    pub const NOT_FOUND: u8 = 127;
    /// A finding or alert at or above `--fail-on` fired.
    pub const RULE_GATE: u8 = 120;
    /// The run was worse than `--baseline` beyond `--max-increase`.
    pub const BASELINE_REGRESSION: u8 = 121;
    /// A hang (no progress, a deadlock, a fork-inherited lock) was detected.
    pub const HANG: u8 = 122;
}

/// How the run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// The command ended by itself and no gate failed.
    Passed,
    RuleGateFailed,
    BaselineRegression,
    HangDetected,
    TimedOut,
    /// tfwatch was interrupted (SIGINT/SIGTERM), passed it on, and the command ended.
    Interrupted,
}

/// The JSON report of a run (`--report`).
#[derive(Debug, Serialize)]
pub struct RunReport {
    pub schema: u32,
    pub command: Vec<String>,
    pub pid: i32,
    pub outcome: Outcome,
    pub exit_code: u8,
    /// The command's own exit code, or 128 + signal when a signal ended it.
    pub command_exit_code: Option<i32>,
    pub summary: RunSummary,
    /// Every finding raised during the run (the last version of each).
    pub findings: Vec<Finding>,
    pub alerts: Vec<serde_json::Value>,
    pub baseline: Option<Vec<Comparison>>,
    /// The snapshot report taken on a hang or a timeout.
    pub diagnosis: Option<SnapshotReport>,
}

/// Kinds that mean the command is hung.
fn is_hang(kind: FindingKind) -> bool {
    matches!(
        kind,
        FindingKind::NoProgress | FindingKind::Deadlock | FindingKind::ForkInheritedLock
    )
}

/// Starts the command in its own process group with inherited stdio.
fn spawn(command: &[String]) -> std::result::Result<Child, (u8, String)> {
    let Some((program, args)) = command.split_first() else {
        return Err((
            exit::TFWATCH_FAILED,
            "no command given after --".to_string(),
        ));
    };
    let mut cmd = Command::new(program);
    cmd.args(args).process_group(0);
    cmd.spawn().map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => (
            exit::NOT_FOUND,
            format!("command not found: {program:?} (check the name and PATH)"),
        ),
        std::io::ErrorKind::PermissionDenied => (
            exit::CANNOT_EXECUTE,
            format!("cannot execute {program:?}: permission denied (is it executable?)"),
        ),
        _ => (
            exit::CANNOT_EXECUTE,
            format!("cannot execute {program:?}: {e}"),
        ),
    })
}

fn signal_group(pgid: i32, signal: libc::c_int) {
    // SAFETY: kill(2) with a negative pid signals the process group we created.
    unsafe {
        libc::kill(-pgid, signal);
    }
}

fn signal_pid(pid: i32, signal: libc::c_int) {
    // SAFETY: kill(2) on a pid of the command's tree, which we started.
    unsafe {
        libc::kill(pid, signal);
    }
}

/// Reaps any child (the command, or orphans adopted as subreaper) without blocking.
fn reap_orphans() {
    loop {
        // SAFETY: waitpid with WNOHANG on any child; status is a valid out-pointer.
        let mut status = 0;
        let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
        if pid <= 0 {
            break;
        }
    }
}

/// Ends the command's tree: SIGTERM to its group and every known pid, a grace period,
/// then SIGKILL. Returns the command's status.
fn terminate(child: &mut Child, tree: &[i32], grace: Duration) -> Option<ExitStatus> {
    let pgid = child.id() as i32;
    signal_group(pgid, libc::SIGTERM);
    for &pid in tree {
        signal_pid(pid, libc::SIGTERM);
    }
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            signal_group(pgid, libc::SIGKILL);
            for &pid in tree {
                signal_pid(pid, libc::SIGKILL);
            }
            reap_orphans();
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    signal_group(pgid, libc::SIGKILL);
    for &pid in tree {
        signal_pid(pid, libc::SIGKILL);
    }
    let status = child.wait().ok();
    reap_orphans();
    status
}

fn status_code(status: ExitStatus) -> i32 {
    status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(1)
}

fn write_file(
    path: &Path,
    what: &str,
    write: impl FnOnce(&mut BufWriter<File>) -> std::io::Result<()>,
) -> Result<()> {
    let file = File::create(path)
        .with_context(|| format!("cannot create the {what} {}", path.display()))?;
    let mut out = BufWriter::new(file);
    write(&mut out)
        .and_then(|()| out.flush())
        .with_context(|| format!("cannot write the {what} {}", path.display()))
}

/// `tfwatch run`.
pub fn command(args: &RunArgs) -> Result<u8> {
    let rules = load_rules(&args.rules)?;
    let sources = Sources::from_args(&args.sources, rules.metrics_mapping())?;
    let rule_names: Vec<String> = rules.rules().iter().map(|r| r.name.clone()).collect();
    let limits = match (&args.baseline, &args.max_increase) {
        (Some(_), Some(text)) => {
            Some(summary::parse_max_increase(text).map_err(anyhow::Error::msg)?)
        }
        (Some(_), None) => Some(
            summary::parse_max_increase(summary::DEFAULT_MAX_INCREASE)
                .map_err(anyhow::Error::msg)?,
        ),
        _ => None,
    };
    let baseline: Option<RunSummary> = match &args.baseline {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read the baseline {}", path.display()))?;
            Some(serde_json::from_str(&text).with_context(|| {
                format!(
                    "the baseline {} is not a tfwatch run summary (write one with --summary)",
                    path.display()
                )
            })?)
        }
        None => None,
    };
    let memory_limit = args
        .memory_limit
        .as_deref()
        .map(crate::units::parse_size)
        .transpose()
        .map_err(|e| anyhow::anyhow!("--memory-limit: {e}"))?;
    if args.interval.is_zero() {
        anyhow::bail!("--interval must be greater than 0");
    }

    // Orphaned grandchildren are re-parented to us, so none is left a zombie.
    // SAFETY: prctl with PR_SET_CHILD_SUBREAPER and a constant argument.
    unsafe {
        libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
    }
    // Prometheus endpoint (--listen): started before the command, fed each sample below.
    let exporter = crate::sink::export::Exporter::from_args(&args.listen, &rules)?;
    catch_interrupts();
    let mut child = match spawn(&args.command) {
        Ok(child) => child,
        Err((code, message)) => {
            eprintln!("tfwatch: {message}");
            return Ok(code);
        }
    };
    let pid = child.id() as i32;
    let started = Instant::now();
    let sampler = match Sampler::new(pid, SamplerConfig::default()) {
        Ok(s) => s,
        Err(e) => {
            // The command may have ended at once; its own code is then the answer.
            let status = child.wait().context("cannot wait for the command")?;
            if status.success() || status.code().is_some() {
                return Ok(u8::try_from(status_code(status)).unwrap_or(exit::TFWATCH_FAILED));
            }
            return Err(anyhow::anyhow!(e).context(format!("cannot watch pid {pid}")));
        }
    };
    let detect = DetectConfig {
        hang_after_seconds: args.hang_after.as_secs_f64(),
        pid_namespace: crate::source::gpu::read_pid_namespace(),
        memory_limit_override: memory_limit,
        ..DetectConfig::default()
    };
    let collector = Collector::start(sampler, sources, args.interval, started);
    let mut watch = Watch::new(detect, rules);
    let stderr = std::io::stderr();
    let mut sink = EventSink::new(stderr.lock(), args.json);
    let mut summary = SummaryBuilder::default();
    let mut findings: Vec<Finding> = Vec::new();
    let mut alerts: Vec<serde_json::Value> = Vec::new();
    let mut fired: Vec<FiredRule> = Vec::new();
    let mut tree: Vec<i32> = vec![pid];
    let mut forwarded = false;
    let deadline = args.timeout.map(|t| started + t);

    let mut hang: Option<Finding> = None;
    let mut timed_out = false;
    let status = loop {
        if let Ok(Some(status)) = child.try_wait() {
            break Some(status);
        }
        if interrupted() && !forwarded {
            // Pass the interruption on to the command and wait for it to end.
            signal_group(pid, libc::SIGTERM);
            forwarded = true;
            let status = terminate(&mut child, &tree, args.grace);
            break status;
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            timed_out = true;
            break None;
        }
        match collector.next(Duration::from_millis(50)) {
            Next::Collected(Collected::Sample(sample)) => {
                tree = sample.processes.iter().map(|p| p.pid).collect();
                let events = watch.observe(*sample);
                if let Some(exporter) = &exporter {
                    exporter.update(&watch, &events);
                }
                for event in events {
                    match &event {
                        Event::Sample(line) => summary.add(&line.metrics),
                        Event::Finding(f) => {
                            findings.retain(|old| crate::detect::finding_key(old) != f.key);
                            findings.push(f.finding.clone());
                            if is_hang(f.finding.kind) && hang.is_none() {
                                hang = Some(f.finding.clone());
                            }
                        }
                        Event::Alert(a) => {
                            alerts.push(serde_json::to_value(&a.alert).unwrap_or_default());
                            fired.push(FiredRule {
                                rule: a.alert.rule.clone(),
                                severity: a.alert.severity,
                                message: a.alert.message.clone(),
                            });
                        }
                        _ => {}
                    }
                    if args.json || !matches!(event, Event::Sample(_)) {
                        let _ = sink.write(&event);
                    }
                }
                if hang.is_some() {
                    break None;
                }
            }
            Next::Collected(Collected::TargetGone { .. }) | Next::Closed => {
                // The command is ending; try_wait picks up its status next turn.
                let status = child.wait().ok();
                break status;
            }
            Next::Collected(Collected::Failed(why)) => {
                eprintln!("tfwatch: sampling stopped: {why}; the command runs on unwatched");
                let status = child.wait().ok();
                break status;
            }
            Next::Late => {}
        }
    };

    // A hang or a timeout: diagnose first, then end the tree.
    let mut diagnosis = None;
    let mut status = status;
    if hang.is_some() || timed_out {
        let report = match (watch.timeline.previous(), watch.timeline.latest()) {
            (Some(before), Some(after)) => Some(report_from_samples(before.clone(), after.clone())),
            (None, Some(only)) => Some(report_from_samples(only.clone(), only.clone())),
            _ => None,
        };
        // A confirmed hang (not a timeout): take the stacks before the tree is ended.
        let mut report = report;
        if hang.is_some()
            && let (Some(report), Some(latest)) = (report.as_mut(), watch.timeline.latest())
        {
            report.stacks = Some(crate::source::stacks::take(latest));
        }
        let mut err = std::io::stderr().lock();
        let _ = writeln!(
            err,
            "\ntfwatch: {} — diagnosis of pid {pid} ({}):",
            if timed_out {
                "timed out"
            } else {
                "hang detected"
            },
            args.command.join(" ")
        );
        if let Some(report) = &report {
            let _ = report::write_text(report, false, &mut err);
        }
        diagnosis = report;
        if timed_out || !args.no_kill_on_hang {
            let _ = writeln!(
                err,
                "tfwatch: ending the command's process tree (SIGTERM, then SIGKILL after {:?})",
                args.grace
            );
            status = terminate(&mut child, &tree, args.grace);
        } else {
            let _ = writeln!(err, "tfwatch: --no-kill-on-hang: leaving pid {pid} running");
        }
    }
    drop(collector);
    reap_orphans();
    let wall = started.elapsed().as_secs_f64();
    let run_summary = summary.finish(wall);
    let command_exit_code = status.map(status_code);

    let comparison = match (&baseline, &limits) {
        (Some(b), Some(l)) => Some(summary::compare(b, &run_summary, l)),
        _ => None,
    };
    let fail_at = match args.fail_on {
        FailOn::Warning => Some(Severity::Warning),
        FailOn::Error => Some(Severity::Error),
        FailOn::Never => None,
    };
    let gate_failed = fail_at.is_some_and(|at| {
        findings.iter().any(|f| f.severity >= at) || fired.iter().any(|f| f.severity >= at)
    });
    let regressed = comparison
        .as_ref()
        .is_some_and(|rows| rows.iter().any(|r| r.regressed));

    let (outcome, code) = if timed_out {
        (Outcome::TimedOut, exit::TIMEOUT)
    } else if hang.is_some() {
        (Outcome::HangDetected, exit::HANG)
    } else if forwarded {
        (
            Outcome::Interrupted,
            command_exit_code
                .and_then(|c| u8::try_from(c).ok())
                .unwrap_or(130),
        )
    } else if regressed {
        (Outcome::BaselineRegression, exit::BASELINE_REGRESSION)
    } else if gate_failed {
        (Outcome::RuleGateFailed, exit::RULE_GATE)
    } else {
        (
            Outcome::Passed,
            command_exit_code
                .and_then(|c| u8::try_from(c).ok())
                .unwrap_or(exit::TFWATCH_FAILED),
        )
    };

    let mut err = std::io::stderr().lock();
    if let Some(rows) = &comparison {
        let _ = writeln!(err, "\ntfwatch: comparison with the baseline:");
        let _ = summary::write_comparison(rows, &mut err);
    }
    let _ = writeln!(
        err,
        "tfwatch: {} — command exit {}, tfwatch exit {code}",
        match outcome {
            Outcome::Passed => "passed",
            Outcome::RuleGateFailed => "rule gate failed",
            Outcome::BaselineRegression => "baseline regression",
            Outcome::HangDetected => "hang detected",
            Outcome::TimedOut => "timed out",
            Outcome::Interrupted => "interrupted",
        },
        command_exit_code.map_or("unknown".to_string(), |c| c.to_string())
    );
    drop(err);

    if let Some(path) = &args.summary {
        write_file(path, "summary", |out| {
            serde_json::to_writer_pretty(&mut *out, &run_summary)?;
            writeln!(out)
        })?;
    }
    if let Some(path) = &args.junit {
        write_file(path, "JUnit report", |out| {
            junit::write_junit(
                out,
                &args.command.join(" "),
                wall,
                &findings,
                &rule_names,
                &fired,
                fail_at,
            )
        })?;
    }
    if let Some(path) = &args.report {
        let report = RunReport {
            schema: 1,
            command: args.command.clone(),
            pid,
            outcome,
            exit_code: code,
            command_exit_code,
            summary: run_summary,
            findings,
            alerts,
            baseline: comparison,
            diagnosis,
        };
        write_file(path, "report", |out| {
            serde_json::to_writer_pretty(&mut *out, &report)?;
            writeln!(out)
        })?;
    }
    Ok(code)
}
