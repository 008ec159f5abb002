//! Outputs of `run` whose failure is kept, not fatal: the command under watch is a CI
//! job, so a stderr that cannot be written (closed, a full disk) must not end the
//! watch and abandon the command. The first failure is kept; the sink then writes
//! nothing more, and `run` says the failure at its end and exits 125.

use std::cell::RefCell;
use std::io::Write;
use std::time::Duration;

use anyhow::Result;

use crate::engine::sink::{Control, Ending, Sink};
use crate::engine::{Event, ExitLine, Watch};
use crate::model::Finding;

/// The first failure of each output of a run, in words ("cannot write the events to
/// stderr: No space left on device (os error 28)").
#[derive(Debug, Default)]
pub struct Failures {
    /// (output, what went wrong).
    said: RefCell<Vec<(String, String)>>,
}

impl Failures {
    /// Keeps `error` unless its output (`what`: "stderr") already failed.
    pub fn keep(&self, what: &str, error: &anyhow::Error) {
        let mut said = self.said.borrow_mut();
        if !said.iter().any(|(output, _)| output == what) {
            said.push((what.to_string(), format!("{error:#}")));
        }
    }

    /// What failed, one entry per output.
    pub fn all(&self) -> Vec<String> {
        self.said.borrow().iter().map(|(_, e)| e.clone()).collect()
    }

    pub fn is_empty(&self) -> bool {
        self.said.borrow().is_empty()
    }

    /// Writes `text` on stderr (as one write), keeping the failure.
    pub fn write_stderr(&self, text: &[u8]) {
        let mut err = std::io::stderr().lock();
        if let Err(e) = err.write_all(text).and_then(|()| err.flush()) {
            self.keep(
                STDERR,
                &anyhow::Error::new(e).context("cannot write to stderr"),
            );
        }
    }
}

/// The output every line of `run` goes to (its events, notes and closing line).
pub const STDERR: &str = "stderr";

/// A sink whose first error is kept in [`Failures`] under `what`; after it the sink is
/// no longer called, and the watch goes on.
pub struct Kept<'a, S: Sink> {
    pub sink: S,
    what: &'static str,
    failures: &'a Failures,
    failed: bool,
}

impl<'a, S: Sink> Kept<'a, S> {
    pub fn new(sink: S, what: &'static str, failures: &'a Failures) -> Self {
        Kept {
            sink,
            what,
            failures,
            failed: false,
        }
    }

    fn kept(&mut self, result: Result<Control>) -> Control {
        match result {
            Ok(control) => control,
            Err(e) => {
                self.failures.keep(self.what, &e);
                self.failed = true;
                Control::Continue
            }
        }
    }
}

impl<S: Sink> Sink for Kept<'_, S> {
    fn sample(&mut self, watch: &Watch, events: &[Event]) -> Result<Control> {
        if self.failed {
            return Ok(Control::Continue);
        }
        let result = self.sink.sample(watch, events);
        Ok(self.kept(result))
    }

    fn explanations(&mut self) -> Vec<(String, Finding)> {
        self.sink.explanations()
    }

    fn idle(&mut self, watch: &Watch, wait: Duration) -> Result<Control> {
        if self.failed {
            return Ok(Control::Continue);
        }
        let result = self.sink.idle(watch, wait);
        Ok(self.kept(result))
    }

    fn finish(&mut self, watch: &Watch, exit: &ExitLine) -> Result<Option<Ending>> {
        if self.failed {
            return Ok(None);
        }
        match self.sink.finish(watch, exit) {
            Ok(ending) => Ok(ending),
            Err(e) => {
                self.failures.keep(self.what, &e);
                self.failed = true;
                Ok(None)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::watch_loop::WatchLoop;
    use crate::collect::Recorded;
    use crate::engine::sink::Reason;
    use crate::rules::RuleSet;
    use crate::sink::events::{EventSink, Format};
    use crate::source::clock::FakeClock;
    use crate::verify::observer::verify_detect_config;

    /// A writer like a full disk: every write fails.
    struct Full;

    impl Write for Full {
        fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
            Err(std::io::Error::from_raw_os_error(libc::ENOSPC))
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// Counts the samples that reach it.
    #[derive(Default)]
    struct Count(usize);

    impl Sink for Count {
        fn sample(&mut self, _: &Watch, _: &[Event]) -> Result<Control> {
            self.0 += 1;
            Ok(Control::Continue)
        }
    }

    fn recorded(name: &str) -> Vec<crate::model::Sample> {
        let path = format!(
            "{}/fixtures/timelines/{name}.jsonl",
            env!("CARGO_MANIFEST_DIR")
        );
        let text = std::fs::read_to_string(&path).expect("a recorded timeline");
        text.lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).expect("a recorded sample"))
            .collect()
    }

    #[test]
    fn a_failing_event_sink_is_kept_and_the_watch_goes_on_to_the_end() {
        let samples = recorded("deadlock");
        let count = samples.len();
        let clock = FakeClock::new(1_800_000_000.0);
        let mut source = Recorded::new(samples, Some(clock.clone()));
        let mut watch = Watch::new(verify_detect_config(), RuleSet::defaults());
        let failures = Failures::default();
        let mut lines = Kept::new(EventSink::new(Full, Format::Json), STDERR, &failures);
        let mut after = Count::default();
        let ending = WatchLoop {
            source: &mut source,
            clock: &clock,
            deadline: None,
            interrupted: &|| false,
            pid: 1,
        }
        .run(&mut watch, &mut [&mut lines, &mut after])
        .expect("a failing output does not end the watch");
        assert_eq!(ending.reason, Reason::TargetExited);
        assert_eq!(after.0, count, "every sample reached the sinks after it");
        let all = failures.all();
        assert_eq!(all.len(), 1, "{all:?}");
        assert!(
            all[0].starts_with("cannot write the events: ")
                && all[0].contains("No space left on device"),
            "{all:?}"
        );
    }

    #[test]
    fn each_output_keeps_its_first_failure() {
        let failures = Failures::default();
        assert!(failures.is_empty());
        failures.keep(STDERR, &anyhow::anyhow!("first"));
        failures.keep(STDERR, &anyhow::anyhow!("second"));
        failures.keep("the exporter", &anyhow::anyhow!("third"));
        assert_eq!(failures.all(), ["first", "third"]);
    }
}
