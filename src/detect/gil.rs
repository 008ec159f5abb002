//! GIL contention: a CPython process whose Python threads all want to run, but take
//! turns on the interpreter lock, so together they use about one core while more are
//! usable.
//!
//! Judged on the same [`crate::timeline::contention::FutexShare`] readings as lock
//! contention: CPython's GIL waiters (3.11 and earlier; 3.12 keeps the scheme) sleep in
//! `pthread_cond_timedwait` on the GIL's condition, a futex wait with a 5 ms timeout
//! (the switch interval) on one of its two group words. A reading is GIL contention
//! when at least two threads of a CPython process wait so on one word, they ran since
//! the previous reading (they take turns), the process wants at least half a core, and
//! it used at most [`ONE_CORE`] cores while at least two are usable.

use crate::model::{Finding, FindingKind, Severity};
use crate::timeline::{Summary, Timeline};

use super::DetectConfig;
use super::contention::{Reading, WINDOW_SECONDS, readings, trim};

/// Cores a process held to one interpreter at a time uses at most.
pub const ONE_CORE: f64 = 1.3;

/// GIL readings for a warning.
pub const SUSTAINED_READINGS: usize = 3;

fn cores(r: &Reading<'_>) -> Option<f64> {
    (r.summary.interval_seconds > 0.0)
        .then(|| r.process.delta_run_seconds / r.summary.interval_seconds)
}

fn is_gil_contention(r: &Reading<'_>, usable: f64) -> bool {
    r.is_gil_like()
        && r.share.waiters >= 2
        && r.share.waiters_ran >= 2
        && usable >= 2.0
        && r.wanted_cores().is_some_and(|c| c >= super::BUSY_MIN_CPUS)
        && cores(r).is_some_and(|c| c <= ONE_CORE)
}

/// `gil-contention` findings, one per CPython process whose newest readings show it.
pub fn gil_contention(timeline: &Timeline, _config: &DetectConfig) -> Vec<Finding> {
    let Some(latest) = timeline.latest_summary() else {
        return Vec::new();
    };
    let window: Vec<&Summary> = timeline.window(WINDOW_SECONDS).collect();
    let usable = latest.usable_cpus;
    latest
        .processes
        .iter()
        .filter_map(|p| judge(&readings(&window, p.pid), usable))
        .collect()
}

