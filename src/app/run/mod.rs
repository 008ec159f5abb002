//! `tfwatch run -- <cmd>`: run a command under watch. The CI regression gate and hang
//! watchdog: on a hang or a timeout it writes the diagnosis, ends the command's tree
//! and exits with a documented code; after the command ends it applies the rule gate
//! and the baseline comparison.

mod gate;
mod html;
mod kept;
mod process;
mod reports;

use std::io::Write;
use std::path::Path;
use std::process::{Child, ExitStatus};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};

use super::exit;
use super::settings::RunSettings;
use super::settings::UsageError;
use super::signals::{catch_forwarded, interrupted, received};
use super::watch_loop::WatchLoop;
use crate::cli::RunArgs;
use crate::collect::sources::Sources;
use crate::collect::{Collected, Collector, Next, SampleSource};
use crate::engine::ExitLine;
use crate::engine::Watch;
use crate::engine::sink::{Ending, Reason, Sink};
use crate::model::{Finding, FindingKind};
use crate::sink::events::{EventSink, Format, Lines};
use crate::sink::export::Exporter;
use crate::sink::html::HtmlSink;
use crate::sink::junit::FiredRule;
use crate::sink::line::{DiagnosisLine, DiagnosisReason, ExitEvent, Line, RunExit};
use crate::sink::report::SnapshotReport;
use crate::sink::summary::{Comparison, RunSummary, SummaryBuilder};
use crate::sink::{junit, report, summary};
use crate::source::clock::{Clock, SystemClock};
use crate::source::proc::{Sampler, SamplerConfig};

use gate::Gate;
use kept::{Failures, Kept, STDERR};
use process::{
    adopted_children_named, end_orphans, holds_terminal_foreground, name_orphans,
    not_exited_message, reap_orphans, spawn, status_code, take_terminal_foreground, terminate,
    terminate_with,
};
use reports::closing_line;
pub use reports::{Outcome, RunReport};
pub use reports::{check_writable, write_file};

/// Where `run` tells what happens: text lines on stderr, or (`--json`) JSON lines only.
/// What cannot be written is kept in `failures`, never dropped: the run then exits 125.
struct Say {
    json: bool,
    failures: Failures,
}

impl Say {
    fn new(json: bool) -> Say {
        Say {
            json,
            failures: Failures::default(),
        }
    }

    /// A note: "tfwatch: …", or `{"type":"message","message":…}`.
    fn note(&self, message: &str) {
        if self.json {
            self.event(&Line::Message {
                message: message.to_string(),
            });
        } else {
            self.failures
                .write_stderr(format!("tfwatch: {message}\n").as_bytes());
        }
    }

    fn event(&self, line: &Line) {
        let mut text = Vec::new();
        match line.write_json(&mut text) {
            Ok(()) => self.failures.write_stderr(&text),
            Err(e) => self.failures.keep(
                STDERR,
                &anyhow::Error::new(e).context("cannot write a JSON line"),
            ),
        }
    }

    /// The closing `exit` event of `run`.
    fn exit(&self, run: RunExit, line: ExitLine) {
        self.event(&Line::Exit(ExitEvent {
            run: Some(run),
            ..ExitEvent::of(line)
        }));
    }
}

/// How long `run` waits for the detail sample that may prove a hang's cause.
const PROOF_WAIT_MIN: Duration = Duration::from_secs(2);

