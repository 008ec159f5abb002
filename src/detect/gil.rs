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

use crate::model::gil::GilReading;
use crate::model::{Finding, FindingKind, Severity};
use crate::timeline::{Summary, Timeline};

use super::DetectConfig;
use super::contention::{Reading, WINDOW_SECONDS, readings, trim};

/// Cores a process held to one interpreter at a time uses at most.
pub const ONE_CORE: f64 = 1.3;

/// GIL readings for a warning.
pub const SUSTAINED_READINGS: usize = 3;

/// A GIL reading from memory older than this (seconds before the newest sample) is not
/// used (the collector reads again every 10 s while the waits look contended).
pub const MEMORY_READING_MAX_AGE: f64 = 30.0;

/// Share of the reads from memory that found the GIL held for the threads to be
/// confirmed taking turns on it; below [`GIL_FREE_SHARE`] they wait on something else.
pub const GIL_HELD_SHARE: f64 = 0.8;
/// See [`GIL_HELD_SHARE`].
pub const GIL_FREE_SHARE: f64 = 0.5;

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
        .filter_map(|p| {
            let (mut finding, waiters) = judge(&readings(&window, p.pid), usable)?;
            let memory = timeline.gil_reading(p.pid, MEMORY_READING_MAX_AGE);
            let names = |tid: i32| {
                timeline
                    .latest()
                    .and_then(|s| s.process(p.pid))
                    .and_then(|p| p.threads.iter().find(|t| t.tid == tid))
                    .map(|t| t.name.clone())
            };
            confirm(&mut finding, memory, &waiters, &names);
            Some(finding)
        })
        .collect()
}

/// What the GIL read from the interpreter's memory adds to a finding judged from /proc:
/// confirmed (held in most reads, by threads that take turns), the holders' shares,
/// switches per second and lines; contradicted (mostly free): info; not read: why, the
/// /proc judgement standing as it is.
fn confirm(
    finding: &mut Finding,
    memory: Option<&GilReading>,
    waiters: &[i32],
    name: &dyn Fn(i32) -> Option<String>,
) {
    let Some(reading) = memory else {
        finding.evidence.push(
            "the GIL state was not read from the interpreter's memory yet: judged from /proc alone"
                .to_string(),
        );
        return;
    };
    if let Some(why) = &reading.unavailable {
        finding.evidence.push(format!(
            "the GIL state could not be read from the interpreter's memory ({why}): judged from /proc alone"
        ));
        return;
    }
    if reading.reads == 0 {
        return;
    }
    let held = reading.locked_share();
    let known: Vec<_> = reading.holders.iter().filter(|h| h.tid != 0).collect();
    let label = |tid: i32| match name(tid) {
        Some(n) => format!("{tid} ({n})"),
        None => tid.to_string(),
    };
    finding.metrics.insert("gil_held_share".into(), held);
    finding.metrics.insert(
        "gil_switches_per_second".into(),
        reading.switches_per_second(),
    );
    if let Some(top) = known.first() {
        finding
            .metrics
            .insert("gil_top_holder_share".into(), reading.share(top));
    }
    if held < GIL_FREE_SHARE {
        finding.severity = Severity::Info;
        finding.confidence = finding.confidence.min(0.3);
        finding.evidence.push(format!(
            "yet the GIL read from the interpreter's memory (CPython {}) was free in {:.0} % of {} reads over {:.1} s: the threads wait on something other than the GIL",
            reading.version,
            (1.0 - held) * 100.0,
            reading.reads,
            reading.seconds
        ));
        return;
    }
    let shares = known
        .iter()
        .map(|h| format!("thread {} {:.0} %", label(h.tid), reading.share(h) * 100.0))
        .collect::<Vec<_>>()
        .join(", ");
    let waiting: Vec<String> = waiters.iter().map(|&t| label(t)).collect();
    finding.evidence.push(format!(
        "GIL read from the interpreter's memory (CPython {}, {} reads over {:.1} s, the process never stopped): held in {:.0} % of reads, by {shares}; switched {:.0} times/s{}",
        reading.version,
        reading.reads,
        reading.seconds,
        held * 100.0,
        reading.switches_per_second(),
        if waiting.is_empty() {
            String::new()
        } else {
            format!(
                "; threads {} wait for it (in /proc's newest reading)",
                waiting.join(", ")
            )
        }
    ));
    let lines: Vec<String> = known
        .iter()
        .filter_map(|h| {
            reading
                .line(h.tid)
                .map(|l| format!("thread {} runs {l}", label(h.tid)))
        })
        .collect();
    if !lines.is_empty() {
        finding.evidence.push(format!(
            "the GIL holders' Python lines: {}",
            lines.join("; ")
        ));
    }
    if held >= GIL_HELD_SHARE && known.len() >= 2 {
        finding.confidence = if finding.severity == Severity::Warning {
            0.9
        } else {
            finding.confidence.max(0.6)
        };
        finding.summary.push_str(&format!(
            "; confirmed from the interpreter: the GIL is held {:.0} % of the time by {} threads in turn",
            held * 100.0,
            known.len()
        ));
    }
}

