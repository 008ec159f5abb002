//! Stacks where /proc cannot tell a hang from an idle program: a process that stays
//! without progress with threads in untimed waits on private lock words (a lock, a
//! condition, or a worker waiting for work look the same in /proc) has its stacks
//! taken once per wait state, classified ([`crate::model::verdict::ProcessWaits`]) and
//! carried on each of its samples while it stays in the same waits. An idle pool is not
//! paused again every hang window; a node's many processes share a CPU budget, and a
//! process not yet classified is unconfirmed, not hung.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use crate::model::verdict::{ProcessWaits, from_stacks};
use crate::model::{ProcessSample, Sample, ThreadSample, futex_wait};

/// CPU time growth below which a process counts as still (a heartbeat's).
const STILL_CPU_SECONDS: f64 = 0.02;

/// A process not seen for this long is forgotten.
const FORGET_AFTER_SECONDS: f64 = 30.0;

/// How much of the wall time stack reads may take, and how much at once.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StackBudget {
    /// Share of one core, e.g. 0.05 for 5 %.
    pub share: f64,
    /// Seconds that may be spent before the share has accrued (the first reads).
    pub burst_seconds: f64,
}

impl StackBudget {
    /// One watched job (`attach`, `run`): a few processes, each read once per wait state.
    pub const JOB: StackBudget = StackBudget {
        share: 0.05,
        burst_seconds: 2.0,
    };
    /// A node's many jobs together.
    pub const NODE: StackBudget = StackBudget {
        share: 0.01,
        burst_seconds: 0.3,
    };
}

/// Where a process stands: still since when, and the stacks of its current waits.
#[derive(Debug, Default)]
struct Known {
    cpu_seconds: f64,
    still_since: f64,
    seen_at: f64,
    classified: Option<(u64, Arc<ProcessWaits>)>,
}

/// Takes and keeps the stacks of processes that /proc cannot judge.
pub struct WaitProber {
    proc_root: PathBuf,
    /// A process must be still this long before its stacks are taken.
    probe_after_seconds: f64,
    budget: StackBudget,
    started: Instant,
    spent_seconds: f64,
    known: HashMap<i32, Known>,
    /// Keep each process's whole stacks for the explanation of a hang (one job), or
    /// only their classes (a node's many jobs).
    keep_stacks: bool,
    /// Also take the stacks of a still rank of a distributed job whatever its waits:
    /// gloo and NCCL wait with a timeout, which /proc alone takes for a wait that ends
    /// by itself, and the collective a rank waits in is what its series say.
    probe_ranks: bool,
}

impl WaitProber {
    /// Stacks after `probe_after_seconds` of stillness, within `budget`.
    pub fn new(
        proc_root: impl Into<PathBuf>,
        probe_after_seconds: f64,
        budget: StackBudget,
    ) -> Self {
        WaitProber {
            proc_root: proc_root.into(),
            probe_after_seconds,
            budget,
            started: Instant::now(),
            spent_seconds: 0.0,
            known: HashMap::new(),
            keep_stacks: true,
            probe_ranks: false,
        }
    }

    /// Takes the stacks of a rank that stays still whatever its waits, and keeps where
    /// it waits ([`crate::model::collectives::RankPlace`]) with its classes.
    pub fn probe_ranks(mut self) -> Self {
        self.probe_ranks = true;
        self
    }

    /// Keeps only the classes of each process's waits, not its stacks: a node's jobs are
    /// many, and what it reports is the verdict.
    pub fn classes_only(mut self) -> Self {
        self.keep_stacks = false;
        self
    }

    /// Half the hang window, between 1 and 10 s: the stacks are in before a hang could
    /// be reported.
    pub fn probe_after(hang_after_seconds: f64) -> f64 {
        (hang_after_seconds * 0.5).clamp(1.0, 10.0)
    }

    /// Seconds spent taking stacks so far.
    pub fn spent_seconds(&self) -> f64 {
        self.spent_seconds
    }

    fn within_budget(&self) -> bool {
        let allowed =
            self.budget.burst_seconds + self.budget.share * self.started.elapsed().as_secs_f64();
        self.spent_seconds < allowed
    }

