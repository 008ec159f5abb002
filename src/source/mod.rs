//! Sources: everything tfwatch reads from outside, read-only. Sources never judge: they
//! fill plain [`crate::model`] values, and what cannot be read becomes an
//! "unavailable" entry with its reason.

pub mod clock;
pub mod gpu;
pub mod proc;
pub mod scrape;
pub mod stacks;

/// What to do when reading another process's files or memory is denied: the one wording
/// of the ptrace advice, everywhere it is given.
pub const PTRACE_ADVICE: &str = "run tfwatch as root or as the process's user, add CAP_SYS_PTRACE (setcap cap_sys_ptrace+ep tfwatch, or docker run --cap-add SYS_PTRACE), lower /proc/sys/kernel/yama/ptrace_scope (0; 1 suffices when tfwatch started the job), or run the job under `tfwatch run`";
