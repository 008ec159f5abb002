//! The sampler: reads a process tree from a proc root into a plain [`Sample`].
//! Nothing else in tfwatch reads `/proc`.
//!
//! Cost model (see `benches/sampler.rs`): every sample reads each thread's `schedstat`
//! through a descriptor kept open and re-read with `pread` at offset 0; `stat` of the
//! threads that ran since it was last read, and `children` of those that may have
//! forked. Detail samples — every `details_every` samples, for new threads, and after
//! [`Sampler::request_details`] — read every thread's `stat`, and the slow files
//! (`status`, `wchan`, `syscall`) and lock words (see [`locks`]) of the threads that ran
//! since they were read; [`task`] explains why a thread that has not run needs no more.
//! Slow fields carry their age in `details_age_seconds`. Kept descriptors live under a
//! budget below `RLIMIT_NOFILE` (see [`fds`]); past it, files are opened and closed.
//! A one-shot sample ([`SamplerConfig::one_shot`], a snapshot without a window) reads
//! of each thread only `stat`, `wchan` and `syscall`, each opened, read and closed at
//! once (no descriptor is kept): what counts over a window (`status`'s switches,
//! `schedstat`, other processes' CPU shares) is left out.
//!
//! The runtime audit (`maps`, `environ`) runs when a process is first seen and then
//! every `audit_every_seconds`; in between, each sample carries the last audit, so every
//! `Sample` stands on its own (a zombie has none).
//!
//! Descendants come from `task/<tid>/children` (CONFIG_PROC_CHILDREN), read for every
//! thread that may have forked since the last sample, or from the `ppid` of every
//! process where that file does not exist. Vanished threads and children simply drop
//! out of the next sample; the root vanishing is [`SampleError::TargetGone`].

pub mod audit;
pub mod budget;
pub mod fds;
pub mod locks;
pub mod node;
mod notes;
mod others;
pub mod parsers;
mod process;
pub mod task;

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

pub use budget::{cpu_budget, memory_limit};

use crate::model::{CpuBudget, MachineLoad, MemoryLimit, Sample, SampleCost};
use fds::{FdBudget, ReadFailure};
use notes::Notes;
use process::{ProcessReader, ProcessState};

/// Hashes pids and tids (kernel-assigned keys) with one multiplication: the maps of
/// threads are looked up once per thread per sample.
#[derive(Debug, Default, Clone, Copy)]
pub struct PidHasher(u64);

