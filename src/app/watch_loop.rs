//! The one watch loop: samples from a [`SampleSource`] go through the engine, and every
//! command only chooses its sinks ([`Sink`]) — `attach` (JSON or text lines, the dashboard),
//! `run` (its gate), and the recorder and exporter beside them. How a watch ends, and the
//! exit line that says so, are decided here.

use std::time::Duration;

use anyhow::Result;

use crate::collect::{Collected, Next, SampleSource};
use crate::engine::sink::{Control, Ending, Reason, Sink};
use crate::engine::{ExitLine, Watch};
use crate::source::clock::Clock;

/// How long to wait for a sample when no sink reads the terminal.
const SAMPLE_POLL: Duration = Duration::from_millis(100);
/// How long an interactive sink may wait for a key between looks for samples.
const INPUT_POLL: Duration = Duration::from_millis(50);

/// The outside world of one watch: where samples come from, the time, the deadline and
/// the interruption flag.
pub struct WatchLoop<'a> {
    pub source: &'a mut dyn SampleSource,
    pub clock: &'a dyn Clock,
    /// Ends the watch this long after the clock's zero (`--duration`, `--timeout`).
    pub deadline: Option<Duration>,
    pub interrupted: &'a dyn Fn() -> bool,
    pub pid: i32,
}

impl WatchLoop<'_> {
    fn deadline_passed(&self) -> bool {
        self.deadline.is_some_and(|d| self.clock.elapsed() >= d)
    }

    /// Runs until the target exits, sampling fails, the deadline passes, an interruption
    /// arrives or a sink stops it; returns how it ended (after every sink's `finish`).
    pub fn run(&mut self, watch: &mut Watch, sinks: &mut [&mut dyn Sink]) -> Result<Ending> {
        let interactive = sinks.iter().any(|s| s.interactive());
        let ending = 'watch: loop {
            if (self.interrupted)() {
                break Ending::new(Reason::Interrupted, "interrupted; stopped watching");
            }
            if self.deadline_passed() {
                break Ending::new(Reason::Duration, "watch duration reached");
            }
            for sink in sinks.iter_mut() {
                let wait = if sink.interactive() {
                    INPUT_POLL
                } else {
                    Duration::ZERO
                };
                if let Control::Stop(ending) = sink.idle(watch, wait)? {
                    break 'watch ending;
                }
            }
            let mut wait = if interactive {
                Duration::ZERO
            } else {
                SAMPLE_POLL
            };
            // Take every sample that is ready (an interactive sink must not fall behind).
            loop {
                if wait.is_zero() && self.deadline_passed() {
                    break 'watch Ending::new(Reason::Duration, "watch duration reached");
                }
                match self.source.next_sample(wait) {
                    Next::Collected(Collected::Sample(sample)) => {
                        let events = watch.observe(*sample);
                        for sink in sinks.iter_mut() {
                            let control = sink.sample(watch, &events)?;
                            for (key, finding) in sink.explanations() {
                                watch.explain(&key, finding);
                            }
                            if let Control::Stop(ending) = control {
                                break 'watch ending;
                            }
                        }
                        wait = Duration::ZERO;
                    }
                    Next::Collected(Collected::TargetGone { pid }) => {
                        break 'watch Ending::new(
                            Reason::TargetExited,
                            format!("process {pid} exited"),
                        );
                    }
                    Next::Collected(Collected::Failed(why)) => {
                        break 'watch Ending::new(
                            Reason::SamplerFailed,
                            format!("sampling failed: {why}"),
                        );
                    }
                    Next::Closed => {
                        break 'watch Ending::new(Reason::SamplerFailed, "the sampler stopped");
                    }
                    Next::Late => break,
                }
            }
        };
        let exit = ExitLine {
            time_unix_seconds: self.clock.unix_seconds(),
            elapsed_seconds: self.clock.elapsed().as_secs_f64(),
            pid: Some(self.pid),
            reason: ending.reason,
            exit_code: None,
            message: ending.message.clone(),
        };
        let mut ending = ending;
        for sink in sinks.iter_mut() {
            if let Some(changed) = sink.finish(watch, &exit)? {
                ending = changed;
            }
        }
        Ok(ending)
    }
}

#[cfg(test)]
mod tests;
