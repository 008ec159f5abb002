//! `healthy`: a busy but well-configured mix that no detector should flag.
//!
//! One compute team sized to usable CPUs doing matrix multiplies, an inference server
//! with a bounded queue offered half of what it can serve, and a helper process started
//! the safe way (a fresh executable, no locks carried across a fork).

use std::time::Duration;

use anyhow::{Context, Result};

use super::common;
use super::compute::{DEFAULT_SPIN_COUNT, run_team};
use super::queue_overload::{ServerConfig, capacity_per_second, run_server, server_result};
use super::{Ctx, WorkloadOptions};

pub fn run(ctx: &Ctx, args: &WorkloadOptions) -> Result<i32> {
    let team_size = ctx.usable_cpus;
    let service = Duration::from_millis(args.service_ms.clamp(1, 10_000));
    let config = ServerConfig {
        service,
        request_rate: args
            .request_rate
            .unwrap_or((capacity_per_second(service) / 2.0) as u64),
        queue_cap: Some(args.queue_cap.max(1)),
        metrics_port: args.metrics_port,
    };
    ctx.say(format!(
        "compute team of {team_size} threads (usable CPUs), bounded queue, helper process by exec"
    ));
    let deadline = ctx.deadline;
    let team = std::thread::Builder::new()
        .name("team-master".to_string())
        .spawn(move || {
            run_team(
                team_size,
                u64::MAX,
                deadline,
                DEFAULT_SPIN_COUNT,
                "omp-team",
            )
        })?;
    let mut helper = common::self_command("fork-lock", super::fork_lock::CHILD_ROLE)?
        .arg("--fixed")
        .spawn()
        .context("cannot start the helper process")?;
    common::emit_child(helper.id(), "helper");
    let report = run_server(ctx, config)?;
    let team_run = team
        .join()
        .map_err(|_| anyhow::anyhow!("the compute team panicked"))?
        .context("cannot start the compute team")?;
    let helper_ok = helper
        .wait()
        .map(|status| status.success())
        .unwrap_or(false);
    ctx.say(format!(
        "compute: {:.1} work units/s; latency {}; helper {}",
        team_run.units as f64 / team_run.seconds.max(1e-9),
        report.latency.summary(),
        if helper_ok { "completed" } else { "failed" }
    ));
    let mut result = server_result(ctx, &report);
    result.completed = helper_ok && team_run.units > 0;
    result.throughput = Some(team_run.units as f64 / team_run.seconds.max(1e-9));
    result.work_units = Some(team_run.units);
    result.detail = format!(
        "team of {team_size}, {} requests served, {} rejected",
        report.requests_total, report.rejected_total
    );
    Ok(ctx.finish(&result))
}
