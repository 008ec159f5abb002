//! The command `run` starts: spawning it in its own process group (in the terminal's
//! foreground when tfwatch holds it), signalling and ending its tree, reaping orphans
//! (tfwatch is a child subreaper).

use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::{Child, Command, ExitStatus};
use std::time::{Duration, Instant};

/// How long to wait for the command after SIGKILL before giving up on it (a process in
/// uninterruptible sleep cannot die until its I/O returns).
pub const KILL_WAIT: Duration = Duration::from_secs(5);

/// Whether tfwatch's stdin is a terminal whose foreground process group is tfwatch's:
/// then the command gets the foreground, so it can read the terminal.
pub fn holds_terminal_foreground() -> bool {
    // SAFETY: isatty, tcgetpgrp and getpgrp only read the state of fd 0 and our group.
    unsafe { libc::isatty(0) == 1 && libc::tcgetpgrp(0) == libc::getpgrp() }
}

/// Starts the command in its own process group with inherited stdio. It is killed
/// (SIGKILL, `PR_SET_PDEATHSIG`) when tfwatch dies; with `foreground`, its group is
/// made the terminal's foreground group before it runs.
pub fn spawn(command: &[String], foreground: bool) -> std::result::Result<Child, (u8, String)> {
    let Some((program, args)) = command.split_first() else {
        return Err((
            crate::app::exit::USAGE,
            "no command given after --".to_string(),
        ));
    };
    let mut cmd = Command::new(program);
    cmd.args(args).process_group(0);
    // SAFETY: getpid has no preconditions.
    let parent = unsafe { libc::getpid() };
    // SAFETY: the closure runs in the child between fork and exec and calls only
    // async-signal-safe functions (prctl, getppid, signal, tcsetpgrp, getpid, _exit).
    unsafe {
        cmd.pre_exec(move || {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0);
            if libc::getppid() != parent {
                // tfwatch died before the prctl took effect.
                libc::_exit(125);
            }
            if foreground {
                // A background group calling tcsetpgrp gets SIGTTOU unless it ignores it.
                let old = libc::signal(libc::SIGTTOU, libc::SIG_IGN);
                libc::tcsetpgrp(0, libc::getpid());
                libc::signal(libc::SIGTTOU, old);
            }
            Ok(())
        });
    }
    cmd.spawn().map_err(|e| spawn_error(program, &e))
}

fn spawn_error(program: &str, e: &std::io::Error) -> (u8, String) {
    let path = Path::new(program);
    match e.kind() {
        std::io::ErrorKind::NotFound => (
            crate::app::exit::NOT_FOUND,
            format!("command not found: {program:?} (check the name and PATH)"),
        ),
        _ if program.contains('/') && path.is_dir() => (
            crate::app::exit::CANNOT_EXECUTE,
            format!("cannot execute {program:?}: is a directory"),
        ),
        std::io::ErrorKind::PermissionDenied => (
            crate::app::exit::CANNOT_EXECUTE,
            format!("cannot execute {program:?}: permission denied (is it executable?)"),
        ),
        _ => (
            crate::app::exit::CANNOT_EXECUTE,
            format!("cannot execute {program:?}: {e}"),
        ),
    }
}

