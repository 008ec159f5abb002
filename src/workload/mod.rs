//! The reference workload: small, honest reproductions of each hang and
//! oversubscription problem, with a broken and a fixed variant.
//!
//! Every scenario runs in the foreground, prints what it does one line per event, and
//! ends by itself after `--duration`, hung or not. Lines meant for machines start with
//! [`common::PREFIX`] and are parsed by [`parse_line`]; see `common` for the formats.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

pub mod common;
pub mod compute;
mod cuda;
pub mod deadlock;
pub mod event_loop;
pub mod fork_lock;
pub mod frameworks;
pub mod gil;
pub mod gpu_contention;
pub mod healthy;
pub mod idle_pool;
pub mod lock_contention;
pub mod memory_growth;
pub mod metrics;
pub mod oversubscribe;
pub mod queue_overload;
pub mod thread_explosion;

pub use common::{ScenarioResult, WorkloadLine, parse_line};

/// The scenarios, in the order `--verify` runs them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
    /// Request threads through one lock around a shared model (a convoy).
    LockContention,
    /// An event loop whose handler makes a 150 ms call on the loop thread.
    EventLoop,
    /// Pure-Python CPU loops in threads of one interpreter (they take turns on the GIL).
    Gil,
    /// A busy but well-configured mix (no broken variant).
    Healthy,
    /// A thread pool idle between batches (fixed: quiet) and a join on idle workers no
    /// thread can feed (broken: a hang that looks idle).
    IdlePool,
}

const SCENARIO_NAMES: &[&str] = &[
    "deadlock",
    "fork-lock",
    "oversubscribe",
    "thread-explosion",
    "gpu-contention",
    "queue-overload",
    "memory-growth",
    "lock-contention",
    "event-loop",
    "gil",
    "healthy",
    "idle-pool",
];

/// Names of every scenario, as `--scenario` takes them.
pub fn scenario_names() -> &'static [&'static str] {
    SCENARIO_NAMES
}

impl Scenario {
    pub const ALL: [Scenario; 12] = [
        Scenario::Deadlock,
        Scenario::ForkLock,
        Scenario::Oversubscribe,
        Scenario::ThreadExplosion,
        Scenario::GpuContention,
        Scenario::QueueOverload,
        Scenario::MemoryGrowth,
        Scenario::LockContention,
        Scenario::EventLoop,
        Scenario::Gil,
        Scenario::Healthy,
        Scenario::IdlePool,
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
            Scenario::LockContention => "lock-contention",
            Scenario::EventLoop => "event-loop",
            Scenario::Gil => "gil",
            Scenario::Healthy => "healthy",
            Scenario::IdlePool => "idle-pool",
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

/// The settings of one workload run (the command layer checks them from the
/// command line).
#[derive(Debug, Clone)]
pub struct WorkloadOptions {
    /// Scenario to run: deadlock, fork-lock, oversubscribe, thread-explosion,
    /// gpu-contention, queue-overload, memory-growth, healthy.
    pub scenario: Option<Scenario>,
    /// Run the fixed variant instead of the broken one.
    pub fixed: bool,
    /// How long the scenario runs before it ends by itself (hung or not).
    pub duration: Duration,
    /// Threads: tasks for thread-explosion (default 300); team size of each broken
    /// oversubscribe process (default: all online CPUs; the fixed variant uses usable
    /// CPUs / processes); request threads of broken lock-contention (default 8); Python
    /// threads of broken gil and processes of fixed gil (default 4).
    pub threads: Option<usize>,
    /// Processes: oversubscribe workers (default 2 × usable CPUs), gpu-contention ranks
    /// (default 2).
    pub procs: Option<usize>,
    /// Port of the Prometheus metrics endpoint on 127.0.0.1 (0 picks a free one).
    pub metrics_port: u16,
    /// memory-growth: the most resident memory the broken variant grows to, in MiB.
    pub cap: u64,
    /// memory-growth: allocation rate in MiB/s.
    pub rate: u64,
    /// memory-growth --fixed: size of the bounded cache in MiB.
    pub cache: u64,
    /// deadlock: number of threads (and mutexes) in the lock cycle.
    pub cycle: usize,
    /// queue-overload: service time of one batch, in milliseconds.
    pub service_ms: u64,
    /// queue-overload: requests per second offered (default: 3 × what the server serves).
    pub request_rate: Option<u64>,
    /// queue-overload --fixed: queue bound; requests beyond it are rejected.
    pub queue_cap: usize,
    /// oversubscribe: total work units (matrix multiplies) shared by all processes.
    pub units: Option<u64>,
    /// With `--verify`: leave out the real-framework scenarios.
    pub skip_frameworks: bool,
    /// With `--verify`: the interpreter of the real-framework scenarios (checked by the
    /// command layer); `None`: `python3` from `PATH`, where there is one.
    pub python: Option<frameworks::Python>,
    /// Internal: role of a re-executed child process of a scenario.
    pub role: Option<String>,
    /// Internal: index of a child process among its siblings.
    pub index: usize,
    /// Internal: file or socket the children of a scenario share.
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
pub fn run(args: &WorkloadOptions) -> Result<i32> {
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
    // `idle-pool` has no thread to spare: a sleeping one could end its hang (its own
    // alarm is its safety net).
    if scenario != Scenario::IdlePool {
        common::arm_watchdog(ctx.deadline + Duration::from_secs(5), || {
            common::say("workload", "did not end within 5s of its duration; exiting");
            common::EXIT_OVERRAN
        });
    }
    let outcome = match scenario {
        Scenario::Deadlock => deadlock::run(&ctx, args),
        Scenario::ForkLock => fork_lock::run(&ctx, args),
        Scenario::Oversubscribe => oversubscribe::run(&ctx, args),
        Scenario::ThreadExplosion => thread_explosion::run(&ctx, args),
        Scenario::GpuContention => gpu_contention::run(&ctx, args),
        Scenario::QueueOverload => queue_overload::run(&ctx, args),
        Scenario::MemoryGrowth => memory_growth::run(&ctx, args),
        Scenario::LockContention => lock_contention::run(&ctx, args),
        Scenario::EventLoop => event_loop::run(&ctx, args),
        Scenario::Gil => gil::run(&ctx, args),
        Scenario::Healthy => healthy::run(&ctx, args),
        Scenario::IdlePool => idle_pool::run(&ctx, args),
    };
    outcome.with_context(|| format!("cannot run scenario {} here", scenario.name()))
}

/// Child processes that scenarios start by re-executing tfwatch.
fn run_role(scenario: Scenario, role: &str, args: &WorkloadOptions) -> Result<i32> {
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

    #[test]
    fn names_match_the_enum() {
        let names: Vec<&str> = Scenario::ALL.iter().map(|s| s.name()).collect();
        assert_eq!(names, scenario_names());
        for name in scenario_names() {
            assert_eq!(parse_scenario(name).unwrap().name(), *name);
        }
    }
}
