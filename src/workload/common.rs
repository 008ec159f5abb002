//! Pieces every scenario shares: the output lines, the watchdog, libc pthread mutexes,
//! re-executing tfwatch for child processes, and reading the workload's own `/proc`.
//!
//! Machine-parsable lines (one per event, flushed) all start with [`PREFIX`]:
//!
//! ```text
//! tfwatch-workload: scenario=deadlock variant=broken pid=1234
//! tfwatch-workload: child=1240 role=fork-child
//! tfwatch-workload: onset=deadlock
//! tfwatch-workload: metrics=http://127.0.0.1:40123/metrics
//! tfwatch-workload: result={"scenario":"deadlock","variant":"broken",...}
//! ```
//!
//! Lines for people start with `[scenario] `.

use std::cell::UnsafeCell;
use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// Start of every machine-parsable line.
pub const PREFIX: &str = "tfwatch-workload:";

/// Exit code when a scenario did not end within a few seconds of its duration.
pub const EXIT_OVERRAN: i32 = 124;

/// Writes one line to stdout and flushes it; a closed stdout is ignored.
pub fn emit(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// `[scenario] text`.
pub fn say(scenario: &str, text: &str) {
    emit(&format!("[{scenario}] {text}"));
}

/// The first line of every scenario.
pub fn emit_started(scenario: &str, variant: &str, pid: u32) {
    emit(&format!(
        "{PREFIX} scenario={scenario} variant={variant} pid={pid}"
    ));
}

/// A child process the scenario started (a watcher should follow it too).
pub fn emit_child(pid: u32, role: &str) {
    emit(&format!("{PREFIX} child={pid} role={role}"));
}

/// The moment the problem begins (detection latency is measured from here).
pub fn emit_onset(what: &str) {
    emit(&format!("{PREFIX} onset={what}"));
}

/// Where the scenario serves its Prometheus metrics.
pub fn emit_metrics(url: &str) {
    emit(&format!("{PREFIX} metrics={url}"));
}

/// The final measurement of a scenario.
pub fn emit_result(result: &ScenarioResult) {
    match serde_json::to_string(result) {
        Ok(json) => emit(&format!("{PREFIX} result={json}")),
        Err(err) => say(&result.scenario, &format!("cannot encode result: {err}")),
    }
}

/// What a scenario measured about itself; printed as JSON on its last line.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ScenarioResult {
    pub scenario: String,
    pub variant: String,
    /// The work the scenario set out to do finished (false: it hung or ran out of time).
    pub completed: bool,
    pub elapsed_seconds: f64,
    /// Work units per second (oversubscribe, healthy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub throughput: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub work_units: Option<u64>,
    /// CPU time the scenario's worker processes used, in seconds (oversubscribe): the
    /// work per CPU-second shows what oversubscription wastes, whatever share of the
    /// machine other processes leave the scenario.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_seconds: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_p50_seconds: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_p99_seconds: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_max_seconds: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_depth_max: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rejected: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peak_threads: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peak_rss_bytes: Option<u64>,
    /// One sentence for people.
    #[serde(default)]
    pub detail: String,
}

impl ScenarioResult {
    pub fn new(scenario: &str, variant: &str, completed: bool, elapsed_seconds: f64) -> Self {
        ScenarioResult {
            scenario: scenario.to_string(),
            variant: variant.to_string(),
            completed,
            elapsed_seconds,
            ..ScenarioResult::default()
        }
    }
}

/// A machine-parsable line of the workload's output.
#[derive(Debug, Clone, PartialEq)]
pub enum WorkloadLine {
    Started {
        scenario: String,
        variant: String,
        pid: i32,
    },
    Child {
        pid: i32,
        role: String,
    },
    Onset {
        what: String,
    },
    Metrics {
        url: String,
    },
    Result(ScenarioResult),
}

