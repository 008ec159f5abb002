//! Python stacks of a CPython process through py-spy as a library.

use std::time::Instant;

use crate::model::stacks::{StackFrame, ThreadStack};

/// Python stacks of every Python thread of `pid`, with the GIL holder; the process is
/// stopped while py-spy reads them.
pub fn stacks(pid: i32) -> Result<Vec<ThreadStack>, String> {
    let config = py_spy::Config {
        blocking: py_spy::config::LockingStrategy::Lock,
        native: false,
        ..py_spy::Config::default()
    };
    let mut spy = py_spy::PythonSpy::new(pid, &config).map_err(|error| {
        format!("py-spy cannot read the Python interpreter of pid {pid}: {error:#}")
    })?;
    let started = Instant::now();
    let traces = spy
        .get_stack_traces()
        .map_err(|error| format!("py-spy cannot read the Python stacks of pid {pid}: {error:#}"))?;
    let paused_seconds = started.elapsed().as_secs_f64();
    Ok(traces
        .into_iter()
        .map(|trace| ThreadStack {
            pid,
            tid: trace
                .os_thread_id
                .and_then(|t| i32::try_from(t).ok())
                .unwrap_or(0),
            name: trace.thread_name.clone(),
            kind: "python".to_string(),
            frames: trace
                .frames
                .iter()
                .map(|frame| StackFrame {
                    function: Some(frame.name.clone()),
                    file: Some(frame.filename.clone()),
                    line: u32::try_from(frame.line).ok().filter(|&l| l > 0),
                    address: None,
                })
                .collect(),
            paused_seconds,
            owns_gil: Some(trace.owns_gil),
        })
        .collect())
}
