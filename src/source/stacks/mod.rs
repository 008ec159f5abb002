//! Stacks on demand: native stacks of every thread of the tree (rstack with its libdw
//! backend, feature `stacks-native`) and Python stacks of CPython processes (py-spy as a
//! library, feature `stacks-python`).
//!
//! Taking a stack stops the target: rstack attaches to every thread with ptrace for the
//! time of the unwind, py-spy stops the process while it reads the interpreter state.
//! So stacks are taken only on demand (`snapshot --stacks`) or on a confirmed hang (the
//! diagnosis of `run`), never in steady sampling, and every stack carries how long its
//! process was paused. Ptrace access is checked first, because the unwinders' own
//! errors on a permission failure do not say what is wrong.

mod access;
#[cfg(feature = "stacks-native")]
mod lines;
#[cfg(feature = "stacks-native")]
mod native;
#[cfg(feature = "stacks-python")]
mod python;

use std::io::Write;

use serde::{Deserialize, Serialize};

use crate::model::{ProcessSample, Sample, Unavailable};

pub use access::{PtraceAccess, check_ptrace};

/// One frame of a stack.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct StackFrame {
    /// Symbolised function name (demangled), where a symbol covers the address.
    pub function: Option<String>,
    /// Source file, where known (Python frames; native frames with DWARF line info).
    pub file: Option<String>,
    pub line: Option<u32>,
    /// Instruction address (native frames).
    pub address: Option<u64>,
}

/// The stack of one thread.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ThreadStack {
    pub pid: i32,
    pub tid: i32,
    pub name: Option<String>,
    /// "native" or "python".
    pub kind: String,
    /// Innermost frame first.
    pub frames: Vec<StackFrame>,
    /// How long the process was stopped to take its stacks, seconds.
    pub paused_seconds: f64,
    /// Python stacks: whether the thread holds the GIL (read by py-spy from the
    /// interpreter's state — not a heuristic).
    pub owns_gil: Option<bool>,
}

/// Stacks of a tree and what could not be taken.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct StacksReport {
    pub threads: Vec<ThreadStack>,
    /// Per process and kind: why stacks are missing, and how to get them.
    pub unavailable: Vec<Unavailable>,
}

/// Why the native unwinder is missing from this build, if it is.
pub fn native_missing() -> Option<&'static str> {
    if cfg!(feature = "stacks-native") {
        None
    } else {
        Some(
            "native stacks are not built in: rebuild tfwatch with the `stacks-native` feature (needs libdw-dev)",
        )
    }
}

/// Why the Python unwinder is missing from this build, if it is.
pub fn python_missing() -> Option<&'static str> {
    if cfg!(feature = "stacks-python") {
        None
    } else {
        Some("Python stacks are not built in: rebuild tfwatch with the `stacks-python` feature")
    }
}

fn unavailable(source: &str, pid: i32, reason: String, fix: Option<&str>) -> Unavailable {
    Unavailable {
        source: source.to_string(),
        pid: Some(pid),
        reason,
        fix: fix.map(str::to_string),
    }
}

/// Takes the stacks of every live process of `sample` (pauses each briefly).
pub fn take(sample: &Sample, proc_root: &std::path::Path) -> StacksReport {
    let mut report = StacksReport::default();
    for process in &sample.processes {
        if matches!(process.state, 'Z' | 'X') {
            continue;
        }
        let pid = process.pid;
        if let PtraceAccess::Denied { reason, fix } = check_ptrace(proc_root, pid) {
            report
                .unavailable
                .push(unavailable("stacks", pid, reason, Some(fix)));
            continue;
        }
        take_native(process, proc_root, &mut report);
        if process.is_cpython() {
            take_python(process, &mut report);
        }
    }
    report
}

#[cfg(feature = "stacks-native")]
fn take_native(process: &ProcessSample, proc_root: &std::path::Path, report: &mut StacksReport) {
    match native::stacks(process.pid) {
        Ok(stacks) => report.threads.extend(stacks),
        Err(error) => {
            // A tracer that attached since the access check is the usual cause.
            let (reason, fix) = match access::tracer(proc_root, process.pid) {
                Some(tracer) => (
                    format!("{error}: pid {tracer} (a debugger or another profiler) traces it"),
                    Some("detach the other tracer, then take the stacks again"),
                ),
                None => (error, None),
            };
            report
                .unavailable
                .push(unavailable("native-stacks", process.pid, reason, fix));
        }
    }
}

#[cfg(not(feature = "stacks-native"))]
fn take_native(process: &ProcessSample, _proc_root: &std::path::Path, report: &mut StacksReport) {
    if let Some(why) = native_missing() {
        report.unavailable.push(unavailable(
            "native-stacks",
            process.pid,
            why.to_string(),
            Some("cargo build --features stacks-native (with libdw-dev installed)"),
        ));
    }
}

#[cfg(feature = "stacks-python")]
fn take_python(process: &ProcessSample, report: &mut StacksReport) {
    match python::stacks(process.pid) {
        Ok(stacks) => report.threads.extend(stacks),
        Err(error) => {
            report
                .unavailable
                .push(unavailable("python-stacks", process.pid, error, None))
        }
    }
}

