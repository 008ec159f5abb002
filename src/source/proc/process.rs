//! One process of the tree: its own files (`stat`, `io`, `status`, `cmdline`, `exe`,
//! `maps`, `environ`) and its threads.

use std::collections::HashMap;
use std::fs::File;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use super::PidMap;
use super::fds::{self, FdBudget, ReadFailure};
use super::locks::LockReader;
use super::notes::{Notes, PTRACE_FIX};
use super::task::{TaskReader, TaskState};
use crate::model::runtimes::pool_family;
use crate::model::{
    CpuBudget, ObservedPool, ProcessSample, RuntimeAudit, ThreadList, ThreadSample,
};
use crate::source::proc::audit::{self, live_env};
use crate::source::proc::parsers;
use live_env::LiveEnvError;

/// Descriptors kept per process (`stat`, `io`, the `task` directory), besides those of
/// its threads.
pub const FILES_PER_PROCESS: usize = 3;

/// What the sampler keeps about a process between samples.
#[derive(Debug, Default)]
pub struct ProcessState {
    /// `starttime` from `stat`: a change means the pid was reused.
    pub starttime: u64,
    /// The sample that last saw the process.
    pub generation: u64,
    known: bool,
    stat: Option<File>,
    io: Option<File>,
    /// `task/`, which the files of threads that are not kept open are opened from.
    task_dir: Option<File>,
    cmdline: Vec<String>,
    exe: Option<String>,
    uid: Option<u32>,
    /// Boxed: a map of 63 threads has 128 buckets, which would hold 65 empty states.
    threads: PidMap<Box<TaskState>>,
    tids: Vec<i32>,
    /// A thread vanished: its children were reparented to another thread of the
    /// process, so read every thread's `children` next time.
    force_children: bool,
    audit: Option<RuntimeAudit>,
    audit_at_elapsed: f64,
    /// `comm` and the stack's start at the last sample: a change means the process
    /// called exec.
    comm: String,
    startstack: u64,
    /// Run time of each pool thread (by name) at the last sample, to tell which ran.
    pool_run: HashMap<i32, f64>,
    /// The process as last read in full, carried while it stays still (see
    /// [`ProcessReader::still`]); with the sample time it was built at.
    last: Option<(ProcessSample, f64)>,
    /// Children found by one scan of the proc root's `ppid`s when the process was first
    /// seen (instead of reading every thread's `children`); pruned when they are gone.
    pub scanned_children: Vec<i32>,
    /// What could not be read of the process when it was last read in full: a carried
    /// process says it again (hidden wait channels stay hidden while it is still).
    notes: Vec<crate::model::Unavailable>,
    /// At the last full read, some thread's slow fields were older than its last run or
    /// state ([`TaskState::details_behind`]): the process is not carried whole until
    /// they are read, or it would repeat a wait the thread has left.
    details_behind: bool,
    /// Known by its `stat` alone, its threads not read yet (see
    /// [`ProcessReader::new_threads_left`]): what it looked like when first deferred.
    deferred: Option<Deferred>,
}

/// A process known by its `stat` alone, as it was when first deferred: it is read in
/// full once it moves from that (CPU time, thread count, running or in D), on request,
/// or after [`ProcessReader::read_still_after`] seconds still.
#[derive(Debug, Clone, Copy)]
struct Deferred {
    since_elapsed: f64,
    cpu_ticks: u64,
    num_threads: u32,
}

impl ProcessState {
    /// Closes every kept descriptor of the process and its threads.
    pub fn close_all(&mut self, budget: &mut FdBudget) {
        for slot in [&mut self.stat, &mut self.io, &mut self.task_dir] {
            if slot.take().is_some() {
                budget.release(1);
            }
        }
        for task in self.threads.values_mut() {
            task.close_all(budget);
        }
    }

    /// Closes the slow-path descriptors of every thread.
    pub fn close_slow(&mut self, budget: &mut FdBudget) {
        for task in self.threads.values_mut() {
            task.close_slow(budget);
        }
    }