fn judge(readings: &[Reading<'_>], usable: f64) -> Option<Finding> {
    let contended: Vec<&Reading<'_>> = readings
        .iter()
        .filter(|r| is_gil_contention(r, usable))
        .collect();
    let newest = contended.last()?;
    let sustained = contended.len() >= SUSTAINED_READINGS
        && contended.len() * 2 >= readings.len()
        && readings
            .iter()
            .rev()
            .take(2)
            .any(|r| is_gil_contention(r, usable));
    let (mut run, mut runqueue, mut seconds) = (0.0, 0.0, 0.0);
    for r in &contended {
        run += r.process.delta_run_seconds;
        runqueue += r.process.delta_wait_seconds;
        seconds += r.summary.interval_seconds;
    }
    let used = if seconds > 0.0 { run / seconds } else { 0.0 };
    let wanted = if seconds > 0.0 {
        (run + runqueue) / seconds
    } else {
        0.0
    };
    // The Python threads that want to run: those waiting for the GIL and those running.
    let wanting: Vec<f64> = contended
        .iter()
        .map(|r| f64::from(r.share.waiters) + r.share.running_tids.len() as f64)
        .collect();
    let python_threads = wanting.iter().sum::<f64>() / wanting.len() as f64;
    let pid = newest.process.pid;
    let mut finding = Finding::new(
        FindingKind::GilContention,
        if sustained {
            Severity::Warning
        } else {
            Severity::Info
        },
        format!(
            "{python_threads:.1} Python threads of pid {pid} ({}) take turns on the GIL: {used:.2} core(s) used of {} usable, in {} of {} readings",
            newest.process.comm,
            trim(usable),
            contended.len(),
            readings.len()
        ),
    );
    finding.confidence = if sustained { 0.7 } else { 0.4 };
    finding.pids = vec![pid];
    finding.tids = newest.share.waiter_tids.clone();
    finding
        .tids
        .extend(newest.share.running_tids.iter().copied());
    finding.evidence.push(format!(
        "effective parallelism {used:.2} CPU-s per second ({wanted:.2} wanted: run or waiting for a CPU) against {python_threads:.1} runnable Python threads and {} usable CPU(s)",
        trim(usable)
    ));
    finding.evidence.push(format!(
        "threads waiting on the GIL's condition (futex word {:#x}, timed waits: the 5 ms switch interval) per reading: {}; they ran since the reading before, so they take turns",
        newest.share.address,
        contended
            .iter()
            .map(|r| r.share.waiters.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    ));
    finding.metrics.insert("effective_parallelism".into(), used);
    finding
        .metrics
        .insert("python_threads_runnable".into(), python_threads);
    finding.metrics.insert("usable_cpus".into(), usable);
    finding
        .metrics
        .insert("gil_waiters".into(), f64::from(newest.share.waiters));
    finding.remedy = "Pure-Python CPU work runs one thread at a time under the GIL, whatever the threads and CPUs. Use processes instead of threads (multiprocessing, concurrent.futures.ProcessPoolExecutor, one per usable CPU); move the hot loop into a call that releases the GIL (numpy, a C/Cython/Rust extension); or run free-threaded CPython (3.13t, 3.14t). `tfwatch snapshot --stacks` names the GIL holder and the lines the threads run.".to_string();
    Some(finding)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::test_support::{process, sample, thread};
    use crate::model::{Sample, Syscall, ThreadSample};

    const GIL: u64 = 0x7f00_e6f0;

    fn gil_waiter(mut t: ThreadSample) -> ThreadSample {
        t.state = 'S';
        t.syscall = Some(Syscall::InSyscall {
            number: 202,
            name: Some("futex".into()),
            args: [GIL, 137, 0, 0x7ffd_0000, 0, 0],
        });
        t
    }

    /// `threads` pure-Python threads: thread `i % threads` holds the GIL; together one core.
    fn gil_sample(i: usize, threads: usize, exe: &str, usable: f64) -> Sample {
        let list = (0..threads)
            .map(|k| {
                let mut t = thread(100 + k as i32, 'R', "", i as f64 / threads as f64);
                if k == i % threads {
                    t.syscall = Some(Syscall::Running);
                    t
                } else {
                    gil_waiter(t)
                }
            })
            .collect();
        let mut p = process(100, 1, list);
        p.exe = Some(exe.to_string());
        sample(i as f64, usable, vec![p])
    }

    fn timeline(exe: &str, usable: f64) -> Timeline {
        let mut timeline = Timeline::new(120.0);
        for i in 0..6 {
            timeline.push(gil_sample(i, 4, exe, usable));
        }
        timeline
    }

    #[test]
    fn four_python_threads_on_one_core_of_two_are_gil_contention() {
        let findings = gil_contention(
            &timeline("/usr/bin/python3.11", 2.0),
            &DetectConfig::default(),
        );
        assert_eq!(findings.len(), 1, "{findings:#?}");
        let f = &findings[0];
        assert_eq!(f.kind, FindingKind::GilContention);
        assert_eq!(f.severity, Severity::Warning);
        assert!((f.metrics["effective_parallelism"] - 1.0).abs() < 0.01);
        assert!(f.summary.contains("take turns on the GIL"), "{}", f.summary);
        assert!(f.remedy.contains("ProcessPoolExecutor"));
        // Not a lock convoy as well.
        assert!(
            super::super::contention::lock_convoy(
                &timeline("/usr/bin/python3.11", 2.0),
                &DetectConfig::default()
            )
            .is_empty()
        );
    }

    #[test]
    fn one_usable_cpu_or_no_python_is_no_gil_contention() {
        assert!(
            gil_contention(
                &timeline("/usr/bin/python3.11", 1.0),
                &DetectConfig::default()
            )
            .is_empty()
        );
        assert!(
            gil_contention(&timeline("/usr/bin/server", 2.0), &DetectConfig::default()).is_empty()
        );
    }
}
