//! Stacks on demand: native stacks of the threads of the tree (libdw, feature
//! `stacks-native`) and Python stacks of CPython processes (py-spy as a library, feature
//! `stacks-python`).
//!
//! Taking a stack stops the target: the native unwinder stops one thread at a time with
//! ptrace, each for the time of its own unwind, blocked threads first and within a pause
//! budget ([`plan`]); py-spy stops the process while it reads the interpreter state,
//! unless no thread of it was running (then it reads in place: nothing can change).
//! So stacks are taken only on demand (`snapshot --stacks`) or on a confirmed hang (the
//! diagnosis of `run`), never in steady sampling, and every stack carries how long its
//! process was paused. Ptrace access is checked first, because the unwinders' own
//! errors on a permission failure do not say what is wrong.

mod access;
#[cfg(feature = "stacks-native")]
mod lines;
#[cfg(feature = "stacks-native")]
mod native;
pub mod plan;
#[cfg(feature = "stacks-python")]
mod python;

#[cfg(any(feature = "stacks-native", feature = "stacks-python"))]
use crate::model::stacks::Pause;
use crate::model::stacks::{StacksReport, ThreadStack};
use crate::model::waits::{explain, name_wait};
use crate::model::{ProcessSample, Sample, Unavailable};

pub use access::{PtraceAccess, check_ptrace};

/// The innermost Python line of each Python thread of `pid` (tid, "function
/// (file:line)"), read in place without stopping the process, within
/// [`UNWIND_DEADLINE`].
#[cfg(feature = "stacks-python")]
pub fn python_lines(pid: i32) -> Result<Vec<(i32, String)>, String> {
    with_deadline(pid, "Python lines", move || python::innermost_lines(pid))
}

/// Without the Python unwinder: says it is not built in.
#[cfg(not(feature = "stacks-python"))]
pub fn python_lines(_pid: i32) -> Result<Vec<(i32, String)>, String> {
    Err(python_missing().unwrap_or_default().to_string())
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

/// How long one unwinder may take for one process before tfwatch gives up waiting on it.
pub const UNWIND_DEADLINE: std::time::Duration = std::time::Duration::from_secs(8);

/// Runs `unwind` on its own thread and waits for it until [`UNWIND_DEADLINE`]. On
/// timeout the thread is abandoned: both unwinders attach with `PTRACE_SEIZE` (no
/// SIGSTOP is queued), so the threads they hold are released when the unwind ends or
/// when tfwatch exits, whichever comes first.
#[cfg(any(feature = "stacks-native", feature = "stacks-python"))]
fn with_deadline<T: Send + 'static>(
    pid: i32,
    what: &str,
    unwind: impl FnOnce() -> Result<T, String> + Send + 'static,
) -> Result<T, String> {
    let (tx, rx) = std::sync::mpsc::channel();
    let spawned = std::thread::Builder::new()
        .name(format!("tfwatch-{what}"))
        .spawn(move || {
            let _ = tx.send(unwind());
        });
    if let Err(error) = spawned {
        return Err(format!("cannot start the {what} unwinder: {error}"));
    }
    match rx.recv_timeout(UNWIND_DEADLINE) {
        Ok(result) => result,
        Err(_) => Err(format!(
            "{what} of pid {pid} not taken within {}s: a thread did not stop for the unwinder (stuck in the kernel?)",
            UNWIND_DEADLINE.as_secs()
        )),
    }
}

/// The state letter and wait channel of each thread of `pid`, read now from /proc.
fn thread_states(proc_root: &std::path::Path, pid: i32) -> Vec<(i32, char, String)> {
    let Ok(tasks) = std::fs::read_dir(proc_root.join(format!("{pid}/task"))) else {
        return Vec::new();
    };
    tasks
        .filter_map(Result::ok)
        .filter_map(|task| {
            let tid = task.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(task.path().join("stat")).ok()?;
            let state = stat.rsplit_once(')')?.1.trim_start().chars().next()?;
            let wchan = std::fs::read_to_string(task.path().join("wchan")).unwrap_or_default();
            Some((tid, state, wchan.trim().to_string()))
        })
        .collect()
}

