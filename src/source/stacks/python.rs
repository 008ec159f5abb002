//! Python stacks of a CPython process through py-spy as a library, with what the wait
//! naming needs beside the frames: the source line of each frame and the `with` blocks
//! around it, and the lock objects among the innermost frames' locals (an RLock records
//! its owner, read from the target's memory after the process runs again).

use std::collections::HashMap;
use std::io::IoSliceMut;
use std::time::{Duration, Instant};

use nix::sys::uio::{RemoteIoVec, process_vm_readv};
use nix::unistd::Pid;

use crate::model::stacks::{PythonLockObject, StackFrame, ThreadStack};

/// How many innermost Python frames of each thread have their locals looked at.
const FRAMES_WITH_LOCKS: usize = 2;
/// Headers of enclosing blocks kept per frame.
const SCOPE_LINES: usize = 12;
/// Source files larger than this are not read.
const SOURCE_LIMIT: u64 = 4 * 1024 * 1024;

/// What [`stacks`] read.
pub struct PythonStacks {
    pub stacks: Vec<ThreadStack>,
    /// How long the process was stopped for them (0 when read in place).
    pub paused_seconds: f64,
    /// Read without stopping the process.
    pub in_place: bool,
    /// Read in place though this thread, the GIL's holder, ran (see
    /// [`crate::model::stacks::Pause::read_while_running`]).
    pub read_while_running: Option<i32>,
}

/// A read in place that is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Kept {
    read_while_running: Option<i32>,
}

/// Whether a complete read in place is kept: when the GIL's holder was not running, or
/// when it was but the read took `took` ≥ `budget` (a stopped read would take about as
/// long and pass the budget); `None`: stop the process and read again.
fn keep_in_place(running_holder: Option<i32>, took: Duration, budget: Duration) -> Option<Kept> {
    match running_holder {
        None => Some(Kept {
            read_while_running: None,
        }),
        Some(tid) if took >= budget => Some(Kept {
            read_while_running: Some(tid),
        }),
        Some(_) => None,
    }
}

/// Whether `pid` is a child of this process (its parent, from `/proc/PID/stat`).
fn own_child(pid: i32) -> bool {
    std::fs::read(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|bytes| crate::source::proc::parsers::parse_stat(&bytes).ok())
        .is_some_and(|stat| u32::try_from(stat.ppid) == Ok(std::process::id()))
}

/// Python stacks of every Python thread of `pid`, with the GIL holder, and how long the
/// process was stopped for them. Python frames change only under the GIL, so py-spy
/// first reads them without stopping the process; that read is kept when it names every
/// thread by its OS thread and the thread holding the GIL is not among `running` (the
/// threads in state R just before): native pool threads (BLAS, TensorFlow, PyTorch) and
/// Python threads inside a native call that released the GIL may run, their Python
/// frames stay as read. Otherwise the process is stopped while py-spy reads again —
/// unless the read in place took longer than `budget` (the pause budget left): a
/// stopped read would take as long, so the read in place is kept and the running GIL
/// holder is named as read while it ran.
pub fn stacks(pid: i32, running: &[i32], budget: Duration) -> Result<PythonStacks, String> {
    let config = py_spy::Config {
        blocking: py_spy::config::LockingStrategy::NonBlocking,
        native: false,
        dump_locals: 1,
        ..py_spy::Config::default()
    };
    let mut spy = py_spy::PythonSpy::new(pid, &config).map_err(|error| {
        format!("py-spy cannot read the Python interpreter of pid {pid}: {error:#}")
    })?;
    // Without OS thread ids (py-spy cannot tell them without stopping the process before
    // CPython 3.11) the GIL holder cannot be matched to a running thread.
    let os_tid = |t: &py_spy::StackTrace| t.os_thread_id.and_then(|tid| i32::try_from(tid).ok());
    let started = Instant::now();
    let first = spy
        .get_stack_traces()
        .ok()
        .filter(|traces| traces.iter().all(|t| os_tid(t).is_some()));
    let took = started.elapsed();
    let running_holder = first.as_ref().and_then(|traces| {
        traces
            .iter()
            .filter(|t| t.owns_gil)
            .filter_map(os_tid)
            .find(|tid| running.contains(tid))
    });
    let keep = first
        .is_some()
        .then(|| keep_in_place(running_holder, took, budget))
        .flatten();
    // A child of tfwatch itself (`run`'s command) is never stopped by py-spy: its
    // stop waits with a plain waitpid, which takes the child's exit when it ends
    // meanwhile, and `run` would lose the command's exit status. Its read in place is
    // kept, the running GIL holder named as read while it ran.
    let own_child = own_child(pid);
    let keep = keep.or_else(|| {
        let holder = running_holder;
        (own_child && first.is_some()).then_some(Kept {
            read_while_running: holder,
        })
    });
    let (traces, paused_seconds, in_place, read_while_running) = match (first, keep) {
        (Some(traces), Some(kept)) => (traces, 0.0, true, kept.read_while_running),
        (None, _) if own_child => {
            return Err(format!(
                "py-spy cannot read the Python stacks of pid {pid} in place, and does not stop tfwatch's own child (its exit would be lost)"
            ));
        }
        _ => {
            spy.config.blocking = py_spy::config::LockingStrategy::Lock;
            let started = Instant::now();
            let traces = spy.get_stack_traces().map_err(|error| {
                format!("py-spy cannot read the Python stacks of pid {pid}: {error:#}")
            })?;
            (traces, started.elapsed().as_secs_f64(), false, None)
        }
    };
    // The lock layouts read below are those of CPython 3.2 – 3.12.
    let lock_layout_known = spy.version.major == 3 && (2..=12).contains(&spy.version.minor);
    let mut sources = Sources::new(pid);
    let mut memory = Memory::new(pid);
    let stacks = traces
        .into_iter()
        .map(|trace| ThreadStack {
            pid,
            tid: trace
                .os_thread_id
                .and_then(|t| i32::try_from(t).ok())
                .unwrap_or(0),
            name: trace.thread_name.clone(),
            kind: crate::model::stacks::StackKind::Python,
            frames: trace
                .frames
                .iter()
                .enumerate()
                .map(|(depth, frame)| {
                    let line = u32::try_from(frame.line).ok().filter(|&l| l > 0);
                    let (code, scope) = line
                        .map(|l| sources.context(&frame.filename, l))
                        .unwrap_or_default();
                    let locks = match (&frame.locals, lock_layout_known) {
                        (Some(locals), true) if depth < FRAMES_WITH_LOCKS => locals
                            .iter()
                            .filter_map(|local| memory.lock(&local.name, local.addr as u64))
                            .collect(),
                        _ => Vec::new(),
                    };
                    StackFrame {
                        function: Some(frame.name.clone()),
                        file: Some(frame.filename.clone()),
                        line,
                        address: None,
                        python: true,
                        code,
                        scope,
                        locks,
                        entry: frame.is_entry,
                    }
                })
                .collect(),
            paused_seconds,
            owns_gil: Some(trace.owns_gil),
            python_ident: Some(trace.thread_id),
            ..ThreadStack::default()
        })
        .collect();
    Ok(PythonStacks {
        stacks,
        paused_seconds,
        in_place,
        read_while_running,
    })
}