#[cfg(not(feature = "stacks-python"))]
fn take_python(process: &ProcessSample, report: &mut StacksReport) {
    if let Some(why) = python_missing() {
        report.unavailable.push(unavailable(
            "python-stacks",
            process.pid,
            why.to_string(),
            Some("cargo build --features stacks-python"),
        ));
    }
}

/// Writes the stacks for people: per thread, innermost frame first.
pub fn write_text(stacks: &StacksReport, out: &mut impl Write) -> std::io::Result<()> {
    writeln!(out, "STACKS")?;
    if stacks.threads.is_empty() && stacks.unavailable.is_empty() {
        writeln!(out, "  none taken")?;
    }
    let mut paused_reported = Vec::new();
    for stack in &stacks.threads {
        let gil = match stack.owns_gil {
            Some(true) => ", holds the GIL",
            _ => "",
        };
        writeln!(
            out,
            "  {} stack of thread {} ({}) of pid {}{gil}:",
            stack.kind,
            stack.tid,
            stack.name.as_deref().unwrap_or("?"),
            stack.pid
        )?;
        for frame in &stack.frames {
            let function = frame.function.as_deref().unwrap_or("??");
            let at = match (&frame.file, frame.line) {
                (Some(file), Some(line)) => format!(" at {file}:{line}"),
                (Some(file), None) => format!(" in {file}"),
                _ => frame
                    .address
                    .map(|a| format!(" [{a:#x}]"))
                    .unwrap_or_default(),
            };
            writeln!(out, "      {function}{at}")?;
        }
        if !paused_reported.contains(&(stack.pid, stack.kind.clone())) {
            paused_reported.push((stack.pid, stack.kind.clone()));
        }
    }
    for (pid, kind) in &paused_reported {
        let pid = *pid;
        if kind != "python" {
            continue;
        }
        let python: Vec<&ThreadStack> = stacks
            .threads
            .iter()
            .filter(|s| s.pid == pid && s.kind == "python")
            .collect();
        match python.iter().find(|s| s.owns_gil == Some(true)) {
            Some(holder) => writeln!(
                out,
                "  pid {pid}: thread {} ({}) holds the GIL, {} other Python thread(s) do not (read by py-spy from the interpreter state)",
                holder.tid,
                holder.name.as_deref().unwrap_or("?"),
                python.len() - 1
            )?,
            None => writeln!(
                out,
                "  pid {pid}: no Python thread holds the GIL (read by py-spy from the interpreter state)"
            )?,
        }
    }
    for (pid, kind) in paused_reported {
        if let Some(stack) = stacks
            .threads
            .iter()
            .find(|s| s.pid == pid && s.kind == kind)
        {
            writeln!(
                out,
                "  pid {pid} was paused {:.1} ms for its {kind} stacks",
                stack.paused_seconds * 1000.0
            )?;
        }
    }
    for u in &stacks.unavailable {
        let pid = u.pid.map(|p| format!(" (pid {p})")).unwrap_or_default();
        writeln!(out, "  unavailable: {}{pid}: {}", u.source, u.reason)?;
        if let Some(fix) = &u.fix {
            writeln!(out, "      fix: {fix}")?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_lists_frames_pause_gil_and_what_is_missing() {
        let frame = |function: &str, file: Option<&str>, line: Option<u32>| StackFrame {
            function: Some(function.into()),
            file: file.map(str::to_string),
            line,
            address: Some(0x10),
        };
        let stacks = StacksReport {
            threads: vec![
                ThreadStack {
                    pid: 7,
                    tid: 8,
                    name: Some("worker-a".into()),
                    kind: "native".into(),
                    frames: vec![
                        frame("__lll_lock_wait", None, None),
                        frame("workload_lock_mutex", Some("common.rs"), Some(261)),
                    ],
                    paused_seconds: 0.0125,
                    owns_gil: None,
                },
                ThreadStack {
                    pid: 7,
                    tid: 9,
                    name: Some("MainThread".into()),
                    kind: "python".into(),
                    frames: vec![frame("spin", Some("job.py"), Some(4))],
                    paused_seconds: 0.001,
                    owns_gil: Some(true),
                },
            ],
            unavailable: vec![unavailable(
                "stacks",
                11,
                "no ptrace access to pid 11".into(),
                Some(access::PTRACE_ACCESS_FIX),
            )],
        };
        let mut out = Vec::new();
        write_text(&stacks, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        for expected in [
            "native stack of thread 8 (worker-a) of pid 7:",
            "      __lll_lock_wait [0x10]",
            "      workload_lock_mutex at common.rs:261",
            "python stack of thread 9 (MainThread) of pid 7, holds the GIL:",
            "      spin at job.py:4",
            "pid 7: thread 9 (MainThread) holds the GIL, 0 other Python thread(s) do not",
            "pid 7 was paused 12.5 ms for its native stacks",
            "unavailable: stacks (pid 11): no ptrace access to pid 11",
            "fix: run tfwatch as root",
        ] {
            assert!(text.contains(expected), "{expected:?} in\n{text}");
        }
    }
}
