//! Lock owners of futex waiters, read from the target's memory without stopping it.
//!
//! A thread blocked in `futex` shows the wait address, the operation and the value it
//! expected in `task/<tid>/syscall`. Where the wait looks like a glibc
//! `pthread_mutex_t` (C's pthread mutexes, C++'s `std::mutex` through libstdc++), the
//! first words of the mutex are read with `process_vm_readv` — which needs ptrace access
//! but never stops the target — and give the owner's tid:
//!
//! ```text
//! struct __pthread_mutex_s {      // x86_64 and aarch64 (glibc's generic layout)
//!     int __lock;      // +0  the futex word: 0 free, 1 held, 2 held with waiters;
//!                      //     robust/PI mutexes: owner tid | FUTEX_WAITERS
//!     unsigned __count;// +4  recursion count
//!     int __owner;     // +8  owner tid (every kind)
//!     unsigned __nusers;//+12
//!     int __kind;      // +16 type and flag bits
//!     ...
//! };
//! ```
//!
//! A wait is taken for a mutex only when its operation and expected value are those of
//! glibc's lock paths (`FUTEX_WAIT`/`FUTEX_WAIT_BITSET` expecting 2, or a robust lock's
//! `tid | FUTEX_WAITERS`, or `FUTEX_LOCK_PI`) and the words read back agree (known kind
//! bits, a held lock word, an owner that looks like a tid). Everything else — condition
//! variables, semaphores, Python's and Rust's own locks — is recorded with its address
//! and kind "unknown": those words carry no owner.
//!
//! Cost: one `process_vm_readv` of 20 bytes per distinct futex address per process, on
//! detail samples only.

use std::io::IoSliceMut;

use nix::errno::Errno;
use nix::sys::uio::{RemoteIoVec, process_vm_readv};
use nix::unistd::Pid;

use crate::model::{LockWait, Syscall};

/// `futex` on this architecture (`parsers::syscall_name` names the same numbers).
#[cfg(target_arch = "x86_64")]
pub const FUTEX_SYSCALL: Option<i64> = Some(202);
#[cfg(target_arch = "aarch64")]
pub const FUTEX_SYSCALL: Option<i64> = Some(98);
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
pub const FUTEX_SYSCALL: Option<i64> = None;

const FUTEX_WAIT: u64 = 0;
const FUTEX_LOCK_PI: u64 = 6;
const FUTEX_WAIT_BITSET: u64 = 9;
const FUTEX_LOCK_PI2: u64 = 13;
const FUTEX_PRIVATE_FLAG: u64 = 128;
const FUTEX_CLOCK_REALTIME: u64 = 256;

const FUTEX_WAITERS: u32 = 0x8000_0000;
const FUTEX_TID_MASK: u32 = 0x3fff_ffff;

/// glibc `__kind` bits.
const MUTEX_KIND_MASK: i32 = 3;
const MUTEX_ROBUST: i32 = 16;
const MUTEX_PRIO_INHERIT: i32 = 32;
const MUTEX_PRIO_PROTECT: i32 = 64;
const MUTEX_PSHARED: i32 = 128;
const MUTEX_ELISION: i32 = 256;
const MUTEX_NO_ELISION: i32 = 512;
const MUTEX_KNOWN_BITS: i32 = MUTEX_KIND_MASK
    | MUTEX_ROBUST
    | MUTEX_PRIO_INHERIT
    | MUTEX_PRIO_PROTECT
    | MUTEX_PSHARED
    | MUTEX_ELISION
    | MUTEX_NO_ELISION;

/// Bytes read at the futex address: `__lock` through `__kind`.
pub const MUTEX_BYTES: usize = 20;

/// Highest tid when `/proc/sys/kernel/pid_max` cannot be read (the kernel's limit).
pub const DEFAULT_PID_MAX: i32 = 4_194_304;

