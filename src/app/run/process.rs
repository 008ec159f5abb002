//! The command `run` starts: spawning it in its own process group, signalling and
//! ending its tree, reaping orphans (tfwatch is a child subreaper).

use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, Command, ExitStatus};
use std::time::{Duration, Instant};

/// Starts the command in its own process group with inherited stdio.
pub fn spawn(command: &[String]) -> std::result::Result<Child, (u8, String)> {
    let Some((program, args)) = command.split_first() else {
        return Err((
            crate::app::exit::TFWATCH_FAILED,
            "no command given after --".to_string(),
        ));
    };
    let mut cmd = Command::new(program);
    cmd.args(args).process_group(0);
    cmd.spawn().map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => (
            crate::app::exit::NOT_FOUND,
            format!("command not found: {program:?} (check the name and PATH)"),
        ),
        std::io::ErrorKind::PermissionDenied => (
            crate::app::exit::CANNOT_EXECUTE,
            format!("cannot execute {program:?}: permission denied (is it executable?)"),
        ),
        _ => (
            crate::app::exit::CANNOT_EXECUTE,
            format!("cannot execute {program:?}: {e}"),
        ),
    })
}

pub fn signal_group(pgid: i32, signal: libc::c_int) {
    // SAFETY: kill(2) with a negative pid signals the process group we created.
    unsafe {
        libc::kill(-pgid, signal);
    }
}

pub fn signal_pid(pid: i32, signal: libc::c_int) {
    // SAFETY: kill(2) on a pid of the command's tree, which we started.
    unsafe {
        libc::kill(pid, signal);
    }
}

/// Reaps any child (the command, or orphans adopted as subreaper) without blocking.
pub fn reap_orphans() {
    loop {
        // SAFETY: waitpid with WNOHANG on any child; status is a valid out-pointer.
        let mut status = 0;
        let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
        if pid <= 0 {
            break;
        }
    }
}

/// Ends the command's tree: SIGTERM to its group and every known pid, a grace period,
/// then SIGKILL. Returns the command's status.
pub fn terminate(child: &mut Child, tree: &[i32], grace: Duration) -> Option<ExitStatus> {
    let pgid = child.id() as i32;
    signal_group(pgid, libc::SIGTERM);
    for &pid in tree {
        signal_pid(pid, libc::SIGTERM);
    }
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            signal_group(pgid, libc::SIGKILL);
            for &pid in tree {
                signal_pid(pid, libc::SIGKILL);
            }
            reap_orphans();
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    signal_group(pgid, libc::SIGKILL);
    for &pid in tree {
        signal_pid(pid, libc::SIGKILL);
    }
    let status = child.wait().ok();
    reap_orphans();
    status
}

pub fn status_code(status: ExitStatus) -> i32 {
    status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(1)
}