/// Parses one line of workload output; `None` for lines meant for people (or garbled).
pub fn parse_line(line: &str) -> Option<WorkloadLine> {
    let rest = line.trim_end().strip_prefix(PREFIX)?.trim_start();
    if let Some(json) = rest.strip_prefix("result=") {
        return serde_json::from_str(json).ok().map(WorkloadLine::Result);
    }
    let fields: Vec<(&str, &str)> = rest
        .split_whitespace()
        .filter_map(|field| field.split_once('='))
        .collect();
    let get = |key: &str| {
        fields
            .iter()
            .find(|(name, _)| *name == key)
            .map(|(_, value)| *value)
    };
    match fields.first().map(|(key, _)| *key)? {
        "scenario" => Some(WorkloadLine::Started {
            scenario: get("scenario")?.to_string(),
            variant: get("variant")?.to_string(),
            pid: get("pid")?.parse().ok()?,
        }),
        "child" => Some(WorkloadLine::Child {
            pid: get("child")?.parse().ok()?,
            role: get("role").unwrap_or("child").to_string(),
        }),
        "onset" => Some(WorkloadLine::Onset {
            what: get("onset")?.to_string(),
        }),
        "metrics" => Some(WorkloadLine::Metrics {
            url: get("metrics")?.to_string(),
        }),
        _ => None,
    }
}

/// Usable CPUs: online CPUs, limited by the affinity mask and the cgroup quota
/// (`available_parallelism` accounts for all three on Linux).
pub fn usable_cpus() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

/// Online CPUs of the host, the count BLAS and OpenMP runtimes size their pools from.
pub fn online_cpus() -> usize {
    // SAFETY: sysconf has no preconditions.
    let online = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    usize::try_from(online)
        .ok()
        .filter(|n| *n > 0)
        .unwrap_or_else(usable_cpus)
}

/// Starts a thread that, at `deadline`, runs `on_expire` and ends the whole process with
/// the code it returns — even when every other thread is deadlocked.
pub fn arm_watchdog(deadline: Instant, on_expire: impl FnOnce() -> i32 + Send + 'static) {
    let spawned = std::thread::Builder::new()
        .name("workload-watchdog".to_string())
        .spawn(move || {
            sleep_until(deadline);
            let code = on_expire();
            let _ = std::io::stdout().flush();
            // SAFETY: _exit ends the process without running destructors or atexit
            // handlers, which could block on locks the deadlocked threads hold.
            unsafe { libc::_exit(code) }
        });
    if let Err(err) = spawned {
        say(
            "workload",
            &format!("cannot start the watchdog thread: {err}"),
        );
    }
}

/// Sleeps until `deadline` (returns at once when it has passed).
pub fn sleep_until(deadline: Instant) {
    let now = Instant::now();
    if deadline > now {
        std::thread::sleep(deadline - now);
    }
}

/// A glibc `pthread_mutex_t` (normal type): glibc records the owner's tid in the mutex
/// (`__data.__owner`), which is what the deadlock detector reads from outside.
#[repr(transparent)]
pub struct PthreadMutex {
    inner: UnsafeCell<libc::pthread_mutex_t>,
}

// SAFETY: a pthread mutex is made to be shared between threads; it is only ever used
// through the pthread functions, never moved once in use (it lives in an Arc or static).
unsafe impl Sync for PthreadMutex {}
// SAFETY: as above.
unsafe impl Send for PthreadMutex {}

impl PthreadMutex {
    pub const fn new() -> PthreadMutex {
        PthreadMutex {
            inner: UnsafeCell::new(libc::PTHREAD_MUTEX_INITIALIZER),
        }
    }

    pub fn as_ptr(&self) -> *mut libc::pthread_mutex_t {
        self.inner.get()
    }

    /// The mutex's address, as a watcher sees it in the futex wait.
    pub fn address(&self) -> usize {
        self.as_ptr() as usize
    }
}

impl Default for PthreadMutex {
    fn default() -> Self {
        PthreadMutex::new()
    }
}