/// A thread's futex wait as the `syscall` file shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FutexWait {
    pub address: u64,
    /// The operation without the private and clock flags.
    pub command: u64,
    /// The value the waiter expected to find at the address.
    pub expected: u32,
}

/// What a futex wait may be waiting on, before memory is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Candidate {
    /// glibc's lock path of a normal, recursive, error-checking or robust mutex.
    Mutex,
    /// `FUTEX_LOCK_PI`: a priority-inheritance mutex (owner tid in the lock word).
    PiMutex,
    /// A wait that no mutex lock path makes (condition variable, semaphore, other lock).
    Other,
}

/// The futex wait of a thread blocked in `futex`, `None` for anything else.
pub fn futex_wait(syscall: &Syscall) -> Option<FutexWait> {
    let Syscall::InSyscall { number, args, .. } = syscall else {
        return None;
    };
    if Some(*number) != FUTEX_SYSCALL || args.len() < 3 {
        return None;
    }
    Some(FutexWait {
        address: args[0],
        command: args[1] & !(FUTEX_PRIVATE_FLAG | FUTEX_CLOCK_REALTIME),
        expected: args[2] as u32,
    })
}

impl FutexWait {
    pub fn candidate(&self) -> Candidate {
        match self.command {
            FUTEX_LOCK_PI | FUTEX_LOCK_PI2 => Candidate::PiMutex,
            FUTEX_WAIT | FUTEX_WAIT_BITSET
                if self.expected == 2 || robust_lock_value(self.expected) =>
            {
                Candidate::Mutex
            }
            _ => Candidate::Other,
        }
    }

    fn unknown(&self, why: Option<String>) -> LockWait {
        LockWait {
            address: self.address,
            owner_tid: None,
            kind: LockWait::UNKNOWN,
            unavailable: why,
            shared_mapping: None,
        }
    }
}

/// A robust mutex's lock word as its waiter sees it: an owner tid with FUTEX_WAITERS.
fn robust_lock_value(value: u32) -> bool {
    let tid = value & FUTEX_TID_MASK;
    value & FUTEX_WAITERS != 0 && tid != 0 && tid <= DEFAULT_PID_MAX as u32
}

fn word(bytes: &[u8; MUTEX_BYTES], offset: usize) -> u32 {
    u32::from_ne_bytes([
        bytes[offset],
        bytes[offset + 1],
        bytes[offset + 2],
        bytes[offset + 3],
    ])
}

/// The lock a futex wait is on, from the words read at its address.
pub fn interpret(wait: &FutexWait, bytes: &[u8; MUTEX_BYTES], pid_max: i32) -> LockWait {
    let lock = word(bytes, 0);
    let owner_field = word(bytes, 8) as i32;
    let kind = word(bytes, 16) as i32;
    if kind & !MUTEX_KNOWN_BITS != 0 {
        return wait.unknown(None);
    }
    let robust_or_pi = kind & (MUTEX_ROBUST | MUTEX_PRIO_INHERIT) != 0;
    match wait.candidate() {
        Candidate::Other => return wait.unknown(None),
        Candidate::PiMutex if kind & MUTEX_PRIO_INHERIT == 0 => return wait.unknown(None),
        Candidate::Mutex if !robust_or_pi && kind & MUTEX_PRIO_PROTECT == 0 && lock > 2 => {
            return wait.unknown(None);
        }
        _ => {}
    }
    let mut found = LockWait {
        address: wait.address,
        owner_tid: None,
        kind: LockWait::PTHREAD_MUTEX,
        unavailable: None,
        shared_mapping: None,
    };
    if lock == 0 {
        // Released since the waiter went to sleep: no owner now.
        return found;
    }
    let owner = if robust_or_pi {
        (lock & FUTEX_TID_MASK) as i32
    } else {
        owner_field
    };
    if owner > 0 && owner <= pid_max {
        found.owner_tid = Some(owner);
    } else {
        found.unavailable = Some(format!("the mutex records no valid owner ({owner})"));
    }
    found
}

