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

use crate::model::stacks::StacksReport;
use crate::model::{ProcessSample, Sample, Unavailable};

pub use access::{PtraceAccess, check_ptrace};

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