/// Locks a pthread mutex. Kept out of line (and not a tail call) so that a stack of a
/// blocked workload thread names it.
#[inline(never)]
pub fn workload_lock_mutex(mutex: &PthreadMutex) -> i32 {
    // SAFETY: the mutex is initialised (statically or by pthread_mutex_init) and borrowed
    // for the call.
    let rc = unsafe { libc::pthread_mutex_lock(mutex.as_ptr()) };
    std::hint::black_box(rc)
}

/// Unlocks a pthread mutex the calling thread holds.
#[inline(never)]
pub fn workload_unlock_mutex(mutex: &PthreadMutex) -> i32 {
    // SAFETY: as for locking; unlocking a normal mutex the caller does not hold is
    // undefined by POSIX but glibc just releases it, and the workload never does so.
    let rc = unsafe { libc::pthread_mutex_unlock(mutex.as_ptr()) };
    std::hint::black_box(rc)
}

/// Initialises a process-shared mutex in memory mapped by several processes.
///
/// # Safety
/// `mutex` must point to writable memory of at least `size_of::<pthread_mutex_t>()`
/// bytes that no thread uses yet.
pub unsafe fn init_process_shared_mutex(mutex: *mut libc::pthread_mutex_t) -> std::io::Result<()> {
    let mut attr = std::mem::MaybeUninit::<libc::pthread_mutexattr_t>::uninit();
    // SAFETY: attr is initialised by pthread_mutexattr_init before any other use; the
    // caller guarantees `mutex` is valid.
    unsafe {
        check_rc(libc::pthread_mutexattr_init(attr.as_mut_ptr()))?;
        let result = check_rc(libc::pthread_mutexattr_setpshared(
            attr.as_mut_ptr(),
            libc::PTHREAD_PROCESS_SHARED,
        ))
        .and_then(|()| check_rc(libc::pthread_mutex_init(mutex, attr.as_ptr())));
        libc::pthread_mutexattr_destroy(attr.as_mut_ptr());
        result
    }
}

fn check_rc(rc: i32) -> std::io::Result<()> {
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::from_raw_os_error(rc))
    }
}

/// A command that re-executes this tfwatch as a child of the scenario: `run-workload
/// --scenario NAME --role ROLE ...`.
pub fn self_command(scenario: &str, role: &str) -> std::io::Result<Command> {
    workload_command(&["--scenario", scenario, "--role", role])
}

/// `tfwatch run-workload ARGS...` of this same executable. The child gets SIGKILL when
/// the thread that started it dies, so a killed scenario leaves nothing behind.
pub fn workload_command<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> std::io::Result<Command> {
    use std::os::unix::process::CommandExt;
    let exe = std::env::current_exe()?;
    let mut command = Command::new(exe);
    command.arg("run-workload").args(args);
    // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    Ok(command)
}

/// Sends SIGKILL to `pid` and reaps it (it must be our child).
pub fn kill_and_reap(pid: i32) {
    // SAFETY: kill and waitpid on our own child's pid have no memory-safety preconditions.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
        libc::waitpid(pid, std::ptr::null_mut(), 0);
    }
}

/// How a child we forked (not spawned with `Command`) ended, if it has.
pub fn try_reap(pid: i32) -> Option<i32> {
    let mut status = 0;
    // SAFETY: waitpid with WNOHANG on our own child; `status` is a valid out pointer.
    let rc = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
    if rc == pid {
        if libc::WIFEXITED(status) {
            Some(libc::WEXITSTATUS(status))
        } else {
            Some(128 + libc::WTERMSIG(status))
        }
    } else {
        None
    }
}

/// Which threads of a process should stop running when its scenario hangs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ThreadPick {
    /// Threads whose name (`comm`) starts with this, e.g. the deadlock's `worker-`.
    NamedPrefix(&'static str),
    /// The process's main thread (tid = pid): a forked child, a rank blocked in `main`.
    Main,
}

/// The thread ids of a process from `/proc/<pid>/task` (empty when it is gone).
pub fn task_ids(proc_root: &Path, pid: i32) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir(proc_root.join(format!("{pid}/task"))) else {
        return Vec::new();
    };
    let mut tids: Vec<i32> = entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    tids.sort_unstable();
    tids
}