/// Why the words at an address could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadError {
    /// No ptrace access to the process.
    Denied,
    /// The process is gone.
    Gone,
    /// The address is not mapped, or another error.
    Unreadable(Errno),
}

/// Reads the mutex words at `address` of `pid` with `process_vm_readv` (the target keeps
/// running).
pub fn read_mutex_words(pid: i32, address: u64) -> Result<[u8; MUTEX_BYTES], ReadError> {
    let mut bytes = [0u8; MUTEX_BYTES];
    let base = usize::try_from(address).map_err(|_| ReadError::Unreadable(Errno::EFAULT))?;
    let remote = [RemoteIoVec {
        base,
        len: MUTEX_BYTES,
    }];
    let mut local = [IoSliceMut::new(&mut bytes)];
    match process_vm_readv(Pid::from_raw(pid), &mut local, &remote) {
        Ok(MUTEX_BYTES) => Ok(bytes),
        Ok(_) => Err(ReadError::Unreadable(Errno::EFAULT)),
        Err(Errno::EPERM | Errno::EACCES) => Err(ReadError::Denied),
        Err(Errno::ESRCH) => Err(ReadError::Gone),
        Err(errno) => Err(ReadError::Unreadable(errno)),
    }
}

/// The address ranges of the shared mappings (`s` in the permissions) in `maps`.
pub fn shared_ranges(maps: &str) -> Vec<(u64, u64)> {
    maps.lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let range = fields.next()?;
            let perms = fields.next()?;
            if perms.as_bytes().get(3) != Some(&b's') {
                return None;
            }
            let (start, end) = range.split_once('-')?;
            Some((
                u64::from_str_radix(start, 16).ok()?,
                u64::from_str_radix(end, 16).ok()?,
            ))
        })
        .collect()
}

/// Reads the lock waits of one process's threads, one read per distinct address.
#[derive(Debug, Default)]
pub struct LockReader {
    pid: i32,
    pid_max: i32,
    /// Read memory at all (false for a recorded proc tree, whose pids are not live).
    enabled: bool,
    denied: bool,
    cache: Vec<(u64, Result<[u8; MUTEX_BYTES], ReadError>)>,
    /// The process's `MAP_SHARED` mappings, read when a wait needs them.
    shared_ranges: Option<Vec<(u64, u64)>>,
    /// Memory reads made, for the cost accounting.
    pub reads: usize,
}

impl LockReader {
    pub fn new(pid: i32, pid_max: i32, enabled: bool) -> Self {
        LockReader {
            pid,
            pid_max,
            enabled,
            ..LockReader::default()
        }
    }

    /// Whether a read of this process was refused for want of ptrace access.
    pub fn denied(&self) -> bool {
        self.denied
    }

    /// The lock a thread waits on; `None` when it is not in a futex wait. A wait without
    /// `FUTEX_PRIVATE_FLAG` says whether its word lies in a shared mapping.
    pub fn lock_wait(&mut self, syscall: Option<&Syscall>) -> Option<LockWait> {
        let mut lock = self.read_lock(syscall)?;
        if let Some(Syscall::InSyscall { args, .. }) = syscall
            && args[1] & FUTEX_PRIVATE_FLAG == 0
            && self.enabled
        {
            lock.shared_mapping = self.in_shared_mapping(lock.address);
        }
        Some(lock)
    }

    /// Whether `address` lies in a `MAP_SHARED` mapping of the process (its maps read
    /// once per sample, and only for such a wait); `None` when maps cannot be read.
    fn in_shared_mapping(&mut self, address: u64) -> Option<bool> {
        if self.shared_ranges.is_none() {
            let maps = std::fs::read_to_string(format!("/proc/{}/maps", self.pid)).ok()?;
            self.shared_ranges = Some(shared_ranges(&maps));
        }
        let ranges = self.shared_ranges.as_ref()?;
        Some(
            ranges
                .iter()
                .any(|(start, end)| (*start..*end).contains(&address)),
        )
    }

