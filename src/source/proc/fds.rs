//! Kept-open /proc files, re-read with `pread` at offset 0, under a budget of descriptors.
//!
//! Reading a kept descriptor costs one system call; opening, reading and closing costs
//! three plus a path walk. The budget keeps tfwatch well inside `RLIMIT_NOFILE`: past it,
//! files are opened, read and closed each time instead, and an `EMFILE` shrinks the
//! budget rather than failing the sample.

use std::fs::File;
use std::io;
use std::os::fd::BorrowedFd;
use std::os::unix::fs::FileExt;
use std::path::Path;

use nix::fcntl::{OFlag, openat};
use nix::sys::stat::Mode;

/// Descriptors left for the rest of tfwatch (terminal, sockets, reports, the job).
const RESERVED_DESCRIPTORS: u64 = 512;

/// How many descriptors the sampler may keep open.
#[derive(Debug, Clone)]
pub struct FdBudget {
    /// Most descriptors to keep.
    pub limit: usize,
    /// Descriptors kept now.
    pub kept: usize,
    /// Set when an open failed with `EMFILE`/`ENFILE`; the sampler then sheds slow-path
    /// descriptors at the end of the sample.
    pub exhausted: bool,
}

impl FdBudget {
    /// A budget from the soft `RLIMIT_NOFILE` (raised to the hard limit first, which
    /// any process may do), less a reserve; `max_kept` caps it further.
    pub fn from_rlimit(max_kept: Option<usize>) -> FdBudget {
        let soft = raise_nofile_limit();
        let reserve = RESERVED_DESCRIPTORS.min(soft / 4);
        let mut limit = soft.saturating_sub(reserve) as usize;
        if let Some(max) = max_kept {
            limit = limit.min(max);
        }
        FdBudget {
            limit,
            kept: 0,
            exhausted: false,
        }
    }

    pub fn has_room(&self, descriptors: usize) -> bool {
        self.kept + descriptors <= self.limit
    }

    pub fn release(&mut self, descriptors: usize) {
        self.kept = self.kept.saturating_sub(descriptors);
    }

    /// After `EMFILE`: keep no more than is held now, less a margin.
    pub fn shrink_to_current(&mut self) {
        self.limit = self.kept.saturating_sub(64);
        self.exhausted = true;
    }
}

/// Raises the soft open-files limit to the hard one; returns the soft limit in effect.
fn raise_nofile_limit() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed by pointer.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return 1024;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                limit = raised;
            }
        }
    }
    if limit.rlim_cur == libc::RLIM_INFINITY {
        1 << 20
    } else {
        limit.rlim_cur
    }
}

/// How reading a /proc file ended, when it did not give bytes.
#[derive(Debug)]
pub enum ReadFailure {
    /// The task or process is gone (`ENOENT`, `ESRCH`).
    Gone,
    /// Permission denied (`EACCES`, `EPERM`).
    Denied,
    /// Too many open files: the read was skipped.
    NoDescriptors,
    Other(io::Error),
}

impl ReadFailure {
    pub fn from_io(error: io::Error) -> ReadFailure {
        match error.raw_os_error() {
            Some(libc::ENOENT) | Some(libc::ESRCH) => ReadFailure::Gone,
            Some(libc::EACCES) | Some(libc::EPERM) => ReadFailure::Denied,
            Some(libc::EMFILE) | Some(libc::ENFILE) => ReadFailure::NoDescriptors,
            _ => ReadFailure::Other(error),
        }
    }
}

/// Reads the whole file from offset 0 into `buf`, growing it as needed; returns the
/// length read. A short read ends the file, so a small /proc file costs one `pread`.
pub fn pread_all(file: &File, buf: &mut Vec<u8>) -> io::Result<usize> {
    if buf.len() < 4096 {
        buf.resize(4096, 0);
    }
    let mut filled = 0;
    loop {
        let read = file.read_at(&mut buf[filled..], filled as u64)?;
        filled += read;
        if filled < buf.len() {
            return Ok(filled);
        }
        let grown = buf.len() * 2;
        buf.resize(grown, 0);
    }
}

