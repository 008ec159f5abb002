//! The ranks of distributed jobs as series (`tfwatch_rank_*`): for each rank the watch
//! sees, the job's identity every node agrees on, its rank, local rank and world size,
//! what it does now (in a collective, and which, at which line; computing; blocked
//! outside any collective; waiting where its stacks were not taken) and how long its own
//! threads made no progress. Prometheus joins the nodes: the exported rules
//! ([`super::alert_rules::rank_rules`]) and `tfwatch ranks` read these series alone.
//!
//! Bounded: one series per rank per family, every label value at most
//! [`MAX_LABEL_CHARS`] characters, at most [`MAX_RANK_SERIES`] ranks per watched tree;
//! a rank that ends leaves with the next sample.

use crate::model::ranks::RankInfo;
use crate::timeline::Timeline;

/// Own CPU time per second of wall time below which a rank made no progress (as the
/// distributed detector: 1 % of one core).
const PROGRESS_CPU_SHARE: f64 = 0.01;

/// Own CPU time per second of wall time from which a rank counts as computing (as the
/// distributed detector: a quarter of a core).
const BUSY_CPU_SHARE: f64 = 0.25;

/// The window over which a rank's state is judged: long enough that a rank between two
/// steps is not taken for stopped, short enough that the series follow the job.
pub const STATE_WINDOW_SECONDS: f64 = 5.0;

/// The longest label value exported; longer values are cut (at a character boundary)
/// and end in `…`.
pub const MAX_LABEL_CHARS: usize = 120;

/// At most this many ranks of one watched tree get series.
pub const MAX_RANK_SERIES: usize = 64;

/// What a rank does now, the `state` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RankState {
    /// No progress of its own; its stacks show it in a collective.
    Collective,
    /// Its own threads run (a quarter of a core or more, or its main thread runs).
    Computing,
    /// No progress of its own; its stacks show it outside any collective.
    Blocked,
    /// No progress of its own; its stacks were not taken (yet).
    Waiting,
    /// Some progress, less than computing (between steps, loading data).
    Running,
}

impl RankState {
    pub const ALL: [RankState; 5] = [
        RankState::Collective,
        RankState::Computing,
        RankState::Blocked,
        RankState::Waiting,
        RankState::Running,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RankState::Collective => "collective",
            RankState::Computing => "computing",
            RankState::Blocked => "blocked",
            RankState::Waiting => "waiting",
            RankState::Running => "running",
        }
    }

    pub fn parse(text: &str) -> Option<RankState> {
        RankState::ALL.into_iter().find(|s| s.as_str() == text)
    }

    /// Whether the rank's own threads make progress.
    pub fn progresses(self) -> bool {
        matches!(self, RankState::Computing | RankState::Running)
    }
}

/// One rank's series.
#[derive(Debug, Clone, PartialEq)]
pub struct RankSeries {
    pub pid: i32,
    /// The job's identity every node agrees on ([`distributed_job`]).
    pub job: String,
    pub rank: u32,
    pub local_rank: Option<u32>,
    pub world_size: Option<u32>,
    pub state: RankState,
    /// The collective (state `collective`), else empty.
    pub collective: String,
    /// The call site `file:line` its stacks show, else empty.
    pub call_site: String,
    /// The function around the call site, else empty.
    pub function: String,
    /// Seconds its own threads made no progress, up to now (0 while it progresses).
    pub seconds_without_progress: f64,
}

/// The identity of a rank's job that every node of the job agrees on: the rendezvous
/// (`MASTER_ADDR:MASTER_PORT`, the JAX coordinator) with torchrun's run id where one was
/// given (`--rdzv-id`; its default `none` says nothing), else what the environment has.
pub fn distributed_job(rank: &RankInfo) -> String {
    let run = rank
        .run_id
        .as_deref()
        .filter(|id| !id.is_empty() && *id != "none");
    let id = match (&rank.rendezvous, run) {
        (Some(rendezvous), Some(run)) => format!("{rendezvous} run {run}"),
        (Some(rendezvous), None) => rendezvous.clone(),
        (None, Some(run)) => format!("run {run}"),
        (None, None) => rank.job_key(),
    };
    bounded(&id)
}

/// `text` cut to [`MAX_LABEL_CHARS`] characters.
pub fn bounded(text: &str) -> String {
    if text.chars().count() <= MAX_LABEL_CHARS {
        return text.to_string();
    }
    let mut out: String = text.chars().take(MAX_LABEL_CHARS - 1).collect();
    out.push('…');
    out
}

