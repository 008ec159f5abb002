//! One thread (task): its kept descriptors and the reading of its files.
//!
//! `schedstat` is read first, every sample, through a kept descriptor re-read with
//! `pread`: it is the cheapest file (one short line) and it tells whether the thread
//! has run since its other files were read. A thread that has not run cannot have
//! changed its CPU time, last CPU, wait channel, system call or context-switch counts,
//! so:
//!
//! - steady samples read `stat` only for threads that ran (or whose `schedstat` gives
//!   no answer: a kernel without it, or a thread that has never run);
//! - detail samples (every `details_every` samples, for new threads and on request)
//!   read `stat` of every thread, for a fresh state and name, and the slow files
//!   (`status`, `wchan`, `syscall`) of the threads that ran or changed state since those
//!   were read; the others' slow fields are confirmed current, and the lock word of a
//!   futex waiter is re-read from memory (see [`super::locks`]).
//!
//! A thread asleep that has not run for `STILL_THREAD_SAMPLES` (3) samples in a row is
//! not read at all by a steady sample of its process while the process's CPU time (its
//! `stat`, summed over its threads) is accounted for by the threads that were read, to
//! within `UNEXPLAINED_TICKS` (3; both in the `process` module): it is taken as last read.
//! Otherwise, and in every detail sample, it is read. (A process of 1,000 threads of
//! which four work reads four `schedstat`s a steady sample, not 1,000.)
//!
//! The one change that needs no running is a wake-up: a sleeping thread made runnable
//! (S or D to R) that has not reached a CPU yet. A steady sample shows it by its last
//! state until it runs or the next detail sample reads `stat`.
//!
//! The other way round, a thread whose slow files were read while it ran (or was on
//! its way to sleep: the kernel showed its system call as "running") and whose `stat`
//! now says it sleeps has had its slow files read again at once, steady sample or not:
//! what it waits for (a child in `wait4`, a lock, a socket) is what the detectors judge
//! it by, and the running-time files say nothing of it. A thread whose slow files are
//! older than its last run is [`TaskState::details_behind`]; its process is not carried
//! whole until a detail sample has read them.
//!
//! `children` (when descendants are followed) is read only for a thread that may have
//! forked since the last sample: one that is not asleep now or whose `schedstat` moved
//! (a thread must run to fork). Otherwise its last list is reused; the caller checks
//! each child's `ppid`, so a reused pid is never taken for a child.

use std::fmt::Write as _;
use std::fs::File;
use std::os::fd::BorrowedFd;
use std::path::{Path, PathBuf};

use super::fds::{self, FdBudget, ReadFailure};
use super::locks::LockReader;
use super::notes::{Notes, PTRACE_FIX};
use crate::model::{LockWait, Syscall, ThreadSample};
use crate::source::proc::parsers;

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
            TaskFile::Wchan => crate::model::Unavailable::WCHAN,
            TaskFile::Syscall => crate::model::Unavailable::SYSCALL,
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

/// `schedstat`'s run time (ns) and timeslices: they change whenever a thread runs.
type RunMark = (u64, u64);

/// The fields of a thread's `stat` as last read.
#[derive(Debug, Clone, Default)]
struct StatFields {
    name: String,
    state: char,
    cpu_ticks: u64,
    processor: i32,
    starttime: u64,
    /// `schedstat` when these were read; `None` when it gave no answer.
    mark: Option<RunMark>,
}

/// The slow fields of a thread as last read.
#[derive(Debug, Clone, Default)]
struct Details {
    /// When they were read, or last confirmed unchanged.
    read_at_elapsed: f64,
    /// `schedstat` and state when they were read; no mark when a field could not be
    /// read and should be tried again.
    mark: Option<RunMark>,
    state: char,
    voluntary_ctxt_switches: Option<u64>,
    nonvoluntary_ctxt_switches: Option<u64>,
    wchan: Option<String>,
    syscall: Option<Syscall>,
    lock: Option<LockWait>,
}