/// The innermost Python line of each Python thread of `pid` ("function (file:line)"),
/// read once without stopping the process (frames may be mid-change in a thread that
/// runs; the GIL's holder is named from its own reads, not from these).
pub fn innermost_lines(pid: i32) -> Result<Vec<(i32, String)>, String> {
    let config = py_spy::Config {
        blocking: py_spy::config::LockingStrategy::NonBlocking,
        native: false,
        ..py_spy::Config::default()
    };
    let mut spy = py_spy::PythonSpy::new(pid, &config).map_err(|error| {
        format!("py-spy cannot read the Python interpreter of pid {pid}: {error:#}")
    })?;
    let traces = spy
        .get_stack_traces()
        .map_err(|error| format!("py-spy cannot read the Python stacks of pid {pid}: {error:#}"))?;
    Ok(traces
        .iter()
        .filter_map(|trace| {
            let tid = trace.os_thread_id.and_then(|t| i32::try_from(t).ok())?;
            let frame = trace.frames.first()?;
            let file = frame.short_filename.as_deref().unwrap_or(&frame.filename);
            Some((tid, format!("{} ({file}:{})", frame.name, frame.line)))
        })
        .collect())
}

/// Source files of the target, read once each.
struct Sources {
    pid: i32,
    files: HashMap<String, Option<Vec<String>>>,
}

impl Sources {
    fn new(pid: i32) -> Sources {
        Sources {
            pid,
            files: HashMap::new(),
        }
    }

    /// The trimmed text of `line` and the headers of the blocks around it.
    fn context(&mut self, file: &str, line: u32) -> (Option<String>, Vec<String>) {
        let pid = self.pid;
        let lines = self
            .files
            .entry(file.to_string())
            .or_insert_with(|| read_source(pid, file));
        match lines {
            Some(lines) => scope_of(lines, line),
            None => (None, Vec::new()),
        }
    }
}

fn read_source(pid: i32, file: &str) -> Option<Vec<String>> {
    if !file.starts_with('/') {
        return None;
    }
    // Through the target's root, so a process in a container finds its own files.
    let path = format!("/proc/{pid}/root{file}");
    if std::fs::metadata(&path).ok()?.len() > SOURCE_LIMIT {
        return None;
    }
    let text = std::fs::read_to_string(&path).ok()?;
    Some(text.lines().map(str::to_string).collect())
}

fn indent(line: &str) -> usize {
    line.len() - line.trim_start().len()
}