    fn forget(&mut self, budget: &mut FdBudget) {
        self.close_all(budget);
        *self = ProcessState::default();
    }
}

/// What reading a process needs from the sampler, borrowed for one sample.
pub struct ProcessReader<'a> {
    pub proc_root: &'a Path,
    pub budget: &'a mut FdBudget,
    pub buf: &'a mut Vec<u8>,
    pub notes: &'a mut Notes,
    pub cpus: &'a CpuBudget,
    pub generation: u64,
    /// Read the slow files of every thread in this sample.
    pub details: bool,
    pub keep_slow: bool,
    pub read_children: bool,
    pub schedstat_missing: &'a mut bool,
    pub clock_ticks_per_second: f64,
    pub page_size: u64,
    pub our_uid: u32,
    pub elapsed_seconds: f64,
    pub audit_every_seconds: f64,
    pub detailed_threads: usize,
    /// Threads whose files were carried because they had not run (see [`super::task`]).
    pub unchanged_threads: usize,
    /// Carry the files of threads that have not run (see [`super::task`]).
    pub carry_unchanged: bool,
    /// A process could not be read for want of descriptors (not because it is gone).
    pub out_of_descriptors: bool,
    /// Highest tid of the system, to validate mutex owners.
    pub pid_max: i32,
    /// Read lock words from live processes' memory (false for a recorded proc tree).
    pub read_memory: bool,
    /// Memory reads of lock words made in this sample.
    pub memory_reads: usize,
    /// Carry the threads of a process that stayed still (see [`ProcessReader::still`]).
    pub level_sampling: bool,
    /// Read every process's threads in this sample (the first, or details requested).
    pub drill_all: bool,
    /// A still process is read in full anyway every this many samples (staggered by pid).
    pub refresh_every: u64,
    /// Threads of new processes that may still be read in full in this sample; a new
    /// process with more threads than are left (past the first) is deferred: this
    /// sample has its `stat` alone and no threads. A later sample reads it once it moves
    /// (CPU time, thread count, a thread running or in D), when details are requested,
    /// or after `read_still_after` seconds still, each within this budget: a large tree
    /// that sleeps costs a `stat` per process until a hang could be judged of it.
    pub new_threads_left: usize,
    /// Seconds a deferred process stays known by its `stat` alone while it is still.
    pub read_still_after: f64,
    /// Details were requested for this sample: every deferred process is read now,
    /// past the budget (a snapshot, the proof of a hang).
    pub drill_requested: bool,
    /// Processes deferred in this sample.
    pub deferred_processes: usize,
    /// Read `status` of a thread seen for the first time (its context switches).
    pub first_read_status: bool,
    /// Read `schedstat` of a thread seen for the first time (see
    /// [`super::SamplerConfig::one_shot`]).
    pub first_read_schedstat: bool,
    /// Leave out `wchan` where the system call names the wait (a one-shot sample; see
    /// [`super::task::TaskReader::skip_told_wchan`]).
    pub skip_told_wchan: bool,
    /// Children of every process by `ppid`, scanned once per sample on demand.
    pub parents_scan: Option<std::collections::HashMap<i32, Vec<i32>>>,
    /// Processes carried whole because they stayed still.
    pub carried_processes: usize,
    /// Processes read in this sample (not carried, not deferred).
    pub read_processes: usize,
}

/// A new process with more threads than this has its children found by one scan of the
/// proc root (shared by every new process of the sample) instead of every thread's
/// `children` file.
pub const SCAN_CHILDREN_ABOVE_THREADS: u32 = 16;

/// Samples in a row a sleeping thread must not have run before a steady sample may
/// take it as last read (see [`UNEXPLAINED_TICKS`]).
pub const STILL_THREAD_SAMPLES: u32 = 3;

/// CPU time (clock ticks) a process may have used beyond what its threads read in a
/// steady sample account for, while its long-still threads are taken as last read:
/// `stat` counts in ticks, rounded at both ends, and the threads are read a moment
/// after it. More, and a still thread ran: every thread is read.
pub const UNEXPLAINED_TICKS: f64 = 3.0;

