//! Whether tfwatch may trace a process, checked before any unwinder runs: libdw and
//! py-spy report a refused attach as a bare "Operation not permitted" or worse.

use std::io::IoSliceMut;
use std::path::Path;

use nix::errno::Errno;
use nix::sys::uio::{RemoteIoVec, process_vm_readv};
use nix::unistd::Pid;

/// How to get ptrace access.
pub const PTRACE_ACCESS_FIX: &str = crate::source::PTRACE_ADVICE;

/// The outcome of the access check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PtraceAccess {
    Allowed,
    Denied { reason: String, fix: &'static str },
}

fn yama_scope(proc_root: &Path) -> Option<u32> {
    std::fs::read_to_string(proc_root.join("sys/kernel/yama/ptrace_scope"))
        .ok()
        .and_then(|s| s.trim().parse().ok())
}

fn owner_uid(proc_root: &Path, pid: i32) -> Option<u32> {
    let status = std::fs::read_to_string(proc_root.join(format!("{pid}/status"))).ok()?;
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    line.split_whitespace().nth(2)?.parse().ok()
}

/// The first mapped address of the process, to probe a one-byte read.
fn first_mapping(proc_root: &Path, pid: i32) -> Result<u64, Errno> {
    let maps = std::fs::read_to_string(proc_root.join(format!("{pid}/maps"))).map_err(|e| {
        e.raw_os_error()
            .map(Errno::from_raw)
            .unwrap_or(Errno::EACCES)
    })?;
    maps.lines()
        .filter(|l| {
            l.split_whitespace()
                .nth(1)
                .is_some_and(|p| p.starts_with('r'))
        })
        .find_map(|l| {
            let start = l.split('-').next()?;
            u64::from_str_radix(start, 16).ok()
        })
        .ok_or(Errno::EACCES)
}

/// The pid of a process tracing a thread of `pid` (a debugger or another profiler), if
/// any: a traced thread cannot be attached a second time.
pub fn tracer(proc_root: &Path, pid: i32) -> Option<i32> {
    let tasks = std::fs::read_dir(proc_root.join(format!("{pid}/task"))).ok()?;
    tasks.filter_map(Result::ok).find_map(|task| {
        let status = std::fs::read_to_string(task.path().join("status")).ok()?;
        let line = status.lines().find(|l| l.starts_with("TracerPid:"))?;
        line.split_whitespace()
            .nth(1)?
            .parse()
            .ok()
            .filter(|&p: &i32| p != 0)
    })
}

/// Whether `pid` is a kernel thread (PF_KTHREAD in the flags of `stat`): it has no
/// user-space memory to read, whoever reads it.
fn is_kernel_thread(proc_root: &Path, pid: i32) -> bool {
    const PF_KTHREAD: u64 = 0x0020_0000;
    let Ok(stat) = std::fs::read_to_string(proc_root.join(format!("{pid}/stat"))) else {
        return false;
    };
    // After the comm: state, ppid, pgrp, session, tty_nr, tpgid, flags.
    stat.rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().nth(6))
        .and_then(|flags| flags.parse::<u64>().ok())
        .is_some_and(|flags| flags & PF_KTHREAD != 0)
}

/// Checks ptrace access to `pid` with a one-byte `process_vm_readv`, which the kernel
/// allows under the same rule as a ptrace attach (PTRACE_MODE_ATTACH).
pub fn check_ptrace(proc_root: &Path, pid: i32) -> PtraceAccess {
    let denied = |why: String| {
        // SAFETY: geteuid has no preconditions.
        let us = unsafe { libc::geteuid() };
        let owner = owner_uid(proc_root, pid)
            .map(|u| format!("owned by uid {u}"))
            .unwrap_or_else(|| "owner unknown".into());
        let scope = yama_scope(proc_root)
            .map(|s| format!("kernel.yama.ptrace_scope = {s}"))
            .unwrap_or_else(|| "no Yama ptrace_scope".into());
        PtraceAccess::Denied {
            reason: format!(
                "no ptrace access to pid {pid} ({why}; the process is {owner}, tfwatch runs as uid {us}; {scope}): stacks need to attach to it"
            ),
            fix: PTRACE_ACCESS_FIX,
        }
    };
    if let Some(tracer) = tracer(proc_root, pid) {
        return PtraceAccess::Denied {
            reason: format!(
                "pid {pid} is already traced by pid {tracer} (a debugger or another profiler): a process can have one tracer"
            ),
            fix: "detach the other tracer (gdb: `detach`), then take the stacks again",
        };
    }
    if is_kernel_thread(proc_root, pid) {
        return PtraceAccess::Denied {
            reason: format!(
                "pid {pid} is a kernel thread: it has no user-space memory, maps or stacks"
            ),
            fix: "",
        };
    }
    if yama_scope(proc_root) == Some(3) {
        return denied("kernel.yama.ptrace_scope is 3: no process may attach to another".into());
    }
    let address = match first_mapping(proc_root, pid) {
        Ok(a) => a,
        Err(Errno::ENOENT | Errno::ESRCH) => {
            return PtraceAccess::Denied {
                reason: format!("process {pid} exited while it was read"),
                fix: "",
            };
        }
        Err(errno) => return denied(format!("cannot read /proc/{pid}/maps: {errno}")),
    };
    let mut byte = [0u8; 1];
    let mut local = [IoSliceMut::new(&mut byte)];
    let remote = [RemoteIoVec {
        base: usize::try_from(address).unwrap_or(0),
        len: 1,
    }];
    match process_vm_readv(Pid::from_raw(pid), &mut local, &remote) {
        Ok(_) => PtraceAccess::Allowed,
        Err(Errno::EPERM | Errno::EACCES) => denied("the kernel refused to read its memory".into()),
        Err(Errno::ESRCH) => PtraceAccess::Denied {
            reason: format!("process {pid} exited while it was read"),
            fix: "",
        },
        // A mapping that cannot be read (a guard page): access itself was granted.
        Err(_) => PtraceAccess::Allowed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_process_is_traceable_and_a_missing_one_is_gone() {
        assert_eq!(
            check_ptrace(Path::new("/proc"), std::process::id() as i32),
            PtraceAccess::Allowed
        );
        match check_ptrace(Path::new("/proc"), i32::MAX) {
            PtraceAccess::Denied { reason, .. } => assert!(reason.contains("exited"), "{reason}"),
            PtraceAccess::Allowed => panic!("no such pid"),
        }
        // kthreadd: no advice to run as root, which tfwatch may already be.
        match check_ptrace(Path::new("/proc"), 2) {
            PtraceAccess::Denied { reason, fix } => {
                assert!(reason.contains("pid 2 is a kernel thread"), "{reason}");
                assert!(fix.is_empty(), "{fix}");
            }
            PtraceAccess::Allowed => panic!("a kernel thread has no memory to trace"),
        }
    }
}