    fn read_lock(&mut self, syscall: Option<&Syscall>) -> Option<LockWait> {
        let wait = futex_wait(syscall?)?;
        if wait.candidate() == Candidate::Other {
            return Some(wait.unknown(None));
        }
        if !self.enabled {
            return Some(wait.unknown(Some("memory not read (recorded proc tree)".into())));
        }
        if self.denied {
            return Some(wait.unknown(Some("no ptrace access to read memory".into())));
        }
        let words = match self.cache.iter().find(|(a, _)| *a == wait.address) {
            Some((_, words)) => *words,
            None => {
                let words = read_mutex_words(self.pid, wait.address);
                self.reads += 1;
                self.cache.push((wait.address, words));
                words
            }
        };
        Some(match words {
            Ok(bytes) => interpret(&wait, &bytes, self.pid_max),
            Err(ReadError::Denied) => {
                self.denied = true;
                wait.unknown(Some("no ptrace access to read memory".into()))
            }
            Err(ReadError::Gone) => wait.unknown(Some("the process is gone".into())),
            Err(ReadError::Unreadable(errno)) => {
                wait.unknown(Some(format!("cannot read the lock word: {errno}")))
            }
        })
    }
}

/// `pid_max` of the proc root, or the kernel's limit when unreadable.
pub fn pid_max(proc_root: &std::path::Path) -> i32 {
    std::fs::read_to_string(proc_root.join("sys/kernel/pid_max"))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .filter(|&n: &i32| n > 0)
        .unwrap_or(DEFAULT_PID_MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn syscall(op: u64, expected: u64) -> Syscall {
        Syscall::InSyscall {
            number: FUTEX_SYSCALL.unwrap_or(202),
            name: Some("futex".into()),
            args: [0x7f00_0010, op, expected, 0, 0, 0],
        }
    }

    fn words(lock: u32, owner: i32, kind: i32) -> [u8; MUTEX_BYTES] {
        let mut b = [0u8; MUTEX_BYTES];
        b[0..4].copy_from_slice(&lock.to_ne_bytes());
        b[8..12].copy_from_slice(&owner.to_ne_bytes());
        b[12..16].copy_from_slice(&1u32.to_ne_bytes());
        b[16..20].copy_from_slice(&kind.to_ne_bytes());
        b
    }

    fn wait(op: u64, expected: u64) -> FutexWait {
        futex_wait(&syscall(op, expected)).unwrap()
    }

    #[test]
    #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
    fn futex_wait_masks_flags() {
        let w = wait(FUTEX_WAIT | FUTEX_PRIVATE_FLAG, 2);
        assert_eq!(w.address, 0x7f00_0010);
        assert_eq!(w.command, FUTEX_WAIT);
        assert_eq!(w.candidate(), Candidate::Mutex);
        let bitset = wait(
            FUTEX_WAIT_BITSET | FUTEX_PRIVATE_FLAG | FUTEX_CLOCK_REALTIME,
            0,
        );
        assert_eq!(bitset.command, FUTEX_WAIT_BITSET);
        assert_eq!(bitset.candidate(), Candidate::Other, "a condition variable");
        // Rust's thread parker waits for u32::MAX: not a robust mutex's tid.
        assert_eq!(
            wait(FUTEX_WAIT_BITSET | FUTEX_PRIVATE_FLAG, 0xffff_ffff).candidate(),
            Candidate::Other
        );
        assert_eq!(wait(FUTEX_LOCK_PI, 0).candidate(), Candidate::PiMutex);
        assert!(futex_wait(&Syscall::Running).is_none());
        let read = Syscall::InSyscall {
            number: 0,
            name: Some("read".into()),
            args: [0; 6],
        };
        assert!(futex_wait(&read).is_none());
    }

    #[test]
    #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
    fn normal_mutex_owner_from_owner_field() {
        let w = wait(FUTEX_WAIT | FUTEX_PRIVATE_FLAG, 2);
        let lock = interpret(&w, &words(2, 4243, 0), 32768);
        assert_eq!(lock.kind, LockWait::PTHREAD_MUTEX);
        assert_eq!(lock.owner_tid, Some(4243));
        // Process-shared, error-checking: still the owner field.
        let lock = interpret(&w, &words(2, 99, MUTEX_PSHARED | 2), 32768);
        assert_eq!(lock.owner_tid, Some(99));
    }

    #[test]
    #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
    fn robust_and_pi_owner_from_lock_word() {
        let w = wait(FUTEX_WAIT, u64::from(FUTEX_WAITERS | 555));
        let lock = interpret(&w, &words(FUTEX_WAITERS | 555, 0, MUTEX_ROBUST), 32768);
        assert_eq!(lock.owner_tid, Some(555));
        let pi = wait(FUTEX_LOCK_PI | FUTEX_PRIVATE_FLAG, 0);
        let lock = interpret(
            &pi,
            &words(FUTEX_WAITERS | 777, 777, MUTEX_PRIO_INHERIT),
            32768,
        );
        assert_eq!(lock.owner_tid, Some(777));
    }

    #[test]
    #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
    fn implausible_words_are_unknown_or_ownerless() {
        let w = wait(FUTEX_WAIT | FUTEX_PRIVATE_FLAG, 2);
        // Not held: a mutex, no owner.
        let free = interpret(&w, &words(0, 0, 0), 32768);
        assert_eq!(free.kind, LockWait::PTHREAD_MUTEX);
        assert_eq!(free.owner_tid, None);
        // Garbage kind bits: not a mutex.
        assert_eq!(
            interpret(&w, &words(2, 5, 0x7fff_0000), 32768).kind,
            LockWait::UNKNOWN
        );
        // A lock word no normal mutex has.
        assert_eq!(
            interpret(&w, &words(17, 5, 0), 32768).kind,
            LockWait::UNKNOWN
        );
        // Owner beyond pid_max.
        let bad = interpret(&w, &words(2, 40000, 0), 32768);
        assert_eq!(bad.owner_tid, None);
        assert!(bad.unavailable.is_some());
        // A condition-variable wait is never read as a mutex.
        let cond = wait(FUTEX_WAIT_BITSET | FUTEX_PRIVATE_FLAG, 4);
        assert_eq!(
            interpret(&cond, &words(2, 5, 0), 32768).kind,
            LockWait::UNKNOWN
        );
    }

    #[test]
    fn own_mutex_read_back_from_memory() {
        // Our own process: a held pthread mutex read through process_vm_readv.
        let mut mutex: libc::pthread_mutex_t = libc::PTHREAD_MUTEX_INITIALIZER;
        // SAFETY: the mutex is initialised and lives for the test.
        unsafe { libc::pthread_mutex_lock(&mut mutex) };
        let address = std::ptr::addr_of!(mutex) as u64;
        let bytes = read_mutex_words(std::process::id() as i32, address).unwrap();
        // SAFETY: as above; unlocked by the thread that locked it.
        unsafe { libc::pthread_mutex_unlock(&mut mutex) };
        let tid = nix::unistd::gettid().as_raw();
        let w = FutexWait {
            address,
            command: FUTEX_WAIT,
            expected: 2,
        };
        let lock = interpret(&w, &bytes, DEFAULT_PID_MAX);
        assert_eq!(lock.owner_tid, Some(tid));
        assert_eq!(
            read_mutex_words(std::process::id() as i32, 8),
            Err(ReadError::Unreadable(Errno::EFAULT))
        );
    }

    #[test]
    fn shared_ranges_are_the_mappings_marked_s() {
        let maps = "7f00-7f10 rw-s 00000000 00:1a 12 /dev/shm/sem.mp-x\n\
                    7f10-7f20 rw-p 00000000 00:00 0 \n\
                    bad line\n";
        assert_eq!(shared_ranges(maps), vec![(0x7f00, 0x7f10)]);
    }
}
