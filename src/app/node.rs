//! `tfwatch node`: every job of the machine. Each tick of the [`Clock`] the node scan
//! reads every process's `stat` (`NodeScanner`); processes are grouped into jobs
//! (`group_all_jobs`: cgroup, else process tree); at most
//! [`MAX_JOBS`](crate::model::jobs::MAX_JOBS) are admitted,
//! and an admitted job keeps its slot until its last process ends. Each job has its own
//! samplers (one per root of the job, sampling by level), sampled on a bounded pool of
//! collection threads (`watch::NodeWatch`), so a job whose `/proc` read blocks misses
//! its own ticks only; and its own `Watch`, so its findings, alerts and lines are its
//! own; the node is judged over the jobs' loads. Every line carries the job's labels.

mod sampling;
#[cfg(test)]
mod tests;
mod watch;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};

use super::settings::{UsageError, WatchSettings, check_duration, sampler_config};
use super::signals::{catch_interrupts, interrupted};
use crate::cli::NodeArgs;
use crate::detect::node::JobLoad;
use crate::engine::Watch;
use crate::engine::sink::Reason;
use crate::sink::export::NodeExporter;
use crate::sink::line::Line;
use crate::sink::tui::CrosstermInput;
use crate::sink::tui::node::{JobFigures, NodeDashboard, NodeScreen};
use crate::sink::tui::terminal::TerminalGuard;
use crate::source::clock::{Clock, SystemClock};
use crate::source::proc::SamplerConfig;
use crate::source::proc::node::{Scanned, uid_of_user};
use watch::NodeWatch;

/// Which processes of the node are watched.
#[derive(Debug, Default)]
pub struct NodeFilter {
    pub pattern: Option<regex::Regex>,
    pub cgroup: Option<String>,
    pub uid: Option<u32>,
}

impl NodeFilter {
    fn admits(&self, process: &Scanned) -> bool {
        self.pattern
            .as_ref()
            .is_none_or(|p| p.is_match(&process.cmdline))
            && self
                .cgroup
                .as_ref()
                .is_none_or(|prefix| process.process.cgroup.starts_with(prefix.as_str()))
            && self.uid.is_none_or(|uid| process.uid == Some(uid))
    }
}

/// A still process of a node is read in full every this many samples anyway.
pub const NODE_REFRESH_EVERY_SAMPLES: u32 = 300;

pub struct NodeSettings {
    pub sampler: SamplerConfig,
    pub watch: WatchSettings,
    pub filter: NodeFilter,
    pub duration: Option<Duration>,
    pub json: bool,
    /// The node dashboard (stdout is a terminal, neither --json nor --no-tui).
    pub dashboard: bool,
}

impl NodeSettings {
    pub fn from_args(args: &NodeArgs, stdout_is_terminal: bool) -> Result<Self, UsageError> {
        Self::check(args, stdout_is_terminal).map_err(UsageError)
    }

    fn check(args: &NodeArgs, stdout_is_terminal: bool) -> Result<Self> {
        if let Some(duration) = args.duration {
            check_duration("--duration", duration)?;
        }
        let sampler = SamplerConfig {
            read_still_after_seconds: super::settings::read_still_after_seconds(
                args.hang_after.as_secs_f64(),
            ),
            // The node's own scan reads every process; no job's sampler scans them again.
            scan_other_processes: false,
            // A machine of still processes: each is read in full once it moves, and
            // anyway every five minutes at the default interval (not every minute: a
            // node of 19,000 waiting threads would reread a third of them a minute).
            refresh_every_samples: NODE_REFRESH_EVERY_SAMPLES,
            ..sampler_config(&args.source, true)
        };
        let no_sources = crate::cli::WatchSourceArgs {
            metrics_urls: Vec::new(),
            metrics_timeout: Duration::from_millis(500),
            no_gpu: true,
            loop_block: Duration::from_millis(100),
        };
        let watch = super::settings::watch(
            args.interval,
            args.hang_after,
            &args.rules,
            &no_sources,
            &args.listen,
            None,
            &sampler.proc_root,
        )?;
        let pattern =
            match &args.pattern {
                Some(text) => Some(regex::Regex::new(text).with_context(|| {
                    format!("--match {text:?} is not a valid regular expression")
                })?),
                None => None,
            };
        let uid = match &args.user {
            Some(name) => {
                Some(match name.parse::<u32>() {
                    Ok(uid) => uid,
                    Err(_) => {
                        let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
                        uid_of_user(&passwd, name).with_context(|| {
                        format!("--user {name:?}: no such user in /etc/passwd (give a name or a uid)")
                    })?
                    }
                })
            }
            None => None,
        };
        Ok(NodeSettings {
            sampler,
            watch,
            filter: NodeFilter {
                pattern,
                cgroup: args.cgroup.clone(),
                uid,
            },
            duration: args.duration,
            json: args.json || !stdout_is_terminal,
            dashboard: stdout_is_terminal && !args.json && !args.no_tui,
        })
    }
}

