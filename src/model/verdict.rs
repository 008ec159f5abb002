//! What the waits of a process that makes no progress say: hung (an owed wait that
//! cannot end by itself, seen), idle (every thread waits for work, for time or for
//! input), or not known. Pure: a function of each thread's wait as /proc shows it and,
//! where they were taken, of the stacks' classes ([`ProcessWaits`]).
//!
//! No progress alone is not a hang: a `multiprocessing.Pool` between batches, a thread
//! pool with a sleeping main thread, a service waiting for its stop signal all show
//! 0 % CPU. Only an owed wait — a lock, a join, a result, a collective — whose end no
//! thread of the process can bring about makes a hang.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::model::stacks::{StacksReport, ThreadStack, WaitClass};
use crate::model::waits::line_of;

/// How /proc alone sees one thread's wait (no stacks): enough to prove a hang when no
/// thread can wake another, never enough to call one idle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProcWait {
    /// Running, or in a wait that ends by itself or from outside: a timer, a file
    /// descriptor, the disk.
    CanAct,
    /// A futex wait that ends by itself or from another process: it has a timeout, or
    /// its word lies in memory shared with other processes. Whatever the frames call
    /// the wait (a timed `acquire`), the thread can go on.
    FutexEnds,
    /// An untimed futex wait on a word private to the process (or a file lock): a lock,
    /// a condition, or a worker waiting for work — only the stacks tell which.
    PrivateWait,
    /// Stopped, a zombie, or a wait channel that could not be read.
    Unknown,
}

/// One thread's wait, classified from its stacks.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema, Deserialize)]
pub struct ThreadWait {
    pub tid: i32,
    pub class: WaitClass,
    /// The wait in one line: "MainThread sleeps at job.py:5".
    pub line: String,
    /// The pool of an idle pool thread ("ThreadPoolExecutor", "OpenBLAS").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<String>,
}

/// The waits of one process, classified from its stacks, taken once per wait state (the
/// collector keeps them while the process stays in the same waits) and carried on each
/// sample of the process.
#[derive(Debug, Clone, Default, PartialEq, Serialize, schemars::JsonSchema, Deserialize)]
pub struct ProcessWaits {
    /// Seconds since the watch began when the stacks were taken.
    pub taken_at_seconds: f64,
    pub threads: Vec<ThreadWait>,
    /// Owed waits whose holder is known and cannot act either: (waiter, holder).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub held_by_waiters: Vec<(i32, i32)>,
    /// Owed waits whose holder is known and can act (it runs, sleeps or reads): the
    /// wait can end by itself. (waiter, holder).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub held_by_active: Vec<(i32, i32)>,
    /// What a known pattern means (a lock-order cycle, thread-pool starvation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub meaning: Option<String>,
    /// Why the stacks could not classify the process (no ptrace permission, not built
    /// in), when they could not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unavailable: Option<String>,
    /// Where the process waits as a rank of a distributed job (its collective and call
    /// site), when it is one: kept when the stacks themselves are not (`tfwatch node`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rank_place: Option<crate::model::collectives::RankPlace>,
    /// The stacks themselves, for the explanation of a hang (not recorded).
    #[serde(skip)]
    pub report: Option<Arc<StacksReport>>,
}

impl ProcessWaits {
    pub fn class_of(&self, tid: i32) -> Option<WaitClass> {
        self.threads.iter().find(|t| t.tid == tid).map(|t| t.class)
    }

    /// "8 ThreadPoolExecutor worker(s) wait for work; MainThread sleeps at job.py:5".
    pub fn idle_summary(&self) -> String {
        let mut pools: Vec<(String, usize)> = Vec::new();
        let mut lines = Vec::new();
        for t in &self.threads {
            match &t.pool {
                Some(pool) if t.class == WaitClass::IdleWork => {
                    match pools.iter_mut().find(|(p, _)| p == pool) {
                        Some((_, n)) => *n += 1,
                        None => pools.push((pool.clone(), 1)),
                    }
                }
                _ => lines.push(t.line.clone()),
            }
        }
        let mut parts: Vec<String> = pools
            .iter()
            .map(|(pool, n)| format!("{n} {pool} thread(s) wait for work"))
            .collect();
        const SHOWN: usize = 4;
        let more = lines.len().saturating_sub(SHOWN);
        parts.extend(lines.into_iter().take(SHOWN));
        if more > 0 {
            parts.push(format!("{more} more waiting for work, time or input"));
        }
        parts.join("; ")
    }
}