/// Where to open a file that is not kept open.
#[derive(Debug, Clone, Copy)]
pub enum Location<'a> {
    Path(&'a Path),
    /// A path relative to a directory kept open (`openat`): the kernel skips the walk
    /// to the directory, about a third of the cost of opening a /proc file.
    At(BorrowedFd<'a>, &'a str),
}

impl Location<'_> {
    fn open(self) -> io::Result<File> {
        match self {
            Location::Path(path) => File::open(path),
            Location::At(dir, relative) => openat(
                dir,
                relative,
                OFlag::O_RDONLY | OFlag::O_CLOEXEC,
                Mode::empty(),
            )
            .map(File::from)
            .map_err(io::Error::from),
        }
    }
}

/// Reads `file` through `slot`: through the kept descriptor when there is one; else it
/// opens the file, keeps it when `keep` and the budget allow, or closes it after reading.
pub fn read_through(
    slot: &mut Option<File>,
    path: &Path,
    keep: bool,
    budget: &mut FdBudget,
    buf: &mut Vec<u8>,
) -> Result<usize, ReadFailure> {
    read_at_location(slot, Location::Path(path), keep, budget, buf)
}

/// [`read_through`], opening from `location`.
pub fn read_at_location(
    slot: &mut Option<File>,
    location: Location<'_>,
    keep: bool,
    budget: &mut FdBudget,
    buf: &mut Vec<u8>,
) -> Result<usize, ReadFailure> {
    if let Some(file) = slot.as_ref() {
        return match pread_all(file, buf) {
            Ok(n) => Ok(n),
            Err(error) => {
                *slot = None;
                budget.release(1);
                Err(ReadFailure::from_io(error))
            }
        };
    }
    let file = match location.open() {
        Ok(file) => file,
        Err(error) => {
            let failure = ReadFailure::from_io(error);
            if matches!(failure, ReadFailure::NoDescriptors) {
                budget.shrink_to_current();
            }
            return Err(failure);
        }
    };
    let read = pread_all(&file, buf).map_err(ReadFailure::from_io)?;
    if keep && budget.has_room(1) {
        budget.kept += 1;
        *slot = Some(file);
    }
    Ok(read)
}

/// Opens, reads and closes `path` into `buf`.
pub fn read_once(path: &Path, buf: &mut Vec<u8>) -> Result<usize, ReadFailure> {
    let mut slot = None;
    let mut budget = FdBudget {
        limit: 0,
        kept: 0,
        exhausted: false,
    };
    read_through(&mut slot, path, false, &mut budget, buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pread_all_reads_past_the_first_buffer_and_again_from_zero() {
        let dir = std::env::temp_dir().join(format!("tfwatch-fds-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("big");
        let content: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&path, &content).unwrap();
        let mut buf = Vec::new();
        let mut slot = None;
        let mut budget = FdBudget {
            limit: 1,
            kept: 0,
            exhausted: false,
        };
        for _ in 0..2 {
            let n = read_through(&mut slot, &path, true, &mut budget, &mut buf).unwrap();
            assert_eq!(&buf[..n], &content[..]);
        }
        assert!(slot.is_some());
        assert_eq!(budget.kept, 1);
        // No room: read, but not kept.
        let mut other = None;
        read_through(&mut other, &path, true, &mut budget, &mut buf).unwrap();
        assert!(other.is_none());
        assert!(matches!(
            read_once(&dir.join("missing"), &mut buf),
            Err(ReadFailure::Gone)
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn files_open_relative_to_a_kept_directory() {
        use std::os::fd::AsFd;
        let dir = std::env::temp_dir().join(format!("tfwatch-fds-at-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("7")).unwrap();
        std::fs::write(dir.join("7/stat"), "7 (x) S").unwrap();
        let kept = File::open(&dir).unwrap();
        let mut budget = FdBudget {
            limit: 0,
            kept: 0,
            exhausted: false,
        };
        let mut buf = Vec::new();
        let at = Location::At(kept.as_fd(), "7/stat");
        let n = read_at_location(&mut None, at, false, &mut budget, &mut buf).unwrap();
        assert_eq!(&buf[..n], b"7 (x) S");
        let missing = Location::At(kept.as_fd(), "8/stat");
        assert!(matches!(
            read_at_location(&mut None, missing, false, &mut budget, &mut buf),
            Err(ReadFailure::Gone)
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