    /// Puts on each process of `sample` the stacks of its current waits: kept ones
    /// while its waits stay the same, new ones (within the budget) for a process still
    /// long enough in waits /proc cannot judge.
    pub fn fill(&mut self, sample: &mut Sample) {
        let now = sample.elapsed_seconds;
        let mut wanted: Vec<(bool, f64, usize, u64)> = Vec::new();
        for (index, process) in sample.processes.iter_mut().enumerate() {
            let is_rank =
                self.probe_ranks && process.audit.as_ref().is_some_and(|a| a.rank.is_some());
            let signature = match undecided_waits(process, is_rank) {
                Some(signature) => signature,
                // A thread of a rank runs now (its communication library's, often): its
                // own threads' CPU time says whether it is still.
                None if is_rank => 0,
                None => {
                    self.known.remove(&process.pid);
                    continue;
                }
            };
            // A rank's communication threads poll their sockets whatever it does: its
            // own threads say whether it is still.
            let cpu_seconds = if is_rank {
                process
                    .threads
                    .iter()
                    .filter(|t| !crate::model::ranks::is_communication_thread(&t.name))
                    .map(|t| t.cpu_seconds)
                    .sum()
            } else {
                process.cpu_seconds
            };
            let known = self.known.entry(process.pid).or_insert_with(|| Known {
                cpu_seconds,
                still_since: now,
                ..Known::default()
            });
            known.seen_at = now;
            if cpu_seconds - known.cpu_seconds > STILL_CPU_SECONDS {
                known.cpu_seconds = cpu_seconds;
                known.still_since = now;
            } else if is_rank {
                // A rank is still while its own threads stay under the bound in each
                // interval, not over its whole wait.
                known.cpu_seconds = cpu_seconds;
            }
            // A rank's place holds while its own threads stay still since its stacks
            // were taken, whatever its other threads' waits do; any other process's
            // classes hold while its waits stay the same.
            let holds = |kept: u64, waits: &ProcessWaits| {
                if is_rank {
                    waits.taken_at_seconds >= known.still_since
                } else {
                    kept == signature
                }
            };
            match &known.classified {
                Some((kept, waits)) if holds(*kept, waits) => {
                    process.waits = Some(Arc::clone(waits));
                }
                _ if now - known.still_since >= self.probe_after_seconds => {
                    let all_private = process
                        .threads
                        .iter()
                        .all(|t| private_wait(t) || matches!(t.state, 'Z' | 'X' | 'x'));
                    wanted.push((!all_private, known.still_since, index, signature));
                }
                _ => {}
            }
        }
        // Jobs of a node share one prober: a process is forgotten a while after its
        // last sample, not at the next sample of another job.
        self.known
            .retain(|_, k| now - k.seen_at <= FORGET_AFTER_SECONDS);
        // Those /proc nearly proves hung first, then the longest still.
        wanted.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.total_cmp(&b.1)));
        for (_, _, index, signature) in wanted {
            if !self.within_budget() {
                break;
            }
            let process = &mut sample.processes[index];
            let waits = Arc::new(self.take(process, now));
            if let Some(known) = self.known.get_mut(&process.pid) {
                known.classified = Some((signature, Arc::clone(&waits)));
            }
            process.waits = Some(waits);
        }
    }

    /// The stacks of one process, classified.
    fn take(&mut self, process: &ProcessSample, now: f64) -> ProcessWaits {
        if self.proc_root != std::path::Path::new("/proc") {
            // A recorded tree: its pids are not this machine's processes.
            return ProcessWaits {
                taken_at_seconds: now,
                unavailable: Some(format!(
                    "stacks are taken of live processes only, not under {}",
                    self.proc_root.display()
                )),
                ..ProcessWaits::default()
            };
        }
        let started = Instant::now();
        let one = Sample {
            elapsed_seconds: now,
            root_pid: process.pid,
            processes: vec![process.clone()],
            ..Sample::default()
        };
        let report = crate::source::stacks::take(&one, &self.proc_root);
        self.spent_seconds += started.elapsed().as_secs_f64();
        let mut waits = from_stacks(&report, process.pid, now);
        if process.audit.as_ref().is_some_and(|a| a.rank.is_some()) {
            waits.rank_place = crate::model::collectives::rank_place(&report, process.pid);
        }
        if !self.keep_stacks {
            waits.report = None;
        }
        waits
    }
}

