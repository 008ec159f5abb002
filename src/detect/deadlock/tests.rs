//! The wait-for graph on recorded waiter/owner data.

use super::*;
use crate::detect::test_support::{process, sample, thread};
use crate::detect::{DetectConfig, detect};
use crate::model::{LoadedRuntime, RuntimeAudit};
use crate::timeline::Timeline;

const PRIVATE_WAIT: u64 = 128;
const SHARED_WAIT: u64 = 0;

/// A thread asleep in a futex wait on `address`, whose owner is `owner` (`None`:
/// unknown), as the sampler records it.
fn waiting_op(tid: i32, address: u64, owner: Option<i32>, op: u64) -> ThreadSample {
    let mut t = thread(tid, 'S', "futex_do_wait", 0.5);
    t.syscall = Some(Syscall::InSyscall {
        number: 202,
        name: Some("futex".into()),
        args: [address, op, 2, 0, 0, 0],
    });
    t.lock = Some(LockWait {
        address,
        owner_tid: owner,
        kind: if owner.is_some() {
            LockWait::PTHREAD_MUTEX
        } else {
            LockWait::UNKNOWN
        },
        unavailable: None,
        shared_mapping: None,
    });
    t
}

fn waiting(tid: i32, address: u64, owner: i32) -> ThreadSample {
    waiting_op(tid, address, Some(owner), PRIVATE_WAIT)
}

fn one(processes: Vec<crate::model::ProcessSample>) -> Sample {
    sample(10.0, 2.0, processes)
}

#[test]
fn two_cycle_names_both_threads_and_mutexes() {
    let s = one(vec![process(
        100,
        1,
        vec![
            thread(100, 'S', "do_wait", 0.1),
            waiting(4242, 0x7f00_0010, 4243),
            waiting(4243, 0x7f00_0040, 4242),
        ],
    )]);
    let a = analyse(&s);
    assert_eq!(a.deadlocks.len(), 1, "{a:#?}");
    let f = &a.deadlocks[0];
    assert_eq!(f.kind, FindingKind::Deadlock);
    assert_eq!(f.severity, Severity::Error);
    assert_eq!(f.confidence, 1.0);
    assert_eq!(f.tids, vec![4242, 4243]);
    assert_eq!(f.pids, vec![100]);
    assert_eq!(f.metrics["cycle_length"], 2.0);
    assert_eq!(
        f.summary,
        "thread 4242 (t4242) waits for mutex 0x7f000010 held by 4243 (t4243), which waits for mutex 0x7f000040 held by 4242: a lock cycle of 2 threads"
    );
    assert_eq!(f.evidence.len(), 3, "one line per edge and the source");
}

#[test]
fn three_cycle_is_one_cycle_of_three() {
    let s = one(vec![process(
        100,
        1,
        vec![
            waiting(12, 0x30, 10),
            waiting(10, 0x10, 11),
            waiting(11, 0x20, 12),
        ],
    )]);
    let a = analyse(&s);
    assert_eq!(a.deadlocks.len(), 1);
    assert_eq!(
        a.deadlocks[0].tids,
        vec![10, 11, 12],
        "starts at the smallest tid"
    );
    assert_eq!(a.deadlocks[0].metrics["cycle_length"], 3.0);
    assert!(
        a.deadlocks[0]
            .summary
            .contains("held by 12 (t12), which waits for mutex 0x30 held by 10")
    );
}

#[test]
fn two_disjoint_cycles_and_a_thread_behind_one() {
    let s = one(vec![
        process(
            100,
            1,
            vec![
                waiting(10, 0x10, 11),
                waiting(11, 0x20, 10),
                // Blocked behind the first cycle, not part of it.
                waiting(12, 0x10, 11),
            ],
        ),
        process(200, 100, vec![waiting(20, 0x50, 21), waiting(21, 0x60, 20)]),
    ]);
    let a = analyse(&s);
    assert_eq!(a.deadlocks.len(), 2, "{a:#?}");
    assert_eq!(a.deadlocks[0].tids, vec![10, 11, 12]);
    assert_eq!(a.deadlocks[0].metrics["blocked_behind"], 1.0);
    assert_eq!(a.deadlocks[1].tids, vec![20, 21]);
    assert_eq!(a.deadlocks[1].pids, vec![200]);
    assert!(a.notes.is_empty(), "{:#?}", a.notes);
}