/// The text of `line` (1-based) and the headers of the blocks that enclose it, innermost
/// first, up to the enclosing `def` or `class`.
pub fn scope_of(lines: &[String], line: u32) -> (Option<String>, Vec<String>) {
    let Some(at) = usize::try_from(line).ok().and_then(|l| l.checked_sub(1)) else {
        return (None, Vec::new());
    };
    let Some(text) = lines.get(at) else {
        return (None, Vec::new());
    };
    let mut scope = Vec::new();
    let mut current = indent(text);
    for earlier in lines[..at].iter().rev() {
        let trimmed = earlier.trim();
        if current == 0 || scope.len() >= SCOPE_LINES {
            break;
        }
        if trimmed.is_empty() || trimmed.starts_with('#') || indent(earlier) >= current {
            continue;
        }
        current = indent(earlier);
        scope.push(trimmed.to_string());
        if ["def ", "async def ", "class "]
            .iter()
            .any(|k| trimmed.starts_with(k))
        {
            break;
        }
    }
    (Some(text.trim().to_string()), scope)
}

/// Reads objects of the target's memory (never stops it).
struct Memory {
    pid: i32,
    type_names: HashMap<u64, Option<String>>,
}

impl Memory {
    fn new(pid: i32) -> Memory {
        Memory {
            pid,
            type_names: HashMap::new(),
        }
    }

    fn read(&self, address: u64, buffer: &mut [u8]) -> Option<()> {
        let len = buffer.len();
        let mut local = [IoSliceMut::new(buffer)];
        let remote = [RemoteIoVec {
            base: usize::try_from(address).ok()?,
            len,
        }];
        let read = process_vm_readv(Pid::from_raw(self.pid), &mut local, &remote).ok()?;
        (read == len).then_some(())
    }

    fn word(&self, address: u64) -> Option<u64> {
        let mut bytes = [0u8; 8];
        self.read(address, &mut bytes)?;
        Some(u64::from_ne_bytes(bytes))
    }

    /// `tp_name` of the type at `type_address` (`PyTypeObject`: refcount, type, size,
    /// then `tp_name`).
    fn type_name(&mut self, type_address: u64) -> Option<String> {
        if let Some(name) = self.type_names.get(&type_address) {
            return name.clone();
        }
        let name = self.word(type_address + 24).and_then(|at| {
            let mut bytes = [0u8; 24];
            self.read(at, &mut bytes)?;
            let end = bytes.iter().position(|&b| b == 0)?;
            String::from_utf8(bytes[..end].to_vec()).ok()
        });
        self.type_names.insert(type_address, name.clone());
        name
    }

    /// The local `name` at `address` when it is a `_thread.lock` or `_thread.RLock`.
    /// `rlockobject`: head (16 bytes), `rlock_lock`, `rlock_owner`, `rlock_count`.
    fn lock(&mut self, name: &str, address: u64) -> Option<PythonLockObject> {
        let type_address = self.word(address + 8)?;
        let kind = match self.type_name(type_address)?.as_str() {
            "_thread.lock" => "Lock",
            "_thread.RLock" => "RLock",
            _ => return None,
        };
        let owner_ident = if kind == "RLock" {
            let owner = self.word(address + 24)?;
            let count = self.word(address + 32)?;
            (count > 0 && owner != 0).then_some(owner)
        } else {
            None
        };
        Some(PythonLockObject {
            name: name.to_string(),
            address,
            kind: kind.to_string(),
            owner_ident,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scope_lists_the_enclosing_blocks_up_to_the_def() {
        let source: Vec<String> = [
            "import threading",
            "def worker(first, second):",
            "    with first:",
            "        # a comment",
            "        for i in range(3):",
            "",
            "            with second:  # waits here",
            "                pass",
            "with lock:",
            "    step()",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let (code, scope) = scope_of(&source, 7);
        assert_eq!(code.as_deref(), Some("with second:  # waits here"));
        assert_eq!(
            scope,
            vec![
                "for i in range(3):",
                "with first:",
                "def worker(first, second):"
            ]
        );
        let (code, scope) = scope_of(&source, 10);
        assert_eq!(code.as_deref(), Some("step()"));
        assert_eq!(scope, vec!["with lock:"]);
        assert_eq!(scope_of(&source, 0), (None, Vec::new()));
        assert_eq!(scope_of(&source, 99), (None, Vec::new()));
    }
}

#[cfg(test)]
mod keep_tests {
    use super::*;

    #[test]
    fn only_a_child_of_this_process_is_its_own_child() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        assert!(own_child(child.id() as i32));
        assert!(!own_child(1));
        assert!(!own_child(std::process::id() as i32));
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(!own_child(child.id() as i32));
    }

    #[test]
    fn a_read_in_place_is_kept_unless_a_running_gil_holder_can_be_read_within_budget() {
        let ms = Duration::from_millis;
        let kept = |read_while_running| Some(Kept { read_while_running });
        // No running holder: kept, whatever it took.
        assert_eq!(keep_in_place(None, ms(500), ms(200)), kept(None));
        assert_eq!(keep_in_place(None, ms(1), ms(200)), kept(None));
        // A running holder, and a stopped read fits the budget: read again, stopped.
        assert_eq!(keep_in_place(Some(7), ms(20), ms(200)), None);
        // A running holder, and the budget is spent: kept, the holder named.
        assert_eq!(keep_in_place(Some(7), ms(250), ms(200)), kept(Some(7)));
        assert_eq!(keep_in_place(Some(7), ms(1), Duration::ZERO), kept(Some(7)));
    }
}
