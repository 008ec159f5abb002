//! `fork-lock`: fork after threads started.
//!
//! Broken: a `log-flusher` thread holds the (simulated) logging lock, a pthread mutex,
//! while the main thread calls `fork()`. The child has one thread and a copy of the
//! mutex, locked by a thread that does not exist in the child: its first log call blocks
//! forever. The parent stays healthy and keeps working.
//! Fixed: the child is a fresh process (the executable re-executed), which starts with
//! its own unlocked logging lock, logs, does its work and exits.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use super::common::{self, PthreadMutex, workload_lock_mutex, workload_unlock_mutex};
use super::compute::{Matrices, work_unit};
use super::{Ctx, WorkloadOptions};

/// Internal role of the fixed variant's re-executed child.
pub const CHILD_ROLE: &str = "fork-child";

/// The logging lock: a global pthread mutex, like the locks inside allocators and
/// logging libraries.
static LOG_LOCK: PthreadMutex = PthreadMutex::new();

/// How long the child of the fixed variant works.
const CHILD_WORK: Duration = Duration::from_millis(300);

pub fn run(ctx: &Ctx, _args: &WorkloadOptions) -> Result<i32> {
    let stop = Arc::new(AtomicBool::new(false));
    let (held_tx, held_rx) = mpsc::channel::<()>();
    let (forked_tx, forked_rx) = mpsc::channel::<()>();
    let flusher = {
        let stop = Arc::clone(&stop);
        std::thread::Builder::new()
            .name("log-flusher".to_string())
            .spawn(move || log_flusher(&stop, &held_tx, &forked_rx))?
    };
    ctx.say(format!(
        "log-flusher thread started; log lock at {:#x}",
        LOG_LOCK.address()
    ));
    // Wait until the flusher holds the lock, so that the fork happens while it does.
    held_rx
        .recv_timeout(Duration::from_secs(5))
        .context("the log-flusher thread did not take the log lock")?;
    let child = if ctx.fixed() {
        let mut command = common::self_command(ctx.scenario.name(), CHILD_ROLE)?;
        command.arg("--fixed");
        let child = command.spawn().context("cannot start the child process")?;
        let _ = forked_tx.send(());
        let pid = child.id();
        common::emit_child(pid, CHILD_ROLE);
        ctx.say(format!(
            "spawned a fresh child process {pid} (exec): it gets its own log lock"
        ));
        Child::Spawned(child)
    } else {
        let pid = fork_child_that_logs()?;
        let _ = forked_tx.send(());
        common::emit_child(pid as u32, "forked-child");
        ctx.say(format!(
            "forked child {pid} while log-flusher held the log lock; the child's copy of the lock has an owner that does not exist there"
        ));
        common::emit_onset("fork-inherited-lock");
        Child::Forked(pid)
    };

    // The parent keeps working: its progress is what "parent stays healthy" means.
    let matrices = Matrices::new(96);
    let mut c = vec![0.0; 96 * 96];
    let mut units = 0u64;
    let mut child_exit: Option<i32> = None;
    let mut child_seconds = None;
    let mut child = child;
    while Instant::now() < ctx.deadline {
        work_unit(&matrices, &mut c);
        units += 1;
        if child_exit.is_none() {
            child_exit = child.try_exit();
            if let Some(code) = child_exit {
                child_seconds = Some(ctx.started.elapsed().as_secs_f64());
                ctx.say(format!("child {} exited with code {code}", child.pid()));
            }
        }
    }
    if child_exit.is_none() {
        ctx.say(format!(
            "child {} still blocked on the inherited log lock after {:.1}s; killing it",
            child.pid(),
            ctx.duration.as_secs_f64()
        ));
        child.kill();
    }
    stop.store(true, Ordering::Relaxed);
    let _ = flusher.join();
    let completed = child_exit == Some(0);
    let mut result = ctx.result(completed);
    result.work_units = Some(units);
    result.throughput = Some(units as f64 / ctx.started.elapsed().as_secs_f64().max(1e-9));
    result.detail = match (completed, child_seconds) {
        (true, Some(at)) => format!("child completed after {at:.2}s; parent did {units} units"),
        _ => format!("child hung on the inherited lock; parent did {units} units"),
    };
    Ok(ctx.finish(&result))
}

enum Child {
    Forked(i32),
    Spawned(std::process::Child),
}

impl Child {
    fn pid(&self) -> i32 {
        match self {
            Child::Forked(pid) => *pid,
            Child::Spawned(child) => child.id() as i32,
        }
    }

    fn try_exit(&mut self) -> Option<i32> {
        match self {
            Child::Forked(pid) => common::try_reap(*pid),
            Child::Spawned(child) => match child.try_wait() {
                Ok(Some(status)) => Some(status.code().unwrap_or(128)),
                _ => None,
            },
        }
    }

    fn kill(&mut self) {
        match self {
            Child::Forked(pid) => common::kill_and_reap(*pid),
            Child::Spawned(child) => {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// Holds the log lock for a while, again and again, as a background flusher does. The
/// first time it holds the lock until the main thread has forked.
fn log_flusher(stop: &AtomicBool, held: &mpsc::Sender<()>, forked: &mpsc::Receiver<()>) {
    let matrices = Matrices::new(64);
    let mut c = vec![0.0; 64 * 64];
    workload_lock_mutex(&LOG_LOCK);
    let _ = held.send(());
    let _ = forked.recv_timeout(Duration::from_secs(5));
    workload_unlock_mutex(&LOG_LOCK);
    while !stop.load(Ordering::Relaxed) {
        workload_lock_mutex(&LOG_LOCK);
        for _ in 0..4 {
            work_unit(&matrices, &mut c);
        }
        workload_unlock_mutex(&LOG_LOCK);
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// `fork()`s a child that logs, i.e. takes the log lock. Returns the child's pid.
fn fork_child_that_logs() -> Result<i32> {
    // Everything the child needs is prepared before the fork: after fork in a
    // multi-threaded process the child may only call async-signal-safe functions.
    let parent = std::process::id() as i32;
    let hello = b"[fork-lock] child: writing a log line (takes the log lock)\n";
    let unexpected = b"[fork-lock] child: took the log lock (unexpected)\n";
    // SAFETY: fork has no memory-safety preconditions; the child below calls only
    // async-signal-safe functions (prctl, getppid, write, pthread_mutex_lock on a mutex
    // in its own copy of memory, _exit) and never returns into Rust code.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(std::io::Error::last_os_error()).context("fork failed");
    }
    if pid == 0 {
        // SAFETY: see above; the buffers are valid for their lengths.
        unsafe {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0);
            if libc::getppid() != parent {
                libc::_exit(1);
            }
            libc::write(1, hello.as_ptr().cast(), hello.len());
            workload_lock_mutex(&LOG_LOCK);
            libc::write(1, unexpected.as_ptr().cast(), unexpected.len());
            libc::_exit(0);
        }
    }
    Ok(pid)
}

/// The fixed variant's child: a fresh process with its own log lock.
pub fn run_child(_args: &super::WorkloadOptions) -> Result<i32> {
    workload_lock_mutex(&LOG_LOCK);
    common::say(
        "fork-lock",
        "child: writing a log line (fresh process, own log lock)",
    );
    workload_unlock_mutex(&LOG_LOCK);
    let matrices = Matrices::new(96);
    let mut c = vec![0.0; 96 * 96];
    let units = common::work_until(Instant::now() + CHILD_WORK, || {
        work_unit(&matrices, &mut c);
    });
    common::say("fork-lock", &format!("child: done ({units} units)"));
    Ok(0)
}