impl Hasher for PidHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(byte)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }

    fn write_i32(&mut self, n: i32) {
        self.0 = u64::from(n as u32).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

/// A map keyed by pid or tid.
pub type PidMap<V> = HashMap<i32, V, BuildHasherDefault<PidHasher>>;

/// Where and how to sample.
#[derive(Debug, Clone)]
pub struct SamplerConfig {
    /// The proc root: `/proc`, or a recorded tree under `fixtures/`.
    pub proc_root: PathBuf,
    /// The cgroup root: `/sys/fs/cgroup`, or a recorded tree.
    pub cgroup_root: PathBuf,
    /// Follow descendants of the named process.
    pub include_children: bool,
    /// Read the slow per-thread files (`status`, `wchan`, `syscall`) every Nth sample
    /// (1 = every sample). New threads are always read in full.
    pub details_every: u32,
    /// Re-read `maps` and `environ` for the runtime audit after this many seconds.
    pub audit_every_seconds: f64,
    /// Most descriptors to keep open; `None` uses the open-files limit less a reserve.
    pub max_kept_descriptors: Option<usize>,
    /// On detail reads, read the lock word of each futex waiter from the target's memory
    /// (`process_vm_readv`, needs ptrace access; see [`locks`]). Only for the live
    /// `/proc`: a recorded tree's pids are not running processes.
    pub read_lock_owners: bool,
    /// Carry the files of a thread that has not run since they were read (its
    /// `schedstat` did not move) instead of reading them again; see [`task`]. Off, every
    /// sample reads `stat` of every thread and every detail sample all its slow files.
    pub carry_unchanged: bool,
    /// Sample by level: a process that stayed still since it was last read (no CPU
    /// time, same threads and state, nothing runnable) is carried whole from its
    /// `stat` alone; its threads are read again once it moves, on request, or every
    /// `refresh_every_samples`. Off, every sample reads every process's threads.
    pub level_sampling: bool,
    /// A still process is read in full every this many samples anyway (staggered by
    /// pid, so the refreshes spread over the samples); 0 never.
    pub refresh_every_samples: u32,
    /// Most threads of new processes read in one sample (with level sampling; the
    /// first process is always read): the other new processes of a large tree carry
    /// their `stat` alone and are read over the next samples, so no sample of a tree of
    /// 19,000 threads takes seconds. The sample notes how many wait.
    pub new_threads_per_sample: usize,
    /// A process deferred that way stays known by its `stat` alone while it does not
    /// move (no CPU time, same thread count, nothing running or in D) for this many
    /// seconds; then (or once it moves, or on [`Sampler::request_details`], which reads
    /// every deferred process at once) its threads are read. Watches set it to half
    /// the hang window, so a hang is still judged in time.
    pub read_still_after_seconds: f64,
    /// The sampler takes a single sample (a snapshot without a window): what only
    /// counts between two samples is not read — a new thread's `status` (context
    /// switches count as a rate) and `schedstat` (run time and run-queue wait are
    /// compared over a window), and the scan of the other processes (their CPU share
    /// needs two scans). Per thread, that leaves `stat`, `wchan` and `syscall`.
    pub one_shot: bool,
    /// Scan the machine's other processes on detail samples to name the busiest (off in
    /// `tfwatch node`, whose own scan sees every process).
    pub scan_other_processes: bool,
}

/// A descriptor budget shared by several samplers of one tfwatch (`tfwatch node`'s
/// samplers, one per job root): together they keep no more than the open-files limit
/// allows, and each sheds slow-path descriptors when the whole is short.
pub type SharedFdBudget = Arc<Mutex<FdBudget>>;

/// A budget from the open-files limit, to share (see [`Sampler::with_budget`]).
pub fn shared_fd_budget(max_kept: Option<usize>) -> SharedFdBudget {
    Arc::new(Mutex::new(FdBudget::from_rlimit(max_kept)))
}

impl Default for SamplerConfig {
    fn default() -> Self {
        SamplerConfig {
            proc_root: PathBuf::from("/proc"),
            cgroup_root: PathBuf::from("/sys/fs/cgroup"),
            include_children: true,
            details_every: 5,
            audit_every_seconds: 30.0,
            max_kept_descriptors: None,
            read_lock_owners: true,
            carry_unchanged: true,
            level_sampling: true,
            refresh_every_samples: 60,
            new_threads_per_sample: 2_000,
            read_still_after_seconds: 30.0,
            one_shot: false,
            scan_other_processes: true,
        }
    }
}

/// When a sample is taken, on the watch's clock.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct SampleTime {
    pub elapsed_seconds: f64,
    pub time_unix_seconds: f64,
    pub lateness_seconds: f64,
}

impl SampleTime {
    /// Now on `clock`, `lateness_seconds` after the sample was due.
    pub fn on(clock: &dyn crate::source::clock::Clock, lateness_seconds: f64) -> Self {
        SampleTime {
            elapsed_seconds: clock.elapsed().as_secs_f64(),
            time_unix_seconds: clock.unix_seconds(),
            lateness_seconds,
        }
    }
}