/// The series of every live rank of the newest sample, by rank.
pub fn rank_series(timeline: &Timeline) -> Vec<RankSeries> {
    let Some(now) = timeline.latest() else {
        return Vec::new();
    };
    let summaries: Vec<&crate::timeline::Summary> = timeline.summaries().collect();
    let mut out: Vec<RankSeries> = now
        .processes
        .iter()
        .filter(|p| !p.has_exited())
        .filter_map(|p| {
            let rank = p.audit.as_ref()?.rank.as_ref()?;
            let (own, span, still) = own_progress(&summaries, p.pid, p.start_time_seconds);
            let main_runs = p
                .threads
                .iter()
                .find(|t| t.tid == p.pid)
                .map_or(p.state, |t| t.state)
                == 'R';
            let place = p.waits.as_ref().and_then(|w| w.rank_place.as_ref());
            let state = if main_runs || (span > 0.0 && own >= BUSY_CPU_SHARE * span) {
                RankState::Computing
            } else if span <= 0.0 || own >= PROGRESS_CPU_SHARE * span {
                RankState::Running
            } else {
                match place {
                    Some(place) if place.collective.is_some() => RankState::Collective,
                    Some(_) => RankState::Blocked,
                    None => RankState::Waiting,
                }
            };
            let text = |value: Option<&String>| value.map_or_else(String::new, |v| bounded(v));
            let place = place.filter(|_| !state.progresses());
            Some(RankSeries {
                pid: p.pid,
                job: distributed_job(rank),
                rank: rank.rank,
                local_rank: rank.local_rank,
                world_size: rank.world_size,
                state,
                collective: text(place.and_then(|p| p.collective.as_ref())),
                call_site: text(place.and_then(|p| p.site.as_ref())),
                function: text(place.and_then(|p| p.function.as_ref())),
                seconds_without_progress: if state.progresses() { 0.0 } else { still },
            })
        })
        .collect();
    out.sort_by(|a, b| a.job.cmp(&b.job).then(a.rank.cmp(&b.rank)));
    out.truncate(MAX_RANK_SERIES);
    out
}

