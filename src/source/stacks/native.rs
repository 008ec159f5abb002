//! Native stacks through rstack's libdw backend.

use std::time::Instant;

use super::lines::SourceLines;
use crate::model::stacks::{StackFrame, ThreadStack};

/// Stacks of every thread of `pid`. Threads are stopped one at a time, each while its
/// own stack is unwound (rstack's rolling mode: its snapshot mode, which stops them all
/// first, attaches the process id for every thread in rstack 0.3.3 and fails with
/// EPERM); `paused_seconds` is the whole trace, an upper bound for any one thread.
pub fn stacks(pid: i32) -> Result<Vec<ThreadStack>, String> {
    let started = Instant::now();
    let traced = rstack::TraceOptions::new()
        .thread_names(true)
        .symbols(true)
        .snapshot(false)
        .trace(pid as u32)
        .map_err(|error| format!("native unwind of pid {pid} failed: {error}"))?;
    let paused_seconds = started.elapsed().as_secs_f64();
    // After the threads run again: DWARF lookups do not need them stopped.
    let mut lines = SourceLines::new(pid);
    Ok(traced
        .threads()
        .iter()
        .map(|thread| ThreadStack {
            pid,
            tid: thread.id() as i32,
            name: thread.name().map(str::to_string),
            kind: "native".to_string(),
            frames: thread
                .frames()
                .iter()
                .map(|frame| {
                    let (file, line) = lines.locate(frame.ip()).unzip();
                    StackFrame {
                        function: frame
                            .symbol()
                            .map(|s| format!("{:#}", rustc_demangle::demangle(s.name()))),
                        file,
                        line,
                        address: Some(frame.ip()),
                    }
                })
                .collect(),
            paused_seconds,
            owns_gil: None,
        })
        .collect())
}