/// Errors that stop sampling of the whole tree.
#[derive(Debug, thiserror::Error)]
pub enum SampleError {
    #[error("no process with pid {pid} (is it still running? check `ps -p {pid}`)")]
    NoSuchProcess { pid: i32 },
    #[error("process {pid} has exited")]
    TargetGone { pid: i32 },
    #[error("permission denied reading {path} of process {pid}: {advice}", advice = crate::source::PTRACE_ADVICE)]
    PermissionDenied { pid: i32, path: String },
    #[error("cannot read {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// Samples one process tree.
pub struct Sampler {
    config: SamplerConfig,
    pid: i32,
    /// `starttime` of the root when first seen: a different one means the pid was reused.
    root_starttime: u64,
    processes: PidMap<ProcessState>,
    generation: u64,
    budget: SharedFdBudget,
    /// Descriptors of the shared budget this sampler keeps.
    own_kept: usize,
    /// Only these pids (besides the root) are read; their children outside it are not
    /// followed (`tfwatch node`: another job nested in the tree is that job's own).
    members: Option<Arc<HashSet<i32>>>,
    buf: Vec<u8>,
    details_requested: bool,
    /// Slow-path descriptors may be open (they are closed once when that stops).
    slow_kept: bool,
    /// `task/<tid>/children` exists (CONFIG_PROC_CHILDREN); else the tree comes from
    /// the `ppid` of every process.
    children_supported: bool,
    schedstat_missing: bool,
    clock_ticks_per_second: f64,
    page_size: u64,
    our_uid: u32,
    threads_last_sample: usize,
    cpus: CpuBudget,
    memory_limit: MemoryLimit,
    pid_max: i32,
    /// Lock words are read from memory only when sampling the live `/proc`.
    read_memory: bool,
    /// CPU time of the machine's other processes, to name the busiest.
    others: others::OtherCpu,
}

impl Sampler {
    /// Checks that `pid` exists and can be read; errors come back before any loop starts.
    pub fn new(pid: i32, config: SamplerConfig) -> Result<Sampler, SampleError> {
        // A one-shot sample reads each file once: it keeps no descriptor. Kept open to
        // the end, every descriptor would hold its own page of seq_file buffer,
        // allocated cold; closed at once, the kernel reuses a warm one (a quarter less
        // CPU per thread; see `benches/snapshot.rs`).
        let max_kept = if config.one_shot {
            Some(0)
        } else {
            config.max_kept_descriptors
        };
        Sampler::with_budget(pid, config, shared_fd_budget(max_kept))
    }

    /// [`Sampler::new`], keeping its descriptors under `budget`, shared with others.
    pub fn with_budget(
        pid: i32,
        config: SamplerConfig,
        budget: SharedFdBudget,
    ) -> Result<Sampler, SampleError> {
        let stat_path = config.proc_root.join(pid.to_string()).join("stat");
        let mut buf = vec![0; 4096];
        let stat = match fds::read_once(&stat_path, &mut buf) {
            Ok(n) => crate::source::proc::parsers::parse_stat(&buf[..n]).map_err(|error| {
                SampleError::Io {
                    path: stat_path.display().to_string(),
                    source: std::io::Error::new(std::io::ErrorKind::InvalidData, error),
                }
            })?,
            Err(ReadFailure::Gone) => return Err(SampleError::NoSuchProcess { pid }),
            Err(ReadFailure::Denied) => {
                return Err(SampleError::PermissionDenied {
                    pid,
                    path: stat_path.display().to_string(),
                });
            }
            Err(ReadFailure::NoDescriptors) => {
                return Err(SampleError::Io {
                    path: stat_path.display().to_string(),
                    source: std::io::Error::from_raw_os_error(libc::EMFILE),
                });
            }
            Err(ReadFailure::Other(source)) => {
                return Err(SampleError::Io {
                    path: stat_path.display().to_string(),
                    source,
                });
            }
        };
        let task_dir = config.proc_root.join(format!("{pid}/task"));
        if let Err(error) = std::fs::read_dir(&task_dir)
            && error.kind() == std::io::ErrorKind::PermissionDenied
        {
            return Err(SampleError::PermissionDenied {
                pid,
                path: task_dir.display().to_string(),
            });
        }
        let children_supported = task_dir.join(format!("{pid}/children")).exists();
        // SAFETY: sysconf and geteuid have no preconditions.
        let (ticks, page_size, our_uid) = unsafe {
            (
                libc::sysconf(libc::_SC_CLK_TCK),
                libc::sysconf(libc::_SC_PAGESIZE),
                libc::geteuid(),
            )
        };
        Ok(Sampler {
            pid,
            root_starttime: stat.starttime,
            processes: PidMap::default(),
            generation: 0,
            budget,
            own_kept: 0,
            members: None,
            buf,
            details_requested: false,
            slow_kept: true,
            children_supported,
            schedstat_missing: false,
            clock_ticks_per_second: if ticks > 0 { ticks as f64 } else { 100.0 },
            page_size: if page_size > 0 {
                page_size as u64
            } else {
                4096
            },
            our_uid,
            // Until the first sample, the root's own count sizes the descriptor policy.
            threads_last_sample: stat.num_threads as usize,
            cpus: CpuBudget::default(),
            memory_limit: MemoryLimit::default(),
            pid_max: locks::pid_max(&config.proc_root),
            read_memory: config.read_lock_owners
                && config.proc_root == std::path::Path::new("/proc"),
            others: others::OtherCpu::default(),
            config,
        })
    }