impl Details {
    /// Read in another state than `state` (while the thread ran, or slept otherwise), or
    /// while the kernel still showed it on a CPU, though it sleeps now in `state` (S, I
    /// or D: the states whose wait only the wait channel and system call tell): the
    /// fields do not name this wait. (Neither file takes the target's memory lock, so a
    /// thread stuck in D is read without risk.)
    fn stale_for(&self, state: char) -> bool {
        matches!(state, 'S' | 'I' | 'D')
            && (self.state != state || matches!(self.syscall, Some(Syscall::Running)))
    }
}

/// What the sampler keeps about a thread between samples.
#[derive(Debug, Default)]
pub struct TaskState {
    files: [Option<File>; FILES_PER_TASK],
    stat: Option<StatFields>,
    details: Option<Details>,
    /// `schedstat` at the last sample, to tell whether it ran (and may have forked).
    last_schedstat: Option<RunMark>,
    /// Samples in a row whose `schedstat` showed the thread had not run since the one
    /// before.
    pub still_samples: u32,
    /// Children from the last read of `children`; `None` before the first.
    pub children: Option<Vec<i32>>,
    /// The sample that last saw the thread.
    pub generation: u64,
}

impl TaskState {
    /// Run time (ns) at the last read of `schedstat`, if it gave one.
    pub fn last_run_ns(&self) -> Option<u64> {
        self.last_schedstat.map(|(run_ns, _)| run_ns)
    }

    /// Asleep (S or I) and not run for `samples` samples in a row, its slow fields
    /// current: a sample may take it as last read unless its process used CPU time
    /// its other threads do not account for.
    pub fn long_still(&self, samples: u32) -> bool {
        self.still_samples >= samples
            && self.last_schedstat.is_some()
            && self
                .stat
                .as_ref()
                .is_some_and(|stat| matches!(stat.state, 'S' | 'I'))
            && !self.details_behind()
    }

    /// Whether the slow fields may not describe the thread as its `stat` does: it ran
    /// or changed state since they were read, or they were read while the kernel still
    /// showed it on a CPU though `stat` has it asleep. A process with such a thread is
    /// not carried whole (its next reads bring the fields up to date).
    pub fn details_behind(&self) -> bool {
        let (Some(stat), Some(details)) = (&self.stat, &self.details) else {
            return self.stat.is_some();
        };
        details.state != stat.state
            || matches!((stat.mark, details.mark), (Some(now), Some(then)) if now != then)
            || details.stale_for(stat.state)
    }

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

/// The wait channels a thread asleep in system call `name` sleeps in (a part of the
/// kernel function's name), for the calls that name their wait by themselves; `None`
/// for the others (`read`, `ioctl`…: the channel says where they block).
pub fn told_by_syscall(name: &str) -> Option<&'static [&'static str]> {
    Some(match name {
        "futex" => &["futex"],
        "nanosleep" | "clock_nanosleep" => &["nanosleep", "hrtimer"],
        "epoll_wait" | "epoll_pwait" | "epoll_pwait2" => &["ep_poll", "epoll"],
        "poll" | "ppoll" => &["poll"],
        "select" | "pselect6" => &["select"],
        "pause" => &["pause"],
        "rt_sigsuspend" => &["sigsuspend"],
        "rt_sigtimedwait" => &["sigtimedwait"],
        "wait4" | "waitid" => &["do_wait"],
        _ => return None,
    })
}

