//! Plain data that flows from the sampler to the judgement and the sinks.
//!
//! Nothing here reads the system. A [`Sample`] is one reading of a process tree; the
//! snapshot report, the timeline, the detectors and the exporters are all built from it.
//! Field names are part of the JSON schema that scripts rely on: rename with care.

mod checks;
pub mod collectives;
pub mod gil;
pub mod jobs;
pub mod locks;
pub mod metrics;
pub mod ranks;
pub mod runtimes;
pub mod stacks;
mod thread_list;
pub mod verdict;
pub mod waits;

pub use checks::{MAX_ELAPSED_SECONDS, MAX_SECONDS};
pub use thread_list::ThreadList;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// One reading of a watched process tree.
#[derive(Debug, Clone, Default, Serialize, schemars::JsonSchema, Deserialize, PartialEq)]
pub struct Sample {
    /// Wall-clock time of the reading, seconds since the Unix epoch.
    pub time_unix_seconds: f64,
    /// Seconds since the watch began (monotonic clock): the timeline's clock.
    pub elapsed_seconds: f64,
    /// The pid the user named; its descendants follow it in `processes`.
    pub root_pid: i32,
    /// The root first, then its descendants in tree order (parents before children).
    pub processes: Vec<ProcessSample>,
    pub cpus: CpuBudget,
    pub memory_limit: MemoryLimit,
    /// Sources that could not be read in this sample, with why and how to fix it.
    pub unavailable: Vec<Unavailable>,
    /// What taking this sample cost.
    pub cost: SampleCost,
    /// Seconds since boot when the sample was taken (`/proc/uptime`), to age processes.
    pub uptime_seconds: Option<f64>,
    /// Application metrics scraped from the job's own endpoint, when configured.
    pub app: Option<AppMetrics>,
    /// GPUs of the machine (NVML), when the GPU source is on.
    pub gpu: Option<GpuSample>,
    /// Load of the whole machine (`/proc/loadavg`, `/proc/pressure/cpu`): tells waits
    /// caused by other processes from the tree's own oversubscription.
    #[serde(default)]
    pub machine: Option<MachineLoad>,
    /// The GIL of CPython processes read from their memory over a short burst, taken
    /// when a process's waits look like GIL contention; each reading is carried by the
    /// first sample after its burst ended.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gil: Vec<gil::GilReading>,
}

/// CPU load of the whole machine; a field that could not be read is `None` and the
/// sample's `unavailable` says why.
#[derive(Debug, Clone, Default, Serialize, schemars::JsonSchema, Deserialize, PartialEq)]
pub struct MachineLoad {
    /// One-minute load average (`/proc/loadavg`).
    pub loadavg_1m: Option<f64>,
    /// Tasks of the whole machine runnable now (`/proc/loadavg`'s "R/total").
    pub runnable_tasks: Option<u32>,
    pub total_tasks: Option<u32>,
    /// Share of the last 10 s in which some runnable task waited for a CPU
    /// (`/proc/pressure/cpu` "some avg10", as a ratio 0–1).
    pub cpu_pressure_some_avg10: Option<f64>,
    /// The busiest processes outside the watched tree, by CPU share over the last
    /// scan's interval (at most a few; empty until two scans were made).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub busiest_others: Vec<OtherProcess>,
}

/// A process outside the watched tree and the CPU it used.
#[derive(Debug, Clone, Default, Serialize, schemars::JsonSchema, Deserialize, PartialEq)]
pub struct OtherProcess {
    pub pid: i32,
    pub comm: String,
    /// CPUs' worth of time it used (1.0 = one CPU the whole interval).
    pub cpu_share: f64,
}

/// One reading of the machine's GPUs.
#[derive(Debug, Clone, Default, Serialize, schemars::JsonSchema, Deserialize, PartialEq)]
pub struct GpuSample {
    pub devices: Vec<GpuDevice>,
    /// Why GPUs could not be read ("no NVML library", "no device", "permission denied").
    pub unavailable: Option<String>,
}