impl ProcessReader<'_> {
    /// Reads one process and its threads; `None` when it is gone. Pids of its children
    /// (from every thread's `children`) are appended to `children`. A process carried
    /// whole repeats what could not be read of it at its last full read.
    pub fn read_process(
        &mut self,
        pid: i32,
        state: &mut ProcessState,
        children: &mut Vec<i32>,
    ) -> Option<ProcessSample> {
        let carried_before = self.carried_processes;
        let read = self.read_process_fully(pid, state, children)?;
        if self.carried_processes > carried_before {
            for u in &state.notes {
                self.notes
                    .add(&u.source, u.pid, &u.reason, u.fix.as_deref());
            }
        } else {
            state.notes = self.notes.for_pid(pid);
        }
        Some(read)
    }

    fn read_process_fully(
        &mut self,
        pid: i32,
        state: &mut ProcessState,
        children: &mut Vec<i32>,
    ) -> Option<ProcessSample> {
        let dir = self.proc_root.join(pid.to_string());
        let n = match fds::read_through(
            &mut state.stat,
            &dir.join("stat"),
            true,
            self.budget,
            self.buf,
        ) {
            // An empty `stat` is a task that is gone (fixtures simulate exits this way).
            Ok(0) => return None,
            Ok(n) => n,
            Err(ReadFailure::NoDescriptors) => {
                self.note_no_descriptors();
                self.out_of_descriptors = true;
                return None;
            }
            Err(_) => return None,
        };
        let stat = match parsers::parse_stat(&self.buf[..n]) {
            Ok(stat) => stat,
            Err(error) => {
                self.notes.add(
                    "stat",
                    Some(pid),
                    &format!("unparsable /proc/{pid}/stat: {error}"),
                    None,
                );
                return None;
            }
        };
        if (state.known || state.deferred.is_some()) && state.starttime != stat.starttime {
            state.forget(self.budget);
        }
        let new = !state.known;
        // exec keeps the pid and start time but replaces the program: its name changes
        // (the pyenv shim's bash becomes python), so read it and audit it again.
        let execed = !new && (state.comm != stat.comm || state.startstack != stat.startstack);
        if execed {
            state.audit = None;
            state.pool_run.clear();
        }
        state.comm.clone_from(&stat.comm);
        state.startstack = stat.startstack;
        state.known = true;
        state.starttime = stat.starttime;
        state.generation = self.generation;

        if !new
            && !execed
            && let Some(carried) = self.still(pid, state, &stat)
        {
            children.extend(state.scanned_children.iter().copied());
            for task in state.threads.values_mut() {
                task.generation = self.generation;
                children.extend(task.children.iter().flatten());
            }
            self.carried_processes += 1;
            self.unchanged_threads += carried.threads.len();
            return Some(carried);
        }
        if new {
            let threads = stat.num_threads as usize;
            if self.level_sampling
                && !self.drill_requested
                && self.carried_processes + self.read_processes > 0
            {
                let cpu_ticks = stat.utime + stat.stime;
                let due = state.deferred.is_none_or(|d| {
                    d.cpu_ticks != cpu_ticks
                        || d.num_threads != stat.num_threads
                        || matches!(stat.state, 'R' | 'D')
                        || self.elapsed_seconds - d.since_elapsed >= self.read_still_after
                });
                if !due || threads > self.new_threads_left {
                    // Known by its `stat` only, read in full by a later sample.
                    state.known = false;
                    self.deferred_processes += 1;
                    if state.deferred.is_none() {
                        state.deferred = Some(Deferred {
                            since_elapsed: self.elapsed_seconds,
                            cpu_ticks,
                            num_threads: stat.num_threads,
                        });
                        // Its children, from the sample's scan of the proc root: a
                        // process that does not run forks no more.
                        if self.read_children {
                            state.scanned_children = self.scanned_children(pid);
                        }
                    }
                    children.extend(state.scanned_children.iter().copied());
                    return Some(self.stat_sample(pid, stat, state));
                }
            }
            self.new_threads_left = self.new_threads_left.saturating_sub(threads);
        }
        let was_deferred = state.deferred.take().is_some();
        self.read_processes += 1;
        if new && self.read_children && stat.num_threads > SCAN_CHILDREN_ABOVE_THREADS {
            state.scanned_children = self.scanned_children(pid);
        }
        let scanned = !state.scanned_children.is_empty() || (new && self.parents_scan.is_some());
        children.extend(state.scanned_children.iter().copied());

        let mut exe_changed = false;
        if new || execed || self.details {
            let exe_before = state.exe.clone();
            self.read_identity(pid, &dir, state);
            exe_changed = !new && exe_before.is_some() && state.exe != exe_before;
        }
        let io =
            match fds::read_through(&mut state.io, &dir.join("io"), true, self.budget, self.buf) {
                Ok(n) => Some(parsers::parse_io(&String::from_utf8_lossy(&self.buf[..n]))),
                Err(ReadFailure::Denied) => {
                    self.notes.add(
                        "io",
                        Some(pid),
                        &format!("permission denied reading /proc/{pid}/io"),
                        Some(PTRACE_FIX),
                    );
                    None
                }
                Err(_) => None,
            };

        let wchan_hidden = self.our_uid != 0 && state.uid.is_some_and(|uid| uid != self.our_uid);
        if wchan_hidden {
            self.notes.add(
                "wchan",
                Some(pid),
                &format!(
                    "wait channels of pid {pid} unreadable (another user's process: the kernel shows wchan as 0): hangs and lock waits cannot be judged"
                ),
                Some(PTRACE_FIX),
            );
        }
        // The thread list: `task/` is listed only when it may have changed — a new
        // process, a thread count that differs from the last list, or a known thread
        // that vanished (checked below; one thread ending and another starting between
        // two samples shows as the first). Listing costs ~0.4 ms per 1,000 threads and
        // 7–10 ms per 10,000, more than their `schedstat`.
        let mut listed = new || state.tids.len() != stat.num_threads as usize;
        if listed {
            list_tasks(&dir, &mut state.tids);
        }
        // Files are opened relative to `task/` (no path walk from the root); past the
        // budget (a one-shot sample keeps nothing) it is open for this read only.
        let mut passing_task_dir = None;
        if state.task_dir.is_none()
            && let Ok(task_dir) = File::open(dir.join("task"))
        {
            if self.budget.has_room(1) {
                self.budget.kept += 1;
                state.task_dir = Some(task_dir);
            } else {
                passing_task_dir = Some(task_dir);
            }
        }
        let mut locks = LockReader::new(pid, self.pid_max, self.read_memory);
        let mut tasks = TaskReader {
            proc_root: self.proc_root,
            pid,
            task_dir_fd: state
                .task_dir
                .as_ref()
                .or(passing_task_dir.as_ref())
                .map(File::as_fd),
            relative: String::new(),
            budget: self.budget,
            buf: self.buf,
            notes: self.notes,
            keep_slow: self.keep_slow,
            read_children: self.read_children,
            force_children: std::mem::take(&mut state.force_children),
            children_scanned: new && scanned,
            first_read_status: self.first_read_status,
            status_of_sleepers: !was_deferred,
            first_read_schedstat: self.first_read_schedstat,
            // A process known by its `stat` alone until now (a still tree read for a
            // hang's proof) has the channel of its futex waiters read once.
            skip_told_wchan: self.skip_told_wchan || was_deferred,
            told_wchans: Vec::new(),
            wchan_hidden,
            schedstat_missing: self.schedstat_missing,
            clock_ticks_per_second: self.clock_ticks_per_second,
            elapsed_seconds: self.elapsed_seconds,
            generation: self.generation,
            detailed_threads: 0,
            unchanged_threads: 0,
            carry_unchanged: self.carry_unchanged,
            locks: &mut locks,
        };
        let mut threads = Vec::with_capacity(state.tids.len());
        // Threads long still are left for a second pass, read only when the process
        // used CPU time the others do not account for (steady samples of a process
        // already read: detail samples read every thread).
        let last_read = state
            .last
            .as_ref()
            .filter(|_| self.level_sampling && !self.details && !new && !execed && !was_deferred);
        let mut explained = Some(0.0);
        let mut left: Vec<i32> = Vec::new();
        loop {
            let mut vanished = false;
            for &tid in &state.tids {
                let task = state.threads.entry(tid).or_default();
                if task.generation == self.generation {
                    continue;
                }
                if last_read.is_some() && task.long_still(STILL_THREAD_SAMPLES) {
                    left.push(tid);
                    continue;
                }
                let before = task.last_run_ns();
                let Some(thread) = tasks.read_task(tid, task, self.details, children) else {
                    vanished = true;
                    continue;
                };
                explained = explained
                    .zip(before)
                    .zip(thread.run_seconds)
                    .map(|((sum, before), now)| sum + now - before as f64 / 1e9);
                threads.push(thread);
            }
            let unexplained = last_read.zip(explained).map(|((last, _), explained)| {
                (stat.utime + stat.stime) as f64 / self.clock_ticks_per_second
                    - last.cpu_seconds
                    - explained
            });
            let carry =
                unexplained.is_some_and(|u| u <= UNEXPLAINED_TICKS / self.clock_ticks_per_second);
            for tid in left.drain(..) {
                let task = state.threads.entry(tid).or_default();
                let kept = last_read.filter(|_| carry).and_then(|(last, at)| {
                    let found = last.threads.binary_search_by_key(&tid, |t| t.tid).ok()?;
                    Some((&last.threads[found], *at))
                });
                let thread = match kept {
                    Some((thread, at)) => {
                        let mut thread = thread.clone();
                        thread.details_age_seconds += (self.elapsed_seconds - at).max(0.0);
                        task.generation = self.generation;
                        children.extend(task.children.iter().flatten());
                        tasks.unchanged_threads += 1;
                        thread
                    }
                    None => match tasks.read_task(tid, task, self.details, children) {
                        Some(thread) => thread,
                        None => {
                            vanished = true;
                            continue;
                        }
                    },
                };
                threads.push(thread);
            }
            if listed || (!vanished && threads.len() == stat.num_threads as usize) {
                break;
            }
            list_tasks(&dir, &mut state.tids);
            listed = true;
        }
        // A thread taken as last read had its slow fields current (see `long_still`).
        let details_behind = state
            .threads
            .values()
            .any(|task| task.generation == self.generation && task.details_behind());
        threads.sort_unstable_by_key(|thread| thread.tid);
        state.tids.clear();
        state.tids.extend(threads.iter().map(|thread| thread.tid));
        self.detailed_threads += tasks.detailed_threads;
        self.unchanged_threads += tasks.unchanged_threads;
        state.details_behind = details_behind;

        self.memory_reads += locks.reads;
        if locks.denied() {
            self.notes.add(
                "memory",
                Some(pid),
                &format!(
                    "permission denied reading the memory of process {pid} (process_vm_readv needs ptrace access): mutex owners are unknown"
                ),
                Some(PTRACE_FIX),
            );
        }
        let generation = self.generation;
        let budget = &mut *self.budget;
        let mut force_children = false;
        state.threads.retain(|_, task| {
            let alive = task.generation == generation;
            if !alive {
                task.close_all(budget);
                // Its children now belong to another thread of the process.
                if let Some(pids) = &task.children {
                    children.extend(pids);
                    force_children = true;
                }
            }
            alive
        });
        state.force_children = force_children;

        let audit_due = new
            || execed
            || exe_changed
            || self.elapsed_seconds - state.audit_at_elapsed >= self.audit_every_seconds;
        if stat.state == 'Z' {
            state.audit = None;
        } else if audit_due {
            state.audit_at_elapsed = self.elapsed_seconds;
            if let Some(audit) = self.audit(pid, &dir, state.exe.as_deref()) {
                state.audit = Some(audit);
            }
        }
        let observed_pools = observe_pools(&threads, &mut state.pool_run);
        let mut audit = state.audit.clone();
        if let Some(audit) = audit.as_mut() {
            audit.observed_pools = observed_pools;
        }

        let sample = ProcessSample {
            io,
            threads: threads.into(),
            audit,
            ..self.stat_sample(pid, stat, state)
        };
        if self.level_sampling {
            state.last = Some((sample.clone(), self.elapsed_seconds));
        }
        Some(sample)
    }

    /// Children of `pid` from one scan of the proc root's `ppid`s, made at most once per
    /// sample and shared by every process that needs it.
    fn scanned_children(&mut self, pid: i32) -> Vec<i32> {
        let scan = self
            .parents_scan
            .get_or_insert_with(|| children_by_parent(self.proc_root, self.buf));
        scan.get(&pid).cloned().unwrap_or_default()
    }

    /// The process as last read, brought up to date from its `stat`, when it stayed
    /// still since: no CPU time used (in clock ticks, summed over its threads), the
    /// same thread count and state, none of its threads runnable or in D at the last
    /// read, no thread whose slow fields were older than its last run or state then
    /// (waiting for a detail read: a thread that went to sleep after they were read
    /// would be carried in a wait it has left, or in none), and not its turn to be read
    /// in full. A process that did not run cannot have forked, exec'd, changed a
    /// thread's wait or files, or changed what the runtime audit reads; a thread woken
    /// without running yet shows at the next refresh or once it runs. `None`: read it.
    fn still(
        &mut self,
        pid: i32,
        state: &mut ProcessState,
        stat: &parsers::Stat,
    ) -> Option<ProcessSample> {
        if !self.level_sampling || self.drill_all {
            return None;
        }
        let refresh_turn = self.refresh_every > 0
            && (self.generation + pid.unsigned_abs() as u64).is_multiple_of(self.refresh_every);
        if refresh_turn {
            return None;
        }
        if state.details_behind {
            return None;
        }
        let (last, at) = state.last.as_ref()?;
        let ticks = self.clock_ticks_per_second;
        let cpu_seconds = (stat.utime + stat.stime) as f64 / ticks;
        let still = cpu_seconds == last.cpu_seconds
            && stat.num_threads == last.num_threads
            && stat.state == last.state
            && !matches!(stat.state, 'R' | 'D')
            && last.threads.iter().all(|t| !matches!(t.state, 'R' | 'D'));
        if !still {
            return None;
        }
        let age = (self.elapsed_seconds - at).max(0.0);
        // Ages count from the last full read, which stays the one kept; the thread
        // list is shared with it, not copied.
        let mut sample = last.clone();
        sample.cpu_seconds = cpu_seconds;
        sample.rss_bytes = stat.rss_pages * self.page_size;
        sample.ppid = stat.ppid;
        sample.carried_seconds = age;
        if let Some(audit) = sample.audit.as_mut() {
            // Observed pools are judged by what ran since the last sample: nothing did.
            for pool in &mut audit.observed_pools {
                pool.running = 0;
            }
        }
        Some(sample)
    }

    /// A process as its `stat` and the identity kept in `state` tell: no I/O, threads
    /// or audit.
    fn stat_sample(&self, pid: i32, stat: parsers::Stat, state: &ProcessState) -> ProcessSample {
        let ticks = self.clock_ticks_per_second;
        ProcessSample {
            pid,
            ppid: stat.ppid,
            comm: stat.comm,
            cmdline: state.cmdline.clone(),
            exe: state.exe.clone(),
            state: stat.state,
            num_threads: stat.num_threads,
            rss_bytes: stat.rss_pages * self.page_size,
            cpu_seconds: (stat.utime + stat.stime) as f64 / ticks,
            start_time_seconds: stat.starttime as f64 / ticks,
            uid: state.uid,
            io: None,
            threads: ThreadList::default(),
            carried_seconds: 0.0,
            audit: None,
            waits: None,
        }
    }

    /// `status` (uid), `cmdline` and `exe`: read for new processes and on detail samples.
    fn read_identity(&mut self, pid: i32, dir: &Path, state: &mut ProcessState) {
        if let Ok(n) = fds::read_once(&dir.join("status"), self.buf) {
            state.uid = parsers::parse_status(&self.buf[..n]).uid;
        }
        // cmdline can be longer than the buffer; read_once grows it.
        if let Ok(n) = fds::read_once(&dir.join("cmdline"), self.buf) {
            state.cmdline = parsers::parse_cmdline(&self.buf[..n]);
        }
        state.exe = match std::fs::read_link(dir.join("exe")) {
            Ok(target) => Some(target.display().to_string()),
            Err(error) => {
                if error.kind() == std::io::ErrorKind::PermissionDenied {
                    self.notes.add(
                        "exe",
                        Some(pid),
                        &format!("permission denied reading /proc/{pid}/exe"),
                        Some(PTRACE_FIX),
                    );
                }
                None
            }
        };
    }

    /// The runtime audit from `maps` and the environment (the live one from memory where
    /// it can be read, else `environ`); `None` when `maps` is unreadable.
    fn audit(&mut self, pid: i32, dir: &Path, exe: Option<&str>) -> Option<RuntimeAudit> {
        let maps = match std::fs::read_to_string(dir.join("maps")) {
            Ok(maps) => audit::file_backed_lines(&maps),
            Err(error) => {
                if error.kind() == std::io::ErrorKind::PermissionDenied {
                    self.notes.add(
                        "maps",
                        Some(pid),
                        &format!("permission denied reading /proc/{pid}/maps"),
                        Some(PTRACE_FIX),
                    );
                }
                return None;
            }
        };
        let (environ, env_unreadable) = match std::fs::read(dir.join("environ")) {
            Ok(bytes) => (Some(bytes), None),
            Err(error) => {
                let gone = matches!(error.raw_os_error(), Some(libc::ESRCH | libc::ENOENT));
                let reason = if gone {
                    // Exited between the reads: no permission is missing.
                    format!("process {pid} exited while it was read")
                } else if error.kind() == std::io::ErrorKind::PermissionDenied {
                    format!("permission denied reading /proc/{pid}/environ")
                } else {
                    format!("cannot read /proc/{pid}/environ: {error}")
                };
                let fix = (!gone).then_some(PTRACE_FIX);
                self.notes.add("environ", Some(pid), &reason, fix);
                (None, Some(reason))
            }
        };
        let live = if self.read_memory {
            live_env::read_live_environ(pid, dir, &maps, exe)
        } else {
            Err(LiveEnvError::Other(
                "a recorded process tree has no memory to read".to_string(),
            ))
        };
        let live_unavailable = match &live {
            Ok(_) => None,
            Err(error) => {
                if matches!(error, LiveEnvError::Denied(_)) {
                    self.notes.add(
                        "environ-memory",
                        Some(pid),
                        &format!(
                            "{}: the audit uses the start-up environment of /proc/{pid}/environ",
                            error.reason()
                        ),
                        Some(PTRACE_FIX),
                    );
                }
                Some(error.reason().to_string())
            }
        };
        let mut audit = audit::audit_with_environment(
            &maps,
            &audit::Environment {
                startup: environ.as_deref(),
                startup_unreadable: env_unreadable.as_deref(),
                live: live.as_ref().ok().map(Vec::as_slice),
                live_unavailable: live_unavailable.as_deref(),
            },
            self.cpus,
        );
        if let Some(rank) = audit.rank.as_mut() {
            locate_flight_recorder(rank, dir);
        }
        Some(audit)
    }

    fn note_no_descriptors(&mut self) {
        self.notes.add(
            "open-files",
            None,
            "the open-files limit (RLIMIT_NOFILE) was reached; some processes were skipped in this sample",
            Some("raise the hard limit (ulimit -Hn) for tfwatch, or watch fewer threads"),
        );
    }
}

