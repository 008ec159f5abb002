//! The sampler: reads a process tree from a proc root into a plain [`Sample`].
//! Nothing else in tfwatch reads `/proc`.

use std::path::PathBuf;

use crate::model::Sample;

/// Where and how to sample.
#[derive(Debug, Clone)]
pub struct SamplerConfig {
    /// The proc root: `/proc`, or a recorded tree under `fixtures/`.
    pub proc_root: PathBuf,
    /// The cgroup root: `/sys/fs/cgroup`, or a recorded tree.
    pub cgroup_root: PathBuf,
    /// Follow descendants of the named process.
    pub include_children: bool,
    /// Read the slow per-thread files (`status`, `wchan`, `syscall`) every Nth sample
    /// (1 = every sample). New threads are always read in full.
    pub details_every: u32,
    /// Re-read `maps` and `environ` for the runtime audit after this many seconds.
    pub audit_every_seconds: f64,
}

impl Default for SamplerConfig {
    fn default() -> Self {
        SamplerConfig {
            proc_root: PathBuf::from("/proc"),
            cgroup_root: PathBuf::from("/sys/fs/cgroup"),
            include_children: true,
            details_every: 5,
            audit_every_seconds: 30.0,
        }
    }
}

/// When a sample is taken, on the watch's clock.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct SampleTime {
    pub elapsed_seconds: f64,
    pub time_unix_seconds: f64,
    pub lateness_seconds: f64,
}

/// Errors that stop sampling of the whole tree.
#[derive(Debug, thiserror::Error)]
pub enum SampleError {
    #[error("no process with pid {pid} (is it still running? check `ps -p {pid}`)")]
    NoSuchProcess { pid: i32 },
    #[error("process {pid} has exited")]
    TargetGone { pid: i32 },
    #[error(
        "permission denied reading {path} of process {pid}: run tfwatch as the process's user or as root, add CAP_SYS_PTRACE, or start the job under `tfwatch run`"
    )]
    PermissionDenied { pid: i32, path: String },
    #[error("cannot read {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// Samples one process tree.
pub struct Sampler {
    _config: SamplerConfig,
    _pid: i32,
}

impl Sampler {
    /// Checks that `pid` exists and can be read; errors come back before any loop starts.
    pub fn new(pid: i32, config: SamplerConfig) -> Result<Sampler, SampleError> {
        Ok(Sampler {
            _config: config,
            _pid: pid,
        })
    }

    /// Reads the tree once.
    pub fn sample(&mut self, _at: SampleTime) -> Result<Sample, SampleError> {
        Ok(Sample::default())
    }

    /// Makes the next sample read every slow per-thread file.
    pub fn request_details(&mut self) {}
}