/// One GPU and the processes on it.
#[derive(Debug, Clone, Default, Serialize, schemars::JsonSchema, Deserialize, PartialEq)]
pub struct GpuDevice {
    pub index: u32,
    pub name: String,
    pub uuid: String,
    pub memory_used_bytes: u64,
    pub memory_total_bytes: u64,
    /// Percent of time a kernel ran over the driver's last sample period.
    pub utilization_percent: Option<u32>,
    pub processes: Vec<GpuProcess>,
}

/// A process with a context on a GPU.
#[derive(Debug, Clone, Default, Serialize, schemars::JsonSchema, Deserialize, PartialEq)]
pub struct GpuProcess {
    /// The pid as NVML reports it (the host's pid namespace).
    pub pid: i32,
    pub kind: GpuProcessKind,
    pub used_memory_bytes: Option<u64>,
}

/// The kind of a process's context on a GPU, as NVML lists it.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum GpuProcessKind {
    #[default]
    Compute,
    Graphics,
}

impl GpuProcessKind {
    /// The word the JSON has.
    pub fn as_str(self) -> &'static str {
        match self {
            GpuProcessKind::Compute => "compute",
            GpuProcessKind::Graphics => "graphics",
        }
    }
}

impl std::fmt::Display for GpuProcessKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Queue depth, latency and completions reported by the application itself.
#[derive(Debug, Clone, Default, Serialize, schemars::JsonSchema, Deserialize, PartialEq)]
pub struct AppMetrics {
    /// Where they came from (the scraped URL).
    pub source: String,
    pub queue_depth: Option<f64>,
    /// Cumulative completed requests (a counter).
    pub completions_total: Option<f64>,
    /// Cumulative failures (a counter).
    pub failures_total: Option<f64>,
    pub latency_p50_seconds: Option<f64>,
    pub latency_p90_seconds: Option<f64>,
    pub latency_p99_seconds: Option<f64>,
    /// Why the endpoint could not be read this time, when it could not.
    pub unavailable: Option<String>,
    /// Seconds from the scrape's answer to the sample that carries it (scrapes run on
    /// their own thread; a sample takes the newest finished one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub age_seconds: Option<f64>,
    /// Series found but left out, with why (a NaN or infinite value, a negative or
    /// decreasing histogram).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skipped: Vec<String>,
}

/// One process of the tree.
#[derive(Debug, Clone, Default, Serialize, schemars::JsonSchema, Deserialize, PartialEq)]
pub struct ProcessSample {
    pub pid: i32,
    pub ppid: i32,
    /// `comm` of the process (its main thread's name).
    pub comm: String,
    /// Arguments from `/proc/<pid>/cmdline`; empty for a zombie or a kernel thread.
    pub cmdline: Vec<String>,
    /// Target of `/proc/<pid>/exe`, where readable.
    pub exe: Option<String>,
    /// Process state letter from `stat` (R, S, D, Z, T, t, X, I).
    pub state: char,
    /// `num_threads` from `stat` (counts threads even when `task/` cannot be listed).
    pub num_threads: u32,
    pub rss_bytes: u64,
    /// utime + stime of the whole process, seconds.
    pub cpu_seconds: f64,
    /// Start time, seconds after boot (from `stat` starttime).
    pub start_time_seconds: f64,
    /// Owner uid, where readable.
    pub uid: Option<u32>,
    /// I/O counters from `/proc/<pid>/io`; `None` when unreadable (see `unavailable`).
    pub io: Option<IoCounters>,
    /// Shared with the samples before while the process is carried unchanged.
    pub threads: ThreadList,
    /// Seconds since `threads` were read, for a process carried from its last full read
    /// (it stayed still): each thread's `details_age_seconds` counts from that read, so
    /// the list need not be copied to age it. See [`ProcessSample::details_age_seconds`].
    #[serde(default, skip_serializing_if = "is_zero")]
    pub carried_seconds: f64,
    /// Runtime audit (libraries, thread variables, predicted pools). The sampler (re)reads
    /// maps and environ rarely (a new process, then every `audit_every_seconds`) and
    /// carries the last audit in between; `None` for a zombie or when `maps` is unreadable.
    pub audit: Option<RuntimeAudit>,
    /// Its waits classified from its stacks, where the collector took them for the
    /// waits it is in (a process without progress that /proc cannot judge); kept while
    /// it stays in the same waits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waits: Option<std::sync::Arc<verdict::ProcessWaits>>,
}

