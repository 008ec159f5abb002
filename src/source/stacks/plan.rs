//! Which threads the native unwinder takes, in what order, and when it stops: the
//! blocked threads first (their stacks say what the process waits for), the running
//! ones last (their stacks change under the unwinder, and a busy rank's location is
//! still worth having when there is time), within a pause budget per process. Threads
//! left when the budget is spent are reported as not unwound, and the unwind is
//! partial. Pure: the unwinder and the clock are passed in, so fixtures test it.

use std::time::Duration;

/// The pause budget for a process's first [`BUDGET_THREADS`] threads.
pub const BASE_BUDGET: Duration = Duration::from_millis(200);
/// Threads covered by [`BASE_BUDGET`]; the budget grows in proportion beyond them.
pub const BUDGET_THREADS: usize = 16;
/// The budget never exceeds this, however many threads.
pub const MAX_BUDGET: Duration = Duration::from_secs(2);

/// How long the native unwind of a process of `threads` threads may take: 200 ms for the
/// first 16 threads, 12.5 ms for each one beyond, at most 2 s.
pub fn pause_budget(threads: usize) -> Duration {
    let extra = threads.saturating_sub(BUDGET_THREADS) as u32;
    let per_thread = BASE_BUDGET / BUDGET_THREADS as u32;
    (BASE_BUDGET + per_thread * extra).min(MAX_BUDGET)
}

/// One thread to unwind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Planned {
    pub tid: i32,
    /// On a CPU (state R) when the unwind was planned.
    pub running: bool,
}

/// The order of the unwind from each thread's state letter: blocked threads first, then
/// running ones, each by tid (the main thread first); zombies and dead threads left out.
pub fn order(states: &[(i32, char, String)]) -> Vec<Planned> {
    let mut planned: Vec<Planned> = states
        .iter()
        .filter(|(_, state, _)| !matches!(state, 'Z' | 'X' | 'x'))
        .map(|(tid, state, _)| Planned {
            tid: *tid,
            running: *state == 'R',
        })
        .collect();
    planned.sort_by_key(|p| (p.running, p.tid));
    planned
}

/// Why one thread's unwind did not give a stack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ThreadError {
    /// It exited meanwhile: nothing to report.
    Gone,
    /// The kernel refused to attach (a permission, another tracer): the whole process
    /// is refused, when no thread was taken.
    Refused(String),
    /// This thread only (it did not stop in time, its stack could not be read).
    Failed(String),
}

/// Passes over the blocked threads a spent budget left: each a pause of its own, no
/// longer than the first, so that on a loaded machine the proof in their stacks is
/// finished rather than dropped.
pub const MORE_PASSES: usize = 2;

/// Whether a thread was left out of an unwind only because the pause budget was spent
/// (said so by [`within_budget`]): a later pass may take it.
pub fn budget_spent(why: &str) -> bool {
    why.starts_with("not unwound: the ") && why.ends_with(" ms pause budget was spent")
}

/// Whether a thread was left out of an unwind because the budget was spent, blocked
/// ([`budget_spent`]) or running (which the budget takes last).
pub fn left_by_budget(why: &str) -> bool {
    budget_spent(why) || why.starts_with("running, not unwound (the ")
}

/// The blocked threads of `plan` that `left` (tid, why not unwound) says the budget did
/// not reach, in the plan's order: the next pass's plan.
pub fn unfinished(plan: &[Planned], left: &[(i32, &str)]) -> Vec<Planned> {
    plan.iter()
        .filter(|p| !p.running)
        .filter(|p| {
            left.iter()
                .any(|(tid, why)| *tid == p.tid && budget_spent(why))
        })
        .copied()
        .collect()
}

/// What the budgeted unwind gave.
#[derive(Debug, Clone, PartialEq)]
pub struct Unwound<T> {
    /// The threads unwound, in the order taken.
    pub done: Vec<(i32, T)>,
    /// The threads not unwound, and why (said on their line of the report).
    pub left: Vec<(i32, String)>,
    /// The budget ran out before every thread was taken.
    pub partial: bool,
    /// How long the unwind took: the longest any thread was stopped is at most this.
    pub paused: Duration,
}