/// The signature of a process's waits when /proc cannot judge them — no thread runs or
/// waits on the disk, and some thread waits untimed on a private lock word — else
/// `None`; for a `rank` (a rank of a distributed job, where ranks are probed) any waits
/// of a still process. Two samples with the same signature are in the same waits.
fn undecided_waits(process: &ProcessSample, rank: bool) -> Option<u64> {
    if process.has_exited() || process.threads.is_empty() {
        return None;
    }
    let mut private = false;
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    for thread in process.threads.iter() {
        if matches!(thread.state, 'R' | 'D') {
            return None;
        }
        let waits = private_wait(thread);
        private |= waits;
        let futex = futex_wait(thread);
        (
            thread.tid,
            thread.state,
            waits,
            futex.map(|f| (f.address, f.timed)),
        )
            .hash(&mut hasher);
    }
    (private || rank).then(|| hasher.finish())
}

/// An untimed futex wait on a word private to the process (or a futex wait channel where
/// the system call is not known): a lock, or a wait for work — only the stacks tell.
fn private_wait(thread: &ThreadSample) -> bool {
    if thread.state != 'S' {
        return false;
    }
    match futex_wait(thread) {
        Some(futex) => futex.private && !futex.timed,
        None => {
            thread.syscall.is_none() && thread.wchan.as_deref().is_some_and(|w| w.contains("futex"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Syscall, ThreadSample};

    fn thread(tid: i32, state: char, syscall: &str, args: [u64; 6]) -> ThreadSample {
        ThreadSample {
            tid,
            state,
            syscall: Some(Syscall::InSyscall {
                number: 0,
                name: Some(syscall.to_string().into()),
                args,
            }),
            ..ThreadSample::default()
        }
    }

    fn process(threads: Vec<ThreadSample>) -> ProcessSample {
        ProcessSample {
            pid: 7,
            state: 'S',
            num_threads: threads.len() as u32,
            threads: threads.into(),
            ..ProcessSample::default()
        }
    }

    fn undecided_waits_of(process: &ProcessSample) -> Option<u64> {
        undecided_waits(process, false)
    }

    #[test]
    fn a_rank_wants_stacks_whatever_its_waits_where_ranks_are_probed() {
        let sleeping = thread(1, 'S', "clock_nanosleep", [0; 6]);
        let timed = thread(2, 'S', "futex", [0x1000, 9 | 128, 0, 0x7ffd, 0, 0]);
        let still = process(vec![sleeping.clone(), timed.clone()]);
        assert!(undecided_waits(&still, false).is_none());
        assert!(undecided_waits(&still, true).is_some());
        let running = ThreadSample {
            state: 'R',
            ..timed
        };
        assert!(undecided_waits(&process(vec![sleeping, running]), true).is_none());
    }

    #[test]
    fn a_still_ranks_stacks_hold_while_its_own_threads_stay_still_whatever_its_other_waits() {
        let root = std::env::temp_dir().join(format!("tfwatch-probe-rank-{}", std::process::id()));
        std::fs::create_dir_all(&root).ok();
        let mut prober = WaitProber::new(&root, 2.0, StackBudget::JOB).probe_ranks();
        let sample_at = |t: f64, own_cpu: f64, gloo: char| {
            let mut main = thread(7, 'S', "futex", [0x1000, 9 | 128, 0, 0x7ffd, 0, 0]);
            main.cpu_seconds = own_cpu;
            let mut poller = thread(8, gloo, "epoll_wait", [0; 6]);
            poller.name = "gloo_tcp_loop".to_string();
            poller.cpu_seconds = t;
            let mut p = process(vec![main, poller]);
            p.audit = Some(crate::model::RuntimeAudit {
                rank: Some(crate::model::ranks::RankInfo::default()),
                ..Default::default()
            });
            Sample {
                elapsed_seconds: t,
                processes: vec![p],
                ..Sample::default()
            }
        };
        // Its gloo thread polls (and runs now and then); its own thread stays still.
        let taken = taken_at(
            &mut prober,
            [(0.0, 'S'), (1.0, 'R'), (2.0, 'S'), (3.0, 'R'), (4.0, 'S')]
                .map(|(t, gloo)| sample_at(t, 1.0, gloo)),
        );
        assert_eq!(taken, [None, None, Some(2.0), Some(2.0), Some(2.0)]);
        // Its own thread ran: the old place no longer holds.
        let mut moved = sample_at(5.0, 2.0, 'S');
        prober.fill(&mut moved);
        assert_eq!(moved.processes[0].waits, None);
        std::fs::remove_dir_all(&root).ok();
    }

    /// When the stacks each sample carries after `fill` were taken (`None`: none).
    fn taken_at(
        prober: &mut WaitProber,
        samples: impl IntoIterator<Item = Sample>,
    ) -> Vec<Option<f64>> {
        samples
            .into_iter()
            .map(|mut sample| {
                prober.fill(&mut sample);
                sample.processes[0]
                    .waits
                    .as_ref()
                    .map(|w| w.taken_at_seconds)
            })
            .collect()
    }

    #[test]
    fn only_private_untimed_waits_without_a_runner_want_stacks() {
        let private = [0x1000, 9 | 128, 0, 0, 0, 0];
        let sleeping = thread(1, 'S', "clock_nanosleep", [0; 6]);
        let waiting = thread(2, 'S', "futex", private);
        assert!(undecided_waits_of(&process(vec![sleeping.clone(), waiting.clone()])).is_some());
        // A timed wait, a shared word: /proc can tell, no stacks.
        let timed = thread(2, 'S', "futex", [0x1000, 9 | 128, 0, 0x7ffd, 0, 0]);
        let shared = thread(2, 'S', "futex", [0x1000, 0, 0, 0, 0, 0]);
        assert!(undecided_waits_of(&process(vec![sleeping.clone(), timed])).is_none());
        assert!(undecided_waits_of(&process(vec![sleeping.clone(), shared])).is_none());
        // A running thread: it is not still.
        let running = ThreadSample {
            state: 'R',
            ..waiting.clone()
        };
        assert!(undecided_waits_of(&process(vec![running, waiting.clone()])).is_none());
        // Another lock word: another wait state.
        let other = thread(2, 'S', "futex", [0x2000, 9 | 128, 0, 0, 0, 0]);
        assert_ne!(
            undecided_waits_of(&process(vec![sleeping.clone(), waiting])),
            undecided_waits_of(&process(vec![sleeping, other]))
        );
    }

    #[test]
    fn a_still_process_is_probed_once_per_wait_state_and_a_moving_one_not_at_all() {
        // A proc root with nothing in it: the stacks come back unavailable, quickly.
        let root = std::env::temp_dir().join(format!("tfwatch-probe-{}", std::process::id()));
        std::fs::create_dir_all(&root).ok();
        let mut prober = WaitProber::new(&root, 2.0, StackBudget::JOB);
        let waiting = thread(2, 'S', "futex", [0x1000, 9 | 128, 0, 0, 0, 0]);
        let sample_at = |t: f64, cpu: f64| Sample {
            elapsed_seconds: t,
            processes: vec![ProcessSample {
                cpu_seconds: cpu,
                ..process(vec![waiting.clone()])
            }],
            ..Sample::default()
        };
        let taken = taken_at(
            &mut prober,
            [(0.0, 1.0), (1.0, 1.0), (2.0, 1.0), (3.0, 1.0), (4.0, 1.0)]
                .map(|(t, cpu)| sample_at(t, cpu)),
        );
        // Still from 0 s: taken at 2 s, then kept.
        assert_eq!(taken, [None, None, Some(2.0), Some(2.0), Some(2.0)]);
        // It ran: the still time starts again, and the same waits keep their stacks.
        let mut moved = sample_at(5.0, 3.0);
        prober.fill(&mut moved);
        assert_eq!(
            moved.processes[0]
                .waits
                .as_ref()
                .map(|w| w.taken_at_seconds),
            Some(2.0)
        );
        std::fs::remove_dir_all(&root).ok();
    }
}