#[test]
fn chain_ending_in_a_running_thread_is_not_a_deadlock() {
    let s = one(vec![process(
        100,
        1,
        vec![
            waiting(10, 0x10, 11),
            waiting(11, 0x20, 12),
            thread(12, 'R', "", 3.0),
            waiting(13, 0x10, 11),
        ],
    )]);
    let a = analyse(&s);
    assert!(a.deadlocks.is_empty());
    assert_eq!(a.notes.len(), 1, "{:#?}", a.notes);
    let note = &a.notes[0];
    assert_eq!(note.kind, crate::model::locks::LockNoteKind::LockChain);
    assert_eq!(
        note.text,
        "lock chain: 2 threads (10, 13) wait for mutex 0x10 held by 11 (t11), which waits for mutex 0x20 held by 12 (t12), which is running (not a deadlock)"
    );
    // In I/O: also a chain.
    let s = one(vec![process(
        100,
        1,
        vec![waiting(10, 0x10, 11), thread(11, 'D', "blk_wait", 1.0)],
    )]);
    let a = analyse(&s);
    assert!(a.deadlocks.is_empty());
    assert!(
        a.notes[0]
            .text
            .ends_with("which is in uninterruptible I/O (blk_wait) (not a deadlock)")
    );
}

#[test]
fn cycle_with_a_running_member_is_not_confirmed() {
    let mut runner = waiting(11, 0x20, 10);
    runner.state = 'R';
    let s = one(vec![process(100, 1, vec![waiting(10, 0x10, 11), runner])]);
    let a = analyse(&s);
    assert!(a.deadlocks.is_empty());
    assert!(a.notes[0].text.contains("not confirmed"));
}

#[test]
fn self_deadlock_is_a_cycle_of_one() {
    let s = one(vec![process(100, 1, vec![waiting(10, 0xabc0, 10)])]);
    let a = analyse(&s);
    assert_eq!(a.deadlocks.len(), 1);
    let f = &a.deadlocks[0];
    assert_eq!(f.tids, vec![10]);
    assert_eq!(f.metrics["cycle_length"], 1.0);
    assert!(f.summary.contains("that it holds itself"), "{}", f.summary);
}

#[test]
fn unknown_owners_are_grouped_by_address() {
    let mut threads: Vec<ThreadSample> = (10..15)
        .map(|tid| waiting_op(tid, 0x7f00_0100, None, PRIVATE_WAIT))
        .collect();
    threads.push(waiting_op(20, 0x7f00_0200, None, PRIVATE_WAIT));
    let s = one(vec![process(100, 1, threads)]);
    let a = analyse(&s);
    assert!(a.deadlocks.is_empty());
    assert_eq!(
        a.notes.len(),
        1,
        "a lone waiter is not grouped: {:#?}",
        a.notes
    );
    assert_eq!(
        a.notes[0].kind,
        crate::model::locks::LockNoteKind::UnknownOwner
    );
    assert!(
        a.notes[0]
            .text
            .starts_with("5 threads wait on one address 0x7f000100 whose holder is unknown"),
        "{}",
        a.notes[0].text
    );
    assert_eq!(a.notes[0].tids, vec![10, 11, 12, 13, 14]);
}

#[test]
fn cpython_waiters_with_one_runner_are_labelled_gil_heuristic() {
    // glibc's condition variable: waiters on both signal words, 4 bytes apart.
    let mut threads: Vec<ThreadSample> = (11..18)
        .map(|tid| {
            waiting_op(
                tid,
                0x5555_0000 + 4 * u64::from(tid % 2 == 0),
                None,
                PRIVATE_WAIT,
            )
        })
        .collect();
    // Another lock of the process stays its own group.
    threads.push(waiting_op(30, 0x6666_0000, None, PRIVATE_WAIT));
    threads.push(waiting_op(31, 0x6666_0000, None, PRIVATE_WAIT));
    threads.push(thread(10, 'R', "", 9.0));
    let mut p = process(100, 1, threads);
    p.audit = Some(RuntimeAudit {
        runtimes: vec![LoadedRuntime {
            name: "CPython".into(),
            family: "interpreter".into(),
            library: "libpython3.11.so.1.0".into(),
            version: Some("3.11".into()),
        }],
        ..RuntimeAudit::default()
    });
    let a = analyse(&one(vec![p]));
    assert_eq!(a.notes.len(), 2, "{:#?}", a.notes);
    assert_eq!(
        a.notes[0].kind,
        crate::model::locks::LockNoteKind::GilHeuristic
    );
    assert_eq!(a.notes[0].tids.len(), 7);
    assert_eq!(
        a.notes[1].kind,
        crate::model::locks::LockNoteKind::UnknownOwner
    );
    assert_eq!(a.notes[1].tids, vec![30, 31]);
    assert!(
        a.notes[0]
            .text
            .contains("1 thread computing (10 t10), 7 waiting for the GIL"),
        "{}",
        a.notes[0].text
    );
}

/// A multi-threaded parent whose thread 11 held the mutex at fork; the child's only
/// thread waits for it.
fn forked(owner: i32) -> Sample {
    let parent = process(
        10,
        1,
        vec![
            thread(10, 'R', "", 5.0),
            thread(11, 'S', "hrtimer_nanosleep", 0.1),
        ],
    );
    let child = process(20, 10, vec![waiting(20, 0x4000, owner)]);
    one(vec![parent, child])
}

