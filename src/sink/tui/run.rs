//! The dashboard's loop: samples from the collector go through the watch into the view
//! model; terminal events are polled with a timeout; a frame is drawn only when new data
//! or a key changed something.
//!
//! When the target exits (or sampling fails) the last reading stays on screen with the
//! exit message in the footer until the user quits, so the final state can be read; a
//! `--duration` limit or SIGTERM ends the dashboard at once.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result};
use crossterm::event::{self, Event as TermEvent};
use ratatui::Terminal;
use ratatui::backend::Backend;

use crate::app::attach::interrupted;
use crate::collect::{Collected, Collector, Next};
use crate::engine::Watch;

use super::app::{Action, AppState, handle_key};
use super::terminal::TerminalGuard;
use super::view::{Data, Journal, ViewModel};
use super::widgets::render_screen;

/// How long to wait for a key before looking for samples again.
const INPUT_POLL: Duration = Duration::from_millis(50);

/// What `attach` hands the dashboard: sampling already started.
pub struct Attach {
    pub pid: i32,
    pub collector: Collector,
    pub watch: Watch,
    /// End of the watch (`--duration`).
    pub deadline: Option<Instant>,
    /// Where to record every sample as a JSON line (`--record`).
    pub record: Option<BufWriter<File>>,
    /// The Prometheus endpoint (`--listen`), fed every sample.
    pub exporter: Option<crate::sink::export::Exporter>,
}

/// How the dashboard ended: the exit code and a line for the normal screen.
struct Ending {
    code: u8,
    message: String,
}

/// Runs the dashboard until the user quits; returns the exit code `attach` returns.
pub fn run(attach: Attach) -> Result<u8> {
    let pid = attach.pid;
    let mut guard = TerminalGuard::enter().context("cannot open the dashboard on this terminal")?;
    let result = run_loop(&mut guard.terminal, attach);
    drop(guard);
    let (ending, findings) = result?;
    println!("tfwatch attach {pid}: {}", ending.message);
    for line in findings {
        println!("  {line}");
    }
    Ok(ending.code)
}

fn run_loop<B: Backend>(
    terminal: &mut Terminal<B>,
    mut attach: Attach,
) -> Result<(Ending, Vec<String>)>
where
    B::Error: Send + Sync + 'static,
{
    let mut journal = Journal::default();
    let mut data = Data::default();
    data.header.pid = attach.pid;
    let mut state = AppState::default();
    let mut status: Option<String> = None;
    let mut finished: Option<Ending> = None;
    let mut dirty = true;
    let ending = loop {
        if dirty {
            let view = ViewModel::build(&data, &state, status.as_deref());
            // Scrolling stops at the last row.
            state.scroll = view.threads.scroll;
            terminal
                .draw(|frame| render_screen(frame, &view))
                .context("cannot draw the dashboard")?;
            dirty = false;
        }
        if interrupted() {
            break Ending {
                code: 0,
                message: "interrupted; stopped watching".to_string(),
            };
        }
        if finished.is_none() && attach.deadline.is_some_and(|d| Instant::now() >= d) {
            break Ending {
                code: 0,
                message: "watch duration reached".to_string(),
            };
        }
        if event::poll(INPUT_POLL).context("cannot read the terminal")? {
            match event::read().context("cannot read the terminal")? {
                TermEvent::Key(key) => match handle_key(&mut state, key) {
                    Action::None => {}
                    Action::Redraw => dirty = true,
                    Action::Quit => {
                        break finished.take().unwrap_or(Ending {
                            code: 0,
                            message: "stopped watching".to_string(),
                        });
                    }
                    Action::Snapshot => {
                        status = Some(match write_snapshot(&attach.watch, attach.pid) {
                            Ok(path) => format!("snapshot written to {}", path.display()),
                            Err(e) => format!("snapshot failed: {e:#}"),
                        });
                        dirty = true;
                    }
                },
                TermEvent::Resize(..) => dirty = true,
                _ => {}
            }
            if dirty && !state.paused {
                data = Data::capture(&attach.watch, &journal);
            }
        }
        while finished.is_none() {
            match attach.collector.next(Duration::ZERO) {
                Next::Collected(Collected::Sample(sample)) => {
                    if let Some(file) = attach.record.as_mut() {
                        serde_json::to_writer(&mut *file, &sample)
                            .context("cannot write the record file")?;
                        writeln!(file).context("cannot write the record file")?;
                    }
                    let events = attach.watch.observe(*sample);
                    if let Some(exporter) = &attach.exporter {
                        exporter.update(&attach.watch, &events);
                    }
                    journal.record(&events);
                    if !state.paused {
                        data = Data::capture(&attach.watch, &journal);
                        state.process_count = data.processes.len();
                        dirty = true;
                    }
                }
                Next::Collected(Collected::TargetGone { pid }) => {
                    finished = Some(Ending {
                        code: 0,
                        message: format!("process {pid} exited"),
                    });
                }
                Next::Collected(Collected::Failed(why)) => {
                    finished = Some(Ending {
                        code: 125,
                        message: format!("sampling failed: {why}"),
                    });
                }
                Next::Closed => {
                    finished = Some(Ending {
                        code: 125,
                        message: "the sampler stopped".to_string(),
                    });
                }
                Next::Late => break,
            }
            if let Some(end) = &finished {
                status = Some(format!("{}; the last reading stays, q quits", end.message));
                data = Data::capture(&attach.watch, &journal);
                state.process_count = data.processes.len();
                dirty = true;
            }
        }
    };
    if let Some(file) = attach.record.as_mut() {
        file.flush().context("cannot write the record file")?;
    }
    let findings = attach
        .watch
        .active_findings()
        .into_iter()
        .map(|f| format!("[{}] {}: {}", f.severity, f.kind, f.summary))
        .collect();
    Ok((ending, findings))
}

/// `tfwatch-snapshot-<pid>-<time>.txt`, the time in UTC as `20261123T172541Z`.
pub fn snapshot_file_name(pid: i32, time: SystemTime) -> String {
    let stamp: String = humantime::format_rfc3339_seconds(time)
        .to_string()
        .chars()
        .filter(|c| *c != '-' && *c != ':')
        .collect();
    format!("tfwatch-snapshot-{pid}-{stamp}.txt")
}

/// Writes the triage report of the last two samples to a file in the current directory.
fn write_snapshot(watch: &Watch, pid: i32) -> Result<PathBuf> {
    let after = watch
        .timeline
        .latest()
        .context("no sample taken yet")?
        .clone();
    let before = watch.timeline.previous().unwrap_or(&after).clone();
    let report = crate::app::snapshot::report_from_samples(before, after);
    let path = PathBuf::from(snapshot_file_name(pid, SystemTime::now()));
    let mut file = BufWriter::new(
        File::create(&path).with_context(|| format!("cannot create {}", path.display()))?,
    );
    crate::sink::report::write_text(&report, false, &mut file)
        .and_then(|()| file.flush())
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(std::fs::canonicalize(&path).unwrap_or(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_names_carry_pid_and_utc_time() {
        let time = SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_000_000);
        assert_eq!(
            snapshot_file_name(4242, time),
            "tfwatch-snapshot-4242-20261118T110640Z.txt"
        );
    }
}