/// Unwinds `plan` in order with `unwind` (given the time left of the budget) until the
/// budget is spent; `elapsed` is the time since the unwind began. A thread is started
/// only while time is left, so the pause is bounded by the budget plus one thread's
/// unwind. Refused before any thread was taken: the process is refused (`Err`).
pub fn within_budget<T>(
    plan: &[Planned],
    budget: Duration,
    elapsed: &mut dyn FnMut() -> Duration,
    unwind: &mut dyn FnMut(i32, Duration) -> Result<T, ThreadError>,
) -> Result<Unwound<T>, String> {
    let mut result = Unwound {
        done: Vec::new(),
        left: Vec::new(),
        partial: false,
        paused: Duration::ZERO,
    };
    let budget_ms = budget.as_millis();
    for (at, planned) in plan.iter().enumerate() {
        let spent = elapsed();
        if spent >= budget {
            result.partial = true;
            for rest in &plan[at..] {
                let why = if rest.running {
                    format!(
                        "running, not unwound (the {budget_ms} ms pause budget went to the blocked threads)"
                    )
                } else {
                    format!("not unwound: the {budget_ms} ms pause budget was spent")
                };
                debug_assert!(rest.running || budget_spent(&why));
                result.left.push((rest.tid, why));
            }
            break;
        }
        match unwind(planned.tid, budget - spent) {
            Ok(stack) => result.done.push((planned.tid, stack)),
            Err(ThreadError::Gone) => {}
            Err(ThreadError::Refused(why)) if result.done.is_empty() => return Err(why),
            Err(ThreadError::Refused(why) | ThreadError::Failed(why)) => {
                result
                    .left
                    .push((planned.tid, format!("not unwound: {why}")));
            }
        }
    }
    result.paused = elapsed();
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn states(list: &[(i32, char)]) -> Vec<(i32, char, String)> {
        list.iter()
            .map(|(tid, state)| (*tid, *state, String::new()))
            .collect()
    }

    #[test]
    fn a_second_pass_takes_the_blocked_threads_a_spent_budget_left() {
        let plan = order(&states(&[(1, 'S'), (2, 'S'), (3, 'S'), (4, 'R')]));
        // Each thread takes 60 ms: a 100 ms budget reaches two; 3 and the running 4 are
        // left.
        let mut calls = 0u32;
        let mut slow = || {
            calls += 1;
            Duration::from_millis(60) * (calls - 1)
        };
        let ok = |tid: i32, _: Duration| Ok::<_, ThreadError>(tid);
        let first =
            within_budget(&plan, Duration::from_millis(100), &mut slow, &mut { ok }).unwrap();
        assert!(first.partial);
        assert_eq!(first.done, [(1, 1), (2, 2)]);
        let mut left: Vec<(i32, &str)> = first.left.iter().map(|(t, w)| (*t, w.as_str())).collect();
        assert_eq!(left.iter().map(|l| l.0).collect::<Vec<_>>(), [3, 4]);
        // The blocked thread 3 is taken again; the running one stays out, as does a
        // thread that failed for another reason.
        left.push((5, "not unwound: its stack could not be read"));
        let again = unfinished(&plan, &left);
        assert_eq!(
            again,
            [Planned {
                tid: 3,
                running: false
            }]
        );
        let mut quick = || Duration::ZERO;
        let second =
            within_budget(&again, Duration::from_millis(100), &mut quick, &mut { ok }).unwrap();
        assert!(!second.partial);
        assert_eq!(second.done, [(3, 3)]);
        assert!(unfinished(&again, &[]).is_empty());
    }

    #[test]
    fn the_budget_is_200_ms_for_16_threads_and_grows_with_more() {
        assert_eq!(pause_budget(1), Duration::from_millis(200));
        assert_eq!(pause_budget(16), Duration::from_millis(200));
        assert_eq!(pause_budget(32), Duration::from_millis(400));
        assert_eq!(pause_budget(100), Duration::from_millis(1250));
        assert_eq!(pause_budget(10_000), MAX_BUDGET);
    }

    #[test]
    fn blocked_threads_come_first_and_zombies_not_at_all() {
        let plan = order(&states(&[
            (12, 'R'),
            (10, 'S'),
            (14, 'Z'),
            (11, 'R'),
            (13, 'S'),
        ]));
        let tids: Vec<(i32, bool)> = plan.iter().map(|p| (p.tid, p.running)).collect();
        assert_eq!(tids, [(10, false), (13, false), (11, true), (12, true)]);
    }

    /// A fake clock that each unwind advances by `cost`.
    fn run(
        plan: &[Planned],
        budget_ms: u64,
        cost_ms: u64,
        mut fail: impl FnMut(i32) -> Option<ThreadError>,
    ) -> Result<Unwound<i32>, String> {
        let clock = std::cell::Cell::new(Duration::ZERO);
        let mut elapsed = || clock.get();
        let mut unwind = |tid: i32, left: Duration| {
            assert!(left > Duration::ZERO, "a thread starts only with time left");
            clock.set(clock.get() + Duration::from_millis(cost_ms));
            match fail(tid) {
                Some(error) => Err(error),
                None => Ok(tid * 100),
            }
        };
        within_budget(
            plan,
            Duration::from_millis(budget_ms),
            &mut elapsed,
            &mut unwind,
        )
    }

    #[test]
    fn everything_is_taken_when_the_budget_allows() {
        let plan = order(&states(&[(1, 'S'), (2, 'R'), (3, 'S')]));
        let unwound = run(&plan, 200, 10, |_| None).expect("taken");
        assert!(!unwound.partial);
        assert!(unwound.left.is_empty());
        let tids: Vec<i32> = unwound.done.iter().map(|(t, _)| *t).collect();
        assert_eq!(tids, [1, 3, 2], "the running thread last");
        assert_eq!(unwound.done[0].1, 100);
        assert_eq!(unwound.paused, Duration::from_millis(30));
    }

    #[test]
    fn over_budget_the_running_threads_go_first_and_the_rest_is_partial() {
        // 4 blocked, 3 running, 60 ms each, 200 ms: threads start at 0, 60, 120 and
        // 180 ms; at 240 ms the budget is spent.
        let plan = order(&states(&[
            (1, 'S'),
            (2, 'R'),
            (3, 'S'),
            (4, 'R'),
            (5, 'S'),
            (6, 'S'),
            (7, 'R'),
        ]));
        let unwound = run(&plan, 200, 60, |_| None).expect("taken");
        assert!(unwound.partial);
        let tids: Vec<i32> = unwound.done.iter().map(|(t, _)| *t).collect();
        assert_eq!(tids, [1, 3, 5, 6], "every blocked thread, no running one");
        let left: Vec<i32> = unwound.left.iter().map(|(t, _)| *t).collect();
        assert_eq!(left, [2, 4, 7]);
        assert!(
            unwound.left[0].1.starts_with("running, not unwound"),
            "{}",
            unwound.left[0].1
        );
        assert!(
            unwound.left[0].1.contains("200 ms"),
            "{}",
            unwound.left[0].1
        );
        assert_eq!(unwound.paused, Duration::from_millis(240));
    }

    #[test]
    fn blocked_threads_past_the_budget_are_said_to_be_left_out() {
        let plan = order(&states(&[(1, 'S'), (2, 'S'), (3, 'S')]));
        let unwound = run(&plan, 100, 100, |_| None).expect("taken");
        assert_eq!(unwound.done.len(), 1);
        assert_eq!(
            unwound.left,
            [
                (
                    2,
                    "not unwound: the 100 ms pause budget was spent".to_string()
                ),
                (
                    3,
                    "not unwound: the 100 ms pause budget was spent".to_string()
                )
            ]
        );
    }

    #[test]
    fn a_refusal_before_any_thread_refuses_the_process_and_later_failures_are_per_thread() {
        let plan = order(&states(&[(1, 'S'), (2, 'S'), (3, 'S'), (4, 'S')]));
        let refused = run(&plan, 200, 1, |_| {
            Some(ThreadError::Refused("Operation not permitted".into()))
        });
        assert_eq!(refused, Err("Operation not permitted".to_string()));
        let unwound = run(&plan, 200, 1, |tid| match tid {
            2 => Some(ThreadError::Gone),
            3 => Some(ThreadError::Failed("did not stop within 199 ms".into())),
            4 => Some(ThreadError::Refused("traced by another".into())),
            _ => None,
        })
        .expect("taken");
        let tids: Vec<i32> = unwound.done.iter().map(|(t, _)| *t).collect();
        assert_eq!(tids, [1]);
        assert!(!unwound.partial, "failures are not the budget");
        assert_eq!(
            unwound.left,
            [
                (3, "not unwound: did not stop within 199 ms".to_string()),
                (4, "not unwound: traced by another".to_string())
            ]
        );
    }
}