/// Looks for a rank's Flight Recorder dump (one `stat`, read-only), as the rank sees
/// its files: through `/proc/<pid>/root` where that can be followed (so a rank in
/// another mount namespace is looked at in its own), a relative prefix from its working
/// directory (`/proc/<pid>/cwd`).
fn locate_flight_recorder(rank: &mut crate::model::ranks::RankInfo, dir: &Path) {
    let number = rank.rank;
    let Some(recorder) = rank.flight_recorder.as_mut() else {
        return;
    };
    let cwd = std::fs::read_link(dir.join("cwd"))
        .ok()
        .and_then(|p| p.to_str().map(str::to_string));
    let root = dir.join("root");
    let through_root = std::fs::metadata(&root).is_ok();
    recorder.locate(number, cwd.as_deref(), |path| {
        let seen = if through_root {
            root.join(path.trim_start_matches('/'))
        } else {
            std::path::PathBuf::from(path)
        };
        std::fs::metadata(seen)
            .ok()
            .filter(std::fs::Metadata::is_file)
            .map(|m| m.len())
    });
}

/// Pool threads by the name families that tell their runtime, with those that ran since
/// the last sample (`last_run`: each pool thread's run time then, updated here).
fn observe_pools(threads: &[ThreadSample], last_run: &mut HashMap<i32, f64>) -> Vec<ObservedPool> {
    let mut pools: Vec<ObservedPool> = Vec::new();
    let mut seen: HashMap<i32, f64> = HashMap::new();
    for thread in threads {
        let Some(runtime) = pool_family(&thread.name) else {
            continue;
        };
        let run = thread.run_seconds.unwrap_or(thread.cpu_seconds);
        let ran = thread.state == 'R' || last_run.get(&thread.tid).is_some_and(|&r| run > r);
        seen.insert(thread.tid, run);
        let index = match pools.iter().position(|p| p.runtime == runtime) {
            Some(index) => index,
            None => {
                pools.push(ObservedPool {
                    runtime: runtime.to_string(),
                    threads: 0,
                    running: 0,
                });
                pools.len() - 1
            }
        };
        pools[index].threads += 1;
        pools[index].running += u32::from(ran);
    }
    *last_run = seen;
    pools
}