/// The freezer state of the cgroup of `pid` when it is frozen (cgroup v1 `freezer.state`
/// FROZEN or FREEZING, cgroup v2 `cgroup.freeze` 1). A frozen task shows state D in the
/// wait it was in (recent kernels) or in the freezer's own wait channel (older ones):
/// only the cgroup tells it from uninterruptible sleep.
pub fn frozen_cgroup(proc_root: &std::path::Path, pid: i32) -> Option<String> {
    let cgroups = std::fs::read_to_string(proc_root.join(format!("{pid}/cgroup"))).ok()?;
    let sys = std::path::Path::new("/sys/fs/cgroup");
    cgroups.lines().find_map(|line| {
        let mut fields = line.splitn(3, ':');
        let (_, controllers, path) = (fields.next()?, fields.next()?, fields.next()?);
        let relative = path.trim_start_matches('/');
        if controllers.split(',').any(|c| c == "freezer") {
            let state =
                std::fs::read_to_string(sys.join("freezer").join(relative).join("freezer.state"))
                    .ok()?;
            let state = state.trim();
            matches!(state, "FROZEN" | "FREEZING")
                .then(|| format!("cgroup-v1 freezer {path} is {state}"))
        } else if controllers.is_empty() {
            let freeze = std::fs::read_to_string(sys.join(relative).join("cgroup.freeze")).ok()?;
            (freeze.trim() == "1").then(|| format!("cgroup {path} is frozen (cgroup.freeze 1)"))
        } else {
            None
        }
    })
}

/// Why the stacks of `pid` cannot be taken now without waiting on the kernel: a frozen
/// cgroup, or threads in uninterruptible sleep (an attach waits until they wake).
/// `states` are its threads' as [`thread_states`] reads them.
fn not_unwindable(
    proc_root: &std::path::Path,
    pid: i32,
    states: &[(i32, char, String)],
) -> Option<String> {
    use crate::model::waits::{frozen_process, is_freezer_wait};
    if let Some(frozen) = frozen_cgroup(proc_root, pid) {
        return Some(format!(
            "{}; its stacks cannot be taken until then",
            frozen_process(pid, &frozen)
        ));
    }
    if let Some((_, _, wchan)) = states
        .iter()
        .find(|(_, state, wchan)| matches!(state, 'D' | 'T' | 't') && is_freezer_wait(wchan))
    {
        return Some(format!(
            "{}; its stacks cannot be taken until then",
            frozen_process(pid, &format!("its threads wait in {wchan}"))
        ));
    }
    let asleep: Vec<&(i32, char, String)> = states.iter().filter(|(_, s, _)| *s == 'D').collect();
    if asleep.is_empty() {
        return None;
    }
    let mut channels: Vec<&str> = asleep
        .iter()
        .map(|(_, _, w)| {
            if w.is_empty() || w == "0" {
                "?"
            } else {
                w.as_str()
            }
        })
        .collect();
    channels.sort_unstable();
    channels.dedup();
    let tids: Vec<String> = asleep.iter().map(|(tid, _, _)| tid.to_string()).collect();
    Some(format!(
        "{} thread(s) of pid {pid} (tid {}) in uninterruptible sleep in {}, not unwound: attaching waits until they wake",
        asleep.len(),
        tids.join(", "),
        channels.join(", ")
    ))
}

