//! What the benches share: a forked target process, and CPU time from `getrusage`.
//! Each bench includes this module and uses part of it.
#![allow(dead_code)]

/// A forked process that starts its threads, says so, and then waits to be killed.
pub struct Target {
    pub pid: i32,
}

impl Target {
    /// Forks; the child runs `start_threads` (false: it could not) and then blocks.
    /// Returns once the child has started its threads. Call it while the bench has one
    /// thread: the child of a multi-threaded process may only call async-signal-safe
    /// functions, and `start_threads` does more.
    pub fn fork(start_threads: impl FnOnce() -> bool) -> Target {
        let own_threads = std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("Threads:").map(|n| n.trim().to_string()))
            })
            .unwrap_or_default();
        assert_eq!(
            own_threads, "1",
            "fork the target only while the bench has one thread"
        );
        let mut fds = [0; 2];
        // SAFETY: plain system calls; the parent is single-threaded (checked above), and
        // the child only starts threads and blocks.
        unsafe {
            assert_eq!(libc::pipe(fds.as_mut_ptr()), 0, "pipe");
            let pid = libc::fork();
            assert!(pid >= 0, "fork");
            if pid == 0 {
                libc::close(fds[0]);
                if !start_threads() {
                    libc::_exit(1);
                }
                libc::write(fds[1], b"r".as_ptr().cast(), 1);
                loop {
                    libc::pause();
                }
            }
            libc::close(fds[1]);
            let mut ready = [0u8; 1];
            let read = libc::read(fds[0], ready.as_mut_ptr().cast(), 1);
            libc::close(fds[0]);
            assert_eq!(read, 1, "target process did not start its threads");
            Target { pid }
        }
    }

    /// Waits until the target has `threads` threads, every one asleep (`S`), so that
    /// no measurement sees them still starting; panics after ten seconds.
    pub fn wait_until_asleep(&self, threads: usize) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let tids = self.tids();
            let asleep = tids.iter().all(|tid| {
                std::fs::read_to_string(format!("/proc/{}/task/{tid}/stat", self.pid)).is_ok_and(
                    |stat| {
                        stat.rsplit_once(") ")
                            .is_some_and(|(_, rest)| rest.starts_with('S'))
                    },
                )
            });
            if tids.len() == threads && asleep {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the target's {threads} threads did not all fall asleep"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    /// The thread ids of the target.
    pub fn tids(&self) -> Vec<i32> {
        std::fs::read_dir(format!("/proc/{}/task", self.pid))
            .map(|entries| {
                entries
                    .filter_map(Result::ok)
                    .filter_map(|e| e.file_name().to_str()?.parse().ok())
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        // SAFETY: ends and reaps the process this bench forked, by its pid.
        unsafe {
            libc::kill(self.pid, libc::SIGKILL);
            libc::waitpid(self.pid, std::ptr::null_mut(), 0);
        }
    }
}

/// CPU seconds used by this thread, and by reaped children.
pub fn cpu_seconds() -> (f64, f64) {
    fn seconds(usage: &libc::rusage) -> f64 {
        let user = usage.ru_utime.tv_sec as f64 + usage.ru_utime.tv_usec as f64 / 1e6;
        let system = usage.ru_stime.tv_sec as f64 + usage.ru_stime.tv_usec as f64 / 1e6;
        user + system
    }
    // SAFETY: getrusage writes into the zeroed structs passed by pointer.
    unsafe {
        let mut thread: libc::rusage = std::mem::zeroed();
        let mut children: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_THREAD, &mut thread);
        libc::getrusage(libc::RUSAGE_CHILDREN, &mut children);
        (seconds(&thread), seconds(&children))
    }
}

/// A forked process of `threads` sleeping threads, each blocked in `park()`.
pub fn sleeping_threads(threads: usize) -> Target {
    Target::fork(|| {
        (1..threads).all(|_| {
            std::thread::Builder::new()
                .stack_size(64 * 1024)
                .spawn(|| {
                    loop {
                        std::thread::park();
                    }
                })
                .is_ok()
        })
    })
}