/// Takes the terminal's foreground back for tfwatch's group after the command ended.
pub fn take_terminal_foreground() {
    // SAFETY: SIGTTOU is ignored while tcsetpgrp runs (tfwatch is then a background
    // group) and restored after; fd 0 is our terminal.
    unsafe {
        let old = libc::signal(libc::SIGTTOU, libc::SIG_IGN);
        libc::tcsetpgrp(0, libc::getpgrp());
        libc::signal(libc::SIGTTOU, old);
    }
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

fn signal_tree(pgid: i32, tree: &[i32], signal: libc::c_int) {
    signal_group(pgid, signal);
    for &pid in tree {
        signal_pid(pid, signal);
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

/// A process the command left running: tfwatch, a child subreaper, adopted it when its
/// parent ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Orphan {
    pub pid: i32,
    /// Its command line (cut short, control characters escaped), or `[comm]`.
    pub command: String,
}

/// At most this many characters of an orphan's command line are shown.
const ORPHAN_COMMAND_CHARS: usize = 80;

/// tfwatch's live children under `proc_root` other than `except`: once the command has
/// exited and been waited for, what it left running (zombies are left to
/// [`reap_orphans`]). A child's pid cannot be reused before tfwatch reaps it, so
/// signalling these pids reaches these processes.
pub fn adopted_children(proc_root: &Path, except: i32) -> Vec<Orphan> {
    adopted_children_named(proc_root, except, None)
}

/// [`adopted_children`], each named once its command line settles: read again (for at
/// most [`CMDLINE_SETTLE`]) while it reads empty or is `command`'s own (a fork of the
/// command that has not yet exec'd the program it runs).
pub fn adopted_children_named(proc_root: &Path, except: i32, command: Option<&str>) -> Vec<Orphan> {
    // SAFETY: getpid has no preconditions.
    let me = unsafe { libc::getpid() };
    let Ok(entries) = std::fs::read_dir(proc_root) else {
        return Vec::new();
    };
    let mut orphans: Vec<Orphan> = entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| pid != except && pid != me)
        .filter_map(|pid| {
            let dir = proc_root.join(pid.to_string());
            let stat = std::fs::read(dir.join("stat")).ok()?;
            let stat = crate::source::proc::parsers::parse_stat(&stat).ok()?;
            if stat.ppid != me || matches!(stat.state, 'Z' | 'X' | 'x') {
                return None;
            }
            let cmdline = settled_cmdline(&dir, command);
            let command = if cmdline.is_empty() {
                format!("[{}]", stat.comm)
            } else {
                crate::sink::html::shorten(&cmdline, ORPHAN_COMMAND_CHARS).into_owned()
            };
            // Said on a terminal: its control and bidi characters made visible.
            let command = crate::units::escape_controls(&command, false).into_owned();
            Some(Orphan { pid, command })
        })
        .collect();
    orphans.sort_by_key(|o| o.pid);
    orphans
}

/// How long a command line that reads empty is read again: a process adopted in the
/// middle of its `exec` has its new name before its new arguments.
const CMDLINE_SETTLE: Duration = Duration::from_millis(200);

/// The command line under `dir`, read again (for at most [`CMDLINE_SETTLE`]) while it
/// reads empty or is `unsettled`; what it reads then (empty: a process that cleared its
/// arguments).
fn settled_cmdline(dir: &Path, unsettled: Option<&str>) -> String {
    let deadline = Instant::now() + CMDLINE_SETTLE;
    loop {
        let cmdline = std::fs::read(dir.join("cmdline"))
            .map(|bytes| crate::source::proc::parsers::parse_cmdline(&bytes).join(" "))
            .unwrap_or_default();
        let settled = !cmdline.is_empty() && unsettled != Some(cmdline.as_str());
        if settled || Instant::now() >= deadline {
            return cmdline;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Ends what the command left running: SIGTERM (and SIGCONT, for a stopped one) to each
/// adopted child, again to those adopted meanwhile (the children of an ended daemon
/// come to tfwatch next), for `grace`; then SIGKILL, for at most [`KILL_WAIT`]. Returns
/// those still there at the end (uninterruptible sleep).
pub fn end_orphans(proc_root: &Path, except: i32, grace: Duration) -> Vec<Orphan> {
    let mut signalled = std::collections::HashSet::new();
    let term_until = Instant::now().checked_add(grace);
    loop {
        reap_orphans();
        let live = adopted_children(proc_root, except);
        if live.is_empty() {
            return live;
        }
        for orphan in &live {
            if signalled.insert(orphan.pid) {
                signal_pid(orphan.pid, libc::SIGTERM);
                signal_pid(orphan.pid, libc::SIGCONT);
            }
        }
        if term_until.is_some_and(|until| Instant::now() >= until) {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let kill_until = Instant::now() + KILL_WAIT;
    loop {
        reap_orphans();
        let live = adopted_children(proc_root, except);
        if live.is_empty() || Instant::now() >= kill_until {
            return live;
        }
        for orphan in &live {
            signal_pid(orphan.pid, libc::SIGKILL);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The orphans by pid and command, at most ten of them: "pid 12 (sleep 37), pid 13
/// (sleep 37.5)".
pub fn name_orphans(orphans: &[Orphan]) -> String {
    const SHOWN: usize = 10;
    let mut named: Vec<String> = orphans
        .iter()
        .take(SHOWN)
        .map(|o| format!("pid {} ({})", o.pid, o.command))
        .collect();
    if orphans.len() > SHOWN {
        named.push(format!("and {} more", orphans.len() - SHOWN));
    }
    named.join(", ")
}

/// Polls `poll` until it gives a status or `wait` has passed.
pub fn wait_with_deadline(
    wait: Duration,
    mut poll: impl FnMut() -> Option<ExitStatus>,
) -> Option<ExitStatus> {
    let deadline = Instant::now().checked_add(wait);
    loop {
        if let Some(status) = poll() {
            return Some(status);
        }
        if deadline.is_none_or(|d| Instant::now() >= d) {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// What to say when `pid` is still there after SIGKILL: where it sleeps, from `wchan`.
pub fn not_exited_message(proc_root: &Path, pid: i32) -> String {
    let wchan = std::fs::read_to_string(proc_root.join(pid.to_string()).join("wchan"))
        .ok()
        .map(|w| w.trim().to_string())
        .filter(|w| !w.is_empty() && w != "0");
    let frozen = crate::source::stacks::frozen_cgroup(proc_root, pid).or_else(|| {
        wchan
            .as_deref()
            .filter(|w| crate::model::waits::is_freezer_wait(w))
            .map(|w| format!("its threads wait in {w}"))
    });
    match frozen {
        Some(how) => format!(
            "{}; SIGKILL takes effect once it is; going on without it",
            crate::model::waits::frozen_process(pid, &how)
        ),
        _ => format!(
            "pid {pid} did not exit after SIGKILL (uninterruptible sleep in {}?); going on without it",
            wchan.as_deref().unwrap_or("the kernel")
        ),
    }
}

/// Ends the command's tree: `signal` to its group and every known pid (with SIGCONT, so
/// a stopped command receives it), a grace period, then SIGKILL and at most
/// [`KILL_WAIT`] for it to go. Returns the command's status; `None` when it did not go
/// (the caller says so with [`not_exited_message`]).
pub fn terminate_with(
    child: &mut Child,
    tree: &[i32],
    signal: libc::c_int,
    grace: Duration,
) -> Option<ExitStatus> {
    let pgid = child.id() as i32;
    signal_tree(pgid, tree, signal);
    signal_tree(pgid, tree, libc::SIGCONT);
    let status = wait_with_deadline(grace, || exited(child));
    signal_tree(pgid, tree, libc::SIGKILL);
    let status = status.or_else(|| wait_with_deadline(KILL_WAIT, || exited(child)));
    reap_orphans();
    status
}

pub use crate::source::exited;

/// [`terminate_with`] SIGTERM.
pub fn terminate(child: &mut Child, tree: &[i32], grace: Duration) -> Option<ExitStatus> {
    terminate_with(child, tree, libc::SIGTERM, grace)
}

pub fn status_code(status: ExitStatus) -> i32 {
    status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(1)
}

/// The signal's name ("SIGSEGV"), or "signal N".
pub fn signal_name(signal: i32) -> String {
    nix::sys::signal::Signal::try_from(signal)
        .map(|s| s.as_str().to_string())
        .unwrap_or_else(|_| format!("signal {signal}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fork of the command caught before its `exec` shows the command's own line: it
    /// is named by the program it runs once the exec is through.
    #[test]
    fn a_fork_of_the_command_is_named_after_its_exec() {
        let root = std::env::temp_dir().join(format!("tfwatch-forked-{}", std::process::id()));
        // SAFETY: getpid has no preconditions.
        let me = unsafe { libc::getpid() };
        let dir = root.join("4250");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("stat"),
            format!("4250 (sh) S {me} 1 1 0 -1 4194368 3 6504 0 0 0 0 3 1 20 0 1 0 62862 92667904 3429 18446744073709551615 0 0 0 0 0 0 0 16781312 2 1 0 0 -1 0 0 0 0 0 0 0 0 0 0 0 0 0 0\n"),
        )
        .unwrap();
        std::fs::write(dir.join("cmdline"), b"sh\0-c\0sleep 9 & exit 0\0").unwrap();
        let execs = {
            let dir = dir.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(50));
                std::fs::write(dir.join("cmdline"), b"sleep\09\0").unwrap();
            })
        };
        let named = adopted_children_named(&root, 1, Some("sh -c sleep 9 & exit 0"));
        execs.join().unwrap();
        let _ = std::fs::remove_dir_all(&root);
        assert_eq!(
            named,
            [Orphan {
                pid: 4250,
                command: "sleep 9".into()
            }]
        );
    }

    #[test]
    fn adopted_children_are_the_live_children_of_tfwatch_with_their_commands_escaped() {
        let root = std::env::temp_dir().join(format!("tfwatch-orphans-{}", std::process::id()));
        // SAFETY: getpid has no preconditions.
        let me = unsafe { libc::getpid() };
        let stat = |pid: i32, state: char, ppid: i32| {
            format!(
                "{pid} (x) {state} {ppid} 1 1 0 -1 4194368 3 6504 0 0 0 0 3 1 20 0 1 0 62862 92667904 3429 18446744073709551615 0 0 0 0 0 0 0 16781312 2 1 0 0 -1 0 0 0 0 0 0 0 0 0 0 0 0 0 0\n"
            )
        };
        for (pid, state, ppid, cmdline) in [
            (4242, 'S', me, &b"evil\x1b]0;x\x07\0\xe2\x80\xaeargs\0"[..]),
            (4243, 'Z', me, &b""[..]),
            (4244, 'S', 1, &b"other\0"[..]),
            (4245, 'S', me, &b""[..]),
            (4246, 'S', me, &b"the command\0"[..]),
        ] {
            let dir = root.join(pid.to_string());
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("stat"), stat(pid, state, ppid)).unwrap();
            std::fs::write(dir.join("cmdline"), cmdline).unwrap();
        }
        let orphans = adopted_children(&root, 4246);
        assert_eq!(
            orphans,
            vec![
                Orphan {
                    pid: 4242,
                    command: "evil\\x1b]0;x\\x07 \\u{202e}args".into()
                },
                Orphan {
                    pid: 4245,
                    command: "[x]".into()
                },
            ]
        );
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn at_most_ten_orphans_are_named() {
        let orphans: Vec<Orphan> = (1..=12)
            .map(|pid| Orphan {
                pid,
                command: format!("sleep {pid}"),
            })
            .collect();
        let named = name_orphans(&orphans);
        assert!(
            named.starts_with("pid 1 (sleep 1), pid 2 (sleep 2),"),
            "{named}"
        );
        assert!(named.ends_with("pid 10 (sleep 10), and 2 more"), "{named}");
        assert_eq!(name_orphans(&orphans[..1]), "pid 1 (sleep 1)");
    }

    #[test]
    fn the_wait_after_sigkill_has_a_deadline() {
        let started = Instant::now();
        assert_eq!(
            wait_with_deadline(Duration::from_millis(100), || None),
            None
        );
        assert!(started.elapsed() >= Duration::from_millis(100));
        assert!(started.elapsed() < Duration::from_secs(5));
        let done = ExitStatus::from_raw(0);
        assert_eq!(wait_with_deadline(Duration::MAX, || Some(done)), Some(done));
    }

    #[test]
    fn a_pid_that_does_not_die_is_named_with_its_wchan() {
        let dir = std::env::temp_dir().join(format!("tfwatch-wchan-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("42")).unwrap();
        std::fs::write(dir.join("42/wchan"), "nfs_wait_bit_killable").unwrap();
        assert_eq!(
            not_exited_message(&dir, 42),
            "pid 42 did not exit after SIGKILL (uninterruptible sleep in nfs_wait_bit_killable?); going on without it"
        );
        assert!(not_exited_message(&dir, 43).contains("in the kernel?"));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn signal_names() {
        assert_eq!(signal_name(11), "SIGSEGV");
        assert_eq!(signal_name(999), "signal 999");
    }
}
