//! Reads the GIL of a CPython process from its memory when its waits look like GIL
//! contention: a burst of reads ([`crate::source::gil::sample`]) on a thread of its
//! own, so the collector never waits for it, at most once per [`REPROBE`] per process.
//! Each finished burst is carried by the next sample ([`crate::model::Sample::gil`]).

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::mpsc::{self, Receiver, Sender};
use std::time::{Duration, Instant};

use crate::model::gil::{GilReading, GilThreadLine};
use crate::model::{ProcessSample, Sample, Unavailable, futex_wait};
use crate::source::gil::{Burst, Runtime, locate, sample};

/// The least time between two bursts of one process.
pub const REPROBE: Duration = Duration::from_secs(10);

/// The least time between two reads of a process's Python lines (py-spy reads every
/// thread's stack: a large process's read costs more than the GIL burst); the readings
/// between carry the lines last read.
pub const LINES_EVERY: Duration = Duration::from_secs(60);

/// Processes with more threads than this have no Python lines read with their GIL
/// (reading every thread's stack would cost more than the 1 Hz watch itself).
pub const LINES_MAX_THREADS: usize = 256;

/// Whether `process` looks like GIL contention in one sample: a CPython process with at
/// least two threads in timed futex waits on one word (CPython's GIL waiters wait on
/// its condition with the switch interval as timeout) while another thread runs.
pub fn looks_contended(process: &ProcessSample) -> bool {
    if process.has_exited() || !process.is_cpython() {
        return false;
    }
    let mut words: HashMap<u64, u32> = HashMap::new();
    let mut running = false;
    for thread in process.threads.iter() {
        running |= thread.state == 'R';
        if let Some(wait) = futex_wait(thread).filter(|w| w.timed) {
            *words.entry(wait.address).or_default() += 1;
        }
    }
    running && words.values().any(|&n| n >= 2)
}

/// Whether `process` has more threads than [`LINES_MAX_THREADS`], counted by `stat`'s
/// `num_threads`: its thread list may hold only the threads read so far (a large
/// process is read over several samples).
fn too_large_for_lines(process: &ProcessSample) -> bool {
    (process.num_threads as usize).max(process.threads.len()) > LINES_MAX_THREADS
}

/// What one burst's thread sends back.
struct Done {
    pid: i32,
    start_time: f64,
    runtime: Option<Runtime>,
    reading: GilReading,
    /// Whether the lines were read in this burst.
    lines_read: bool,
}

/// Starts GIL bursts for the processes that look contended and hands their readings to
/// the samples.
pub struct GilProber {
    proc_root: PathBuf,
    burst: Burst,
    reprobe: Duration,
    /// Located runtimes, by pid and start time (a reused pid is another process).
    runtimes: HashMap<i32, (f64, Runtime)>,
    last: HashMap<i32, Instant>,
    /// The Python lines last read of each process, and when.
    lines: HashMap<i32, (Instant, Vec<GilThreadLine>)>,
    in_flight: HashSet<i32>,
    tx: Sender<Done>,
    rx: Receiver<Done>,
}

impl GilProber {
    pub fn new(proc_root: impl Into<PathBuf>, burst: Burst, reprobe: Duration) -> Self {
        let (tx, rx) = mpsc::channel();
        GilProber {
            proc_root: proc_root.into(),
            burst,
            reprobe,
            runtimes: HashMap::new(),
            last: HashMap::new(),
            lines: HashMap::new(),
            in_flight: HashSet::new(),
            tx,
            rx,
        }
    }

    /// 100 reads over 1 s, at most every [`REPROBE`] per process.
    pub fn standard() -> Self {
        GilProber::new("/proc", Burst::default(), REPROBE)
    }

    /// Puts the bursts finished since the last sample on `sample` (with an
    /// "unavailable" entry for each that could not read), then starts one for each
    /// process that looks contended and has none under way or too recent.
    pub fn fill(&mut self, sample: &mut Sample) {
        while let Ok(mut done) = self.rx.try_recv() {
            self.in_flight.remove(&done.pid);
            if done.lines_read {
                self.lines
                    .insert(done.pid, (Instant::now(), done.reading.lines.clone()));
            } else if done.reading.locked_reads > 0
                && let Some((_, lines)) = self.lines.get(&done.pid)
            {
                done.reading.lines = lines.clone();
            }
            if let Some(runtime) = done.runtime {
                self.runtimes.insert(done.pid, (done.start_time, runtime));
            }
            if let Some(reason) = &done.reading.unavailable {
                sample.unavailable.push(Unavailable {
                    source: "gil".to_string(),
                    pid: Some(done.pid),
                    reason: reason.clone(),
                    fix: reason
                        .contains("not allowed")
                        .then(|| crate::source::PTRACE_ADVICE.to_string()),
                });
            }
            sample.gil.push(done.reading);
        }
        let live: HashSet<i32> = sample.processes.iter().map(|p| p.pid).collect();
        self.runtimes.retain(|pid, _| live.contains(pid));
        self.last.retain(|pid, _| live.contains(pid));
        self.lines.retain(|pid, _| live.contains(pid));
        let now = Instant::now();
        for process in sample.processes.iter().filter(|p| looks_contended(p)) {
            let pid = process.pid;
            let recent = self
                .last
                .get(&pid)
                .is_some_and(|at| now.duration_since(*at) < self.reprobe);
            if recent || self.in_flight.contains(&pid) {
                continue;
            }
            let known = self
                .runtimes
                .get(&pid)
                .filter(|(start, _)| *start == process.start_time_seconds)
                .map(|(_, runtime)| runtime.clone());
            let want_lines = !too_large_for_lines(process)
                && self
                    .lines
                    .get(&pid)
                    .is_none_or(|(at, _)| now.duration_since(*at) >= LINES_EVERY);
            if self.start(pid, process.start_time_seconds, known, want_lines) {
                self.last.insert(pid, now);
                self.in_flight.insert(pid);
            }
        }
    }

