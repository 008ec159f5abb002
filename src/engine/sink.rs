//! What the watch loop asks of its sinks, and how a watch ends. The loop itself is in
//! the command layer (`app::watch_loop`); sinks implement [`Sink`].

use std::time::Duration;

use anyhow::Result;

use super::{Event, ExitLine, Watch};
use crate::model::Finding;

/// Why a watch ended: the `reason` of every `exit` line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Reason {
    TargetExited,
    Interrupted,
    Duration,
    SamplerFailed,
    /// A sink ended the watch (the dashboard's `q`, `run`'s gate).
    Stopped,
    /// `run`: the command could not be started, so nothing was watched.
    NotStarted,
}

impl Reason {
    /// The `reason` of the `exit` event.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::TargetExited => "target-exited",
            Reason::Interrupted => "interrupted",
            Reason::Duration => "duration",
            Reason::SamplerFailed => "sampler-failed",
            Reason::Stopped => "stopped",
            Reason::NotStarted => "not-started",
        }
    }
}

/// How a watch ended, and the message that says so.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ending {
    pub reason: Reason,
    pub message: String,
}

impl Ending {
    pub fn new(reason: Reason, message: impl Into<String>) -> Self {
        Ending {
            reason,
            message: message.into(),
        }
    }
}

/// What a sink tells the loop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Control {
    Continue,
    Stop(Ending),
}

/// Where a watch's results go. Sinks see the engine read-only.
pub trait Sink {
    /// One sample was judged: it is the newest in `watch.timeline`; `events` are what it
    /// caused, the `sample` line first.
    fn sample(&mut self, watch: &Watch, events: &[Event]) -> Result<Control>;

    /// Findings this sink explained since it was last asked, by key (`attach` takes
    /// stacks on a hang): the loop hands each to the watch ([`Watch::explain`]) right
    /// after [`Sink::sample`], so the sinks after it (the dashboard) and the diagnosis
    /// show the explanation.
    fn explanations(&mut self) -> Vec<(String, Finding)> {
        Vec::new()
    }

    /// Between samples. An interactive sink waits here up to `wait` for input.
    fn idle(&mut self, _watch: &Watch, _wait: Duration) -> Result<Control> {
        Ok(Control::Continue)
    }

    /// Whether the sink reads input (the loop then lets it wait in [`Sink::idle`]).
    fn interactive(&self) -> bool {
        false
    }

    /// The watch ended; `exit` is its closing line. An interactive sink may keep its
    /// screen until the user leaves, and may say how it ended instead.
    fn finish(&mut self, _watch: &Watch, _exit: &ExitLine) -> Result<Option<Ending>> {
        Ok(None)
    }
}
