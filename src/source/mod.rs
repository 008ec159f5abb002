//! Sources: everything tfwatch reads from outside, read-only. Sources never judge: they
//! fill plain [`crate::model`] values, and what cannot be read becomes an
//! "unavailable" entry with its reason.

pub mod clock;
pub mod gil;
pub mod gpu;
pub mod proc;
pub mod scrape;
pub mod stacks;

/// What to do when reading another process's files or memory is denied: the one wording
/// of the ptrace advice, everywhere it is given.
pub const PTRACE_ADVICE: &str = "run tfwatch as root or as the process's user, add CAP_SYS_PTRACE (setcap cap_sys_ptrace+ep tfwatch, or docker run --cap-add SYS_PTRACE), lower /proc/sys/kernel/yama/ptrace_scope (0; 1 suffices when tfwatch started the job), or run the job under `tfwatch run`";

/// A child's status once it has exited, else `None` at once. Only an exit counts:
/// while tfwatch's stack reader has a thread of the child under ptrace, a plain
/// `waitpid` (`Child::try_wait`) would take that thread's ptrace stop for the child's
/// end (and steal the stop from the reader). The kernel reports a tracee's ptrace stop
/// to its tracer's process whatever the wait's flags, `WEXITED` alone included: only
/// an exit's own codes count.
pub fn exited(child: &mut std::process::Child) -> Option<std::process::ExitStatus> {
    // SAFETY: waitid with a zeroed siginfo out-parameter; WNOWAIT leaves the child
    // waitable, so the reap below gets its status.
    let (waited, info) = unsafe {
        let mut info: libc::siginfo_t = std::mem::zeroed();
        let waited = libc::waitid(
            libc::P_PID,
            child.id(),
            &mut info,
            libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
        );
        (waited, info)
    };
    if waited != 0 {
        // Reaped already (by an earlier call): `Child` keeps the status it took, and
        // gives it again without waiting.
        let reaped = std::io::Error::last_os_error().raw_os_error() == Some(libc::ECHILD);
        return if reaped {
            child.try_wait().ok().flatten()
        } else {
            None
        };
    }
    // SAFETY: si_pid of a siginfo waitid filled (or left zeroed).
    let ended = unsafe { info.si_pid() } != 0
        && matches!(
            info.si_code,
            libc::CLD_EXITED | libc::CLD_KILLED | libc::CLD_DUMPED
        );
    if ended { child.wait().ok() } else { None }
}

/// The child's status once it exits, waiting for it (checked every 10 ms) without
/// taking a ptrace stop that tfwatch's stack reader waits for (see [`exited`]).
pub fn wait_exited(child: &mut std::process::Child) -> Option<std::process::ExitStatus> {
    loop {
        if let Some(status) = exited(child) {
            return Some(status);
        }
        // A child already reaped, or never ours: no exit will come.
        // SAFETY: kill with signal 0 only checks that the pid exists.
        if unsafe { libc::kill(child.id() as i32, 0) } != 0 {
            return exited(child);
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

#[cfg(test)]
mod tests {
    use super::exited;

    /// A caller that asks again after the exit (`verify` waits for the output to close
    /// too) is told the same status, not "still running" for ever.
    #[test]
    fn an_exit_once_seen_is_seen_again() {
        let mut child = std::process::Command::new("sh")
            .args(["-c", "exit 3"])
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let first = loop {
            if let Some(status) = exited(&mut child) {
                break status;
            }
            assert!(std::time::Instant::now() < deadline, "sh did not exit");
            std::thread::sleep(std::time::Duration::from_millis(10));
        };
        assert_eq!(first.code(), Some(3));
        assert_eq!(exited(&mut child).and_then(|s| s.code()), Some(3));
        assert_eq!(exited(&mut child).and_then(|s| s.code()), Some(3));
    }

    #[test]
    fn a_ptrace_stop_of_the_child_is_not_its_exit_and_stays_with_the_tracer() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let pid = child.id() as libc::pid_t;
        let (stopped_tx, stopped_rx) = std::sync::mpsc::channel();
        let (checked_tx, checked_rx) = std::sync::mpsc::channel::<()>();
        // The tracer is another thread of this process, as the stack reader is.
        let tracer = std::thread::spawn(move || {
            // SAFETY: ptrace on the child this test started; waitid into a zeroed
            // siginfo.
            unsafe {
                assert_eq!(
                    libc::ptrace(libc::PTRACE_SEIZE, pid, 0usize, 0usize),
                    0,
                    "seize"
                );
                assert_eq!(
                    libc::ptrace(libc::PTRACE_INTERRUPT, pid, 0usize, 0usize),
                    0,
                    "interrupt"
                );
                let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
                while !std::fs::read_to_string(format!("/proc/{pid}/stat"))
                    .is_ok_and(|s| s.contains(") t "))
                    && std::time::Instant::now() < deadline
                {
                    std::thread::yield_now();
                }
                stopped_tx.send(()).unwrap();
                checked_rx.recv().unwrap();
                // The stop is still the tracer's to take.
                let mut info: libc::siginfo_t = std::mem::zeroed();
                let waited = libc::waitid(
                    libc::P_PID,
                    pid as libc::id_t,
                    &mut info,
                    libc::WSTOPPED | libc::WNOHANG | libc::__WALL,
                );
                let took_it = waited == 0 && info.si_pid() == pid;
                libc::ptrace(libc::PTRACE_DETACH, pid, 0usize, 0usize);
                took_it
            }
        });
        stopped_rx.recv().unwrap();
        let seen = exited(&mut child);
        checked_tx.send(()).unwrap();
        let took_it = tracer.join().unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(
            seen.is_none(),
            "a ptrace stop was taken for an exit: {seen:?}"
        );
        assert!(took_it, "the tracer lost its stop");
    }

    #[test]
    fn only_an_exit_is_an_exit() {
        let mut running = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        assert!(exited(&mut running).is_none());
        // Stopped is not exited (a ptrace stop is reported the same way to waitpid).
        // SAFETY: a signal to the child this test started.
        unsafe { libc::kill(running.id() as i32, libc::SIGSTOP) };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while std::fs::read_to_string(format!("/proc/{}/stat", running.id()))
            .is_ok_and(|s| !s.contains(") T "))
            && std::time::Instant::now() < deadline
        {
            std::thread::yield_now();
        }
        assert!(exited(&mut running).is_none());
        running.kill().unwrap();
        let mut done = None;
        while done.is_none() && std::time::Instant::now() < deadline {
            done = exited(&mut running);
        }
        assert!(done.is_some_and(|s| !s.success()));
        let mut quick = std::process::Command::new("true").spawn().unwrap();
        let mut status = None;
        while status.is_none() && std::time::Instant::now() < deadline {
            status = exited(&mut quick);
        }
        assert!(status.is_some_and(|s| s.success()));
        // Reaped above; these only satisfy the zombie lint on every path.
        let _ = quick.wait();
        let _ = running.wait();
    }
}