    /// The pid being watched.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// Descriptors the sampler keeps open now, and its budget (shared with the
    /// samplers it is shared with).
    pub fn kept_descriptors(&self) -> (usize, usize) {
        let budget = self.budget.lock().unwrap_or_else(PoisonError::into_inner);
        (self.own_kept, budget.limit)
    }

    /// Reads only `members` of the tree (the root always): a child outside them is not
    /// followed. `None` follows every descendant.
    pub fn set_members(&mut self, members: Option<Arc<HashSet<i32>>>) {
        self.members = members;
    }

    /// Makes the next sample read every slow per-thread file.
    pub fn request_details(&mut self) {
        self.details_requested = true;
    }

    /// Reads the tree once.
    pub fn sample(&mut self, at: SampleTime) -> Result<Sample, SampleError> {
        let started = Instant::now();
        let shared = Arc::clone(&self.budget);
        let mut budget = shared.lock().unwrap_or_else(PoisonError::into_inner);
        let kept_before = budget.kept;
        let result = self.sample_within(at, started, &mut budget);
        // What this sample opened or closed is this sampler's (samplers of one budget
        // take turns).
        self.own_kept = (self.own_kept + budget.kept).saturating_sub(kept_before);
        result
    }

    fn sample_within(
        &mut self,
        at: SampleTime,
        started: Instant,
        budget: &mut FdBudget,
    ) -> Result<Sample, SampleError> {
        self.generation += 1;
        let every = u64::from(self.config.details_every.max(1));
        let requested = std::mem::take(&mut self.details_requested);
        let details = requested || (self.generation - 1).is_multiple_of(every);
        let mut notes = Notes::default();
        if self.schedstat_missing {
            notes.schedstat_missing();
        }

        // Slow-path descriptors are kept only while every thread's full set fits in
        // what the other samplers of the budget leave.
        let room = budget
            .limit
            .saturating_sub(budget.kept.saturating_sub(self.own_kept));
        let keep_slow = (self.threads_last_sample.max(1)) * task::FILES_PER_TASK
            + self.processes.len() * process::FILES_PER_PROCESS
            <= room;
        if (!keep_slow && self.slow_kept) || budget.exhausted {
            for process in self.processes.values_mut() {
                process.close_slow(budget);
            }
            budget.exhausted = false;
        }
        self.slow_kept = keep_slow;

        if details || self.generation == 1 {
            self.cpus = cpu_budget(
                &self.config.proc_root,
                &self.config.cgroup_root,
                self.pid,
                None,
            );
            self.memory_limit =
                memory_limit(&self.config.proc_root, &self.config.cgroup_root, self.pid);
        } else if let Some(old) = &self.cpus.throttling {
            // Throttling counters move every period: one small file, every sample.
            self.cpus.throttling =
                budget::cpu_throttling(&self.config.cgroup_root, std::path::Path::new(&old.path));
        }
        let machine = read_machine_load(&self.config.proc_root, &mut notes);

        let parents = if self.config.include_children && !self.children_supported {
            Some(process::children_by_parent(
                &self.config.proc_root,
                &mut self.buf,
            ))
        } else {
            None
        };

        let mut reader = ProcessReader {
            proc_root: &self.config.proc_root,
            budget,
            buf: &mut self.buf,
            notes: &mut notes,
            cpus: &self.cpus,
            generation: self.generation,
            details,
            keep_slow,
            read_children: self.config.include_children && self.children_supported,
            schedstat_missing: &mut self.schedstat_missing,
            clock_ticks_per_second: self.clock_ticks_per_second,
            page_size: self.page_size,
            our_uid: self.our_uid,
            elapsed_seconds: at.elapsed_seconds,
            audit_every_seconds: self.config.audit_every_seconds,
            detailed_threads: 0,
            unchanged_threads: 0,
            carry_unchanged: self.config.carry_unchanged,
            out_of_descriptors: false,
            pid_max: self.pid_max,
            read_memory: self.read_memory,
            memory_reads: 0,
            level_sampling: self.config.level_sampling,
            drill_all: requested || self.generation == 1,
            refresh_every: u64::from(self.config.refresh_every_samples),
            new_threads_left: self.config.new_threads_per_sample,
            read_still_after: self.config.read_still_after_seconds,
            drill_requested: requested,
            deferred_processes: 0,
            read_processes: 0,
            first_read_status: !self.config.one_shot,
            first_read_schedstat: !self.config.one_shot,
            skip_told_wchan: self.config.one_shot,
            parents_scan: None,
            carried_processes: 0,
        };

        let mut processes = Vec::new();
        let mut visited = HashSet::new();
        // (pid, the parent it was found under); parents before children.
        let mut stack = vec![(self.pid, 0)];
        let mut children = Vec::new();
        // Scanned children that are gone or are another's now: (parent, child).
        let mut stale_scanned = Vec::new();
        while let Some((pid, parent)) = stack.pop() {
            if !visited.insert(pid) {
                continue;
            }
            if pid != self.pid && self.members.as_ref().is_some_and(|m| !m.contains(&pid)) {
                continue;
            }
            children.clear();
            let state = self.processes.entry(pid).or_default();
            let read = reader.read_process(pid, state, &mut children);
            let Some(process) = read else {
                if pid == self.pid {
                    if std::mem::take(&mut reader.out_of_descriptors) {
                        return Err(SampleError::Io {
                            path: self
                                .config
                                .proc_root
                                .join(format!("{pid}/stat"))
                                .display()
                                .to_string(),
                            source: std::io::Error::from_raw_os_error(libc::EMFILE),
                        });
                    }
                    return Err(SampleError::TargetGone { pid });
                }
                stale_scanned.push((parent, pid));
                continue;
            };
            if pid == self.pid && state.starttime != self.root_starttime {
                // The pid now belongs to another process.
                return Err(SampleError::TargetGone { pid });
            }
            if pid != self.pid && process.ppid != parent {
                // A remembered child pid that now names another process.
                state.generation = 0;
                stale_scanned.push((parent, pid));
                continue;
            }
            if self.config.include_children {
                if let Some(parents) = &parents {
                    children.extend(parents.get(&pid).into_iter().flatten());
                }
                children.sort_unstable();
                children.dedup();
                stack.extend(
                    children
                        .iter()
                        .rev()
                        .filter(|c| !visited.contains(c))
                        .map(|&c| (c, pid)),
                );
            }
            processes.push(process);
        }

        for (parent, child) in stale_scanned {
            if let Some(state) = self.processes.get_mut(&parent) {
                state.scanned_children.retain(|&pid| pid != child);
            }
        }
        if reader.deferred_processes > 0 {
            reader.notes.add(
                "threads-deferred",
                None,
                &format!(
                    "{} processes are known by their stat alone: their threads are read once they run, on request, or after {} still (at most {} new threads are read per sample)",
                    reader.deferred_processes,
                    crate::units::format_seconds(self.config.read_still_after_seconds),
                    self.config.new_threads_per_sample
                ),
                None,
            );
        }
        let detailed_threads = reader.detailed_threads;
        let carried_processes = reader.carried_processes;
        let unchanged_threads = reader.unchanged_threads;
        let memory_reads = reader.memory_reads;
        // Forget processes and threads that are gone, closing their descriptors.
        let generation = self.generation;
        let budget = &mut *reader.budget;
        self.processes.retain(|_, state| {
            let alive = state.generation == generation;
            if !alive {
                state.close_all(budget);
            }
            alive
        });
        self.threads_last_sample = processes.iter().map(|p| p.threads.len()).sum();
        // Other processes are scanned on detail samples; the samples between carry the
        // last list.
        let mut machine = machine;
        machine.busiest_others = if self.config.one_shot || !self.config.scan_other_processes {
            // One scan names no one: a share needs a second scan to compare with.
            Vec::new()
        } else if details || self.generation <= 2 {
            let tree: HashSet<i32> = processes.iter().map(|p| p.pid).collect();
            self.others.busiest(
                Instant::now(),
                &self.config.proc_root,
                &tree,
                &mut self.buf,
                self.clock_ticks_per_second,
            )
        } else {
            self.others.last().to_vec()
        };

        Ok(Sample {
            time_unix_seconds: at.time_unix_seconds,
            elapsed_seconds: at.elapsed_seconds,
            root_pid: self.pid,
            processes,
            cpus: self.cpus.clone(),
            memory_limit: self.memory_limit.clone(),
            unavailable: notes.into_vec(),
            cost: SampleCost {
                duration_seconds: started.elapsed().as_secs_f64(),
                lateness_seconds: at.lateness_seconds,
                detailed_threads: detailed_threads as u32,
                unchanged_threads: unchanged_threads as u32,
                lock_memory_reads: memory_reads as u32,
                carried_processes: carried_processes as u32,
            },
            uptime_seconds: read_uptime(&self.config.proc_root),
            app: None,
            gpu: None,
            machine: Some(machine),
            gil: Vec::new(),
        })
    }
}

impl Drop for Sampler {
    /// Gives its descriptors back to the budget it shares.
    fn drop(&mut self) {
        let mut budget = self.budget.lock().unwrap_or_else(PoisonError::into_inner);
        for state in self.processes.values_mut() {
            state.close_all(&mut budget);
        }
    }
}

/// The machine's load average and CPU pressure; what cannot be read is noted.
fn read_machine_load(proc_root: &std::path::Path, notes: &mut Notes) -> MachineLoad {
    let mut load = MachineLoad::default();
    match std::fs::read_to_string(proc_root.join("loadavg")) {
        Ok(text) => {
            (load.loadavg_1m, load.runnable_tasks, load.total_tasks) =
                parsers::parse_loadavg(&text);
        }
        Err(err) => notes.add(
            "loadavg",
            None,
            &format!("cannot read loadavg: {err}"),
            None,
        ),
    }
    match std::fs::read_to_string(proc_root.join("pressure/cpu")) {
        Ok(text) => load.cpu_pressure_some_avg10 = parsers::parse_cpu_pressure_avg10(&text),
        Err(err) => notes.add(
            "cpu-pressure",
            None,
            &format!("cannot read pressure/cpu: {err}"),
            Some("use a kernel with CONFIG_PSI (boot with psi=1 where it is off by default)"),
        ),
    }
    load
}

/// Seconds since boot from `<proc_root>/uptime`, to age processes and threads.
fn read_uptime(proc_root: &std::path::Path) -> Option<f64> {
    let text = std::fs::read_to_string(proc_root.join("uptime")).ok()?;
    text.split_whitespace().next()?.parse().ok()
}

#[cfg(test)]
mod tests;
