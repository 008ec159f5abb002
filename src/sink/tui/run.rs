//! The dashboard as a sink of the watch loop: samples go into the view model; terminal
//! events come from a [`TermInput`] (crossterm's in use, a scripted list in tests); a
//! frame is drawn only when new data or a key changed something. Generic over the
//! ratatui backend, so a `TestBackend` runs the same code.
//!
//! When the target exits (or sampling fails) the last reading stays on screen with the
//! exit message in the footer until the user quits, so the final state can be read; a
//! `--duration` limit or SIGTERM ends the dashboard at once.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result};
use crossterm::event::{self, Event as TermEvent};
use ratatui::Terminal;
use ratatui::backend::Backend;

use crate::engine::sink::{Control, Ending, Reason, Sink};
use crate::engine::{Event, ExitLine, Watch};

use super::app::{Action, AppState, handle_key};
use super::view::{Data, Journal, ViewModel};
use super::widgets::render_screen;

/// Where the dashboard's keys come from.
pub trait TermInput {
    /// Waits up to `timeout` for a terminal event.
    fn poll(&mut self, timeout: Duration) -> std::io::Result<Option<TermEvent>>;
}

/// The real terminal's events, through crossterm.
pub struct CrosstermInput;

impl TermInput for CrosstermInput {
    fn poll(&mut self, timeout: Duration) -> std::io::Result<Option<TermEvent>> {
        if event::poll(timeout)? {
            event::read().map(Some)
        } else {
            Ok(None)
        }
    }
}

/// Scripted terminal events for tests: handed out one per poll, without waiting.
#[derive(Debug, Default)]
pub struct ScriptedInput {
    pub events: std::collections::VecDeque<TermEvent>,
}

impl ScriptedInput {
    pub fn new(events: impl IntoIterator<Item = TermEvent>) -> Self {
        ScriptedInput {
            events: events.into_iter().collect(),
        }
    }
}

impl TermInput for ScriptedInput {
    fn poll(&mut self, _timeout: Duration) -> std::io::Result<Option<TermEvent>> {
        Ok(self.events.pop_front())
    }
}

/// The live dashboard.
pub struct Dashboard<B: Backend, I: TermInput> {
    terminal: Terminal<B>,
    input: I,
    journal: Journal,
    data: Data,
    state: AppState,
    status: Option<String>,
    dirty: bool,
    pid: i32,
    /// Where `w` writes its report.
    snapshot_dir: PathBuf,
    /// Ends the lingering screen after the target exited (SIGTERM).
    interrupted: fn() -> bool,
}

impl<B: Backend, I: TermInput> Dashboard<B, I>
where
    B::Error: Send + Sync + 'static,
{
    pub fn new(terminal: Terminal<B>, input: I, pid: i32, interrupted: fn() -> bool) -> Self {
        let mut data = Data::default();
        data.header.pid = pid;
        Dashboard {
            terminal,
            input,
            journal: Journal::default(),
            data,
            state: AppState::default(),
            status: None,
            dirty: true,
            pid,
            snapshot_dir: PathBuf::from("."),
            interrupted,
        }
    }

    /// Writes `w` reports into `dir` instead of the current directory.
    pub fn snapshot_dir(mut self, dir: &Path) -> Self {
        self.snapshot_dir = dir.to_path_buf();
        self
    }

    pub fn terminal(&self) -> &Terminal<B> {
        &self.terminal
    }

    /// The status line of the footer (e.g. where `w` wrote its report).
    pub fn status(&self) -> Option<&str> {
        self.status.as_deref()
    }

    fn draw(&mut self) -> Result<()> {
        if self.dirty {
            let view = ViewModel::build(&self.data, &self.state, self.status.as_deref());
            // Scrolling stops at the last row.
            self.state.scroll = view.threads.scroll;
            self.terminal
                .draw(|frame| render_screen(frame, &view))
                .context("cannot draw the dashboard")?;
            self.dirty = false;
        }
        Ok(())
    }

    fn capture(&mut self, watch: &Watch) {
        self.journal.take_explanations(watch);
        self.data = Data::capture(watch, &self.journal);
        self.state.process_count = self.data.processes.len();
    }

    /// Reads one terminal event (up to `wait`) and applies it; `Some` when the user quit.
    fn handle_input(&mut self, watch: &Watch, wait: Duration) -> Result<Option<()>> {
        let Some(event) = self.input.poll(wait).context("cannot read the terminal")? else {
            return Ok(None);
        };
        match event {
            TermEvent::Key(key) => match handle_key(&mut self.state, key) {
                Action::None => {}
                Action::Redraw => self.dirty = true,
                Action::Quit => return Ok(Some(())),
                Action::Snapshot => {
                    self.status = Some(match write_snapshot(watch, self.pid, &self.snapshot_dir) {
                        Ok(path) => format!("snapshot written to {}", path.display()),
                        Err(e) => format!("snapshot failed: {e:#}"),
                    });
                    self.dirty = true;
                }
            },
            TermEvent::Resize(..) => self.dirty = true,
            _ => {}
        }
        if self.dirty && !self.state.paused {
            self.capture(watch);
        }
        Ok(None)
    }
}

impl<B: Backend, I: TermInput> Sink for Dashboard<B, I>
where
    B::Error: Send + Sync + 'static,
{
    fn sample(&mut self, watch: &Watch, events: &[Event]) -> Result<Control> {
        self.journal.record(events);
        if !self.state.paused {
            self.capture(watch);
            self.dirty = true;
        }
        Ok(Control::Continue)
    }

    fn idle(&mut self, watch: &Watch, wait: Duration) -> Result<Control> {
        self.draw()?;
        Ok(match self.handle_input(watch, wait)? {
            Some(()) => Control::Stop(Ending::new(Reason::Stopped, "stopped watching")),
            None => Control::Continue,
        })
    }

    fn interactive(&self) -> bool {
        true
    }

    fn finish(&mut self, watch: &Watch, exit: &ExitLine) -> Result<Option<Ending>> {
        let lingers = matches!(
            exit.reason.as_str(),
            r if r == Reason::TargetExited.as_str() || r == Reason::SamplerFailed.as_str()
        );
        if !lingers {
            return Ok(None);
        }
        self.status = Some(format!("{}; the last reading stays, q quits", exit.message));
        self.capture(watch);
        self.dirty = true;
        loop {
            self.draw()?;
            if (self.interrupted)() {
                return Ok(None);
            }
            if self
                .handle_input(watch, Duration::from_millis(50))?
                .is_some()
            {
                return Ok(None);
            }
        }
    }
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

/// Writes the triage report of the watch (its two newest samples and its own findings)
/// to a file in `dir`.
pub(super) fn write_snapshot(watch: &Watch, pid: i32, dir: &Path) -> Result<PathBuf> {
    let report = crate::sink::report::from_watch(watch).context("no sample taken yet")?;
    let path = dir.join(snapshot_file_name(pid, SystemTime::now()));
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
