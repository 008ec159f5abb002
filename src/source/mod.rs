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
/// end (and steal the stop from the reader).
pub fn exited(child: &mut std::process::Child) -> Option<std::process::ExitStatus> {
    // SAFETY: waitid with a zeroed siginfo out-parameter; WNOWAIT leaves the child
    // waitable, so the reap below gets its status.
    let ended = unsafe {
        let mut info: libc::siginfo_t = std::mem::zeroed();
        libc::waitid(
            libc::P_PID,
            child.id(),
            &mut info,
            libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
        ) == 0
            && info.si_pid() != 0
    };
    if ended { child.wait().ok() } else { None }
}

#[cfg(test)]
mod tests {
    use super::exited;

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