/// One thread (task) of a process.
#[derive(Debug, Clone, Default, Serialize, schemars::JsonSchema, Deserialize, PartialEq)]
pub struct ThreadSample {
    pub tid: i32,
    /// `comm` of the thread.
    pub name: String,
    /// State letter from `stat`.
    pub state: char,
    /// utime + stime from `stat`, seconds (clock-tick resolution).
    pub cpu_seconds: f64,
    /// Time on CPU from `schedstat`, seconds (nanosecond resolution).
    pub run_seconds: Option<f64>,
    /// Time runnable but waiting for a CPU, from `schedstat`, seconds.
    pub runqueue_wait_seconds: Option<f64>,
    /// Timeslices run on a CPU, from `schedstat`.
    pub timeslices: Option<u64>,
    /// From `status`; read at a lower rate (see `details_age_seconds`).
    pub voluntary_ctxt_switches: Option<u64>,
    pub nonvoluntary_ctxt_switches: Option<u64>,
    /// Kernel function the thread sleeps in; `None` when running or unreadable.
    pub wchan: Option<String>,
    /// Current system call from `task/<tid>/syscall`, where readable.
    pub syscall: Option<Syscall>,
    /// CPU the thread last ran on.
    pub processor: Option<i32>,
    /// Start time, seconds after boot.
    pub start_time_seconds: f64,
    /// How old the slow fields (context switches, wchan, syscall) are, seconds.
    pub details_age_seconds: f64,
    /// The lock a thread blocked in a futex wait waits on, read from the target's memory
    /// on detail samples; `None` when the thread is not in a futex wait.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lock: Option<LockWait>,
}

/// The lock word a futex waiter waits on, and its owner where the lock records one.
#[derive(Debug, Clone, Default, Serialize, schemars::JsonSchema, Deserialize, PartialEq, Eq)]
pub struct LockWait {
    /// The futex address (`&__lock` for a glibc `pthread_mutex_t`).
    pub address: u64,
    /// Owner tid from the mutex, in the waiter's pid namespace; `None` when unknown.
    #[serde(default)]
    pub owner_tid: Option<i32>,
    pub kind: LockKind,
    /// Why the lock word could not be read, when it could not.
    #[serde(default)]
    pub unavailable: Option<String>,
    /// For a futex wait without `FUTEX_PRIVATE_FLAG`: whether the word lies in a mapping
    /// shared with other processes (`s` in `/proc/PID/maps`: multiprocessing's
    /// semaphores in `/dev/shm`), or in the process's own memory (a `pthread_join` on a
    /// thread's tid word); `None` where not checked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shared_mapping: Option<bool>,
}

impl LockWait {
    pub const PTHREAD_MUTEX: LockKind = LockKind::PthreadMutex;
    pub const UNKNOWN: LockKind = LockKind::Unknown;
}

/// What a futex word reads as.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum LockKind {
    /// A held glibc mutex: its owner is recorded.
    PthreadMutex,
    /// Anything else (condition variables, semaphores, Python and Rust locks record no
    /// owner).
    #[default]
    Unknown,
}

impl LockKind {
    /// The word the JSON has.
    pub fn as_str(self) -> &'static str {
        match self {
            LockKind::PthreadMutex => "pthread-mutex",
            LockKind::Unknown => "unknown",
        }
    }
}

impl std::fmt::Display for LockKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Parsed `/proc/<pid>/task/<tid>/syscall`.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema, Deserialize, PartialEq)]
#[serde(tag = "status", rename_all = "kebab-case")]
pub enum Syscall {
    /// The thread is on a CPU.
    Running,
    /// Blocked, but not in a system call (e.g. a page fault).
    NotInSyscall,
    /// Blocked in system call `number` with its six arguments. The name is the
    /// static table's where known (no allocation per thread and sample), the arguments
    /// inline: a seed-scale tree holds tens of thousands of these per sample.
    InSyscall {
        number: i64,
        name: Option<std::borrow::Cow<'static, str>>,
        args: [u64; 6],
    },
}