/// Time on CPU (ns) from the text of a `schedstat` file: its first field.
pub fn schedstat_run_ns(schedstat: &str) -> Option<u64> {
    schedstat.split_whitespace().next()?.parse().ok()
}

/// The run time (ns, from `schedstat`) of each thread of `pid` that `pick` selects and
/// that is alive: threads that are exiting or gone (state `Z`/`X`, or files that
/// vanish between reads) are left out, so that being killed at the end of a run never
/// reads as progress.
pub fn picked_thread_run_ns(proc_root: &Path, pid: i32, pick: ThreadPick) -> Vec<(i32, u64)> {
    let task = |tid: i32, file: &str| {
        std::fs::read_to_string(proc_root.join(format!("{pid}/task/{tid}/{file}"))).ok()
    };
    let alive = |tid: i32| {
        task(tid, "stat")
            .and_then(|stat| stat_state(&stat))
            .is_some_and(|state| !matches!(state, 'Z' | 'X' | 'x'))
    };
    let tids = match pick {
        ThreadPick::Main => vec![pid],
        ThreadPick::NamedPrefix(prefix) => task_ids(proc_root, pid)
            .into_iter()
            .filter(|tid| task(*tid, "comm").is_some_and(|comm| comm.starts_with(prefix)))
            .collect(),
    };
    tids.into_iter()
        .filter_map(|tid| {
            if !alive(tid) {
                return None;
            }
            let run = task(tid, "schedstat").and_then(|text| schedstat_run_ns(&text))?;
            // Read the state again: a thread killed meanwhile ran its exit, not its work.
            alive(tid).then_some((tid, run))
        })
        .collect()
}

/// utime + stime from the text of a `stat` file (the command name may hold spaces and
/// parentheses, so fields are counted after the last `)`).
pub fn stat_cpu_ticks(stat: &str) -> Option<u64> {
    let after = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    // After the name: state is field 3, utime field 14, stime field 15 (1-based).
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// The state letter of a process or thread from its `stat` text.
pub fn stat_state(stat: &str) -> Option<char> {
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().next()?.chars().next()
}

/// The proc root the workload reads its own figures from.
pub const PROC_ROOT: &str = "/proc";

/// A numeric field of `self/status` under `proc_root` such as `Threads` or `VmRSS` (kB
/// for sizes).
pub fn self_status_field(proc_root: &Path, name: &str) -> Option<u64> {
    let text = std::fs::read_to_string(proc_root.join("self/status")).ok()?;
    status_field(&text, name)
}

/// A numeric field of the text of a `status` file.
pub fn status_field(status: &str, name: &str) -> Option<u64> {
    status.lines().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        if key != name {
            return None;
        }
        value.split_whitespace().next()?.parse().ok()
    })
}

/// Resident memory of this process in bytes.
pub fn self_rss_bytes() -> Option<u64> {
    self_status_field(Path::new(PROC_ROOT), "VmRSS").map(|kib| kib * 1024)
}

/// Runs `work` repeatedly until `deadline`; returns how many times it ran.
pub fn work_until(deadline: Instant, mut work: impl FnMut()) -> u64 {
    let mut units = 0;
    while Instant::now() < deadline {
        work();
        units += 1;
    }
    units
}

/// Seconds as f64 since `start`.
pub fn seconds_since(start: Instant) -> f64 {
    start.elapsed().as_secs_f64()
}

/// A short pause used by polling loops.
pub const POLL: Duration = Duration::from_millis(5);