/// `tfwatch run`.
pub fn command(args: &RunArgs) -> Result<u8> {
    let settings = RunSettings::from_args(args)?;
    // The outputs are checked before the command starts, not after a long job.
    for (path, what) in [
        (&settings.report, "--report"),
        (&settings.junit, "--junit"),
        (&settings.summary, "--summary"),
        (&settings.html, "--html"),
    ] {
        if let Some(path) = path {
            check_writable(path, what).map_err(UsageError)?;
        }
    }
    let say = Say::new(settings.json);
    let sources = Sources::open(settings.watch.gpu, &settings.watch.scrape)
        .with_waits(super::wait_prober(settings.stacks, &settings.watch));

    // What the command's processes leave behind is re-parented to us: no zombie of it
    // is left, and what it leaves running is found when it exits (`end_left_running`).
    // SAFETY: prctl with PR_SET_CHILD_SUBREAPER and a constant argument.
    unsafe {
        libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
    }
    // Prometheus endpoint (--listen): started before the command, fed each sample below.
    let mut exporter =
        super::attach::start_exporter(&settings.watch, Format::json_if(settings.json))?;
    catch_forwarded();
    let foreground = holds_terminal_foreground();
    let mut child = match spawn(&settings.command, foreground) {
        Ok(child) => child,
        Err((code, message)) => {
            if say.json {
                say.exit(
                    RunExit {
                        outcome: Outcome::NotStarted,
                        command_exit_code: None,
                        baseline: None,
                    },
                    ExitLine {
                        time_unix_seconds: SystemClock::new().unix_seconds(),
                        elapsed_seconds: 0.0,
                        pid: None,
                        reason: Reason::NotStarted,
                        exit_code: Some(i32::from(code)),
                        message,
                    },
                );
            } else {
                say.note(&message);
            }
            return Ok(code);
        }
    };
    let pid = child.id() as i32;
    let clock = SystemClock::new();
    let config = SamplerConfig {
        read_still_after_seconds: crate::app::settings::read_still_after_seconds(
            settings.watch.detect.hang_after_seconds,
        ),
        ..SamplerConfig::default()
    };
    let sampler = match Sampler::new(pid, config) {
        Ok(s) => s,
        Err(e) => return ended_unwatched(&settings, &say, &mut child, foreground, e.into()),
    };
    let mut collector =
        Collector::start(sampler, sources, settings.watch.interval, Arc::new(clock));
    let mut watch = Watch::new(settings.watch.detect.clone(), settings.watch.rules.clone());
    let watched = match watch_command(
        &settings,
        &say,
        &mut child,
        &mut collector,
        &clock,
        &mut watch,
        exporter.as_mut(),
    ) {
        Ok(watched) => watched,
        Err(e) => {
            // tfwatch cannot go on: the command is not left running unwatched.
            terminate(&mut child, &[pid], settings.grace);
            return Err(e);
        }
    };
    let (status, diagnosis) = end_command(&settings, &say, &mut child, &watch, &watched);
    if foreground {
        take_terminal_foreground();
    }
    drop(collector);
    reap_orphans();
    if status.is_some() {
        end_left_running(&settings, &say, pid);
    }
    let wall = clock.elapsed().as_secs_f64();
    finish(
        &settings, &say, pid, wall, &watch, watched, status, diagnosis,
    )
}

/// The command ended before a sampler could watch it: its own code is then the answer.
fn ended_unwatched(
    settings: &RunSettings,
    say: &Say,
    child: &mut Child,
    foreground: bool,
    error: anyhow::Error,
) -> Result<u8> {
    let pid = child.id() as i32;
    let status = child.wait().context("cannot wait for the command")?;
    if foreground {
        take_terminal_foreground();
    }
    reap_orphans();
    end_left_running(settings, say, pid);
    if status.success() || status.code().is_some() {
        let code = exit::from_i32(status_code(status));
        if say.json {
            say.exit(
                RunExit {
                    outcome: if status.success() {
                        Outcome::Passed
                    } else {
                        Outcome::CommandFailed
                    },
                    command_exit_code: Some(status_code(status)),
                    baseline: None,
                },
                ExitLine {
                    time_unix_seconds: SystemClock::new().unix_seconds(),
                    elapsed_seconds: 0.0,
                    pid: Some(pid),
                    reason: Reason::TargetExited,
                    exit_code: Some(i32::from(code)),
                    message: format!(
                        "the command ended before it could be watched ({})",
                        reports::describe_status(Some(status))
                    ),
                },
            );
        }
        return Ok(code);
    }
    Err(error.context(format!("cannot watch pid {pid}")))
}

/// What the watch of the command found, for what comes after it.
struct Watched {
    ending: Ending,
    /// The command's tree as last sampled.
    tree: Vec<i32>,
    summary: SummaryBuilder,
    findings: Vec<Finding>,
    alerts: Vec<serde_json::Value>,
    fired: Vec<FiredRule>,
    hang: Option<Finding>,
    /// The command's status, when it ended by itself during the watch.
    status: Option<ExitStatus>,
    charts: Option<HtmlSink>,
    /// Findings and alerts left out of stderr by `--min-severity`.
    hidden: usize,
}