    fn start(&self, pid: i32, start_time: f64, known: Option<Runtime>, want_lines: bool) -> bool {
        let tx = self.tx.clone();
        let proc_root = self.proc_root.clone();
        let burst = self.burst;
        std::thread::Builder::new()
            .name("tfwatch-gil".to_string())
            .spawn(move || {
                let (runtime, reading, lines_read) =
                    read_gil(&proc_root, pid, known, burst, want_lines);
                let _ = tx.send(Done {
                    pid,
                    start_time,
                    runtime,
                    reading,
                    lines_read,
                });
            })
            .is_ok()
    }
}

/// Locates the runtime (unless `known`), reads a burst, and (when `want_lines`) names
/// the Python line of each thread when the GIL was found held; whether it read them.
fn read_gil(
    proc_root: &std::path::Path,
    pid: i32,
    known: Option<Runtime>,
    burst: Burst,
    want_lines: bool,
) -> (Option<Runtime>, GilReading, bool) {
    let unavailable = |reason: String| GilReading {
        pid,
        unavailable: Some(reason),
        ..GilReading::default()
    };
    let runtime = match known.map_or_else(|| locate(proc_root, pid), Ok) {
        Ok(runtime) => runtime,
        Err(reason) => return (None, unavailable(reason), false),
    };
    let mut reading = match sample(proc_root, &runtime, burst) {
        Ok(reading) => reading,
        Err(reason) => return (None, unavailable(reason), false),
    };
    let mut lines_read = false;
    if want_lines
        && reading.locked_reads > 0
        && let Ok(lines) = crate::source::stacks::python_lines(pid)
    {
        reading.lines = lines
            .into_iter()
            .map(|(tid, line)| GilThreadLine { tid, line })
            .collect();
        lines_read = true;
    }
    (Some(runtime), reading, lines_read)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Syscall, ThreadSample};

    fn thread(tid: i32, state: char, futex: Option<(u64, u64)>) -> ThreadSample {
        ThreadSample {
            tid,
            state,
            syscall: futex.map(|(word, timeout)| Syscall::InSyscall {
                number: 202,
                name: Some("futex".into()),
                args: [word, 137, 0, timeout, 0, 0],
            }),
            ..ThreadSample::default()
        }
    }

    fn process(exe: &str, threads: Vec<ThreadSample>) -> ProcessSample {
        ProcessSample {
            pid: 10,
            state: 'R',
            exe: Some(exe.to_string()),
            threads: threads.into(),
            ..ProcessSample::default()
        }
    }

    #[test]
    fn a_process_is_too_large_for_lines_by_its_thread_count_not_the_threads_read() {
        let mut large = process("/usr/bin/python3", vec![thread(1, 'R', None)]);
        large.num_threads = 1_000;
        assert!(too_large_for_lines(&large));
        let mut small = process("/usr/bin/python3", vec![thread(1, 'R', None)]);
        small.num_threads = 16;
        assert!(!too_large_for_lines(&small));
    }

    #[test]
    fn two_timed_waiters_on_one_word_beside_a_runner_look_contended() {
        let threads = vec![
            thread(1, 'R', None),
            thread(2, 'S', Some((0x1000, 0x7ffd))),
            thread(3, 'S', Some((0x1000, 0x7ffd))),
        ];
        assert!(looks_contended(&process(
            "/usr/bin/python3.11",
            threads.clone()
        )));
        // Not CPython.
        assert!(!looks_contended(&process(
            "/usr/bin/server",
            threads.clone()
        )));
        // Nobody runs: waiting, not taking turns.
        let mut idle = threads.clone();
        idle[0].state = 'S';
        assert!(!looks_contended(&process("/usr/bin/python3.11", idle)));
        // Untimed waits (a pool waiting for work), or on two words.
        let untimed = vec![
            thread(1, 'R', None),
            thread(2, 'S', Some((0x1000, 0))),
            thread(3, 'S', Some((0x1000, 0))),
        ];
        assert!(!looks_contended(&process("/usr/bin/python3.11", untimed)));
        let apart = vec![
            thread(1, 'R', None),
            thread(2, 'S', Some((0x1000, 0x7ffd))),
            thread(3, 'S', Some((0x2000, 0x7ffd))),
        ];
        assert!(!looks_contended(&process("/usr/bin/python3.11", apart)));
    }
}
