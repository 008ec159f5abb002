//! `--record FILE`: every full sample as a JSON line, a timeline the detectors can be
//! replayed on.

use std::io::Write;

use anyhow::{Context, Result};

use crate::engine::sink::{Control, Ending, Sink};
use crate::engine::{Event, ExitLine, Watch};

pub struct Recorder<W: Write> {
    out: W,
}

impl<W: Write> Recorder<W> {
    pub fn new(out: W) -> Self {
        Recorder { out }
    }
}

impl<W: Write> Sink for Recorder<W> {
    fn sample(&mut self, watch: &Watch, _events: &[Event]) -> Result<Control> {
        if let Some(sample) = watch.timeline.latest() {
            serde_json::to_writer(&mut self.out, sample).context("cannot write the record file")?;
            writeln!(self.out).context("cannot write the record file")?;
        }
        Ok(Control::Continue)
    }

    fn finish(&mut self, _watch: &Watch, _exit: &ExitLine) -> Result<Option<Ending>> {
        self.out.flush().context("cannot write the record file")?;
        Ok(None)
    }
}
