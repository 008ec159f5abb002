//! One thread (task): its kept descriptors and the reading of its files.
//!
//! Hot path, every sample: `stat` and `schedstat`, each through a kept descriptor
//! re-read with `pread`. Slow path, every `details_every` samples, for new threads and
//! on request: `status`, `wchan`, `syscall`, and the lock word of a futex waiter
//! (see [`super::locks`]).
//!
//! `children` (when descendants are followed) is read only for a thread that may have
//! forked since the last sample: one that is not asleep now or whose `schedstat` moved
//! (a thread must run to fork). Otherwise its last list is reused; the caller checks
//! each child's `ppid`, so a reused pid is never taken for a child.

use std::fs::File;
use std::path::{Path, PathBuf};

use super::fds::{self, FdBudget, ReadFailure};
use super::locks::LockReader;
use super::notes::{Notes, PTRACE_FIX};
use crate::model::{LockWait, Syscall, ThreadSample};
use crate::parse;

/// The files of a task, in slot order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskFile {
    Stat = 0,
    Schedstat = 1,
    Children = 2,
    Status = 3,
    Wchan = 4,
    Syscall = 5,
}

impl TaskFile {
    fn name(self) -> &'static str {
        match self {
            TaskFile::Stat => "stat",
            TaskFile::Schedstat => "schedstat",
            TaskFile::Children => "children",
            TaskFile::Status => "status",
            TaskFile::Wchan => "wchan",
            TaskFile::Syscall => "syscall",
        }
    }

    /// Kept open only while the budget holds every thread's full set (`stat` and
    /// `schedstat` are kept first).
    fn is_slow(self) -> bool {
        matches!(
            self,
            TaskFile::Children | TaskFile::Status | TaskFile::Wchan | TaskFile::Syscall
        )
    }
}

/// Descriptors per thread when every file is kept.
pub const FILES_PER_TASK: usize = 6;

/// The slow fields of a thread as last read.
#[derive(Debug, Clone, Default)]
struct Details {
    read_at_elapsed: f64,
    voluntary_ctxt_switches: Option<u64>,
    nonvoluntary_ctxt_switches: Option<u64>,
    wchan: Option<String>,
    syscall: Option<Syscall>,
    lock: Option<LockWait>,
}

/// What the sampler keeps about a thread between samples.
#[derive(Debug, Default)]
pub struct TaskState {
    files: [Option<File>; FILES_PER_TASK],
    details: Option<Details>,
    /// `schedstat` (run ns, timeslices) at the last sample, to tell whether it ran.
    last_schedstat: Option<(u64, u64)>,
    /// Children from the last read of `children`; `None` before the first.
    pub children: Option<Vec<i32>>,
    /// The sample that last saw the thread.
    pub generation: u64,
}

impl TaskState {
    /// Closes every kept descriptor, returning them to the budget.
    pub fn close_all(&mut self, budget: &mut FdBudget) {
        for slot in &mut self.files {
            if slot.take().is_some() {
                budget.release(1);
            }
        }
    }

    /// Closes the slow-path descriptors (`children`, `status`, `wchan`, `syscall`).
    pub fn close_slow(&mut self, budget: &mut FdBudget) {
        for file in [
            TaskFile::Children,
            TaskFile::Status,
            TaskFile::Wchan,
            TaskFile::Syscall,
        ] {
            if self.files[file as usize].take().is_some() {
                budget.release(1);
            }
        }
    }
}

/// What reading a task needs from the sampler, borrowed for one process.
pub struct TaskReader<'a> {
    pub proc_root: &'a Path,
    pub pid: i32,
    pub budget: &'a mut FdBudget,
    pub buf: &'a mut Vec<u8>,
    pub notes: &'a mut Notes,
    /// Keep slow-path descriptors open (false when the budget cannot hold them).
    pub keep_slow: bool,
    pub read_children: bool,
    /// Read `children` of every thread, whether it ran or not.
    pub force_children: bool,
    /// The kernel hides `wchan` of this process from us (shows "0").
    pub wchan_hidden: bool,
    /// `schedstat` is missing on this kernel; stop trying.
    pub schedstat_missing: &'a mut bool,
    pub clock_ticks_per_second: f64,
    pub elapsed_seconds: f64,
    /// Threads whose slow files were read.
    pub detailed_threads: usize,
    /// Reads the lock words futex waiters wait on (detail reads only).
    pub locks: &'a mut LockReader,
}

enum Outcome {
    Bytes(usize),
    /// The file cannot be read for a reason already noted; the thread stays.
    Skip,
    /// The thread is gone, or cannot be read at all this sample.
    Vanished,
}