/// The thread ids in `<dir>/task`, ascending; none when it cannot be listed.
fn list_tasks(dir: &Path, tids: &mut Vec<i32>) {
    tids.clear();
    if let Ok(entries) = std::fs::read_dir(dir.join("task")) {
        tids.extend(
            entries
                .filter_map(Result::ok)
                .filter_map(|entry| entry.file_name().to_str()?.parse::<i32>().ok()),
        );
    }
    tids.sort_unstable();
}

/// Children of every process by parent pid, from the `ppid` in each `<proc_root>/<pid>/stat`:
/// the fallback where `task/<tid>/children` does not exist (no CONFIG_PROC_CHILDREN).
pub fn children_by_parent(proc_root: &Path, buf: &mut Vec<u8>) -> HashMap<i32, Vec<i32>> {
    let mut parents: HashMap<i32, Vec<i32>> = HashMap::new();
    for pid in proc_pids(proc_root) {
        let dir = proc_root.join(pid.to_string());
        let Ok(n) = fds::read_once(&main_thread_stat(&dir, pid), buf)
            .or_else(|_| fds::read_once(&dir.join("stat"), buf))
        else {
            continue;
        };
        if let Ok(stat) = parsers::parse_stat(&buf[..n]) {
            parents.entry(stat.ppid).or_default().push(pid);
        }
    }
    parents
}

/// `<dir>/task/<pid>/stat`: the main thread's `stat` of process `pid`, whose name,
/// parent, start time and thread count are the process's, without the sums over every
/// thread the kernel makes for the process's own `stat` (five times the cost at 63
/// threads). A recorded tree may have no `task/`: callers fall back to `<dir>/stat`.
pub fn main_thread_stat(dir: &Path, pid: i32) -> PathBuf {
    dir.join(format!("task/{pid}/stat"))
}

/// The pids under a proc root (its numeric entries), in directory order; none when it
/// cannot be listed.
pub fn proc_pids(proc_root: &Path) -> Vec<i32> {
    match std::fs::read_dir(proc_root) {
        Ok(entries) => entries
            .filter_map(Result::ok)
            .filter_map(|e| e.file_name().to_str()?.parse().ok())
            .collect(),
        Err(_) => Vec::new(),
    }
}
