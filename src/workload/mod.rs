//! The reference workload: small, honest reproductions of each hang and
//! oversubscription problem, with a broken and a fixed variant.
//!
//! Every scenario runs in the foreground, prints what it does one line per event, and
//! ends by itself after `--duration`, hung or not. Lines meant for machines start with
//! [`common::PREFIX`] and are parsed by [`parse_line`]; see `common` for the formats.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};

pub mod common;
pub mod compute;
mod cuda;
pub mod deadlock;
pub mod fork_lock;
pub mod gpu_contention;
pub mod healthy;
pub mod memory_growth;
pub mod metrics;
pub mod oversubscribe;
pub mod queue_overload;
pub mod thread_explosion;
pub mod verify;

pub use common::{ScenarioResult, WorkloadLine, parse_line};

/// The scenarios, in the order `--verify` runs them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Scenario {
    /// Worker threads take pthread mutexes in opposite order (a cycle of --cycle threads).
    Deadlock,
    /// A thread holds a mutex while the main thread forks; the child blocks forever.
    ForkLock,
    /// P processes each with a compute pool sized to all CPUs.
    Oversubscribe,
    /// A thread per task without bound.
    ThreadExplosion,
    /// Processes of one job deadlock on one (simulated) device.
    GpuContention,
    /// Micro-batching inference server fed faster than it serves, unbounded queue.
    QueueOverload,
    /// Resident memory grows to --cap.
    MemoryGrowth,
    /// A busy but well-configured mix (no broken variant).
    Healthy,
}

const SCENARIO_NAMES: &[&str] = &[
    "deadlock",
    "fork-lock",
    "oversubscribe",
    "thread-explosion",
    "gpu-contention",
    "queue-overload",
    "memory-growth",
    "healthy",
];

/// Names of every scenario, as `--scenario` takes them.
pub fn scenario_names() -> &'static [&'static str] {
    SCENARIO_NAMES
}

impl Scenario {
    pub const ALL: [Scenario; 8] = [
        Scenario::Deadlock,
        Scenario::ForkLock,
        Scenario::Oversubscribe,
        Scenario::ThreadExplosion,
        Scenario::GpuContention,
        Scenario::QueueOverload,
        Scenario::MemoryGrowth,
        Scenario::Healthy,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Scenario::Deadlock => "deadlock",
            Scenario::ForkLock => "fork-lock",
            Scenario::Oversubscribe => "oversubscribe",
            Scenario::ThreadExplosion => "thread-explosion",
            Scenario::GpuContention => "gpu-contention",
            Scenario::QueueOverload => "queue-overload",
            Scenario::MemoryGrowth => "memory-growth",
            Scenario::Healthy => "healthy",
        }
    }

    /// Whether the scenario has a broken variant (all but `healthy`).
    pub fn has_broken_variant(self) -> bool {
        self != Scenario::Healthy
    }
}

/// Parses a scenario name; the error lists the valid ones.
pub fn parse_scenario(text: &str) -> Result<Scenario, String> {
    Scenario::ALL
        .into_iter()
        .find(|scenario| scenario.name() == text)
        .ok_or_else(|| {
            format!(
                "unknown scenario {text:?}; valid scenarios: {}",
                scenario_names().join(", ")
            )
        })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    Broken,
    Fixed,
}

