//! What a thread is waiting for, judged from its state, wait channel and system call.
//!
//! The hang detector needs to tell a thread stuck on a lock from one idling in
//! `epoll_wait` on an idle server: both show 0 % CPU, only one is a hang.

use crate::model::{Syscall, ThreadSample};

/// What a thread is doing, for the detectors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum WaitKind {
    /// On a CPU or waiting for one (state R).
    Running,
    /// Blocked on a lock: untimed futex waits on a word private to the process
    /// (pthread mutexes, condition variables, Python locks — or a pool worker waiting
    /// for work: only the stacks tell which), file locks, kernel mutexes and semaphores.
    Lock,
    /// An untimed futex wait on a word that may lie in memory shared with other
    /// processes (no `FUTEX_PRIVATE_FLAG`: multiprocessing's semaphores in `/dev/shm`,
    /// process-shared mutexes): judged by the processes at the other end.
    Shared,
    /// Idle by design, waiting for input: epoll, poll, select, accept, socket or pipe
    /// reads, waiting for a child. A process with such a thread may just have no work.
    Input,
    /// Sleeping on a timer (nanosleep), or in a futex wait with a timeout: it ends by
    /// itself (a heartbeat, a watchdog, a timed `Event.wait`, the GIL's 5 ms wait).
    Sleep,
    /// Uninterruptible sleep, normally disk or network file-system I/O (state D).
    Io,
    /// Stopped by a signal or a tracer (T, t).
    Stopped,
    /// Zombie or dead.
    Dead,
    /// Sleeping where tfwatch cannot tell why (wait channel unreadable or unknown).
    Unknown,
}

impl WaitKind {
    pub fn as_str(self) -> &'static str {
        match self {
            WaitKind::Running => "running",
            WaitKind::Lock => "lock",
            WaitKind::Shared => "shared",
            WaitKind::Input => "input",
            WaitKind::Sleep => "sleep",
            WaitKind::Io => "io",
            WaitKind::Stopped => "stopped",
            WaitKind::Dead => "dead",
            WaitKind::Unknown => "unknown",
        }
    }
}

const LOCK_WCHANS: &[&str] = &[
    "futex",
    "locks_lock_inode_wait",
    "flock_lock_inode_wait",
    "locks_lock_file_wait",
    "__flock",
    "fcntl_setlk",
    "rwsem_down",
    "mutex_lock",
    "__mutex_lock",
    "do_semtimedop",
    "sem_wait",
];

const SLEEP_WCHANS: &[&str] = &["nanosleep", "hrtimer", "usleep_range"];

const INPUT_WCHANS: &[&str] = &[
    "epoll",
    "select",
    "poll",
    "accept",
    "sk_wait",
    "wait_woken",
    "pipe_read",
    "pipe_wait",
    "anon_pipe_read",
    "unix_stream",
    "unix_dgram",
    "tty",
    "do_wait",
    "sigsuspend",
    "sys_pause",
    "sigtimedwait",
    "inet_csk",
    "tcp_recv",
    "skb_wait",
    "worker_thread",
    "read_events",
    "io_cqring_wait",
    "wait_for_completion",
];

/// System calls that mean "blocked on a lock" by themselves.
const LOCK_SYSCALLS: &[&str] = &["futex", "flock", "semop", "semtimedop"];

const SLEEP_SYSCALLS: &[&str] = &["nanosleep", "clock_nanosleep"];

/// System calls of a thread waiting for input.
const INPUT_SYSCALLS: &[&str] = &[
    "epoll_wait",
    "epoll_pwait",
    "epoll_pwait2",
    "poll",
    "ppoll",
    "select",
    "pselect6",
    "accept",
    "accept4",
    "recvfrom",
    "recvmsg",
    "read",
    "wait4",
    "waitid",
    "rt_sigtimedwait",
    "rt_sigsuspend",
    "pause",
    "io_getevents",
    "io_uring_enter",
];

pub use crate::model::{FutexWait, futex_wait};

