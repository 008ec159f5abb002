//! `oversubscribe`: P worker processes, each with an OpenMP-like compute team.
//!
//! Broken: P = 2 × usable CPUs processes (`--procs`), each team sized to all online CPUs,
//! the way BLAS/OpenMP runtimes size by default: P × CPUs spinning threads on the usable
//! CPUs. Fixed: the same total work, with teams of usable CPUs / P threads (and no more
//! processes than usable CPUs when that would round to zero).

use std::io::Read;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use super::common::{self, ScenarioResult, WorkloadLine};
use super::compute::{DEFAULT_SPIN_COUNT, run_team};
use super::{Ctx, WorkloadOptions};

/// Internal role of a worker process.
pub const WORKER_ROLE: &str = "oversubscribe-worker";
/// Default total work units, shared by all processes.
pub const DEFAULT_UNITS: u64 = 3000;

/// Processes and team size of each process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    pub procs: usize,
    pub threads_per_proc: usize,
}

impl Layout {
    pub fn total_threads(self) -> usize {
        self.procs * self.threads_per_proc
    }
}

/// The broken layout: `procs` processes, each with a team of `all_cpus` threads (or the
/// `--threads` given).
pub fn broken_layout(procs: usize, all_cpus: usize, threads: Option<usize>) -> Layout {
    Layout {
        procs: procs.max(1),
        threads_per_proc: threads.unwrap_or(all_cpus).max(1),
    }
}

/// The fixed layout: total team threads ≤ usable CPUs.
pub fn fixed_layout(procs: usize, usable: usize) -> Layout {
    let procs = procs.max(1);
    let usable = usable.max(1);
    if usable / procs == 0 {
        Layout {
            procs: usable,
            threads_per_proc: 1,
        }
    } else {
        Layout {
            procs,
            threads_per_proc: usable / procs,
        }
    }
}

/// `total` units split over `procs` processes (the first ones take the remainder).
pub fn split_units(total: u64, procs: usize) -> Vec<u64> {
    let procs = procs.max(1) as u64;
    (0..procs)
        .map(|i| total / procs + u64::from(i < total % procs))
        .collect()
}

pub fn run(ctx: &Ctx, args: &WorkloadOptions) -> Result<i32> {
    let usable = ctx.usable_cpus;
    let all_cpus = common::online_cpus();
    let procs = args.procs.unwrap_or(2 * usable);
    if procs == 0 {
        bail!("--procs must be at least 1");
    }
    if procs > 256 {
        bail!("--procs {procs} is more worker processes than this scenario allows (256)");
    }
    let layout = if ctx.fixed() {
        fixed_layout(procs, usable)
    } else {
        broken_layout(procs, all_cpus, args.threads)
    };
    let total_units = args.units.unwrap_or(DEFAULT_UNITS);
    ctx.say(format!(
        "{} processes × {} team threads = {} threads on {usable} usable CPUs ({all_cpus} online); {total_units} work units in all",
        layout.procs,
        layout.threads_per_proc,
        layout.total_threads()
    ));
    let start = Instant::now();
    let cpu_before = common::children_cpu_seconds();
    let mut children = Vec::with_capacity(layout.procs);
    for (index, units) in split_units(total_units, layout.procs)
        .into_iter()
        .enumerate()
    {
        let mut command = common::self_command(ctx.scenario.name(), WORKER_ROLE)?;
        let remaining = ctx.deadline.saturating_duration_since(Instant::now());
        command
            .arg("--threads")
            .arg(layout.threads_per_proc.to_string())
            .arg("--units")
            .arg(units.to_string())
            .arg("--index")
            .arg(index.to_string())
            .arg("--duration")
            .arg(format!("{}ms", remaining.as_millis().max(1)))
            .stdout(Stdio::piped());
        let child = command.spawn().context("cannot start a worker process")?;
        common::emit_child(child.id(), WORKER_ROLE);
        children.push(child);
    }
    if !ctx.fixed() && layout.total_threads() > usable {
        common::emit_onset("oversubscription");
    }
    let mut done_units = 0u64;
    let mut all_completed = true;
    for mut child in children {
        let mut output = String::new();
        if let Some(mut stdout) = child.stdout.take() {
            let _ = stdout.read_to_string(&mut output);
        }
        let status = child.wait()?;
        let worker = output
            .lines()
            .find_map(|line| match common::parse_line(line) {
                Some(WorkloadLine::Result(result)) => Some(result),
                _ => None,
            });
        match worker {
            Some(worker) if status.success() => {
                done_units += worker.work_units.unwrap_or(0);
                all_completed &= worker.completed;
            }
            _ => {
                all_completed = false;
                ctx.say(format!("worker {} failed: {status}", child.id()));
            }
        }
    }
    let seconds = start.elapsed().as_secs_f64().max(1e-9);
    let cpu_seconds = common::children_cpu_seconds() - cpu_before;
    let throughput = done_units as f64 / seconds;
    ctx.say(format!(
        "throughput: {throughput:.1} work units/s ({done_units} of {total_units} units in {seconds:.2}s, {cpu_seconds:.2} CPU-s)"
    ));
    let mut result = ctx.result(all_completed);
    result.throughput = Some(throughput);
    result.work_units = Some(done_units);
    result.cpu_seconds = Some(cpu_seconds).filter(|s| *s > 0.0);
    result.detail = format!(
        "{} procs × {} threads on {usable} CPUs",
        layout.procs, layout.threads_per_proc
    );
    Ok(ctx.finish(&result))
}

/// A worker process: one team doing its share of the units.
pub fn run_worker(args: &WorkloadOptions) -> Result<i32> {
    let threads = args.threads.unwrap_or_else(common::usable_cpus);
    let units = args.units.unwrap_or(0);
    let deadline = Instant::now() + args.duration;
    common::arm_watchdog(deadline + Duration::from_secs(5), || common::EXIT_OVERRAN);
    let run = run_team(threads, units, deadline, DEFAULT_SPIN_COUNT, "omp-team")
        .context("cannot start the compute team")?;
    let mut result =
        ScenarioResult::new("oversubscribe", "worker", run.units == units, run.seconds);
    result.work_units = Some(run.units);
    result.throughput = Some(run.units as f64 / run.seconds.max(1e-9));
    common::emit_result(&result);
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_layout_never_exceeds_usable_cpus() {
        for usable in 1..=16 {
            for procs in 1..=40 {
                let layout = fixed_layout(procs, usable);
                assert!(layout.total_threads() <= usable, "{procs} {usable}");
                assert!(layout.threads_per_proc >= 1);
            }
        }
        assert_eq!(
            fixed_layout(4, 2),
            Layout {
                procs: 2,
                threads_per_proc: 1
            }
        );
        assert_eq!(
            fixed_layout(2, 8),
            Layout {
                procs: 2,
                threads_per_proc: 4
            }
        );
        assert_eq!(broken_layout(4, 2, None).total_threads(), 8);
    }

    #[test]
    fn units_split_keeps_the_total() {
        assert_eq!(split_units(10, 3), vec![4, 3, 3]);
        assert_eq!(split_units(2, 4), vec![1, 1, 0, 0]);
        assert_eq!(split_units(3000, 4).iter().sum::<u64>(), 3000);
    }
}