/// Takes the stacks of every live process of `sample` (pauses each briefly), one per
/// thread (native and Python merged), each wait named, and a one-screen explanation
/// per process. A frozen process and one with threads in uninterruptible sleep are not
/// unwound (an attach would wait until they wake): said so, with the sleeping threads
/// and their wait channels. The native unwinder takes the blocked threads first and
/// the running ones last, within a pause budget ([`plan`]): threads left when it is spent
/// are said to be not unwound (their Python stacks are still taken), and the pause is
/// partial. Each unwinder runs under [`UNWIND_DEADLINE`] besides.
pub fn take(sample: &Sample, proc_root: &std::path::Path) -> StacksReport {
    let mut report = StacksReport::default();
    for process in &sample.processes {
        if process.has_exited() {
            continue;
        }
        let pid = process.pid;
        // State and wait channel of each thread before any unwind: stopping a thread
        // interrupts its wait, so just after it is detached it is briefly runnable
        // (state R, no wait channel) while it goes back to waiting.
        let before = thread_states(proc_root, pid);
        let frozen = frozen_cgroup(proc_root, pid).is_some()
            || before
                .iter()
                .any(|(_, _, wchan)| crate::model::waits::is_freezer_wait(wchan));
        if let Some(why) = not_unwindable(proc_root, pid, &before) {
            report.unavailable.push(unavailable(
                "stacks",
                pid,
                why,
                Some("take the stacks again once the process runs (thaw its cgroup, or wait for the I/O or device it waits on)"),
            ));
            // The sleeping threads are shown as such, never waited for.
            for (tid, state, wchan) in before {
                if state != 'D' {
                    continue;
                }
                let name = process
                    .threads
                    .iter()
                    .find(|t| t.tid == tid)
                    .map(|t| t.name.clone());
                report.threads.push(ThreadStack {
                    pid,
                    tid,
                    name,
                    kind: crate::model::stacks::StackKind::Native,
                    state: Some(state),
                    wchan: Some(wchan.clone()).filter(|w| !w.is_empty()),
                    not_unwound: Some(if frozen {
                        crate::model::waits::frozen_thread(if wchan.is_empty() {
                            "?"
                        } else {
                            &wchan
                        })
                        .trim_start_matches("is ")
                        .to_string()
                    } else {
                        format!(
                            "uninterruptible sleep in `{}`, not unwound",
                            if wchan.is_empty() { "?" } else { &wchan }
                        )
                    }),
                    ..ThreadStack::default()
                });
            }
            continue;
        }
        if let PtraceAccess::Denied { reason, fix } = check_ptrace(proc_root, pid) {
            let fix = Some(fix).filter(|f| !f.is_empty());
            report
                .unavailable
                .push(unavailable("stacks", pid, reason, fix));
            continue;
        }
        // Blocked threads first, running ones last, within one pause budget per process:
        // the native unwind spends from it first.
        let order = plan::order(&before);
        let budget = plan::pause_budget(order.len());
        let mut threads = take_native(process, order.clone(), budget, proc_root, &mut report);
        let first_pause = report.paused_ms(pid);
        finish_native(
            process,
            &order,
            budget,
            proc_root,
            &mut threads,
            &mut report,
        );
        if process.is_cpython() {
            // Python frames change only in a Python thread that runs: those running now
            // decide whether the frames read in place can be kept.
            let running: Vec<i32> = thread_states(proc_root, pid)
                .into_iter()
                .filter(|(_, state, _)| *state == 'R')
                .map(|(tid, ..)| tid)
                .collect();
            // What the native unwind's first pause left of the budget.
            let native = first_pause.unwrap_or(0.0) / 1000.0;
            let left = budget.saturating_sub(std::time::Duration::from_secs_f64(native.max(0.0)));
            threads.extend(take_python(process, running, left, &mut report));
        }
        // A thread started meanwhile: as it is now.
        let after = thread_states(proc_root, pid);
        let mut threads = crate::model::stacks::merge_all(threads);
        for stack in &mut threads {
            let find = |states: &[(i32, char, String)]| {
                states.iter().find(|(tid, _, _)| *tid == stack.tid).cloned()
            };
            if let Some((_, state, wchan)) = find(&before).or_else(|| find(&after)) {
                stack.state = Some(state);
                stack.wchan = Some(wchan).filter(|w| !w.is_empty() && w != "0");
            }
            if stack.name.is_none() {
                stack.name = process
                    .threads
                    .iter()
                    .find(|t| t.tid == stack.tid)
                    .map(|t| t.name.clone());
            }
        }
        report.threads.extend(threads);
    }
    for stack in &mut report.threads {
        stack.wait = Some(name_wait(
            &stack.frames,
            stack.state,
            stack.wchan.as_deref(),
        ));
    }
    let mut pids: Vec<i32> = report.threads.iter().map(|t| t.pid).collect();
    pids.dedup();
    for pid in pids {
        let threads: Vec<&ThreadStack> = report.threads.iter().filter(|t| t.pid == pid).collect();
        let explained = explain(pid, &threads, report.paused_ms(pid));
        report.explained.push(explained);
    }
    report
}