/// CPU time (user + system) of this process's waited-for children so far, in seconds.
pub fn children_cpu_seconds() -> f64 {
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage) } != 0 {
        return 0.0;
    }
    let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    seconds(usage.ru_utime) + seconds(usage.ru_stime)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_machine_lines() {
        assert_eq!(
            parse_line("tfwatch-workload: scenario=deadlock variant=broken pid=1234"),
            Some(WorkloadLine::Started {
                scenario: "deadlock".into(),
                variant: "broken".into(),
                pid: 1234
            })
        );
        assert_eq!(
            parse_line("tfwatch-workload: child=99 role=fork-child\n"),
            Some(WorkloadLine::Child {
                pid: 99,
                role: "fork-child".into()
            })
        );
        assert_eq!(
            parse_line("tfwatch-workload: onset=deadlock"),
            Some(WorkloadLine::Onset {
                what: "deadlock".into()
            })
        );
        assert_eq!(
            parse_line("tfwatch-workload: metrics=http://127.0.0.1:1/metrics"),
            Some(WorkloadLine::Metrics {
                url: "http://127.0.0.1:1/metrics".into()
            })
        );
        assert_eq!(parse_line("[deadlock] worker-a holds m0"), None);
        assert_eq!(parse_line("tfwatch-workload: child=abc"), None);
        assert_eq!(parse_line("tfwatch-workload: result={not json"), None);
    }

    #[test]
    fn result_round_trips() {
        let mut result = ScenarioResult::new("queue-overload", "fixed", true, 2.5);
        result.latency_p99_seconds = Some(0.25);
        result.detail = "ok".into();
        let line = format!(
            "{PREFIX} result={}",
            serde_json::to_string(&result).unwrap()
        );
        assert_eq!(parse_line(&line), Some(WorkloadLine::Result(result)));
    }

    #[test]
    fn stat_fields_survive_odd_names() {
        let stat = "42 (a) b (c)) S 1 42 42 0 -1 4194560 100 0 0 0 17 5 0 0 20 0 3 0 100 0 0";
        assert_eq!(stat_cpu_ticks(stat), Some(22));
        assert_eq!(stat_state(stat), Some('S'));
        assert_eq!(stat_cpu_ticks("42 (x) S 1"), None);
        assert_eq!(stat_cpu_ticks("garbage"), None);
    }

    #[test]
    fn picks_live_threads_by_name_or_main() {
        let root = std::env::temp_dir().join(format!("tfwatch-picks-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let task = |tid: i32, comm: &str, state: char, run: u64| {
            let dir = root.join(format!("10/task/{tid}"));
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("comm"), format!("{comm}\n")).unwrap();
            let stat = format!("{tid} ({comm}) {state} 1 10 10 0 -1 0 0 0 0 0 1 1 0 0");
            std::fs::write(dir.join("stat"), stat).unwrap();
            std::fs::write(dir.join("schedstat"), format!("{run} 5 3\n")).unwrap();
        };
        task(10, "tfwatch", 'S', 100);
        task(11, "worker-a", 'S', 200);
        task(12, "worker-b", 'Z', 300);
        task(13, "workload-watch", 'S', 400);
        let named = picked_thread_run_ns(&root, 10, ThreadPick::NamedPrefix("worker-"));
        assert_eq!(named, vec![(11, 200)]);
        let main = picked_thread_run_ns(&root, 10, ThreadPick::Main);
        assert_eq!(main, vec![(10, 100)]);
        assert!(picked_thread_run_ns(&root, 99, ThreadPick::Main).is_empty());
        assert_eq!(task_ids(&root, 10), vec![10, 11, 12, 13]);
        assert_eq!(schedstat_run_ns("123 4 5\n"), Some(123));
        assert_eq!(schedstat_run_ns(""), None);
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn status_fields() {
        let status = "Name:\tx\nThreads:\t7\nVmRSS:\t  1024 kB\n";
        assert_eq!(status_field(status, "Threads"), Some(7));
        assert_eq!(status_field(status, "VmRSS"), Some(1024));
        assert_eq!(status_field(status, "VmHWM"), None);
    }

    #[test]
    fn pthread_mutex_locks_and_unlocks() {
        let mutex = PthreadMutex::new();
        assert_eq!(workload_lock_mutex(&mutex), 0);
        assert_eq!(workload_unlock_mutex(&mutex), 0);
        assert!(usable_cpus() >= 1);
        assert!(online_cpus() >= 1);
    }
}