/// The waits of process `pid` classified from `report`, its stacks taken at `taken_at`
/// seconds of the watch.
pub fn from_stacks(report: &StacksReport, pid: i32, taken_at: f64) -> ProcessWaits {
    let stacks: Vec<&ThreadStack> = report.threads.iter().filter(|t| t.pid == pid).collect();
    let threads: Vec<ThreadWait> = stacks
        .iter()
        .filter_map(|stack| {
            let wait = stack.wait.as_ref()?;
            Some(ThreadWait {
                tid: stack.tid,
                class: wait.class,
                line: line_of(stack, wait),
                pool: wait.idle.then(|| wait.object.clone()).flatten(),
            })
        })
        .collect();
    let explained = report.explained.iter().find(|e| e.pid == pid);
    let class = |tid: i32| {
        threads
            .iter()
            .find(|t| t.tid == tid)
            .map_or(WaitClass::Unknown, |t| t.class)
    };
    let (mut held_by_waiters, mut held_by_active) = (Vec::new(), Vec::new());
    for edge in explained.iter().flat_map(|e| e.python_locks.iter()) {
        let pair = (edge.waiter_tid, edge.holder_tid);
        if class(edge.holder_tid).can_act() {
            held_by_active.push(pair);
        } else {
            held_by_waiters.push(pair);
        }
    }
    let unavailable: Vec<String> = report
        .unavailable
        .iter()
        .filter(|u| u.pid == Some(pid))
        .map(|u| format!("{}: {}", u.source, u.reason))
        .collect();
    ProcessWaits {
        taken_at_seconds: taken_at,
        unavailable: (threads.is_empty() && !unavailable.is_empty())
            .then(|| unavailable.join("; ")),
        threads,
        held_by_waiters,
        held_by_active,
        meaning: explained.and_then(|e| e.meaning.clone()),
        rank_place: None,
        report: Some(Arc::new(report.clone())),
    }
}

/// What the waits of a process without progress say.
#[derive(Debug, Clone, PartialEq)]
pub enum WaitVerdict {
    /// An owed wait that cannot end by itself: `because` says why, `owed` names the
    /// owed waits (one line each).
    Hung { because: String, owed: Vec<String> },
    /// Every thread waits for work, for time or for input.
    Idle { summary: String },
    /// Neither proven nor known idle: why.
    Unconfirmed { why: String },
}

impl WaitVerdict {
    pub fn is_hung(&self) -> bool {
        matches!(self, WaitVerdict::Hung { .. })
    }
}