#[test]
fn fork_inherited_lock_with_owner_in_the_parent() {
    let a = analyse(&forked(11));
    assert!(a.deadlocks.is_empty());
    assert_eq!(a.fork_inherited.len(), 1);
    let f = &a.fork_inherited[0];
    assert_eq!(f.kind, FindingKind::ForkInheritedLock);
    assert_eq!(f.confidence, 1.0);
    assert_eq!(f.pids, vec![20, 10]);
    assert_eq!(f.tids, vec![20]);
    assert!(f.summary.contains("lock inherited across fork, owner gone"));
    assert!(
        f.summary
            .contains("held by tid 11, which does not exist in the child; tid 11 is thread t11 of the parent pid 10"),
        "{}",
        f.summary
    );
    assert_eq!(f.metrics["owner_tid"], 11.0);
}

#[test]
fn fork_inherited_lock_with_owner_gone_everywhere() {
    let a = analyse(&forked(19));
    assert_eq!(a.fork_inherited.len(), 1);
    assert_eq!(a.fork_inherited[0].confidence, 0.9);
    assert!(
        a.fork_inherited[0]
            .summary
            .contains("not a thread of the parent pid 10 (job) now either")
    );
}

#[test]
fn process_shared_mutex_across_processes_is_a_cross_process_cycle() {
    let s = one(vec![
        process(10, 1, vec![waiting_op(10, 0x9000, Some(20), SHARED_WAIT)]),
        process(20, 10, vec![waiting_op(20, 0x9040, Some(10), SHARED_WAIT)]),
    ]);
    let a = analyse(&s);
    assert!(
        a.fork_inherited.is_empty(),
        "shared mutexes may be held elsewhere"
    );
    assert_eq!(a.deadlocks.len(), 1);
    assert_eq!(a.deadlocks[0].pids, vec![10, 20]);
    assert!(
        a.deadlocks[0]
            .summary
            .contains("10 (t10, pid 10) waits for mutex 0x9000 held by 20 (t20, pid 20)")
    );
}

#[test]
fn detect_reports_one_fork_finding_per_child_and_no_duplicate_hang() {
    let mut timeline = Timeline::new(600.0);
    for t in 0..4 {
        let mut s = forked(11);
        s.elapsed_seconds = f64::from(t);
        s.uptime_seconds = Some(1000.0 + f64::from(t));
        s.processes[0].cpu_seconds = f64::from(t);
        s.processes[0].threads[0].run_seconds = Some(f64::from(t));
        s.processes[1].start_time_seconds = 999.0;
        s.processes[1].cpu_seconds = 0.0;
        s.processes[1].threads[0].cpu_seconds = 0.0;
        s.processes[1].threads[0].run_seconds = Some(0.0);
        timeline.push(s);
    }
    let findings = detect(&timeline, &DetectConfig::default());
    let fork: Vec<_> = findings
        .iter()
        .filter(|f| f.kind == FindingKind::ForkInheritedLock)
        .collect();
    assert_eq!(fork.len(), 1, "{findings:#?}");
    assert_eq!(fork[0].confidence, 1.0, "the proof wins");
    assert!(
        fork[0]
            .evidence
            .iter()
            .any(|e| e.contains("same program as its parent")),
        "the heuristic's evidence is merged: {:#?}",
        fork[0].evidence
    );

    // A deadlocked process gets `deadlock`, not also `no-progress`.
    let mut timeline = Timeline::new(600.0);
    for t in 0..80 {
        timeline.push(sample(
            f64::from(t),
            2.0,
            vec![process(
                100,
                1,
                vec![waiting(101, 0x10, 102), waiting(102, 0x20, 101)],
            )],
        ));
    }
    let findings = detect(&timeline, &DetectConfig::default());
    let kinds: Vec<_> = findings.iter().map(|f| f.kind).collect();
    assert_eq!(kinds, vec![FindingKind::Deadlock], "{findings:#?}");
}

#[test]
fn no_progress_carries_the_grouped_waiters_as_evidence() {
    let mut timeline = Timeline::new(600.0);
    for t in 0..15 {
        let threads = (10..15)
            .map(|tid| waiting_op(tid, 0x7f00_0100, None, PRIVATE_WAIT))
            .collect();
        timeline.push(sample(f64::from(t), 2.0, vec![process(100, 1, threads)]));
    }
    let config = DetectConfig {
        hang_after_seconds: 10.0,
        ..DetectConfig::default()
    };
    let findings = detect(&timeline, &config);
    assert_eq!(findings.len(), 1, "{findings:#?}");
    assert_eq!(findings[0].kind, FindingKind::NoProgress);
    assert!(
        findings[0]
            .evidence
            .iter()
            .any(|e| e
                .starts_with("5 threads wait on one address 0x7f000100 whose holder is unknown")),
        "{:#?}",
        findings[0].evidence
    );
}