/// What reading a task needs from the sampler, borrowed for one process.
pub struct TaskReader<'a> {
    pub proc_root: &'a Path,
    pub pid: i32,
    /// `<proc_root>/<pid>/task`, kept open: files that are not kept are opened relative
    /// to it. `None` when it could not be opened (files are then opened by full path).
    pub task_dir_fd: Option<BorrowedFd<'a>>,
    /// A reused buffer for the `<tid>/<file>` path given to `openat`.
    pub relative: String,
    pub budget: &'a mut FdBudget,
    pub buf: &'a mut Vec<u8>,
    pub notes: &'a mut Notes,
    /// Keep slow-path descriptors open (false when the budget cannot hold them).
    pub keep_slow: bool,
    pub read_children: bool,
    /// Read `children` of every thread, whether it ran or not.
    pub force_children: bool,
    /// A new process whose children came from one scan of the proc root: its threads'
    /// `children` files are not read until they run.
    pub children_scanned: bool,
    /// Read `status` of a thread seen for the first time.
    pub first_read_status: bool,
    /// With `first_read_status`: read it of a thread first seen asleep too (not for a
    /// process read after being known by its `stat` alone).
    pub status_of_sleepers: bool,
    /// Read `schedstat` of a thread seen for the first time (off for a one-shot
    /// sample: its figures count over a window, and it marks no change yet).
    pub first_read_schedstat: bool,
    /// Leave out `wchan` of a thread asleep (S) in a system call that names its wait by
    /// itself (a futex, a sleep, a poll: [`told_by_syscall`]), once a thread of the
    /// process in that call showed the wait channel that call sleeps in: the thread is
    /// given that channel. Its one file in three (four) is then not read (a one-shot
    /// sample of 1,000 futex waiters; a still tree's threads read for a hang's proof); a
    /// call whose first thread sleeps elsewhere (a frozen task in `do_freezer_trap`)
    /// has `wchan` read for every thread.
    pub skip_told_wchan: bool,
    /// Per system call number: the wait channel the first thread read in it showed, when
    /// it was the expected one (`None`: it was not).
    pub told_wchans: Vec<(i64, Option<String>)>,

    /// The kernel hides `wchan` of this process from us (shows "0").
    pub wchan_hidden: bool,
    /// `schedstat` is missing on this kernel; stop trying.
    pub schedstat_missing: &'a mut bool,
    pub clock_ticks_per_second: f64,
    pub elapsed_seconds: f64,
    /// The sample's generation, given to each thread read.
    pub generation: u64,
    /// Threads whose slow fields are current: read, or confirmed unchanged.
    pub detailed_threads: usize,
    /// Threads whose `stat` or slow files were carried because they had not run.
    pub unchanged_threads: usize,
    /// Carry the files of threads that have not run, rather than read them again.
    pub carry_unchanged: bool,
    /// Reads the lock words futex waiters wait on (detail reads only).
    pub locks: &'a mut LockReader,
}