/// A futex wait as `/proc/TID/syscall` shows it: the word's address, whether the
/// operation carries `FUTEX_PRIVATE_FLAG` (the word is private to the process) and
/// whether it has a timeout (it ends by itself).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FutexWait {
    pub address: u64,
    pub private: bool,
    pub timed: bool,
}

const FUTEX_PRIVATE_FLAG: u64 = 128;
const FUTEX_CLOCK_REALTIME: u64 = 256;
/// The futex commands that block: WAIT, LOCK_PI, WAIT_BITSET, WAIT_REQUEUE_PI, LOCK_PI2.
const FUTEX_BLOCKING_COMMANDS: &[u64] = &[0, 6, 9, 11, 13];

/// The futex wait a thread is in, from its system call and arguments: `None` when it
/// is in no blocking futex call, or the call is not known.
pub fn futex_wait(thread: &ThreadSample) -> Option<FutexWait> {
    let Some(Syscall::InSyscall {
        name: Some(name),
        args,
        ..
    }) = &thread.syscall
    else {
        return None;
    };
    match name.as_ref() {
        "futex" => {
            let op = args[1];
            let command = op & !(FUTEX_PRIVATE_FLAG | FUTEX_CLOCK_REALTIME);
            // Without the flag the word may be shared; the sampler checks the maps.
            let own_memory = thread.lock.as_ref().and_then(|l| l.shared_mapping) == Some(false);
            FUTEX_BLOCKING_COMMANDS
                .contains(&command)
                .then_some(FutexWait {
                    address: args[0],
                    private: op & FUTEX_PRIVATE_FLAG != 0 || own_memory,
                    timed: args[3] != 0,
                })
        }
        // futex_waitv(waiters, nr, flags, timeout, clockid): each waiter has its own
        // flags; the vector's words are the job's own as far as /proc tells.
        "futex_waitv" => Some(FutexWait {
            address: args[0],
            private: true,
            timed: args[3] != 0,
        }),
        _ => None,
    }
}

/// I/O counters of a process.
#[derive(Debug, Clone, Copy, Default, Serialize, schemars::JsonSchema, Deserialize, PartialEq)]
pub struct IoCounters {
    pub rchar: u64,
    pub wchar: u64,
    pub read_bytes: u64,
    pub write_bytes: u64,
}

/// The CPUs the target may really use.
#[derive(Debug, Clone, Default, Serialize, schemars::JsonSchema, Deserialize, PartialEq)]
pub struct CpuBudget {
    /// Online CPUs of the host.
    pub online: u32,
    /// CPUs in the target's affinity mask.
    pub affinity: Option<u32>,
    /// The affinity mask as a CPU list ("0-3,8").
    pub affinity_list: Option<String>,
    /// cgroup CPU quota in CPUs (quota / period); `None` when unlimited.
    pub quota: Option<f64>,
    /// Where the quota came from ("cgroup v1 cpu.cfs_quota_us=200000 cpu.cfs_period_us=100000").
    pub quota_source: Option<String>,
    /// min(online, affinity, quota), at least 1.
    pub usable: f64,
    /// Throttling counters of the cgroup whose quota applies (its `cpu.stat`); `None`
    /// without a quota or when the file cannot be read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub throttling: Option<CpuThrottling>,
}