impl Variant {
    pub fn name(self) -> &'static str {
        match self {
            Variant::Broken => "broken",
            Variant::Fixed => "fixed",
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct WorkloadArgs {
    /// Scenario to run: deadlock, fork-lock, oversubscribe, thread-explosion,
    /// gpu-contention, queue-overload, memory-growth, healthy.
    #[arg(
        long,
        value_name = "NAME",
        value_parser = parse_scenario,
        required_unless_present_any = ["verify", "list"]
    )]
    pub scenario: Option<Scenario>,
    /// Run the fixed variant instead of the broken one.
    #[arg(long)]
    pub fixed: bool,
    /// How long the scenario runs before it ends by itself (hung or not).
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = crate::cli::parse_duration_arg)]
    pub duration: Duration,
    /// Threads: tasks for thread-explosion (default 300); team size of each broken
    /// oversubscribe process (default: all online CPUs; the fixed variant uses usable
    /// CPUs / processes).
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
    /// Processes: oversubscribe workers (default 2 × usable CPUs), gpu-contention ranks
    /// (default 2).
    #[arg(long, value_name = "P")]
    pub procs: Option<usize>,
    /// Port of the Prometheus metrics endpoint on 127.0.0.1 (0 picks a free one).
    #[arg(long, value_name = "PORT", default_value_t = 0)]
    pub metrics_port: u16,
    /// memory-growth: the most resident memory the broken variant grows to, in MiB.
    #[arg(long, value_name = "MiB", default_value_t = 512)]
    pub cap: u64,
    /// memory-growth: allocation rate in MiB/s.
    #[arg(long, value_name = "MiB/s", default_value_t = 64)]
    pub rate: u64,
    /// memory-growth --fixed: size of the bounded cache in MiB.
    #[arg(long, value_name = "MiB", default_value_t = 64)]
    pub cache: u64,
    /// deadlock: number of threads (and mutexes) in the lock cycle.
    #[arg(long, value_name = "N", default_value_t = 2)]
    pub cycle: usize,
    /// queue-overload: service time of one batch, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 20)]
    pub service_ms: u64,
    /// queue-overload: requests per second offered (default: 3 × what the server serves).
    #[arg(long, value_name = "PER_SECOND")]
    pub request_rate: Option<u64>,
    /// queue-overload --fixed: queue bound; requests beyond it are rejected.
    #[arg(long, value_name = "N", default_value_t = 1000)]
    pub queue_cap: usize,
    /// oversubscribe: total work units (matrix multiplies) shared by all processes.
    #[arg(long, value_name = "N")]
    pub units: Option<u64>,
    /// Run every scenario (or only --scenario), broken then fixed, as child processes and
    /// print a table of what was measured; exit 0 only if every fix works.
    #[arg(long, conflicts_with = "list")]
    pub verify: bool,
    /// List the scenarios and exit.
    #[arg(long)]
    pub list: bool,
    /// Internal: role of a re-executed child process of a scenario.
    #[arg(long, hide = true, value_name = "ROLE")]
    pub role: Option<String>,
    /// Internal: index of a child process among its siblings.
    #[arg(long, hide = true, default_value_t = 0)]
    pub index: usize,
    /// Internal: file or socket the children of a scenario share.
    #[arg(long, hide = true, value_name = "PATH")]
    pub endpoint: Option<PathBuf>,
}

/// What every scenario gets: which variant, when to stop, and the CPUs it may use.
#[derive(Debug, Clone)]
pub struct Ctx {
    pub scenario: Scenario,
    pub variant: Variant,
    pub started: Instant,
    pub deadline: Instant,
    pub duration: Duration,
    pub usable_cpus: usize,
}

impl Ctx {
    fn new(scenario: Scenario, variant: Variant, duration: Duration) -> Ctx {
        let started = Instant::now();
        Ctx {
            scenario,
            variant,
            started,
            deadline: started + duration,
            duration,
            usable_cpus: common::usable_cpus(),
        }
    }

    pub fn fixed(&self) -> bool {
        self.variant == Variant::Fixed
    }

    /// `[scenario] text`, flushed.
    pub fn say(&self, text: impl AsRef<str>) {
        common::say(self.scenario.name(), text.as_ref());
    }

    /// A result skeleton for this run.
    pub fn result(&self, completed: bool) -> ScenarioResult {
        ScenarioResult::new(
            self.scenario.name(),
            self.variant.name(),
            completed,
            self.started.elapsed().as_secs_f64(),
        )
    }

    /// Prints the final result line and the exit code to return.
    pub fn finish(&self, result: &ScenarioResult) -> i32 {
        common::emit_result(result);
        0
    }
}

