//! Native stacks through libdw (elfutils, the `dw` crate): threads are stopped one at a
//! time with ptrace, each only while its own stack is unwound, in the order and within
//! the pause budget of [`super::plan`]; the unwinder only collects instruction
//! addresses while a thread is stopped; symbols and lines are looked up after the
//! threads run again, from symbol tables cached per module (see [`super::lines`]).

use std::sync::LazyLock;
use std::time::{Duration, Instant};

use dw::dwfl::{Callbacks, Dwfl, FindDebuginfo, FindElf};

use super::plan::{Planned, ThreadError, within_budget};
use crate::model::stacks::{StackFrame, ThreadStack};

static CALLBACKS: LazyLock<Callbacks> =
    LazyLock::new(|| Callbacks::new(FindElf::LINUX_PROC, FindDebuginfo::STANDARD));

/// One thread of a raw unwind: its instruction addresses, or why it was not unwound.
pub struct RawThread {
    pub tid: i32,
    pub name: Option<String>,
    pub ips: Vec<u64>,
    pub not_unwound: Option<String>,
}

/// Instruction addresses of the threads of `pid` the budget allowed, and how long the
/// unwind took (an upper bound of any one thread's stop).
pub struct RawStacks {
    pub pid: i32,
    pub threads: Vec<RawThread>,
    pub paused_seconds: f64,
    /// Threads unwound.
    pub unwound: usize,
    /// The budget ran out: some threads were not unwound.
    pub partial: bool,
}

/// A thread of the target stopped by this thread with `PTRACE_SEIZE` and
/// `PTRACE_INTERRUPT` (no signal is queued); detached when dropped.
struct Stopped(i32);

impl Stopped {
    /// Stops `tid`, waiting for the stop up to `wait`.
    fn new(tid: i32, wait: Duration) -> Result<Stopped, ThreadError> {
        let errno = || std::io::Error::last_os_error();
        let null = std::ptr::null_mut::<libc::c_void>();
        // SAFETY: PTRACE_SEIZE takes a tid and ignores the address; data 0 is no options.
        if unsafe { libc::ptrace(libc::PTRACE_SEIZE, tid, null, null) } != 0 {
            let error = errno();
            return Err(match error.raw_os_error() {
                Some(libc::ESRCH) => ThreadError::Gone,
                _ => ThreadError::Refused(format!("cannot attach to thread {tid}: {error}")),
            });
        }
        let stopped = Stopped(tid);
        // SAFETY: as above, on a thread this thread now traces.
        if unsafe { libc::ptrace(libc::PTRACE_INTERRUPT, tid, null, null) } != 0 {
            return Err(ThreadError::Failed(format!(
                "cannot stop thread {tid}: {}",
                errno()
            )));
        }
        let deadline = Instant::now() + wait;
        loop {
            // Only the stop: a plain waitpid would also take the thread's exit, and when
            // it is the main thread of tfwatch's own child (`run`'s command) that is the
            // command's exit status, lost to `run`.
            // SAFETY: waitid on a tracee of this thread without blocking, into a zeroed
            // siginfo.
            let (result, stopped_tid) = unsafe {
                let mut info: libc::siginfo_t = std::mem::zeroed();
                let result = libc::waitid(
                    libc::P_PID,
                    tid as libc::id_t,
                    &mut info,
                    libc::WSTOPPED | libc::WNOHANG | libc::__WALL,
                );
                (result, info.si_pid())
            };
            if result == 0 && stopped_tid == tid {
                return Ok(stopped);
            }
            if result < 0 {
                let error = errno();
                if error.kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                if error.raw_os_error() == Some(libc::ECHILD) {
                    return Err(ThreadError::Gone);
                }
                return Err(ThreadError::Failed(format!(
                    "cannot wait for thread {tid} to stop: {error}"
                )));
            }
            if Instant::now() >= deadline {
                // Still traced until this (unwinder) thread ends, which detaches it.
                return Err(ThreadError::Failed(format!(
                    "did not stop within {} ms",
                    wait.as_millis()
                )));
            }
            std::thread::sleep(Duration::from_micros(100));
        }
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        let null = std::ptr::null_mut::<libc::c_void>();
        // SAFETY: detaches a tracee of this thread; a failure leaves it traced only until
        // this thread exits.
        unsafe { libc::ptrace(libc::PTRACE_DETACH, self.0, null, null) };
    }
}