/// The ranks among `pids`, as the scan read them.
fn ranks_among(
    pids: &[i32],
    processes: &[crate::model::jobs::NodeProcess],
) -> Vec<crate::engine::PidRank> {
    processes
        .iter()
        .filter(|p| pids.contains(&p.pid))
        .filter_map(|p| {
            Some(crate::engine::PidRank {
                pid: p.pid,
                rank: p.rank.clone()?,
            })
        })
        .collect()
}

/// How a job's pids read in text: `pids [7, 8, 9]`, with each rank's: `rank 0/2 pid 8`.
fn pids_text(pids: &[i32], ranks: &[crate::engine::PidRank]) -> String {
    if ranks.is_empty() {
        return format!("pids {pids:?}");
    }
    let ranks: Vec<String> = ranks
        .iter()
        .map(|r| format!("{} pid {}", r.rank, r.pid))
        .collect();
    format!("pids {pids:?}; {}", ranks.join(", "))
}

struct Output<W: Write> {
    out: W,
    json: bool,
}

impl<W: Write> Output<W> {
    fn line(&mut self, line: &Line, text: impl FnOnce() -> Option<String>) -> Result<()> {
        if self.json {
            line.write_json(&mut self.out)?;
        } else if let Some(text) = text() {
            self.out
                .write_all(crate::units::escape_controls(&text, true).as_bytes())?;
            self.out.write_all(b"\n")?;
        }
        self.out.flush()?;
        Ok(())
    }
}

/// `tfwatch node`.
pub fn command(args: &NodeArgs) -> Result<u8> {
    let settings = NodeSettings::from_args(args, std::io::stdout().is_terminal())?;
    catch_interrupts();
    let clock: Arc<dyn Clock> = Arc::new(SystemClock::new());
    let mut output = Output {
        out: std::io::stdout().lock(),
        json: settings.json,
    };
    let exporter = match settings.watch.listen {
        Some(address) => {
            let exporter = NodeExporter::serve(address, &settings.watch.rules)?;
            eprintln!("tfwatch: listening on {}", exporter.url());
            Some(exporter)
        }
        None => None,
    };
    let reason = if settings.dashboard {
        // A person at a terminal: the node view instead of lines (the lines go nowhere).
        let (guard, terminal) =
            TerminalGuard::enter().context("cannot open the dashboard on this terminal")?;
        let mut dashboard =
            NodeDashboard::new(terminal, CrosstermInput, online_cpus(&settings.sampler));
        let mut quiet = Output {
            out: std::io::sink(),
            json: true,
        };
        let reason = watch_node(
            &settings,
            Arc::clone(&clock),
            &mut quiet,
            exporter.as_ref(),
            Some(&mut dashboard),
        );
        drop(dashboard);
        drop(guard);
        let reason = reason?;
        println!("tfwatch node: {}", reason.as_str());
        reason
    } else {
        watch_node(&settings, clock, &mut output, exporter.as_ref(), None)?
    };
    Ok(exit_code(reason))
}

/// tfwatch's exit code after a node watch that ended for `reason`.
fn exit_code(reason: Reason) -> u8 {
    if matches!(
        reason,
        Reason::Interrupted | Reason::Duration | Reason::Stopped
    ) {
        super::exit::OK
    } else {
        super::exit::TFWATCH_FAILED
    }
}

/// The node's online CPUs, as the node's judgement and its view count them.
fn online_cpus(sampler: &SamplerConfig) -> f64 {
    crate::source::proc::cpu_budget(&sampler.proc_root, &sampler.cgroup_root, 1, None).online as f64
}

fn own_cpu_seconds() -> f64 {
    // SAFETY: getrusage writes into the zeroed struct passed by pointer.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    };
    let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    seconds(usage.ru_utime) + seconds(usage.ru_stime)
}

/// How long the loop waits for samples at most before it looks at the clock again.
const POLL: Duration = Duration::from_millis(100);