/// Watches the command until it ends, hangs, times out or tfwatch is interrupted.
fn watch_command(
    settings: &RunSettings,
    say: &Say,
    child: &mut Child,
    collector: &mut Collector,
    clock: &SystemClock,
    watch: &mut Watch,
    exporter: Option<&mut Exporter>,
) -> Result<Watched> {
    let pid = child.id() as i32;
    let events = EventSink::new(std::io::stderr(), Format::json_if(settings.json))
        .lines(if settings.json {
            Lines::ALL_BUT_EXIT
        } else {
            Lines::CHANGES
        })
        .min_severity(settings.min_severity);
    let mut lines = Kept::new(events, STDERR, &say.failures);
    let mut gate = Gate::new(child);
    let mut charts = settings.html.as_ref().map(|_| HtmlSink::new());
    let ending = {
        let mut sinks: Vec<&mut dyn Sink> = Vec::new();
        if let Some(exporter) = exporter {
            sinks.push(exporter);
        }
        sinks.push(&mut lines);
        // Before the gate: the sample that stops the watch is charted too.
        if let Some(charts) = charts.as_mut() {
            sinks.push(charts);
        }
        sinks.push(&mut gate);
        WatchLoop {
            source: collector,
            clock,
            deadline: settings.timeout,
            interrupted: &interrupted,
            pid,
        }
        .run(watch, &mut sinks)?
    };
    // A hang seen as no progress: one more sample with every thread's details read
    // fresh, so a lock cycle behind it is proven (and named) before the diagnosis.
    if ending.reason == Reason::Stopped
        && gate
            .hang
            .as_ref()
            .is_some_and(|h| h.kind == FindingKind::NoProgress)
    {
        let wait = settings.watch.interval.max(PROOF_WAIT_MIN);
        let mut sinks: Vec<&mut dyn Sink> = vec![&mut lines, &mut gate];
        if let Some(charts) = charts.as_mut() {
            sinks.push(charts);
        }
        prove(collector, clock, wait, watch, &mut sinks)?;
    }
    let hidden = lines.sink.hidden();
    let Gate {
        tree,
        summary,
        findings,
        alerts,
        fired,
        hang,
        status,
        ..
    } = gate;
    Ok(Watched {
        ending,
        tree,
        summary,
        findings,
        alerts,
        fired,
        hang,
        status,
        charts,
        hidden,
    })
}

/// A source that can be asked for one sample with every thread's details read fresh.
trait DetailSource: SampleSource {
    fn request_details(&mut self);
}

impl DetailSource for Collector {
    fn request_details(&mut self) {
        Collector::request_details(self);
    }
}

/// The proof of a hang seen as no progress: asks `source` for one sample with every
/// thread's details and hands it to `sinks` (the gate then holds a proven cycle in
/// place of the plain no-progress). Waits at most `wait`; returns whether it came.
fn prove(
    source: &mut dyn DetailSource,
    clock: &dyn Clock,
    wait: Duration,
    watch: &mut Watch,
    sinks: &mut [&mut dyn Sink],
) -> Result<bool> {
    source.request_details();
    let until = clock.elapsed() + wait;
    while clock.elapsed() < until {
        match source.next_sample(Duration::from_millis(100)) {
            Next::Collected(Collected::Sample(sample)) => {
                let events = watch.observe(*sample);
                for sink in sinks.iter_mut() {
                    sink.sample(watch, &events)?;
                }
                return Ok(true);
            }
            Next::Collected(_) | Next::Closed => return Ok(false),
            Next::Late => {}
        }
    }
    Ok(false)
}