/// The /proc judgement of one process, and the threads waiting on the GIL's condition
/// in its newest contended reading.
fn judge(readings: &[Reading<'_>], usable: f64) -> Option<(Finding, Vec<i32>)> {
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
    Some((finding, newest.share.waiter_tids.clone()))
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

    fn with_memory(reading: GilReading) -> Timeline {
        let mut timeline = Timeline::new(120.0);
        for i in 0..6 {
            let mut sample = gil_sample(i, 4, "/usr/bin/python3.11", 2.0);
            if i == 4 {
                sample.gil.push(reading.clone());
            }
            timeline.push(sample);
        }
        timeline
    }

    fn read(locked_reads: u32, holders: &[(i32, u32)]) -> GilReading {
        GilReading {
            pid: 100,
            version: "3.11.7".into(),
            reads: 100,
            seconds: 1.0,
            locked_reads,
            switches: 180,
            holders: holders
                .iter()
                .map(|&(tid, reads)| crate::model::gil::GilHolder { tid, reads })
                .collect(),
            lines: vec![crate::model::gil::GilThreadLine {
                tid: 101,
                line: "spin (work.py:4)".into(),
            }],
            unavailable: None,
        }
    }

    #[test]
    fn the_gil_read_from_memory_confirms_with_each_holders_share_and_line() {
        let timeline = with_memory(read(97, &[(101, 40), (100, 30), (102, 27)]));
        let findings = gil_contention(&timeline, &DetectConfig::default());
        let f = &findings[0];
        assert_eq!(f.severity, Severity::Warning);
        assert!((f.confidence - 0.9).abs() < 1e-9);
        assert!((f.metrics["gil_held_share"] - 0.97).abs() < 1e-9);
        assert!((f.metrics["gil_switches_per_second"] - 180.0).abs() < 1e-9);
        assert!((f.metrics["gil_top_holder_share"] - 0.40).abs() < 1e-9);
        let evidence = f.evidence.join("\n");
        assert!(evidence.contains("held in 97 % of reads"), "{evidence}");
        assert!(evidence.contains("thread 101 (t101) 40 %"), "{evidence}");
        assert!(evidence.contains("switched 180 times/s"), "{evidence}");
        assert!(
            evidence.contains("thread 101 (t101) runs spin (work.py:4)"),
            "{evidence}"
        );
        assert!(
            f.summary.contains("confirmed from the interpreter"),
            "{}",
            f.summary
        );
    }

    #[test]
    fn a_gil_mostly_free_in_memory_turns_the_finding_to_info() {
        let timeline = with_memory(read(20, &[(101, 20)]));
        let f = &gil_contention(&timeline, &DetectConfig::default())[0];
        assert_eq!(f.severity, Severity::Info);
        assert!(f.evidence.join("\n").contains("free in 80 %"));
    }

    #[test]
    fn a_gil_that_cannot_be_read_keeps_the_proc_judgement_and_says_why() {
        let reading = GilReading {
            pid: 100,
            unavailable: Some("unsupported CPython version 3.10".into()),
            ..GilReading::default()
        };
        let f = &gil_contention(&with_memory(reading), &DetectConfig::default())[0];
        assert_eq!(f.severity, Severity::Warning);
        assert!((f.confidence - 0.7).abs() < 1e-9);
        assert!(f.evidence.join("\n").contains(
            "could not be read from the interpreter's memory (unsupported CPython version 3.10)"
        ));
        assert!(!f.metrics.contains_key("gil_held_share"));
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
