//! The GIL of a CPython process as read from the interpreter's own state in the
//! target's memory (`source::gil`), over a short burst of reads: who held it how often
//! and how often it changed hands.

use serde::{Deserialize, Serialize};

/// One burst of reads of a CPython process's GIL state (`locked`, `last_holder`,
/// `switch_number`), taken without stopping the process; or why it could not be read.
#[derive(Debug, Clone, Default, Serialize, schemars::JsonSchema, Deserialize, PartialEq)]
pub struct GilReading {
    pub pid: i32,
    /// The interpreter's version (`Py_Version`), e.g. "3.11.7"; empty when unknown.
    pub version: String,
    /// Reads of the GIL state in the burst.
    pub reads: u32,
    /// Seconds from the first read to the last.
    pub seconds: f64,
    /// Reads that found the GIL held.
    pub locked_reads: u32,
    /// Times the GIL changed hands over the burst (`switch_number`'s increase).
    pub switches: u64,
    /// The threads found holding it, most reads first.
    pub holders: Vec<GilHolder>,
    /// Each Python thread's innermost Python line where the Python stacks could be
    /// read: read in place once in a burst, at most once a minute per process and only
    /// for processes of at most 256 threads (a reading in between carries the lines
    /// last read).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub lines: Vec<GilThreadLine>,
    /// Why the GIL state could not be read (another user's process, an unsupported
    /// version); the other fields are then empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unavailable: Option<String>,
}

/// A thread found holding the GIL.
#[derive(Debug, Clone, Default, Serialize, schemars::JsonSchema, Deserialize, PartialEq)]
pub struct GilHolder {
    /// Its OS thread id (the thread state's `native_thread_id`); 0 when the thread state
    /// named no live thread of the process.
    pub tid: i32,
    /// Reads that found it holding the GIL.
    pub reads: u32,
}

/// A Python thread and the Python line it ran when its stack was read.
#[derive(Debug, Clone, Default, Serialize, schemars::JsonSchema, Deserialize, PartialEq)]
pub struct GilThreadLine {
    pub tid: i32,
    /// "function (file:line)".
    pub line: String,
}

impl GilReading {
    /// Share of the reads that found the GIL held (0 when none was made).
    pub fn locked_share(&self) -> f64 {
        if self.reads == 0 {
            0.0
        } else {
            f64::from(self.locked_reads) / f64::from(self.reads)
        }
    }

    /// Share of the reads that found `holder` holding the GIL.
    pub fn share(&self, holder: &GilHolder) -> f64 {
        if self.reads == 0 {
            0.0
        } else {
            f64::from(holder.reads) / f64::from(self.reads)
        }
    }

    /// Hand-overs per second over the burst.
    pub fn switches_per_second(&self) -> f64 {
        if self.seconds > 0.0 {
            self.switches as f64 / self.seconds
        } else {
            0.0
        }
    }

    /// The Python line `tid` ran, where read.
    pub fn line(&self, tid: i32) -> Option<&str> {
        self.lines
            .iter()
            .find(|l| l.tid == tid)
            .map(|l| l.line.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_and_rates_follow_the_reads() {
        let reading = GilReading {
            reads: 100,
            locked_reads: 96,
            seconds: 2.0,
            switches: 400,
            holders: vec![GilHolder { tid: 7, reads: 30 }],
            lines: vec![GilThreadLine {
                tid: 7,
                line: "spin (work.py:3)".into(),
            }],
            ..GilReading::default()
        };
        assert!((reading.locked_share() - 0.96).abs() < 1e-9);
        assert!((reading.share(&reading.holders[0]) - 0.30).abs() < 1e-9);
        assert!((reading.switches_per_second() - 200.0).abs() < 1e-9);
        assert_eq!(reading.line(7), Some("spin (work.py:3)"));
        assert_eq!(reading.line(8), None);
        assert_eq!(GilReading::default().locked_share(), 0.0);
    }
}