/// Unwinds the threads of `pid` in `plan`'s order until `budget` is spent (see
/// [`super::plan::within_budget`]); the others come back with why they were not
/// unwound. Must run on one thread from start to end (ptrace belongs to the thread
/// that attached).
pub fn unwind(pid: i32, plan: &[Planned], budget: Duration) -> Result<RawStacks, String> {
    let failed = |error: dw::dwfl::Error| format!("native unwind of pid {pid} failed: {error}");
    let started = Instant::now();
    let mut dwfl = Dwfl::begin(&CALLBACKS).map_err(failed)?;
    dwfl.report().linux_proc(pid as u32).map_err(failed)?;
    // The threads are stopped here, one at a time, not by libdw.
    dwfl.linux_proc_attach(pid as u32, true).map_err(failed)?;
    let mut elapsed = || started.elapsed();
    let mut one = |tid: i32, left: Duration| -> Result<Vec<u64>, ThreadError> {
        let stopped = Stopped::new(tid, left)?;
        let mut ips = Vec::new();
        let walked = dwfl.thread_frames(tid as u32, |frame| {
            ips.push(frame.pc(None)?);
            Ok(())
        });
        drop(stopped);
        match walked {
            // A stack cut short (no unwind info further up) keeps what was read.
            Err(_) if !ips.is_empty() => Ok(ips),
            Err(error) => Err(ThreadError::Failed(format!(
                "its stack could not be read: {error}"
            ))),
            Ok(()) => Ok(ips),
        }
    };
    let unwound = within_budget(plan, budget, &mut elapsed, &mut one)
        .map_err(|why| format!("native unwind of pid {pid} failed: {why}"))?;
    let mut threads: Vec<RawThread> = unwound
        .done
        .into_iter()
        .map(|(tid, ips)| RawThread {
            tid,
            // Named from the sample by the caller, as every other stack.
            name: None,
            ips,
            not_unwound: None,
        })
        .collect();
    let count = threads.len();
    threads.extend(unwound.left.into_iter().map(|(tid, why)| RawThread {
        tid,
        name: None,
        ips: Vec::new(),
        not_unwound: Some(why),
    }));
    Ok(RawStacks {
        pid,
        threads,
        paused_seconds: unwound.paused.as_secs_f64(),
        unwound: count,
        partial: unwound.partial,
    })
}

/// Demangles a C++ (Itanium) or Rust symbol; other names come back as they are.
pub fn demangle(name: &str) -> String {
    if name.starts_with("_Z") {
        let options = cpp_demangle::DemangleOptions::new().no_return_type();
        // A versioned symbol (`_ZN…@@GLIBCXX_3.4`) demangles without its version.
        let (mangled, version) = match name.split_once('@') {
            Some((m, v)) => (m, Some(v)),
            None => (name, None),
        };
        if let Ok(demangled) = cpp_demangle::Symbol::new(mangled.as_bytes())
            .map_err(|_| ())
            .and_then(|s| s.demangle_with_options(&options).map_err(|_| ()))
        {
            // Rust's legacy mangling is Itanium-shaped: keep rustc-demangle's reading.
            if !demangled.contains("::h") || rustc_demangle::try_demangle(mangled).is_err() {
                return match version {
                    Some(v) => format!("{demangled}@{v}"),
                    None => demangled,
                };
            }
        }
    }
    format!("{:#}", rustc_demangle::demangle(name))
}

/// Symbolises raw stacks: function (demangled), file and line where the modules have
/// them. Runs after the unwind, with the threads running.
pub fn symbolise(raw: RawStacks) -> Vec<ThreadStack> {
    let mut lines = super::lines::SourceLines::new(raw.pid);
    raw.threads
        .into_iter()
        .map(|thread| ThreadStack {
            pid: raw.pid,
            tid: thread.tid,
            name: thread.name,
            kind: crate::model::stacks::StackKind::Native,
            frames: thread
                .ips
                .into_iter()
                .map(|ip| {
                    let found = lines.locate(ip);
                    StackFrame {
                        function: found.function.map(|f| demangle(&f)),
                        file: found.file,
                        line: found.line,
                        address: Some(ip),
                        ..StackFrame::default()
                    }
                })
                .collect(),
            paused_seconds: raw.paused_seconds,
            not_unwound: thread.not_unwound,
            ..ThreadStack::default()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpp_and_rust_symbols_are_demangled() {
        assert_eq!(
            demangle(
                "_ZN4absl12lts_2025081424synchronization_internal11FutexWaiter9WaitUntilEPSt6atomicIiEiNS1_13KernelTimeoutE"
            ),
            "absl::lts_20250814::synchronization_internal::FutexWaiter::WaitUntil(std::atomic<int>*, int, absl::lts_20250814::synchronization_internal::KernelTimeout)"
        );
        assert_eq!(
            demangle("_ZNSt18condition_variable4waitERSt11unique_lockISt5mutexE@@GLIBCXX_3.4.11"),
            "std::condition_variable::wait(std::unique_lock<std::mutex>&)@@GLIBCXX_3.4.11"
        );
        assert_eq!(
            demangle("_ZN3std2rt10lang_start17h0123456789abcdefE"),
            "std::rt::lang_start"
        );
        assert_eq!(
            demangle("pthread_cond_wait@@GLIBC_2.3.2"),
            "pthread_cond_wait@@GLIBC_2.3.2"
        );
        assert_eq!(demangle("_Znot-a-symbol"), "_Znot-a-symbol");
    }
}