/// Further passes ([`plan::MORE_PASSES`]) over the blocked threads of `process` whose
/// unwind the spent budget left out (a loaded machine): each a pause of its own within
/// `budget`, its stacks put in place of the ones not unwound, and the pauses' account
/// of what is still left brought up to date.
fn finish_native(
    process: &ProcessSample,
    order: &[plan::Planned],
    budget: std::time::Duration,
    proc_root: &std::path::Path,
    threads: &mut [ThreadStack],
    report: &mut StacksReport,
) {
    let pid = process.pid;
    let mut passes = 0;
    let unfinished = |threads: &[ThreadStack]| {
        let left: Vec<(i32, &str)> = threads
            .iter()
            .filter_map(|t| Some((t.tid, t.not_unwound.as_deref()?)))
            .collect();
        plan::unfinished(order, &left)
    };
    loop {
        let again = unfinished(threads);
        if again.is_empty() || passes == plan::MORE_PASSES {
            break;
        }
        passes += 1;
        for stack in take_native(process, again, budget, proc_root, report) {
            if stack.not_unwound.is_none()
                && let Some(slot) = threads.iter_mut().find(|t| t.tid == stack.tid)
            {
                *slot = stack;
            }
        }
    }
    if passes > 0 {
        // The pauses together left out only what no pass reached: said once, on the
        // first.
        let left = threads
            .iter()
            .filter(|t| t.not_unwound.as_deref().is_some_and(plan::left_by_budget))
            .count();
        let mut native = report
            .pauses
            .iter_mut()
            .filter(|p| p.pid == pid && p.kind == crate::model::stacks::StackKind::Native);
        if let Some(first) = native.next() {
            first.not_unwound = left;
            first.partial = left > 0;
        }
        for pause in native {
            pause.not_unwound = 0;
            pause.partial = false;
        }
    }
}

#[cfg(feature = "stacks-native")]
fn take_native(
    process: &ProcessSample,
    order: Vec<plan::Planned>,
    budget: std::time::Duration,
    proc_root: &std::path::Path,
    report: &mut StacksReport,
) -> Vec<ThreadStack> {
    let pid = process.pid;
    match with_deadline(pid, "native stacks", move || {
        native::unwind(pid, &order, budget)
    }) {
        Ok(raw) => {
            report.pauses.push(Pause {
                pid,
                kind: crate::model::stacks::StackKind::Native,
                seconds: raw.paused_seconds,
                threads: raw.unwound,
                partial: raw.partial,
                not_unwound: raw.threads.len() - raw.unwound,
                budget_ms: Some(budget.as_secs_f64() * 1000.0),
                in_place: false,
                read_while_running: None,
            });
            // Symbols after the threads run again, on this thread (its module cache).
            native::symbolise(raw)
        }
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
            Vec::new()
        }
    }
}

#[cfg(not(feature = "stacks-native"))]
fn take_native(
    process: &ProcessSample,
    _order: Vec<plan::Planned>,
    _budget: std::time::Duration,
    _proc_root: &std::path::Path,
    report: &mut StacksReport,
) -> Vec<ThreadStack> {
    if let Some(why) = native_missing() {
        report.unavailable.push(unavailable(
            "native-stacks",
            process.pid,
            why.to_string(),
            Some("cargo build --features stacks-native (with libdw-dev installed)"),
        ));
    }
    Vec::new()
}

#[cfg(feature = "stacks-python")]
fn take_python(
    process: &ProcessSample,
    running: Vec<i32>,
    budget: std::time::Duration,
    report: &mut StacksReport,
) -> Vec<ThreadStack> {
    let pid = process.pid;
    match with_deadline(pid, "Python stacks", move || {
        python::stacks(pid, &running, budget)
    }) {
        Ok(python::PythonStacks {
            stacks,
            paused_seconds,
            in_place,
            read_while_running,
        }) => {
            report.pauses.push(Pause {
                pid,
                kind: crate::model::stacks::StackKind::Python,
                seconds: paused_seconds,
                threads: stacks.len(),
                budget_ms: Some(budget.as_secs_f64() * 1000.0),
                in_place,
                read_while_running,
                ..Pause::default()
            });
            stacks
        }
        Err(error) => {
            report
                .unavailable
                .push(unavailable("python-stacks", process.pid, error, None));
            Vec::new()
        }
    }
}

#[cfg(not(feature = "stacks-python"))]
fn take_python(
    process: &ProcessSample,
    _running: Vec<i32>,
    _budget: std::time::Duration,
    report: &mut StacksReport,
) -> Vec<ThreadStack> {
    if let Some(why) = python_missing() {
        report.unavailable.push(unavailable(
            "python-stacks",
            process.pid,
            why.to_string(),
            Some("cargo build --features stacks-python"),
        ));
    }
    Vec::new()
}
