use super::*;
use crate::detect::test_support::{process, sample, thread};
use crate::model::{Sample, Syscall, ThreadSample};

const WORD: u64 = 0x7f00_1000;

fn waiting(mut t: ThreadSample, word: u64, timed: bool) -> ThreadSample {
    t.state = 'S';
    t.wchan = Some("futex_wait_queue".to_string());
    t.syscall = Some(Syscall::InSyscall {
        number: 202,
        name: Some("futex".into()),
        args: [word, 128, 2, if timed { 0x7ffd_0000 } else { 0 }, 0, 0],
    });
    t
}

fn running(mut t: ThreadSample) -> ThreadSample {
    t.state = 'R';
    t.syscall = Some(Syscall::Running);
    t
}

/// `threads` threads through one lock: at sample `i` thread `i % threads` holds it and
/// runs, the others wait on [`WORD`]; each has run its share of one core.
fn convoy_sample(i: usize, threads: usize, exe: &str, timed: bool) -> Sample {
    let list = (0..threads)
        .map(|k| {
            let t = thread(100 + k as i32, 'S', "", i as f64 / threads as f64);
            if k == i % threads {
                running(t)
            } else {
                waiting(t, WORD, timed)
            }
        })
        .collect();
    let mut p = process(100, 1, list);
    p.exe = Some(exe.to_string());
    sample(i as f64, 2.0, vec![p])
}

fn timeline_of(samples: impl IntoIterator<Item = Sample>) -> Timeline {
    let mut timeline = Timeline::new(120.0);
    for s in samples {
        timeline.push(s);
    }
    timeline
}

#[test]
fn eight_threads_through_one_lock_are_a_convoy_named_by_its_word() {
    let timeline = timeline_of((0..6).map(|i| convoy_sample(i, 8, "/usr/bin/python3.11", false)));
    let findings = lock_convoy(&timeline, &DetectConfig::default());
    assert_eq!(findings.len(), 1, "{findings:#?}");
    let f = &findings[0];
    assert_eq!(f.kind, FindingKind::LockContention);
    assert_eq!(f.severity, Severity::Warning);
    assert!(f.summary.contains("7 of 8 threads"), "{}", f.summary);
    assert!(f.summary.contains(&format!("{WORD:#x}")), "{}", f.summary);
    assert!((f.metrics["effective_parallelism"] - 1.0).abs() < 0.01);
    assert_eq!(f.tids.len(), 7);
    assert!(f.remedy.contains("predict()"));
}

#[test]
fn one_reading_is_only_info() {
    let timeline = timeline_of((0..2).map(|i| convoy_sample(i, 8, "/usr/bin/job", false)));
    let findings = lock_convoy(&timeline, &DetectConfig::default());
    assert_eq!(findings.len(), 1);
    assert_eq!(findings[0].severity, Severity::Info);
}

#[test]
fn timed_waits_of_a_python_process_are_the_gil_not_a_lock() {
    let timeline = timeline_of((0..6).map(|i| convoy_sample(i, 4, "/usr/bin/python3", true)));
    assert!(lock_convoy(&timeline, &DetectConfig::default()).is_empty());
    // The same timed waits in a native program are a lock.
    let timeline = timeline_of((0..6).map(|i| convoy_sample(i, 4, "/usr/bin/server", true)));
    assert_eq!(lock_convoy(&timeline, &DetectConfig::default()).len(), 1);
}

#[test]
fn idle_workers_on_one_word_beside_a_busy_main_thread_are_no_convoy() {
    let samples = (0..6).map(|i| {
        let mut list = vec![running(thread(100, 'R', "", i as f64))];
        list.extend((1..9).map(|k| waiting(thread(100 + k, 'S', "", 0.5), WORD, false)));
        sample(i as f64, 2.0, vec![process(100, 1, list)])
    });
    let timeline = timeline_of(samples);
    assert!(lock_convoy(&timeline, &DetectConfig::default()).is_empty());
}

#[test]
fn an_idle_process_waiting_on_one_word_is_no_convoy() {
    let samples = (0..6).map(|i| {
        let list = (0..8)
            .map(|k| waiting(thread(100 + k, 'S', "", 0.5), WORD, false))
            .collect();
        sample(i as f64, 2.0, vec![process(100, 1, list)])
    });
    let timeline = timeline_of(samples);
    assert!(lock_convoy(&timeline, &DetectConfig::default()).is_empty());
}

#[test]
fn threads_that_each_run_on_their_own_cpu_are_no_convoy() {
    let samples = (0..6).map(|i| {
        let list = (0..2)
            .map(|k| running(thread(100 + k, 'R', "", i as f64)))
            .collect();
        sample(i as f64, 2.0, vec![process(100, 1, list)])
    });
    let timeline = timeline_of(samples);
    assert!(lock_convoy(&timeline, &DetectConfig::default()).is_empty());
}

#[test]
fn stale_waits_between_detail_samples_are_no_reading() {
    // Waits read every fifth sample: the samples between carry old slow fields and
    // count neither for nor against the convoy.
    let samples = (0..16).map(|i| {
        let mut s = convoy_sample(i, 8, "/usr/bin/job", false);
        if i % 5 != 0 {
            for p in &mut s.processes {
                let mut threads: Vec<ThreadSample> = p.threads.iter().cloned().collect();
                for t in &mut threads {
                    t.details_age_seconds = (i % 5) as f64;
                }
                p.threads = threads.into();
            }
        }
        s
    });
    let timeline = timeline_of(samples);
    let findings = lock_convoy(&timeline, &DetectConfig::default());
    assert_eq!(findings.len(), 1);
    assert_eq!(findings[0].severity, Severity::Warning, "{findings:#?}");
}