/// Ends the watch of the command: passes a forwarded signal on, waits for a command
/// that is ending, or on a hang or a timeout diagnoses it and ends its tree. Returns
/// the command's status (`None` while it runs on) and the diagnosis.
fn end_command(
    settings: &RunSettings,
    say: &Say,
    child: &mut Child,
    watch: &Watch,
    watched: &Watched,
) -> (Option<ExitStatus>, Option<SnapshotReport>) {
    let pid = child.id() as i32;
    let timed_out = watched.ending.reason == Reason::Duration;
    let mut status = watched.status;
    if watched.ending.reason == Reason::Interrupted {
        // Pass the signal on to the command as itself, then SIGKILL after the grace.
        let signal = received().unwrap_or(libc::SIGTERM);
        status = terminate_with(child, &watched.tree, signal, settings.grace);
        if status.is_none() {
            say.note(&not_exited_message(Path::new("/proc"), pid));
        }
    } else if watched.ending.reason == Reason::SamplerFailed {
        say.note(&format!(
            "sampling stopped: {}; the command runs on unwatched",
            watched.ending.message
        ));
        status = crate::source::wait_exited(child);
    } else if status.is_none() && watched.hang.is_none() && !timed_out {
        // The command is ending; its status comes with its exit.
        status = crate::source::wait_exited(child);
    }
    if watched.hang.is_none() && !timed_out {
        return (status, None);
    }
    // A hang or a timeout: diagnose first, then end the tree.
    let diagnosis = diagnose(settings, say, watch, watched.hang.as_ref(), timed_out, pid);
    if timed_out || settings.kill_on_hang {
        say.note(&format!(
            "ending the command's process tree (SIGTERM, then SIGKILL after {:?})",
            settings.grace
        ));
        status = terminate(child, &watched.tree, settings.grace);
        if status.is_none() {
            say.note(&not_exited_message(Path::new("/proc"), pid));
        }
    } else {
        say.note(&format!("--no-kill-on-hang: leaving pid {pid} running"));
    }
    (status, diagnosis)
}

/// The diagnosis of a hang or a timeout (the hang first, its stacks taken before the
/// tree is ended), said on stderr.
fn diagnose(
    settings: &RunSettings,
    say: &Say,
    watch: &Watch,
    hang: Option<&Finding>,
    timed_out: bool,
    pid: i32,
) -> Option<SnapshotReport> {
    let mut report = report::from_watch(watch);
    if let Some(report) = report.as_mut() {
        super::frozen::note_frozen_processes(report, Path::new("/proc"));
    }
    // The hang that ends the run is the first thing its diagnosis says.
    if let (Some(report), Some(hang)) = (report.as_mut(), hang) {
        let key = crate::detect::finding_key(hang);
        if let Some(at) = report
            .findings
            .iter()
            .position(|f| crate::detect::finding_key(f) == key)
        {
            let first = report.findings.remove(at);
            report.findings.insert(0, first);
        }
    }
    // A confirmed hang (not a timeout): take the stacks before the tree is ended.
    if hang.is_some()
        && settings.stacks
        && let (Some(report), Some(latest)) = (report.as_mut(), watch.timeline.latest())
    {
        let stacks = crate::source::stacks::take(latest, Path::new("/proc"));
        crate::detect::explain_with_stacks(&mut report.findings, &stacks);
        crate::detect::distributed::explain_all(
            &mut report.findings,
            &watch.timeline,
            watch.detect.hang_after_seconds,
            &stacks,
        );
        report.stacks = Some(stacks);
    }
    let why = if timed_out {
        DiagnosisReason::TimedOut
    } else {
        DiagnosisReason::HangDetected
    };
    if say.json {
        say.event(&Line::Diagnosis(DiagnosisLine {
            reason: why,
            pid,
            command: settings.command.clone(),
            report: report.clone().map(Box::new),
        }));
    } else {
        let mut text = format!(
            "\ntfwatch: {} — diagnosis of pid {pid} ({}):\n",
            why.as_str(),
            crate::units::escape_controls(
                &crate::sink::html::shorten(&settings.command.join(" "), 200),
                false
            )
        )
        .into_bytes();
        if let Some(report) = &report {
            // Writing into memory cannot fail but for a bug; it is said if it does.
            if let Err(e) = report::write_text(report, false, &mut text) {
                say.failures.keep(
                    "diagnosis",
                    &anyhow::Error::new(e).context("cannot render the diagnosis"),
                );
            }
        }
        say.failures.write_stderr(&text);
    }
    report
}