/// Classifies a thread from its state letter, wait channel and system call.
pub fn classify(thread: &ThreadSample) -> WaitKind {
    match thread.state {
        'R' => return WaitKind::Running,
        'D' => return WaitKind::Io,
        'T' | 't' => return WaitKind::Stopped,
        'Z' | 'X' | 'x' => return WaitKind::Dead,
        _ => {}
    }
    match futex_wait(thread) {
        Some(FutexWait { timed: true, .. }) => return WaitKind::Sleep,
        Some(FutexWait { private: false, .. }) => return WaitKind::Shared,
        Some(_) => return WaitKind::Lock,
        None => {}
    }
    if let Some(wchan) = thread.wchan.as_deref() {
        if LOCK_WCHANS.iter().any(|w| wchan.contains(w)) {
            return WaitKind::Lock;
        }
        if SLEEP_WCHANS.iter().any(|w| wchan.contains(w)) {
            return WaitKind::Sleep;
        }
        if INPUT_WCHANS.iter().any(|w| wchan.contains(w)) {
            return WaitKind::Input;
        }
    }
    if let Some(Syscall::InSyscall {
        name: Some(name), ..
    }) = &thread.syscall
    {
        if LOCK_SYSCALLS.contains(&name.as_ref()) {
            return WaitKind::Lock;
        }
        if SLEEP_SYSCALLS.contains(&name.as_ref()) {
            return WaitKind::Sleep;
        }
        if INPUT_SYSCALLS.contains(&name.as_ref()) {
            return WaitKind::Input;
        }
    }
    WaitKind::Unknown
}

#[cfg(test)]
mod tests {
    use super::*;

    fn thread(state: char, wchan: Option<&str>, syscall: Option<&str>) -> ThreadSample {
        ThreadSample {
            state,
            wchan: wchan.map(str::to_string),
            syscall: syscall.map(|name| Syscall::InSyscall {
                number: 0,
                name: Some(name.to_string().into()),
                args: [0; 6],
            }),
            ..ThreadSample::default()
        }
    }

    #[test]
    fn lock_waits_from_wchan_or_syscall() {
        assert_eq!(
            classify(&thread('S', Some("futex_do_wait"), None)),
            WaitKind::Lock
        );
        assert_eq!(
            classify(&thread('S', Some("futex_wait_queue_me"), None)),
            WaitKind::Lock
        );
        // FUTEX_WAIT without the private flag: a word that may be shared.
        assert_eq!(
            classify(&thread('S', None, Some("futex"))),
            WaitKind::Shared
        );
        assert_eq!(
            classify(&thread('S', Some("locks_lock_inode_wait"), None)),
            WaitKind::Lock
        );
    }

    #[test]
    fn idle_servers_and_sleepers_are_idle() {
        for wchan in [
            "do_epoll_wait",
            "inet_csk_accept",
            "anon_pipe_read",
            "poll_schedule_timeout.constprop.0",
        ] {
            assert_eq!(
                classify(&thread('S', Some(wchan), None)),
                WaitKind::Input,
                "{wchan}"
            );
        }
        assert_eq!(
            classify(&thread('S', None, Some("epoll_wait"))),
            WaitKind::Input
        );
        assert_eq!(
            classify(&thread('S', Some("hrtimer_nanosleep"), None)),
            WaitKind::Sleep
        );
        assert_eq!(
            classify(&thread('S', None, Some("clock_nanosleep"))),
            WaitKind::Sleep
        );
    }

    fn futex(op: u64, timeout: u64) -> ThreadSample {
        ThreadSample {
            state: 'S',
            wchan: Some("futex_do_wait".into()),
            syscall: Some(Syscall::InSyscall {
                number: 202,
                name: Some("futex".into()),
                args: [0x7f00_0000_1000, op, 0, timeout, 0, 0],
            }),
            ..ThreadSample::default()
        }
    }

    #[test]
    fn futex_waits_by_flag_and_timeout() {
        // FUTEX_WAIT_BITSET_PRIVATE without a timeout: a private lock or condition.
        assert_eq!(classify(&futex(9 | 128, 0)), WaitKind::Lock);
        // The same with a timeout: it ends by itself.
        assert_eq!(classify(&futex(9 | 128, 0x7ffd_0000)), WaitKind::Sleep);
        assert_eq!(
            classify(&futex(9 | 128 | 256, 0x7ffd_0000)),
            WaitKind::Sleep
        );
        // No private flag: a word that may be shared with other processes.
        assert_eq!(classify(&futex(0, 0)), WaitKind::Shared);
        assert_eq!(
            futex_wait(&futex(0, 0)),
            Some(FutexWait {
                address: 0x7f00_0000_1000,
                private: false,
                timed: false
            })
        );
        // FUTEX_WAKE does not block: the wait channel decides.
        assert_eq!(futex_wait(&futex(1 | 128, 0)), None);
        assert_eq!(classify(&futex(1 | 128, 0)), WaitKind::Lock);
    }

    #[test]
    fn states_decide_first() {
        assert_eq!(
            classify(&thread('R', Some("futex_do_wait"), None)),
            WaitKind::Running
        );
        assert_eq!(classify(&thread('D', None, None)), WaitKind::Io);
        assert_eq!(classify(&thread('Z', None, None)), WaitKind::Dead);
        assert_eq!(classify(&thread('S', None, None)), WaitKind::Unknown);
        assert_eq!(
            classify(&thread('S', Some("something_else"), None)),
            WaitKind::Unknown
        );
    }
}