/// CFS bandwidth counters from a cgroup's `cpu.stat` (cumulative since the cgroup was
/// made).
#[derive(Debug, Clone, Default, Serialize, schemars::JsonSchema, Deserialize, PartialEq)]
pub struct CpuThrottling {
    /// Enforcement periods in which the group had runnable work (`nr_periods`).
    pub periods: u64,
    /// Periods in which the group used up its quota and was throttled (`nr_throttled`).
    pub throttled_periods: u64,
    /// Total time the group's threads were held off the CPUs (v1 `throttled_time` in
    /// ns, v2 `throttled_usec`), seconds.
    pub throttled_seconds: f64,
    /// The file, relative to the cgroup root ("cpu,cpuacct/job/cpu.stat").
    pub path: String,
    /// "cgroup v1 cpu,cpuacct/job/cpu.stat".
    pub source: String,
}

/// The memory limit RSS is judged against.
#[derive(Debug, Clone, Default, Serialize, schemars::JsonSchema, Deserialize, PartialEq)]
pub struct MemoryLimit {
    /// The effective limit: the cgroup limit where set, else MemTotal.
    pub bytes: u64,
    /// Where `bytes` came from ("cgroup v2 memory.max", "cgroup v1 memory.limit_in_bytes", "MemTotal").
    pub source: String,
    pub mem_total_bytes: u64,
}

/// A source that could not be read.
#[derive(
    Debug, Clone, Serialize, schemars::JsonSchema, Deserialize, PartialEq, Eq, PartialOrd, Ord,
)]
pub struct Unavailable {
    /// What could not be read ("syscall", "environ", "schedstat", "gpu", "metrics").
    pub source: String,
    pub pid: Option<i32>,
    pub reason: String,
    /// How to get it, where there is a way.
    pub fix: Option<String>,
}

impl Unavailable {
    /// The `source` of a thread's wait channel (`/proc/<pid>/task/<tid>/wchan`).
    pub const WCHAN: &'static str = "wchan";
    /// The `source` of a thread's system call (`/proc/<pid>/task/<tid>/syscall`).
    pub const SYSCALL: &'static str = "syscall";

    /// Whether what could not be read hides the threads' waits (their wait channels or
    /// system calls): lock waiters then cannot be counted.
    pub fn hides_waits(&self) -> bool {
        self.source == Self::WCHAN || self.source == Self::SYSCALL
    }
}

/// What taking a sample cost.
#[derive(Debug, Clone, Copy, Default, Serialize, schemars::JsonSchema, Deserialize, PartialEq)]
pub struct SampleCost {
    /// Wall time spent sampling, seconds.
    pub duration_seconds: f64,
    /// How late the sample started against its target time, seconds.
    pub lateness_seconds: f64,
    /// Threads whose slow fields are current in this sample: read, or confirmed
    /// unchanged because the thread has not run since they were read.
    pub detailed_threads: u32,
    /// Threads that had not run since their files were last read (same `schedstat`):
    /// their `stat` (steady samples) or slow files (detail samples) were carried.
    #[serde(default)]
    pub unchanged_threads: u32,
    /// Lock words of futex waiters read from the targets' memory in this sample.
    #[serde(default)]
    pub lock_memory_reads: u32,
    /// Processes carried whole from their `stat` because they stayed still (sampling
    /// by level; their threads count in `unchanged_threads`).
    #[serde(default)]
    pub carried_processes: u32,
}

/// Thread runtimes loaded in a process and the pools they will start.
#[derive(Debug, Clone, Default, Serialize, schemars::JsonSchema, Deserialize, PartialEq)]
pub struct RuntimeAudit {
    pub runtimes: Vec<LoadedRuntime>,
    /// Thread-count and device variables in effect (only those that are set).
    pub env: BTreeMap<String, String>,
    /// Why the environment could not be read, when it could not.
    pub env_unavailable: Option<String>,
    /// The pool each runtime will start, by its own rules.
    pub pools: Vec<PoolPrediction>,
    /// Where `env` was read: the live `environ` array in the process's memory, or the
    /// start-up environment of `/proc/<pid>/environ`.
    #[serde(default)]
    pub env_source: EnvSource,
    /// Why the live environment could not be read from memory (the start-up environment
    /// was used instead), when it could not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env_memory_unavailable: Option<String>,
    /// Thread variables set, changed or removed after start (the live environment
    /// against `/proc/<pid>/environ`); empty when the live one was not read.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env_changes: Vec<EnvChange>,
    /// Pool threads seen in the process, by the name families that tell their runtime.
    #[serde(default)]
    pub observed_pools: Vec<ObservedPool>,
    /// The process's rank in a distributed job, from the variables its launcher set
    /// (`RANK`, `OMPI_COMM_WORLD_RANK`, `TF_CONFIG`, …), read from the same environment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rank: Option<ranks::RankInfo>,
}