/// A process's own CPU seconds (communication threads left aside) over the last
/// [`STATE_WINDOW_SECONDS`], the span they cover, and the seconds up to now in which its
/// own threads made no progress (summaries newest backwards, while it was the same
/// process).
fn own_progress(
    summaries: &[&crate::timeline::Summary],
    pid: i32,
    start_time_seconds: f64,
) -> (f64, f64, f64) {
    let Some(newest) = summaries.last().map(|s| s.elapsed_seconds) else {
        return (0.0, 0.0, 0.0);
    };
    let (mut own, mut span, mut still) = (0.0, 0.0, 0.0);
    let mut moving = false;
    for pair in summaries.windows(2).rev() {
        let (before, after) = (pair[0], pair[1]);
        let Some(process) = after
            .process(pid)
            .filter(|p| (p.start_time_seconds - start_time_seconds).abs() < 0.5)
        else {
            break;
        };
        if before.process(pid).is_none() {
            break;
        }
        let dt = (after.elapsed_seconds - before.elapsed_seconds).max(0.0);
        let ran = (process.delta_run_seconds - process.delta_library_run_seconds).max(0.0);
        if newest - before.elapsed_seconds <= STATE_WINDOW_SECONDS + 1e-9 {
            own += ran;
            span += dt;
        }
        if !moving && ran < PROGRESS_CPU_SHARE * dt {
            still += dt;
        } else {
            moving = true;
        }
        if moving && newest - before.elapsed_seconds > STATE_WINDOW_SECONDS {
            break;
        }
    }
    (own, span, still)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::test_support::{process, sample, thread};
    use crate::model::collectives::RankPlace;
    use crate::model::verdict::ProcessWaits;
    use crate::model::{ProcessSample, RuntimeAudit};

    fn rank_info(rank: u32) -> RankInfo {
        RankInfo {
            rank,
            local_rank: Some(0),
            world_size: Some(2),
            rendezvous: Some("10.0.0.1:29500".to_string()),
            run_id: Some("none".to_string()),
            source: "RANK".to_string(),
            launcher: "torchrun".to_string(),
            ..RankInfo::default()
        }
    }

    /// A rank whose main thread ran `main_cpu` seconds, its gloo thread polling.
    fn rank_process(pid: i32, rank: u32, main_cpu: f64, t: f64) -> ProcessSample {
        let mut main = thread(pid, 'S', "futex_wait_queue", main_cpu);
        main.name = "python3".to_string();
        let mut gloo = thread(pid + 1, 'S', "do_epoll_wait", 0.01 * t);
        gloo.name = "gloo_tcp_loop".to_string();
        let mut p = process(pid, 1, vec![main, gloo]);
        p.audit = Some(RuntimeAudit {
            rank: Some(rank_info(rank)),
            ..RuntimeAudit::default()
        });
        p
    }

    fn waits_in(collective: Option<&str>, site: &str) -> std::sync::Arc<ProcessWaits> {
        std::sync::Arc::new(ProcessWaits {
            rank_place: Some(RankPlace {
                collective: collective.map(str::to_string),
                site: Some(site.to_string()),
                function: Some("main".to_string()),
            }),
            ..ProcessWaits::default()
        })
    }

    #[test]
    fn a_stalled_rank_with_stacks_names_its_collective_and_a_computing_one_says_so() {
        let mut tl = Timeline::new(600.0);
        for t in 0..=12 {
            let t = f64::from(t);
            // Rank 0 stops at 4 s; rank 1 computes throughout.
            let mut r0 = rank_process(100, 0, 3.0 + t.min(4.0), t);
            if t >= 8.0 {
                r0.waits = Some(waits_in(Some("all_reduce"), "train.py:45"));
            }
            let r1 = rank_process(200, 1, 2.0 + 0.9 * t, t);
            tl.push(sample(t, 2.0, vec![r0, r1]));
        }
        let series = rank_series(&tl);
        assert_eq!(series.len(), 2, "{series:#?}");
        let (r0, r1) = (&series[0], &series[1]);
        assert_eq!(r0.job, "10.0.0.1:29500", "run id `none` says nothing");
        assert_eq!((r0.rank, r0.state), (0, RankState::Collective));
        assert_eq!(
            (r0.collective.as_str(), r0.call_site.as_str()),
            ("all_reduce", "train.py:45")
        );
        assert!(
            (r0.seconds_without_progress - 8.0).abs() < 1e-6,
            "{}",
            r0.seconds_without_progress
        );
        assert_eq!((r1.rank, r1.state), (1, RankState::Computing));
        assert_eq!(r1.seconds_without_progress, 0.0);
        assert!(r1.collective.is_empty() && r1.call_site.is_empty());
    }

    #[test]
    fn without_stacks_a_stalled_rank_is_waiting_and_outside_a_collective_it_is_blocked() {
        let build = |waits: Option<std::sync::Arc<ProcessWaits>>| {
            let mut tl = Timeline::new(600.0);
            for t in 0..=6 {
                let mut p = rank_process(100, 0, 3.0, f64::from(t));
                p.waits = waits.clone();
                tl.push(sample(f64::from(t), 2.0, vec![p]));
            }
            rank_series(&tl).remove(0)
        };
        assert_eq!(build(None).state, RankState::Waiting);
        let blocked = build(Some(waits_in(None, "train.py:44")));
        assert_eq!(blocked.state, RankState::Blocked);
        assert_eq!(blocked.call_site, "train.py:44");
        assert!(blocked.collective.is_empty());
    }

    #[test]
    fn ended_ranks_leave_and_label_values_are_bounded() {
        let mut tl = Timeline::new(600.0);
        let mut gone = rank_process(100, 0, 3.0, 0.0);
        tl.push(sample(0.0, 2.0, vec![gone.clone()]));
        gone.state = 'Z';
        gone.threads = Vec::new().into();
        gone.num_threads = 0;
        tl.push(sample(1.0, 2.0, vec![gone]));
        assert!(rank_series(&tl).is_empty());
        let long = "x".repeat(500);
        let cut = bounded(&long);
        assert_eq!(cut.chars().count(), MAX_LABEL_CHARS);
        assert!(cut.ends_with('…'));
        let info = RankInfo {
            rendezvous: Some("h:1".to_string()),
            run_id: Some("job-7".to_string()),
            ..RankInfo::default()
        };
        assert_eq!(distributed_job(&info), "h:1 run job-7");
    }

    #[test]
    fn each_rank_has_one_series_per_family_with_escaped_labels() {
        let state = super::super::ExportState {
            up: true,
            ranks: vec![RankSeries {
                pid: 7,
                job: "h:1".to_string(),
                rank: 1,
                local_rank: Some(0),
                world_size: Some(2),
                state: RankState::Collective,
                collective: "all_reduce".to_string(),
                call_site: "a \"b\".py:3".to_string(),
                function: "f".to_string(),
                seconds_without_progress: 12.5,
            }],
            ..Default::default()
        };
        let text = super::super::exposition::render(&state);
        let lines: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("tfwatch_rank_"))
            .collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(
            lines[0]
                .contains(r#"state="collective",collective="all_reduce",call_site="a \"b\".py:3""#),
            "{}",
            lines[0]
        );
        assert!(
            lines.contains(
                &"tfwatch_rank_seconds_without_progress{distributed_job=\"h:1\",rank=\"1\",pid=\"7\"} 12.5"
            ),
            "{text}"
        );
    }
}