enum Outcome {
    Bytes(usize),
    /// The file cannot be read now (a reason already noted, or a passing error); the
    /// thread stays.
    Skip,
    /// Permission denied, noted; it will stay denied. The thread stays.
    Denied,
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
        let keep = !file.is_slow() || self.keep_slow;
        let path;
        let location = match (slot.is_some(), self.task_dir_fd) {
            (true, _) => fds::Location::Path(Path::new("")),
            (false, Some(dir)) => {
                self.relative.clear();
                // Writing to a String cannot fail.
                let _ = write!(self.relative, "{tid}/{}", file.name());
                fds::Location::At(dir, &self.relative)
            }
            (false, None) => {
                path = self.task_dir(tid).join(file.name());
                fds::Location::Path(&path)
            }
        };
        match fds::read_at_location(slot, location, keep, self.budget, self.buf) {
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
                    Outcome::Denied
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

    /// Reads one thread, marking it seen in this sample's generation; `None` when it
    /// vanished (or cannot be read) in this sample. Pids of its children are appended to
    /// `children`. `full` makes this a detail read.
    pub fn read_task(
        &mut self,
        tid: i32,
        state: &mut TaskState,
        full: bool,
        children: &mut Vec<i32>,
    ) -> Option<ThreadSample> {
        let mut sched = None;
        if !*self.schedstat_missing && (self.first_read_schedstat || state.stat.is_some()) {
            match self.read(tid, state, TaskFile::Schedstat) {
                Outcome::Bytes(n) => sched = parsers::parse_schedstat(&self.buf[..n]).ok(),
                Outcome::Skip | Outcome::Denied => {}
                Outcome::Vanished => return None,
            }
        }
        // A thread that has never run (no timeslices) gives no mark: always read.
        let mark = sched
            .as_ref()
            .filter(|sched| self.carry_unchanged && sched.timeslices > 0)
            .map(|sched| (sched.run_ns, sched.timeslices));
        let stat_current =
            mark.is_some() && state.stat.as_ref().is_some_and(|stat| stat.mark == mark);
        if full || !stat_current {
            state.stat = Some(self.read_stat(tid, state, mark)?);
        } else {
            self.unchanged_threads += 1;
        }
        let stat = state.stat.as_ref()?;
        let ticks = self.clock_ticks_per_second;
        let mut thread = ThreadSample {
            tid,
            name: stat.name.clone(),
            state: stat.state,
            cpu_seconds: stat.cpu_ticks as f64 / ticks,
            processor: Some(stat.processor),
            start_time_seconds: stat.starttime as f64 / ticks,
            ..ThreadSample::default()
        };
        if let Some(sched) = &sched {
            thread.run_seconds = Some(sched.run_ns as f64 / 1e9);
            thread.runqueue_wait_seconds = Some(sched.wait_ns as f64 / 1e9);
            thread.timeslices = Some(sched.timeslices);
        }
        let schedstat = sched.map(|sched| (sched.run_ns, sched.timeslices));
        state.still_samples = if schedstat.is_some() && schedstat == state.last_schedstat {
            state.still_samples.saturating_add(1)
        } else {
            0
        };
        if self.read_children && self.children_scanned && state.children.is_none() {
            state.children = Some(Vec::new());
        } else if self.read_children {
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
                        parsers::parse_children(&self.buf[..n], &mut pids);
                        state.children = Some(pids);
                    }
                    Outcome::Skip | Outcome::Denied => {}
                    Outcome::Vanished => return None,
                }
            }
            children.extend(state.children.iter().flatten());
        }
        state.last_schedstat = schedstat;
        // Gone to sleep since its slow files were read running: read them now, or the
        // thread's wait is unknown until the next detail sample (or, in a process that
        // then stays still and is carried whole, for as long as it stays still).
        let fell_asleep = state
            .details
            .as_ref()
            .is_some_and(|details| details.stale_for(thread.state));
        if full || state.details.is_none() || fell_asleep {
            let unchanged = mark.is_some()
                && !fell_asleep
                && state
                    .details
                    .as_ref()
                    .is_some_and(|details| details.mark == mark && details.state == thread.state);
            let details = if unchanged {
                self.unchanged_threads += 1;
                let mut details = state.details.take()?;
                details.read_at_elapsed = self.elapsed_seconds;
                // The waiter has not run, but the lock's owner may have changed.
                details.lock = self.locks.lock_wait(details.syscall.as_ref());
                details
            } else {
                self.read_details(tid, state, mark, thread.state)?
            };
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
        state.generation = self.generation;
        Some(thread)
    }

    /// Reads and parses `stat`; `None` when the thread is gone or the file unparsable.
    fn read_stat(
        &mut self,
        tid: i32,
        state: &mut TaskState,
        mark: Option<RunMark>,
    ) -> Option<StatFields> {
        match self.read(tid, state, TaskFile::Stat) {
            // An empty `stat` is a task that is gone (fixtures simulate exits this way).
            Outcome::Bytes(0) => None,
            Outcome::Bytes(n) => match parsers::parse_stat_borrowed(&self.buf[..n]) {
                Ok((comm, stat)) => Some(StatFields {
                    // The name rarely changes: keep the one there is when it is the same.
                    name: match state.stat.take() {
                        Some(last) if last.name.as_bytes() == comm => last.name,
                        _ => parsers::comm_string(comm),
                    },
                    state: stat.state,
                    cpu_ticks: stat.utime + stat.stime,
                    processor: stat.processor,
                    starttime: stat.starttime,
                    mark,
                }),
                Err(error) => {
                    self.notes.add(
                        "stat",
                        Some(self.pid),
                        &format!("unparsable /proc/{}/task/{tid}/stat: {error}", self.pid),
                        None,
                    );
                    None
                }
            },
            Outcome::Skip | Outcome::Denied | Outcome::Vanished => None,
        }
    }

    /// Reads the slow files (`status`, `wchan`, `syscall`) and the lock word of a futex
    /// waiter; `None` when the thread vanished meanwhile.
    fn read_details(
        &mut self,
        tid: i32,
        state: &mut TaskState,
        mark: Option<RunMark>,
        thread_state: char,
    ) -> Option<Details> {
        let mut details = Details {
            read_at_elapsed: self.elapsed_seconds,
            mark,
            state: thread_state,
            ..Details::default()
        };
        // Whether every readable field was read: a passing failure, or a wait channel
        // that shows "0" for a sleeping thread (the kernel hides it while a sleeping
        // task is still queued, which can last until the task is dequeued without
        // running), is read again next time even if the thread has not run.
        let mut complete = true;
        // Without `status` at first sight the counts stay unknown until the thread runs
        // (its mark moves and the slow files are read again); one that never runs has
        // no switches to count. A thread of a process known by its `stat` alone until
        // now, first read asleep, is such a thread until it runs: its `status` waits
        // for then (a still tree of thousands of waiting threads costs a third less to
        // read for a hang's proof).
        let read_status = state.details.is_some()
            || (self.first_read_status
                && (self.status_of_sleepers || !matches!(thread_state, 'S' | 'I')));
        if read_status {
            match self.read(tid, state, TaskFile::Status) {
                Outcome::Bytes(n) => {
                    (
                        details.voluntary_ctxt_switches,
                        details.nonvoluntary_ctxt_switches,
                    ) = parsers::parse_ctxt_switches(&self.buf[..n]);
                }
                Outcome::Skip => complete = false,
                Outcome::Denied => {}
                Outcome::Vanished => return None,
            }
        }
        match self.read(tid, state, TaskFile::Syscall) {
            Outcome::Bytes(n) => {
                details.syscall = parsers::parse_syscall(&self.buf[..n]).ok();
                complete &= details.syscall.is_some();
            }
            Outcome::Skip => complete = false,
            Outcome::Denied => {}
            Outcome::Vanished => return None,
        }
        // The call whose wait channel this thread's would repeat, and whether one is
        // already known to: then `wchan` is left out.
        let told = match &details.syscall {
            Some(Syscall::InSyscall {
                number,
                name: Some(name),
                ..
            }) if self.skip_told_wchan && thread_state == 'S' => {
                told_by_syscall(name).map(|expected| (*number, expected))
            }
            _ => None,
        };
        let known =
            told.and_then(|(number, _)| self.told_wchans.iter().position(|(n, _)| *n == number));
        let told_channel = known.and_then(|at| self.told_wchans[at].1.as_deref());
        if !self.wchan_hidden
            && let Some(shown) = told_channel
        {
            details.wchan = match state.details.as_mut().and_then(|d| d.wchan.take()) {
                Some(last) if last == shown => Some(last),
                _ => Some(shown.to_string()),
            };
        } else if !self.wchan_hidden {
            match self.read(tid, state, TaskFile::Wchan) {
                Outcome::Bytes(n) => {
                    let wchan = parsers::trim_wchan(&self.buf[..n]);
                    if let (Some((number, expected)), None) = (told, known) {
                        let shown = wchan
                            .filter(|w| expected.iter().any(|e| w.contains(e)))
                            .map(str::to_string);
                        self.told_wchans.push((number, shown));
                    }
                    details.wchan = match state.details.as_mut().and_then(|d| d.wchan.take()) {
                        Some(last) if wchan == Some(last.as_str()) => Some(last),
                        _ => wchan.map(str::to_string),
                    };
                    complete &= details.wchan.is_some() || thread_state == 'R';
                }
                Outcome::Skip => complete = false,
                Outcome::Denied => {}
                Outcome::Vanished => return None,
            }
        }
        if !complete {
            details.mark = None;
        }
        details.lock = self.locks.lock_wait(details.syscall.as_ref());
        Some(details)
    }
}
