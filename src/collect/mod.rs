//! The collection thread: owns the sampler, samples on fixed target times, and sends
//! owned samples over a channel. Lateness is recorded in each sample, not hidden.
//!
//! Reading `/proc` of a process stuck in the kernel can block; the receiver waits with
//! a deadline and never joins a stuck thread, so tfwatch itself cannot hang.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::model::Sample;
use crate::source::clock::{Clock, FakeClock};
use crate::source::proc::{SampleError, SampleTime, Sampler};

pub mod gil;
pub mod pool;
pub mod sources;
pub mod waits;

use sources::Sources;

/// How often a sleeping collection thread looks for a stop or a detail request.
const REQUEST_POLL: Duration = Duration::from_millis(50);

/// What the collection thread sends.
#[derive(Debug)]
pub enum Collected {
    Sample(Box<Sample>),
    /// The root process is gone; the thread has ended.
    TargetGone {
        pid: i32,
    },
    /// Sampling failed for another reason; the thread has ended.
    Failed(String),
}

/// What waiting for the next sample gave.
#[derive(Debug)]
pub enum Next {
    Collected(Collected),
    /// Nothing arrived before the deadline (the sampler is blocked or slow).
    Late,
    /// The collection thread is gone.
    Closed,
}

pub struct Collector {
    rx: Receiver<Collected>,
    stop: Arc<AtomicBool>,
    /// Set to take the next sample at once, with every thread's details read.
    details: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl Collector {
    /// Starts sampling `sampler` (and reading `sources` beside it) every `interval`, the
    /// first sample at once; `clock` stamps each sample (its zero is the watch's zero).
    pub fn start(
        mut sampler: Sampler,
        mut sources: Sources,
        interval: Duration,
        clock: Arc<dyn Clock>,
    ) -> Collector {
        let (tx, rx) = mpsc::sync_channel(64);
        let stop = Arc::new(AtomicBool::new(false));
        let stop_flag = Arc::clone(&stop);
        let details = Arc::new(AtomicBool::new(false));
        let details_flag = Arc::clone(&details);
        sources.set_interval(interval);
        let handle = std::thread::Builder::new()
            .name("tfwatch-sampler".to_string())
            .spawn(move || {
                let mut target = Instant::now();
                // The target the next sample was due at: when targets are skipped, its
                // lateness counts from the first one missed, not the one it waited for.
                let mut due = target;
                while !stop_flag.load(Ordering::Relaxed) {
                    let now = Instant::now();
                    // A requested detail sample is taken at once.
                    let detail = details_flag.swap(false, Ordering::Relaxed);
                    if detail {
                        sampler.request_details();
                    } else if now < target {
                        // Short naps, so a stop or a detail request is seen soon.
                        std::thread::sleep((target - now).min(REQUEST_POLL));
                        continue;
                    }
                    let lateness = now.duration_since(due).as_secs_f64();
                    let at = SampleTime::on(&*clock, lateness);
                    let message = match sampler.sample(at) {
                        Ok(sample)
                            if sample
                                .process(sample.root_pid)
                                .is_some_and(crate::model::ProcessSample::has_exited) =>
                        {
                            // Exited (every thread); its parent has not reaped it yet.
                            let _ = tx.send(Collected::TargetGone {
                                pid: sample.root_pid,
                            });
                            return;
                        }
                        Ok(mut sample) => {
                            sources.fill(&mut sample);
                            Collected::Sample(Box::new(sample))
                        }
                        Err(
                            SampleError::TargetGone { pid } | SampleError::NoSuchProcess { pid },
                        ) => {
                            let _ = tx.send(Collected::TargetGone { pid });
                            return;
                        }
                        Err(other) => {
                            let _ = tx.send(Collected::Failed(other.to_string()));
                            return;
                        }
                    };
                    if tx.send(message).is_err() {
                        return;
                    }
                    if detail && now < target {
                        // Taken early on request: the fixed targets stay as they were.
                        continue;
                    }
                    // Fixed target times; skip the ones already missed.
                    target += interval;
                    due = target;
                    let after = Instant::now();
                    while target <= after {
                        target += interval;
                    }
                }
            })
            .ok();
        Collector {
            rx,
            stop,
            details,
            handle,
        }
    }

    /// Asks for a sample now, with every thread's details (wait channels, lock owners)
    /// read fresh: the proof behind a hang before it is reported.
    pub fn request_details(&self) {
        self.details.store(true, Ordering::Relaxed);
    }

    /// Waits up to `timeout` for the next message.
    pub fn next(&self, timeout: Duration) -> Next {
        match self.rx.recv_timeout(timeout) {
            Ok(message) => Next::Collected(message),
            Err(RecvTimeoutError::Timeout) => Next::Late,
            Err(RecvTimeoutError::Disconnected) => Next::Closed,
        }
    }
}

/// Where the watch loop takes its samples from: the live [`Collector`], or a recorded
/// timeline in tests and replays.
pub trait SampleSource {
    /// Waits up to `timeout` for the next message.
    fn next_sample(&mut self, timeout: Duration) -> Next;
}

impl SampleSource for Collector {
    fn next_sample(&mut self, timeout: Duration) -> Next {
        self.next(timeout)
    }
}

/// Recorded samples, handed out one per call without waiting; after the last one the
/// target is gone. With a [`FakeClock`], the clock is moved to each sample's time as it
/// is handed out, so a watch over it runs on the recording's time.
pub struct Recorded {
    samples: std::collections::VecDeque<Sample>,
    clock: Option<FakeClock>,
    ended: bool,
    root_pid: i32,
}

impl Recorded {
    pub fn new(samples: Vec<Sample>, clock: Option<FakeClock>) -> Self {
        Recorded {
            samples: samples.into(),
            clock,
            ended: false,
            root_pid: 0,
        }
    }
}

impl SampleSource for Recorded {
    fn next_sample(&mut self, _timeout: Duration) -> Next {
        match self.samples.pop_front() {
            Some(sample) => {
                if let Some(clock) = &self.clock {
                    clock.set(
                        Duration::try_from_secs_f64(sample.elapsed_seconds.max(0.0))
                            .unwrap_or(Duration::MAX),
                    );
                }
                self.root_pid = sample.root_pid;
                Next::Collected(Collected::Sample(Box::new(sample)))
            }
            None if !self.ended => {
                self.ended = true;
                Next::Collected(Collected::TargetGone { pid: self.root_pid })
            }
            None => Next::Closed,
        }
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Join only a thread that has finished: one blocked in a /proc read is left to
        // end with the process rather than hang tfwatch.
        if let Some(handle) = self.handle.take()
            && handle.is_finished()
        {
            let _ = handle.join();
        }
    }
}