/// The watch itself, on `clock`'s ticks; returns why it ended.
fn watch_node<'a, W: Write>(
    settings: &'a NodeSettings,
    clock: Arc<dyn Clock>,
    output: &'a mut Output<W>,
    exporter: Option<&'a NodeExporter>,
    screen: Option<&'a mut dyn NodeScreen>,
) -> Result<Reason> {
    let mut node = NodeWatch::new(settings, Arc::clone(&clock), output, exporter, screen);
    let interval = settings.watch.interval;
    let mut next = Duration::ZERO;
    let reason = loop {
        if interrupted() {
            break Reason::Interrupted;
        }
        let now = clock.elapsed();
        if settings.duration.is_some_and(|d| now >= d) {
            break Reason::Duration;
        }
        if now >= next {
            // Late past whole intervals: those ticks are skipped, said, and the
            // lateness of this one counts from the first missed.
            let skipped = skipped_ticks(now - next, interval);
            node.tick(next, skipped)?;
            next += interval * u32::try_from(skipped + 1).unwrap_or(u32::MAX);
        }
        let mut wait = next.saturating_sub(clock.elapsed()).min(POLL);
        if let Some(duration) = settings.duration {
            wait = wait.min(duration.saturating_sub(clock.elapsed()));
        }
        if node.pump(wait)? {
            break Reason::Stopped;
        }
    };
    node.finish(reason)?;
    Ok(reason)
}

/// Whole intervals in `behind`.
fn skipped_ticks(behind: Duration, interval: Duration) -> u64 {
    u64::try_from(behind.as_nanos() / interval.as_nanos().max(1)).unwrap_or(u64::MAX)
}

/// The figures of a job's row in the node view: its counts as its summary has them (so
/// threads not read yet count, as everywhere), its load as the node judges it.
fn figures(watch: &Watch, load: Option<&JobLoad>) -> JobFigures {
    let summary = watch.timeline.latest_summary();
    JobFigures {
        pids: summary.map_or(0, |s| s.processes.len()),
        threads: summary.map_or(0, |s| s.threads() as usize),
        cpus_used: load.map_or(0.0, |l| l.cpus_used),
        runnable: load.map_or(0.0, |l| l.runnable),
        waiting: load.map_or(0.0, |l| l.waiting),
        quota: load.and_then(|l| l.quota),
    }
}

/// The processes the filter admits, with their descendants (a job's workers need not
/// match `--match` themselves), less tfwatch itself.
fn admitted(all: Vec<Scanned>, filter: &NodeFilter) -> Vec<Scanned> {
    let own = std::process::id() as i32;
    let parent: BTreeMap<i32, i32> = all
        .iter()
        .map(|s| (s.process.pid, s.process.ppid))
        .collect();
    let matched: BTreeSet<i32> = all
        .iter()
        .filter(|s| filter.admits(s))
        .map(|s| s.process.pid)
        .collect();
    let admits = |mut pid: i32| {
        // Bounded: a torn scan cannot make the walk loop.
        for _ in 0..parent.len() {
            if matched.contains(&pid) {
                return true;
            }
            match parent.get(&pid) {
                Some(&ppid) if ppid > 0 && ppid != pid => pid = ppid,
                _ => return false,
            }
        }
        false
    };
    all.into_iter()
        .filter(|s| s.process.pid != own && admits(s.process.pid))
        .collect()
}

#[cfg(test)]
mod rank_tests {
    use super::*;
    use crate::model::jobs::{JobLabels, NodeProcess};
    use crate::sink::line::JobChange;

    #[test]
    fn a_job_that_starts_names_the_rank_of_each_of_its_ranks() {
        let processes = [
            NodeProcess {
                pid: 7,
                ..NodeProcess::default()
            },
            NodeProcess {
                pid: 8,
                rank: Some("rank 0/2".to_string()),
                ..NodeProcess::default()
            },
            NodeProcess {
                pid: 9,
                rank: Some("rank 1/2".to_string()),
                ..NodeProcess::default()
            },
            NodeProcess {
                pid: 50,
                rank: Some("rank 0/4".to_string()),
                ..NodeProcess::default()
            },
        ];
        let pids = [7, 8, 9];
        let change = JobChange {
            labels: JobLabels::default(),
            elapsed_seconds: 0.0,
            pids: pids.to_vec(),
            ranks: ranks_among(&pids, &processes),
        };
        let json = serde_json::to_value(&change).unwrap();
        assert_eq!(
            json["ranks"],
            serde_json::json!([{"pid": 8, "rank": "rank 0/2"}, {"pid": 9, "rank": "rank 1/2"}])
        );
        assert_eq!(
            pids_text(&pids, &change.ranks),
            "pids [7, 8, 9]; rank 0/2 pid 8, rank 1/2 pid 9"
        );
        assert_eq!(pids_text(&[7], &[]), "pids [7]");
        let none = JobChange {
            labels: JobLabels::default(),
            elapsed_seconds: 1.0,
            pids: pids.to_vec(),
            ranks: Vec::new(),
        };
        assert!(serde_json::to_value(&none).unwrap().get("ranks").is_none());
    }
}
