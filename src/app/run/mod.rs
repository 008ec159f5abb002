//! `tfwatch run -- <cmd>`: run a command under watch. The CI regression gate and hang
//! watchdog: on a hang or a timeout it writes the diagnosis, ends the command's tree
//! and exits with a documented code; after the command ends it applies the rule gate
//! and the baseline comparison.

mod gate;
mod html;
mod process;
mod reports;

use std::io::Write;
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
use crate::collect::{Collected, Collector, Next};
use crate::engine::ExitLine;
use crate::engine::Watch;
use crate::engine::sink::{Reason, Sink};
use crate::model::FindingKind;
use crate::sink::events::{EventSink, Format, Lines};
use crate::sink::html::HtmlSink;
use crate::sink::line::{DiagnosisLine, DiagnosisReason, ExitEvent, Line, RunExit};
use crate::sink::{junit, report, summary};
use crate::source::clock::{Clock, SystemClock};
use crate::source::proc::{Sampler, SamplerConfig};

use gate::Gate;
use process::{
    holds_terminal_foreground, not_exited_message, reap_orphans, spawn, status_code,
    take_terminal_foreground, terminate, terminate_with,
};
use reports::closing_line;
pub use reports::{Outcome, RunReport};
pub use reports::{check_writable, write_file};

/// Where `run` tells what happens: text lines on stderr, or (`--json`) JSON lines only.
struct Say {
    json: bool,
}

impl Say {
    /// A note: "tfwatch: …", or `{"type":"message","message":…}`.
    fn note(&self, message: &str) {
        if self.json {
            self.event(&Line::Message {
                message: message.to_string(),
            });
        } else {
            eprintln!("tfwatch: {message}");
        }
    }

    fn event(&self, line: &Line) {
        let _ = line.write_json(&mut std::io::stderr().lock());
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
    let say = Say {
        json: settings.json,
    };
    let rule_names: Vec<String> = settings
        .watch
        .rules
        .rules()
        .iter()
        .map(|r| r.name.clone())
        .collect();
    let sources = Sources::open(settings.watch.gpu, &settings.watch.scrape)
        .with_waits(super::wait_prober(settings.stacks, &settings.watch));

    // Orphaned grandchildren are re-parented to us, so none is left a zombie.
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
                say.event(&Line::Exit(ExitEvent {
                    run: Some(RunExit {
                        outcome: Outcome::NotStarted,
                        command_exit_code: None,
                        baseline: None,
                    }),
                    ..ExitEvent::of(ExitLine {
                        time_unix_seconds: SystemClock::new().unix_seconds(),
                        elapsed_seconds: 0.0,
                        pid: None,
                        reason: Reason::NotStarted,
                        exit_code: Some(i32::from(code)),
                        message,
                    })
                }));
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
        Err(e) => {
            // The command may have ended at once; its own code is then the answer.
            let status = child.wait().context("cannot wait for the command")?;
            if foreground {
                take_terminal_foreground();
            }
            if status.success() || status.code().is_some() {
                let code = exit::from_i32(status_code(status));
                if say.json {
                    say.event(&Line::Exit(ExitEvent {
                        run: Some(RunExit {
                            outcome: if status.success() {
                                Outcome::Passed
                            } else {
                                Outcome::CommandFailed
                            },
                            command_exit_code: Some(status_code(status)),
                            baseline: None,
                        }),
                        ..ExitEvent::of(ExitLine {
                            time_unix_seconds: clock.unix_seconds(),
                            elapsed_seconds: clock.elapsed().as_secs_f64(),
                            pid: Some(pid),
                            reason: Reason::TargetExited,
                            exit_code: Some(i32::from(code)),
                            message: format!(
                                "the command ended before it could be watched ({})",
                                reports::describe_status(Some(status))
                            ),
                        })
                    }));
                }
                return Ok(code);
            }
            return Err(anyhow::anyhow!(e).context(format!("cannot watch pid {pid}")));
        }
    };
    let mut collector =
        Collector::start(sampler, sources, settings.watch.interval, Arc::new(clock));
    let mut watch = Watch::new(settings.watch.detect.clone(), settings.watch.rules.clone());
    let mut lines = EventSink::new(std::io::stderr().lock(), Format::json_if(settings.json)).lines(
        if settings.json {
            Lines::ALL_BUT_EXIT
        } else {
            Lines::CHANGES
        },
    );
    let mut gate = Gate::new(&mut child);
    let mut charts = settings.html.as_ref().map(|_| HtmlSink::new());
    let ending = {
        let mut sinks: Vec<&mut dyn Sink> = Vec::new();
        if let Some(exporter) = exporter.as_mut() {
            sinks.push(exporter);
        }
        sinks.push(&mut lines);
        // Before the gate: the sample that stops the watch is charted too.
        if let Some(charts) = charts.as_mut() {
            sinks.push(charts);
        }
        sinks.push(&mut gate);
        WatchLoop {
            source: &mut collector,
            clock: &clock,
            deadline: settings.timeout,
            interrupted: &interrupted,
            pid,
        }
        .run(&mut watch, &mut sinks)?
    };
    // A hang seen as no progress: one more sample with every thread's details read
    // fresh, so a lock cycle behind it is proven (and named) before the diagnosis.
    if ending.reason == Reason::Stopped
        && gate
            .hang
            .as_ref()
            .is_some_and(|h| h.kind == FindingKind::NoProgress)
    {
        collector.request_details();
        let until = clock.elapsed() + settings.watch.interval.max(PROOF_WAIT_MIN);
        while clock.elapsed() < until {
            if let Next::Collected(Collected::Sample(sample)) =
                collector.next(Duration::from_millis(100))
            {
                let events = watch.observe(*sample);
                let _ = lines.sample(&watch, &events);
                let _ = gate.sample(&watch, &events);
                if let Some(charts) = charts.as_mut() {
                    let _ = charts.sample(&watch, &events);
                }
                break;
            }
        }
    }
    drop(lines);
    let Gate {
        tree,
        summary: summary_builder,
        findings,
        alerts,
        fired,
        hang,
        status: gate_status,
        ..
    } = gate;
    let timed_out = ending.reason == Reason::Duration;
    let forwarded = ending.reason == Reason::Interrupted;
    let mut status = gate_status;
    if forwarded {
        // Pass the signal on to the command as itself, then SIGKILL after the grace.
        let signal = received().unwrap_or(libc::SIGTERM);
        status = terminate_with(&mut child, &tree, signal, settings.grace);
        if status.is_none() {
            say.note(&not_exited_message(std::path::Path::new("/proc"), pid));
        }
    } else if ending.reason == Reason::SamplerFailed {
        say.note(&format!(
            "sampling stopped: {}; the command runs on unwatched",
            ending.message
        ));
        status = child.wait().ok();
    } else if status.is_none() && hang.is_none() && !timed_out {
        // The command is ending; its status comes with wait.
        status = child.wait().ok();
    }