/// After the command exited: names what it left running (processes adopted by tfwatch,
/// a child subreaper) and ends them, SIGTERM then SIGKILL after `--grace`, unless
/// `--leave-orphans`.
fn end_left_running(settings: &RunSettings, say: &Say, command_pid: i32) {
    let proc_root = Path::new("/proc");
    // A fork of the command that has not exec'd yet shows the command's own line.
    let command = settings.command.join(" ");
    let left = adopted_children_named(proc_root, command_pid, Some(&command));
    if left.is_empty() {
        return;
    }
    let named = name_orphans(&left);
    if settings.leave_orphans {
        say.note(&format!(
            "the command left {} process(es) running: {named}; --leave-orphans: leaving them",
            left.len()
        ));
        return;
    }
    say.note(&format!(
        "the command left {} process(es) running: {named}; ending them (SIGTERM, then SIGKILL after {:?}; --leave-orphans leaves them)",
        left.len(),
        settings.grace
    ));
    let stuck = end_orphans(proc_root, command_pid, settings.grace);
    for orphan in &stuck {
        say.note(&not_exited_message(proc_root, orphan.pid));
    }
}

/// How the run ended, as every output says it.
struct Verdict {
    outcome: Outcome,
    code: u8,
    command_exit_code: Option<i32>,
    closing: String,
}

/// The outcome and exit code: a timeout, a hang, an interruption, a baseline
/// regression, a failed rule gate, else the command's own.
fn verdict(
    settings: &RunSettings,
    watched: &Watched,
    comparison: Option<&[Comparison]>,
    status: Option<ExitStatus>,
) -> Verdict {
    let command_exit_code = status.map(status_code);
    let own_code = command_exit_code.and_then(|c| u8::try_from(c).ok());
    let gate_failed = settings.fail_at.is_some_and(|at| {
        watched.findings.iter().any(|f| f.severity >= at)
            || watched.fired.iter().any(|f| f.severity >= at)
    });
    let regressed = comparison.is_some_and(|rows| rows.iter().any(|r| r.regressed));
    let (outcome, code) = if watched.ending.reason == Reason::Duration {
        (Outcome::TimedOut, exit::TIMEOUT)
    } else if watched.hang.is_some() {
        (Outcome::HangDetected, exit::HANG)
    } else if watched.ending.reason == Reason::Interrupted {
        (Outcome::Interrupted, own_code.unwrap_or(130))
    } else if regressed {
        (Outcome::BaselineRegression, exit::BASELINE_REGRESSION)
    } else if gate_failed {
        (Outcome::RuleGateFailed, exit::RULE_GATE)
    } else {
        let outcome = match status {
            Some(s) if s.success() => Outcome::Passed,
            Some(s) if s.code().is_none() => Outcome::CommandKilled,
            _ => Outcome::CommandFailed,
        };
        (outcome, own_code.unwrap_or(exit::TFWATCH_FAILED))
    };
    Verdict {
        outcome,
        code,
        command_exit_code,
        closing: closing_line(outcome, status, code),
    }
}