impl TaskReader<'_> {
    fn task_dir(&self, tid: i32) -> PathBuf {
        self.proc_root
            .join(self.pid.to_string())
            .join("task")
            .join(tid.to_string())
    }

    fn read(&mut self, tid: i32, state: &mut TaskState, file: TaskFile) -> Outcome {
        let slot = &mut state.files[file as usize];
        let path = if slot.is_some() {
            PathBuf::new()
        } else {
            self.task_dir(tid).join(file.name())
        };
        let keep = !file.is_slow() || self.keep_slow;
        match fds::read_through(slot, &path, keep, self.budget, self.buf) {
            Ok(n) => Outcome::Bytes(n),
            Err(ReadFailure::Gone) => {
                if file == TaskFile::Schedstat && self.task_dir(tid).join("stat").exists() {
                    *self.schedstat_missing = true;
                    self.notes.schedstat_missing();
                    Outcome::Skip
                } else {
                    Outcome::Vanished
                }
            }
            Err(ReadFailure::Denied) => {
                self.notes.add(
                    file.name(),
                    Some(self.pid),
                    &format!(
                        "permission denied reading /proc/{}/task/*/{}",
                        self.pid,
                        file.name()
                    ),
                    Some(PTRACE_FIX),
                );
                if file == TaskFile::Stat {
                    Outcome::Vanished
                } else {
                    Outcome::Skip
                }
            }
            Err(ReadFailure::NoDescriptors) => {
                self.notes.add(
                    "open-files",
                    None,
                    "the open-files limit (RLIMIT_NOFILE) was reached; some threads were skipped in this sample",
                    Some("raise the hard limit (ulimit -Hn) for tfwatch, or watch fewer threads"),
                );
                Outcome::Vanished
            }
            Err(ReadFailure::Other(_)) if file.is_slow() => {
                // A zombie or exiting task may refuse these; the fields stay empty.
                Outcome::Skip
            }
            Err(ReadFailure::Other(error)) => {
                self.notes.add(
                    file.name(),
                    Some(self.pid),
                    &format!(
                        "cannot read /proc/{}/task/{tid}/{}: {error}",
                        self.pid,
                        file.name()
                    ),
                    None,
                );
                if file == TaskFile::Stat {
                    Outcome::Vanished
                } else {
                    Outcome::Skip
                }
            }
        }
    }

    /// Reads one thread; `None` when it vanished (or cannot be read) in this sample.
    /// Pids of its children are appended to `children`. `full` reads the slow files.
    pub fn read_task(
        &mut self,
        tid: i32,
        state: &mut TaskState,
        full: bool,
        children: &mut Vec<i32>,
    ) -> Option<ThreadSample> {
        let stat = match self.read(tid, state, TaskFile::Stat) {
            // An empty `stat` is a task that is gone (fixtures simulate exits this way).
            Outcome::Bytes(0) => return None,
            Outcome::Bytes(n) => match parse::parse_stat(&self.buf[..n]) {
                Ok(stat) => stat,
                Err(error) => {
                    self.notes.add(
                        "stat",
                        Some(self.pid),
                        &format!("unparsable /proc/{}/task/{tid}/stat: {error}", self.pid),
                        None,
                    );
                    return None;
                }
            },
            Outcome::Skip | Outcome::Vanished => return None,
        };
        let ticks = self.clock_ticks_per_second;
        let mut thread = ThreadSample {
            tid,
            name: stat.comm,
            state: stat.state,
            cpu_seconds: (stat.utime + stat.stime) as f64 / ticks,
            processor: Some(stat.processor),
            start_time_seconds: stat.starttime as f64 / ticks,
            ..ThreadSample::default()
        };
        let mut schedstat = None;
        if !*self.schedstat_missing {
            match self.read(tid, state, TaskFile::Schedstat) {
                Outcome::Bytes(n) => {
                    if let Ok(sched) = parse::parse_schedstat(&self.buf[..n]) {
                        thread.run_seconds = Some(sched.run_ns as f64 / 1e9);
                        thread.runqueue_wait_seconds = Some(sched.wait_ns as f64 / 1e9);
                        thread.timeslices = Some(sched.timeslices);
                        schedstat = Some((sched.run_ns, sched.timeslices));
                    }
                }
                Outcome::Skip => {}
                Outcome::Vanished => return None,
            }
        }
        if self.read_children {
            let asleep = matches!(thread.state, 'S' | 'I' | 'Z');
            let may_have_forked = self.force_children
                || !asleep
                || schedstat.is_none()
                || schedstat != state.last_schedstat
                || state.children.is_none();
            if may_have_forked {
                match self.read(tid, state, TaskFile::Children) {
                    Outcome::Bytes(n) => {
                        let mut pids = state.children.take().unwrap_or_default();
                        pids.clear();
                        parse::parse_children(&self.buf[..n], &mut pids);
                        state.children = Some(pids);
                    }
                    Outcome::Skip => {}
                    Outcome::Vanished => return None,
                }
            }
            children.extend(state.children.iter().flatten());
        }
        state.last_schedstat = schedstat;
        if full || state.details.is_none() {
            let mut details = Details {
                read_at_elapsed: self.elapsed_seconds,
                ..Details::default()
            };
            match self.read(tid, state, TaskFile::Status) {
                Outcome::Bytes(n) => {
                    (
                        details.voluntary_ctxt_switches,
                        details.nonvoluntary_ctxt_switches,
                    ) = parse::parse_ctxt_switches(&self.buf[..n]);
                }
                Outcome::Skip => {}
                Outcome::Vanished => return None,
            }
            if !self.wchan_hidden {
                match self.read(tid, state, TaskFile::Wchan) {
                    Outcome::Bytes(n) => details.wchan = parse::parse_wchan(&self.buf[..n]),
                    Outcome::Skip => {}
                    Outcome::Vanished => return None,
                }
            }
            match self.read(tid, state, TaskFile::Syscall) {
                Outcome::Bytes(n) => details.syscall = parse::parse_syscall(&self.buf[..n]).ok(),
                Outcome::Skip => {}
                Outcome::Vanished => return None,
            }
            details.lock = self.locks.lock_wait(details.syscall.as_ref());
            state.details = Some(details);
            self.detailed_threads += 1;
        }
        if let Some(details) = &state.details {
            thread.voluntary_ctxt_switches = details.voluntary_ctxt_switches;
            thread.nonvoluntary_ctxt_switches = details.nonvoluntary_ctxt_switches;
            thread.wchan = details.wchan.clone();
            thread.syscall = details.syscall.clone();
            thread.lock = details.lock.clone();
            thread.details_age_seconds = (self.elapsed_seconds - details.read_at_elapsed).max(0.0);
        }
        Some(thread)
    }
}