    // A hang or a timeout: diagnose first, then end the tree.
    let mut diagnosis = None;
    if hang.is_some() || timed_out {
        let mut report = report::from_watch(&watch);
        // The hang that ends the run is the first thing its diagnosis says.
        if let (Some(report), Some(hang)) = (report.as_mut(), hang.as_ref()) {
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
            let stacks = crate::source::stacks::take(latest, std::path::Path::new("/proc"));
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
            let mut err = std::io::stderr().lock();
            let _ = writeln!(
                err,
                "\ntfwatch: {} — diagnosis of pid {pid} ({}):",
                why.as_str(),
                settings.command.join(" ")
            );
            if let Some(report) = &report {
                let _ = report::write_text(report, false, &mut err);
            }
        }
        diagnosis = report;
        if timed_out || settings.kill_on_hang {
            say.note(&format!(
                "ending the command's process tree (SIGTERM, then SIGKILL after {:?})",
                settings.grace
            ));
            status = terminate(&mut child, &tree, settings.grace);
            if status.is_none() {
                say.note(&not_exited_message(std::path::Path::new("/proc"), pid));
            }
        } else {
            say.note(&format!("--no-kill-on-hang: leaving pid {pid} running"));
        }
    }
    if foreground {
        take_terminal_foreground();
    }
    drop(collector);
    reap_orphans();
    let wall = clock.elapsed().as_secs_f64();
    let run_summary = summary_builder.finish(wall);
    let command_exit_code = status.map(status_code);

    let comparison = settings
        .baseline
        .as_ref()
        .map(|(stored, limits)| summary::compare(stored, &run_summary, limits));
    let fail_at = settings.fail_at;
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
        let outcome = match status {
            Some(s) if s.success() => Outcome::Passed,
            Some(s) if s.code().is_none() => Outcome::CommandKilled,
            _ => Outcome::CommandFailed,
        };
        (
            outcome,
            command_exit_code
                .and_then(|c| u8::try_from(c).ok())
                .unwrap_or(exit::TFWATCH_FAILED),
        )
    };

    let closing = closing_line(outcome, status, code);
    if say.json {
        say.event(&Line::Exit(ExitEvent {
            run: Some(RunExit {
                outcome,
                command_exit_code,
                baseline: comparison.clone(),
            }),
            ..ExitEvent::of(ExitLine {
                time_unix_seconds: clock.unix_seconds(),
                elapsed_seconds: wall,
                pid: Some(pid),
                reason: ending.reason,
                exit_code: Some(i32::from(code)),
                message: closing.clone(),
            })
        }));
    } else {
        let mut err = std::io::stderr().lock();
        if let Some(rows) = &comparison {
            let _ = writeln!(err, "\ntfwatch: comparison with the baseline:");
            let _ = summary::write_comparison(rows, &mut err);
        }
        let _ = writeln!(err, "tfwatch: {closing}");
    }

    if let Some(path) = &settings.summary {
        write_file(path, "summary", |out| {
            crate::sink::json::to_writer_pretty(&mut *out, &run_summary)?;
            writeln!(out)
        })?;
    }
    if let Some(path) = &settings.junit {
        write_file(path, "JUnit report", |out| {
            junit::write_junit(
                out,
                &settings.command.join(" "),
                wall,
                &findings,
                &rule_names,
                &fired,
                fail_at,
            )
        })?;
    }
    if let (Some(path), Some(charts)) = (&settings.html, &charts) {
        let page = html::RunPage {
            settings: &settings,
            pid,
            outcome,
            code,
            closing: &closing,
            findings: &findings,
            diagnosis: diagnosis.as_ref(),
            watch: &watch,
        };
        page.write(path, &charts.data)?;
    }
    if let Some(path) = &settings.report {
        let report = RunReport {
            schema: 1,
            command: settings.command.clone(),
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
            crate::sink::json::to_writer_pretty(&mut *out, &report)?;
            writeln!(out)
        })?;
    }
    Ok(code)
}