/// Writes the reports, then says the closing line (the `exit` event last): a report
/// that cannot be written makes the exit 125, and the closing line says so.
#[allow(clippy::too_many_arguments)]
fn finish(
    settings: &RunSettings,
    say: &Say,
    pid: i32,
    wall: f64,
    watch: &Watch,
    mut watched: Watched,
    status: Option<ExitStatus>,
    diagnosis: Option<SnapshotReport>,
) -> Result<u8> {
    let run_summary = std::mem::take(&mut watched.summary).finish(wall);
    let comparison = settings
        .baseline
        .as_ref()
        .map(|(stored, limits)| summary::compare(stored, &run_summary, limits));
    let mut verdict = verdict(settings, &watched, comparison.as_deref(), status);
    let reason = watched.ending.reason;
    if watched.hidden > 0 {
        say.note(&format!(
            "{} finding(s) and alert(s) below {} not shown (--min-severity); the reports keep them",
            watched.hidden, settings.min_severity
        ));
    }
    let outputs = Outputs {
        wall,
        run_summary,
        comparison: comparison.clone(),
        diagnosis,
    };
    // What could not be written during the watch (stderr) is in the reports too, with
    // the exit code it makes.
    let failed = say.failures.all();
    if !failed.is_empty() {
        failed_verdict(&mut verdict, status, &failed);
    }
    if let Err(e) = write_outputs(settings, pid, watch, watched, outputs, &verdict, &failed) {
        say.note(&format!("{e:#}"));
        say.failures.keep("reports", &e);
        failed_verdict(&mut verdict, status, &say.failures.all());
    }
    if say.json {
        say.exit(
            RunExit {
                outcome: verdict.outcome,
                command_exit_code: verdict.command_exit_code,
                baseline: comparison.clone(),
            },
            ExitLine {
                time_unix_seconds: SystemClock::new().unix_seconds(),
                elapsed_seconds: wall,
                pid: Some(pid),
                reason,
                exit_code: Some(i32::from(verdict.code)),
                message: verdict.closing.clone(),
            },
        );
    } else {
        let mut text = Vec::new();
        if let Some(rows) = &comparison {
            text.extend_from_slice(b"\ntfwatch: comparison with the baseline:\n");
            if let Err(e) = summary::write_comparison(rows, &mut text) {
                say.failures.keep("comparison", &anyhow::Error::new(e));
            }
        }
        text.extend_from_slice(format!("tfwatch: {}\n", verdict.closing).as_bytes());
        say.failures.write_stderr(&text);
    }
    // The closing line itself could not be written: the exit code is what is left.
    if !say.failures.is_empty() {
        return Ok(exit::TFWATCH_FAILED);
    }
    Ok(verdict.code)
}

/// An output failed: tfwatch exits 125 whatever the outcome, and the closing line says
/// what failed.
fn failed_verdict(verdict: &mut Verdict, status: Option<ExitStatus>, failed: &[String]) {
    verdict.code = exit::TFWATCH_FAILED;
    verdict.closing = reports::closing_line_unwritten(
        verdict.outcome,
        status,
        &anyhow::anyhow!(failed.join("; ")),
    );
}

/// What the reports are made of besides the watch.
struct Outputs {
    wall: f64,
    run_summary: RunSummary,
    comparison: Option<Vec<Comparison>>,
    diagnosis: Option<SnapshotReport>,
}

/// `--summary`, `--junit`, `--html` and `--report`, in that order; the first that
/// cannot be written ends the writing.
fn write_outputs(
    settings: &RunSettings,
    pid: i32,
    watch: &Watch,
    watched: Watched,
    outputs: Outputs,
    verdict: &Verdict,
    failed: &[String],
) -> Result<()> {
    if let Some(path) = &settings.summary {
        write_file(path, "summary", |out| {
            crate::sink::json::to_writer_pretty(&mut *out, &outputs.run_summary)?;
            writeln!(out)
        })?;
    }
    if let Some(path) = &settings.junit {
        write_file(path, "JUnit report", |out| {
            junit::write_junit(
                out,
                &settings.command.join(" "),
                outputs.wall,
                &watched.findings,
                &settings
                    .watch
                    .rules
                    .rules()
                    .iter()
                    .map(|r| r.name.clone())
                    .collect::<Vec<_>>(),
                &watched.fired,
                settings.fail_at,
            )
        })?;
    }
    if let (Some(path), Some(charts)) = (&settings.html, &watched.charts) {
        let page = html::RunPage {
            settings,
            pid,
            outcome: verdict.outcome,
            code: verdict.code,
            closing: &verdict.closing,
            findings: &watched.findings,
            diagnosis: outputs.diagnosis.as_ref(),
            watch,
        };
        page.write(path, &charts.data)?;
    }
    if let Some(path) = &settings.report {
        let report = RunReport {
            schema: 1,
            command: settings.command.clone(),
            pid,
            outcome: verdict.outcome,
            exit_code: verdict.code,
            command_exit_code: verdict.command_exit_code,
            summary: outputs.run_summary,
            findings: watched.findings,
            alerts: watched.alerts,
            baseline: outputs.comparison,
            diagnosis: outputs.diagnosis,
            errors: failed.to_vec(),
        };
        write_file(path, "report", |out| {
            crate::sink::json::to_writer_pretty(&mut *out, &report)?;
            writeln!(out)
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