/// Judges the waits of a process that made no progress. `proc_waits` is each live
/// thread's wait as /proc shows it (with its tid); `stacks` the classes from its stacks
/// where they were taken for the waits it is in now.
/// `owners` are (waiter, holder) pairs of pthread mutexes whose owner was read from the
/// process's memory.
pub fn judge_waits(
    proc_waits: &[(i32, ProcWait)],
    stacks: Option<&ProcessWaits>,
    owners: &[(i32, i32)],
) -> WaitVerdict {
    let all_private =
        !proc_waits.is_empty() && proc_waits.iter().all(|(_, w)| *w == ProcWait::PrivateWait);
    let proc_wait = |tid: i32| proc_waits.iter().find(|(t, _)| *t == tid).map(|(_, w)| *w);
    // A mutex whose owner waits untimed on a private word itself: neither can go on.
    if let Some((waiter, holder)) = owners.iter().find(|(waiter, holder)| {
        proc_wait(*waiter) == Some(ProcWait::PrivateWait)
            && proc_wait(*holder) == Some(ProcWait::PrivateWait)
            && stacks
                .and_then(|s| s.class_of(*holder))
                .is_none_or(|c| !c.can_act())
    }) {
        return WaitVerdict::Hung {
            because: format!(
                "thread {waiter} waits for a mutex owned by thread {holder}, which waits itself (owner read from the mutex)"
            ),
            owed: stacks
                .map(|s| {
                    s.threads
                        .iter()
                        .filter(|t| t.class == WaitClass::Owed)
                        .map(|t| t.line.clone())
                        .collect()
                })
                .unwrap_or_default(),
        };
    }
    let Some(stacks) = stacks.filter(|s| s.unavailable.is_none() && !s.threads.is_empty()) else {
        let why = stacks
            .and_then(|s| s.unavailable.clone())
            .unwrap_or_else(|| "no stacks were taken of its waits".to_string());
        return if all_private && stacks.is_some_and(|s| s.unavailable.is_some()) {
            WaitVerdict::Hung {
                because: format!(
                    "every thread sits in an untimed wait on a lock word private to the process, with no timer, file descriptor or other process that could wake it: only a signal can ({why}, so the locks are not named)"
                ),
                owed: Vec::new(),
            }
        } else {
            WaitVerdict::Unconfirmed {
                why: if all_private {
                    format!(
                        "every thread waits on a private lock word, but {why}: a lock or a wait for work, not known yet"
                    )
                } else {
                    format!(
                        "{why}; some thread can still act (a timer, a file descriptor, another process)"
                    )
                },
            }
        };
    };
    // A thread whose /proc wait ends by itself can act whatever its frames say (a
    // timed `acquire`, a lock word shared with another process).
    let class = |tid: i32| -> WaitClass {
        let seen = stacks.class_of(tid).unwrap_or(WaitClass::Unknown);
        match proc_waits.iter().find(|(t, _)| *t == tid).map(|(_, w)| *w) {
            Some(ProcWait::FutexEnds) if !seen.can_act() => WaitClass::IdleTimer,
            _ => seen,
        }
    };
    let owed: Vec<&ThreadWait> = stacks
        .threads
        .iter()
        .filter(|t| class(t.tid) == WaitClass::Owed)
        .collect();
    if owed.is_empty() {
        return WaitVerdict::Idle {
            summary: stacks.idle_summary(),
        };
    }
    let owed_lines: Vec<String> = owed.iter().map(|t| t.line.clone()).collect();
    let chained: Vec<&(i32, i32)> = stacks
        .held_by_waiters
        .iter()
        .filter(|(waiter, holder)| class(*waiter) == WaitClass::Owed && !class(*holder).can_act())
        .collect();
    if !chained.is_empty() {
        return WaitVerdict::Hung {
            because: "a thread waits for a lock held by a thread that waits itself".to_string(),
            owed: owed_lines,
        };
    }
    let active: Vec<&ThreadWait> = stacks
        .threads
        .iter()
        .filter(|t| class(t.tid).can_act() && class(t.tid) != WaitClass::Unknown)
        .collect();
    let unknown = stacks
        .threads
        .iter()
        .filter(|t| class(t.tid) == WaitClass::Unknown)
        .count();
    if active.is_empty() && unknown == 0 {
        return WaitVerdict::Hung {
            because: "every other thread waits for work or is owed something too: no thread of the process can end the wait".to_string(),
            owed: owed_lines,
        };
    }
    let mut why = format!(
        "{} owed wait(s) ({}), but ",
        owed.len(),
        owed_lines.first().cloned().unwrap_or_default()
    );
    if let Some(t) = active.first() {
        why.push_str(&format!(
            "{} thread(s) can still end them by themselves ({})",
            active.len(),
            t.line
        ));
    } else {
        why.push_str(&format!(
            "{unknown} thread(s) wait where the stacks cannot tell"
        ));
    }
    WaitVerdict::Unconfirmed { why }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn waits(threads: &[(i32, WaitClass, &str)]) -> ProcessWaits {
        ProcessWaits {
            threads: threads
                .iter()
                .map(|(tid, class, line)| ThreadWait {
                    tid: *tid,
                    class: *class,
                    line: line.to_string(),
                    pool: (*class == WaitClass::IdleWork && line.contains("worker"))
                        .then(|| "ThreadPoolExecutor".to_string()),
                })
                .collect(),
            ..ProcessWaits::default()
        }
    }

    fn private(tids: &[i32]) -> Vec<(i32, ProcWait)> {
        tids.iter().map(|&t| (t, ProcWait::PrivateWait)).collect()
    }

    #[test]
    fn a_pool_with_a_sleeping_main_is_idle() {
        let mut procs = private(&[2, 3]);
        procs.push((1, ProcWait::CanAct));
        let stacks = waits(&[
            (1, WaitClass::IdleTimer, "MainThread sleeps at job.py:5"),
            (2, WaitClass::IdleWork, "worker 2 waits"),
            (3, WaitClass::IdleWork, "worker 3 waits"),
        ]);
        let WaitVerdict::Idle { summary } = judge_waits(&procs, Some(&stacks), &[]) else {
            panic!("not idle");
        };
        assert_eq!(
            summary,
            "2 ThreadPoolExecutor thread(s) wait for work; MainThread sleeps at job.py:5"
        );
    }

    #[test]
    fn a_join_on_a_consumer_no_thread_can_feed_is_hung() {
        let stacks = waits(&[
            (1, WaitClass::Owed, "MainThread waits for a thread to end"),
            (2, WaitClass::IdleWork, "consumer waits on a queue `get`"),
        ]);
        let verdict = judge_waits(&private(&[1, 2]), Some(&stacks), &[]);
        assert!(verdict.is_hung(), "{verdict:?}");
    }

    #[test]
    fn an_owed_wait_beside_a_sleeping_thread_is_not_proven() {
        // main waits for a result a worker will give after its sleep.
        let mut procs = private(&[1]);
        procs.push((2, ProcWait::CanAct));
        let stacks = waits(&[
            (1, WaitClass::Owed, "MainThread waits for a future's result"),
            (2, WaitClass::IdleTimer, "worker sleeps"),
        ]);
        let verdict = judge_waits(&procs, Some(&stacks), &[]);
        assert!(
            matches!(verdict, WaitVerdict::Unconfirmed { .. }),
            "{verdict:?}"
        );
        // … unless the lock it waits for is held by a thread that waits itself.
        let mut chained = stacks.clone();
        chained.threads.push(ThreadWait {
            tid: 3,
            class: WaitClass::Owed,
            line: "thread 3 waits on Python Lock `b`".into(),
            pool: None,
        });
        procs.push((3, ProcWait::PrivateWait));
        chained.held_by_waiters.push((1, 3));
        assert!(judge_waits(&procs, Some(&chained), &[]).is_hung());
    }

    #[test]
    fn a_timed_wait_in_proc_can_act_whatever_the_frames_say() {
        let stacks = waits(&[
            (1, WaitClass::Owed, "MainThread waits for a thread to end"),
            (2, WaitClass::Owed, "t waits on Python Lock `a`"),
        ]);
        let procs = vec![(1, ProcWait::PrivateWait), (2, ProcWait::FutexEnds)];
        assert!(matches!(
            judge_waits(&procs, Some(&stacks), &[]),
            WaitVerdict::Unconfirmed { .. }
        ));
        assert!(judge_waits(&private(&[1, 2]), Some(&stacks), &[]).is_hung());
    }

    #[test]
    fn without_stacks_only_all_private_waits_prove_a_hang() {
        let denied = ProcessWaits {
            unavailable: Some("no ptrace permission".into()),
            ..ProcessWaits::default()
        };
        assert!(judge_waits(&private(&[1, 2]), Some(&denied), &[]).is_hung());
        let mut with_timer = private(&[1]);
        with_timer.push((2, ProcWait::CanAct));
        assert!(matches!(
            judge_waits(&with_timer, Some(&denied), &[]),
            WaitVerdict::Unconfirmed { .. }
        ));
        // Not taken yet (a node's budget): unconfirmed, not hung.
        assert!(matches!(
            judge_waits(&private(&[1, 2]), None, &[]),
            WaitVerdict::Unconfirmed { .. }
        ));
    }

    #[test]
    fn a_mutex_owned_by_a_waiting_thread_is_hung_beside_a_sleeper() {
        let mut procs = private(&[2, 3]);
        procs.push((1, ProcWait::CanAct));
        assert!(judge_waits(&procs, None, &[(2, 3)]).is_hung());
        // Owned by the sleeper: it will let go.
        assert!(!judge_waits(&procs, None, &[(2, 1)]).is_hung());
    }
}