/// Where the audit's environment came from.
#[derive(
    Debug, Clone, Copy, Default, Serialize, schemars::JsonSchema, Deserialize, PartialEq, Eq,
)]
pub enum EnvSource {
    /// The C library's `environ` array, read from the process's memory.
    #[serde(rename = "memory")]
    Memory,
    /// `/proc/<pid>/environ`: the environment at exec.
    #[default]
    #[serde(rename = "start-up environ")]
    StartupEnviron,
}

impl EnvSource {
    pub fn as_str(self) -> &'static str {
        match self {
            EnvSource::Memory => "memory",
            EnvSource::StartupEnviron => "start-up environ",
        }
    }
}

/// A thread variable whose live value differs from the one at exec.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema, Deserialize, PartialEq, Eq)]
pub struct EnvChange {
    pub variable: String,
    /// The value at exec; `None` when it was set after start.
    pub at_start: Option<String>,
    /// The live value; `None` when it was removed after start.
    pub now: Option<String>,
}

/// Threads of one runtime seen in a process, counted by name (`tf_*`, `pt_*`, `omp_*`).
#[derive(Debug, Clone, Serialize, schemars::JsonSchema, Deserialize, PartialEq, Eq)]
pub struct ObservedPool {
    /// "TensorFlow", "PyTorch", "OpenMP".
    pub runtime: String,
    /// Threads with a name of the runtime's family.
    pub threads: u32,
    /// Of those, threads that ran since the previous sample (or are running now).
    pub running: u32,
}

/// A thread runtime found in `/proc/<pid>/maps`.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema, Deserialize, PartialEq, Eq)]
pub struct LoadedRuntime {
    /// "GNU OpenMP", "LLVM OpenMP", "Intel OpenMP", "OpenBLAS", "MKL", "BLIS", "TensorFlow",
    /// "PyTorch", "CUDA runtime", "NCCL", "CPython".
    pub name: String,
    /// "openmp", "blas", "framework", "gpu", "interpreter".
    pub family: String,
    pub library: String,
    pub version: Option<String>,
}

/// The size of the pool a runtime will start.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema, Deserialize, PartialEq)]
pub struct PoolPrediction {
    pub runtime: String,
    /// Threads the pool will have.
    pub threads: u32,
    /// The variable that set it, or `None` when the runtime's default applies.
    pub variable: Option<String>,
    /// How the size was reached ("OMP_NUM_THREADS unset: libgomp uses the 252 CPUs of the affinity mask").
    pub reason: String,
}

/// How bad a finding or an alert is.
#[derive(
    Debug,
    Clone,
    Copy,
    Serialize,
    Deserialize,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Default,
    schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    #[default]
    Info,
    Warning,
    Error,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Error => "error",
        }
    }
}