/// Runs `tfwatch run-workload`; returns the process exit code.
pub fn run(args: &WorkloadArgs) -> Result<i32> {
    if args.list {
        for name in scenario_names() {
            common::emit(name);
        }
        return Ok(0);
    }
    if args.verify {
        return verify::run_verify(args);
    }
    let Some(scenario) = args.scenario else {
        bail!(
            "no scenario given: use --scenario NAME (one of {}) or --verify",
            scenario_names().join(", ")
        );
    };
    if args.duration.is_zero() {
        bail!("--duration must be more than 0 (e.g. 5s)");
    }
    // `healthy` has only its well-configured variant, reported as fixed.
    let variant = if args.fixed || scenario == Scenario::Healthy {
        Variant::Fixed
    } else {
        Variant::Broken
    };
    if let Some(role) = &args.role {
        return run_role(scenario, role, args)
            .with_context(|| format!("{} child role {role:?}", scenario.name()));
    }
    let ctx = Ctx::new(scenario, variant, args.duration);
    common::emit_started(scenario.name(), variant.name(), std::process::id());
    // A safety net for every scenario: whatever happens, the process ends shortly after
    // its duration. Scenarios that hang arm their own watchdog at the deadline itself.
    common::arm_watchdog(ctx.deadline + Duration::from_secs(5), || {
        common::say("workload", "did not end within 5s of its duration; exiting");
        common::EXIT_OVERRAN
    });
    let outcome = match scenario {
        Scenario::Deadlock => deadlock::run(&ctx, args),
        Scenario::ForkLock => fork_lock::run(&ctx, args),
        Scenario::Oversubscribe => oversubscribe::run(&ctx, args),
        Scenario::ThreadExplosion => thread_explosion::run(&ctx, args),
        Scenario::GpuContention => gpu_contention::run(&ctx, args),
        Scenario::QueueOverload => queue_overload::run(&ctx, args),
        Scenario::MemoryGrowth => memory_growth::run(&ctx, args),
        Scenario::Healthy => healthy::run(&ctx, args),
    };
    outcome.with_context(|| format!("cannot run scenario {} here", scenario.name()))
}

/// Child processes that scenarios start by re-executing tfwatch.
fn run_role(scenario: Scenario, role: &str, args: &WorkloadArgs) -> Result<i32> {
    match (scenario, role) {
        (Scenario::ForkLock, fork_lock::CHILD_ROLE) => fork_lock::run_child(args),
        (Scenario::Oversubscribe, oversubscribe::WORKER_ROLE) => oversubscribe::run_worker(args),
        (Scenario::GpuContention, gpu_contention::RANK_ROLE) => gpu_contention::run_rank(args),
        (Scenario::GpuContention, gpu_contention::CLIENT_ROLE) => gpu_contention::run_client(args),
        _ => bail!(
            "unknown internal role {role:?} for scenario {}",
            scenario.name()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct TestCli {
        #[command(flatten)]
        args: WorkloadArgs,
    }

    #[test]
    fn names_match_the_enum() {
        let names: Vec<&str> = Scenario::ALL.iter().map(|s| s.name()).collect();
        assert_eq!(names, scenario_names());
        for name in scenario_names() {
            assert_eq!(parse_scenario(name).unwrap().name(), *name);
        }
    }

    #[test]
    fn bad_scenario_lists_the_valid_ones() {
        let err = TestCli::try_parse_from(["t", "--scenario", "dedlock"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("\"dedlock\""), "{err}");
        assert!(
            err.contains("fork-lock") && err.contains("memory-growth"),
            "{err}"
        );
    }

    #[test]
    fn parses_options() {
        let cli = TestCli::try_parse_from([
            "t",
            "--scenario",
            "deadlock",
            "--fixed",
            "--duration",
            "3s",
            "--cycle",
            "3",
        ])
        .unwrap();
        assert_eq!(cli.args.scenario, Some(Scenario::Deadlock));
        assert!(cli.args.fixed);
        assert_eq!(cli.args.duration, Duration::from_secs(3));
        assert_eq!(cli.args.cycle, 3);
        assert!(TestCli::try_parse_from(["t"]).is_err());
        assert!(TestCli::try_parse_from(["t", "--verify"]).is_ok());
        assert!(TestCli::try_parse_from(["t", "--verify", "--scenario", "deadlock"]).is_ok());
        assert!(TestCli::try_parse_from(["t", "--verify", "--list"]).is_err());
        assert!(
            TestCli::try_parse_from(["t", "--scenario", "deadlock", "--duration", "x"]).is_err()
        );
    }
}