impl std::fmt::Display for Severity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a finding is about: a stable identifier scripts can match on.
#[derive(
    Debug,
    Clone,
    Copy,
    Serialize,
    schemars::JsonSchema,
    Deserialize,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
)]
#[serde(rename_all = "kebab-case")]
pub enum FindingKind {
    Deadlock,
    NoProgress,
    ForkInheritedLock,
    Oversubscription,
    ThreadExplosion,
    MemoryPressure,
    StallPendingWork,
    GpuShared,
    GpuIdleHeld,
    /// Two OpenMP runtimes (or BLAS runtimes with their own pools) in one process.
    DuplicateRuntimes,
    /// Pools sized from the host's CPUs although a quota or mask allows fewer.
    PoolSizedFromHost,
    /// Processes × pool threads exceed the usable CPUs (predicted from the audit).
    PoolOversubscription,
    /// The tree's threads wait for CPUs although they fit the usable CPUs: other
    /// processes load the machine.
    CpuContention,
    /// Ranks of a distributed job stopped meeting: every watched rank waits.
    DistributedHang,
    /// Ranks of a distributed job wait for one that still runs.
    Straggler,
    /// Jobs of a node (`tfwatch node`) whose runnable threads together exceed its CPUs.
    NodeOversubscription,
    /// A process without progress whose threads all wait for work, for time or for
    /// input: how healthy programs wait between bursts of work (info, never a hang).
    Idle,
    /// A process of the tree leaves many exited children unreaped (zombies): they hold
    /// pids, not threads (info).
    UnreapedChildren,
    /// Most threads of a process queue on one lock word while its holder works.
    LockContention,
    /// The thread running an event loop stays away from its poll for long stretches.
    EventLoopBlocked,
    /// Python threads of one process take turns on the GIL: about one core in all.
    GilContention,
}

impl FindingKind {
    /// Whether the finding means the watched job is hung (`run` ends with its hang code):
    /// no progress, a deadlock, a fork-inherited lock, a distributed job's ranks stalled.
    pub fn is_hang(self) -> bool {
        matches!(
            self,
            FindingKind::NoProgress
                | FindingKind::Deadlock
                | FindingKind::ForkInheritedLock
                | FindingKind::DistributedHang
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            FindingKind::Deadlock => "deadlock",
            FindingKind::NoProgress => "no-progress",
            FindingKind::ForkInheritedLock => "fork-inherited-lock",
            FindingKind::Oversubscription => "oversubscription",
            FindingKind::ThreadExplosion => "thread-explosion",
            FindingKind::MemoryPressure => "memory-pressure",
            FindingKind::StallPendingWork => "stall-pending-work",
            FindingKind::GpuShared => "gpu-shared",
            FindingKind::GpuIdleHeld => "gpu-idle-held",
            FindingKind::DuplicateRuntimes => "duplicate-runtimes",
            FindingKind::PoolSizedFromHost => "pool-sized-from-host",
            FindingKind::PoolOversubscription => "pool-oversubscription",
            FindingKind::CpuContention => "cpu-contention",
            FindingKind::DistributedHang => "distributed-hang",
            FindingKind::Straggler => "straggler",
            FindingKind::NodeOversubscription => "node-oversubscription",
            FindingKind::Idle => "idle",
            FindingKind::UnreapedChildren => "unreaped-children",
            FindingKind::LockContention => "lock-contention",
            FindingKind::EventLoopBlocked => "event-loop-blocked",
            FindingKind::GilContention => "gil-contention",
        }
    }
}

impl std::fmt::Display for FindingKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A diagnosis: what is wrong, the evidence, and what to do.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema, Deserialize, PartialEq)]
pub struct Finding {
    pub kind: FindingKind,
    pub severity: Severity,
    /// 0.0 – 1.0: how sure the detector is.
    pub confidence: f64,
    /// One line for people.
    pub summary: String,
    /// The observations behind it, one per line, with numbers.
    pub evidence: Vec<String>,
    /// The same numbers for machines.
    pub metrics: BTreeMap<String, f64>,
    pub remedy: String,
    /// Processes and threads concerned.
    pub pids: Vec<i32>,
    pub tids: Vec<i32>,
}

impl Finding {
    pub fn new(kind: FindingKind, severity: Severity, summary: impl Into<String>) -> Self {
        Finding {
            kind,
            severity,
            confidence: 1.0,
            summary: summary.into(),
            evidence: Vec::new(),
            metrics: BTreeMap::new(),
            remedy: String::new(),
            pids: Vec::new(),
            tids: Vec::new(),
        }
    }
}

fn is_zero(value: &f64) -> bool {
    *value == 0.0
}

impl ThreadSample {
    /// What the thread sleeps in, for display: its wait channel, else the name of its
    /// system call (a one-shot sample leaves the channel out where the call names the
    /// wait by itself: a futex, a sleep, a poll).
    pub fn wait_name(&self) -> Option<&str> {
        self.wchan.as_deref().or(match &self.syscall {
            Some(Syscall::InSyscall {
                name: Some(name), ..
            }) => Some(name.as_ref()),
            _ => None,
        })
    }
}

impl ProcessSample {
    /// How old `thread`'s slow fields are, seconds: their age at the read the process
    /// was carried from, plus the time it has been carried.
    pub fn details_age_seconds(&self, thread: &ThreadSample) -> f64 {
        thread.details_age_seconds + self.carried_seconds
    }
}

impl Sample {
    /// All threads of the tree with their process.
    pub fn threads(&self) -> impl Iterator<Item = (&ProcessSample, &ThreadSample)> {
        self.processes
            .iter()
            .flat_map(|p| p.threads.iter().map(move |t| (p, t)))
    }

    pub fn process(&self, pid: i32) -> Option<&ProcessSample> {
        self.processes.iter().find(|p| p.pid == pid)
    }

    /// Threads of the tree; an exited process (a zombie not yet reaped) has none.
    pub fn thread_count(&self) -> usize {
        self.processes
            .iter()
            .filter(|p| !p.has_exited())
            .map(|p| p.threads.len())
            .sum()
    }
}

/// tfwatch's pid namespace as seen through `NSpid`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PidNamespace {
    /// One `NSpid` entry: pids tfwatch sees are those of the `/proc` it reads.
    Host,
    /// Several entries (outermost first): NVML's host pids cannot be mapped.
    Nested { nspids: Vec<i32> },
    /// `NSpid` could not be read (old kernel, unreadable status): why.
    Unknown { reason: String },
}

impl PidNamespace {
    /// Whether NVML's pids can be compared with the tree's pids as they are.
    pub fn pids_comparable(&self) -> bool {
        !matches!(self, PidNamespace::Nested { .. })
    }
}

impl ProcessSample {
    /// Whether the process has exited: its state is Z or X *and* no thread of it lives. A
    /// process whose main thread called `pthread_exit` reads Z in `stat` while its other
    /// threads keep working; it is alive.
    pub fn has_exited(&self) -> bool {
        let dead = |state: char| matches!(state, 'Z' | 'X' | 'x');
        if !dead(self.state) {
            return false;
        }
        if self.threads.is_empty() {
            return self.num_threads <= 1;
        }
        self.threads.iter().all(|t| dead(t.state))
    }

    /// Whether CPython runs in the process (its audit, or the executable's name).
    pub fn is_cpython(&self) -> bool {
        let audited = self
            .audit
            .as_ref()
            .is_some_and(|a| a.runtimes.iter().any(|r| r.name == "CPython"));
        let named = self
            .exe
            .as_deref()
            .and_then(|e| e.rsplit('/').next())
            .is_some_and(|name| name.starts_with("python"));
        audited || named
    }
}

/// How every output says that the run-queue wait ratio cannot be computed.
pub const RATIO_NOT_COMPUTED: &str = "n/a (nothing ran)";

/// Run-queue wait per second of running: how long threads waited for a CPU for each
/// second they ran; `None` when they did not run (the ratio cannot be computed, and
/// every output says [`RATIO_NOT_COMPUTED`]).
pub fn runqueue_wait_ratio(wait_seconds: f64, run_seconds: f64) -> Option<f64> {
    (run_seconds > 0.0).then(|| wait_seconds / run_seconds)
}

#[cfg(test)]
mod exit_tests {
    use super::*;

    fn thread(state: char) -> ThreadSample {
        ThreadSample {
            state,
            ..ThreadSample::default()
        }
    }

    #[test]
    fn a_zombie_main_thread_with_live_threads_has_not_exited() {
        let mut p = ProcessSample {
            state: 'Z',
            num_threads: 3,
            threads: vec![thread('Z'), thread('R'), thread('S')].into(),
            ..ProcessSample::default()
        };
        assert!(!p.has_exited());
        p.threads = vec![thread('Z')].into();
        assert!(p.has_exited());
        p.state = 'S';
        assert!(!p.has_exited());
    }
}
