//! `tfwatch run-workload`: one scenario, the list, or the verification harness.

use anyhow::Result;

use super::settings::UsageError;
use crate::cli::WorkloadArgs;
use crate::workload::WorkloadOptions;

/// The checked settings of a workload run; an interpreter given with `--python` that
/// cannot run the cases is a usage error.
pub fn options(args: &WorkloadArgs) -> Result<WorkloadOptions, UsageError> {
    let python = match &args.python {
        Some(path) => Some(
            crate::workload::frameworks::probe(path)
                .map_err(|why| UsageError(anyhow::anyhow!("--python {}: {why}", path.display())))?,
        ),
        None => None,
    };
    Ok(WorkloadOptions {
        scenario: args.scenario,
        fixed: args.fixed,
        duration: args.duration,
        threads: args.threads,
        procs: args.procs,
        metrics_port: args.metrics_port,
        cap: args.cap,
        rate: args.rate,
        cache: args.cache,
        cycle: args.cycle,
        service_ms: args.service_ms,
        request_rate: args.request_rate,
        queue_cap: args.queue_cap,
        units: args.units,
        skip_frameworks: args.skip_frameworks,
        role: args.role.clone(),
        index: args.index,
        endpoint: args.endpoint.clone(),
        python,
    })
}

/// Runs `tfwatch run-workload`; returns the process exit code.
pub fn command(args: &WorkloadArgs) -> Result<i32> {
    if args.list {
        for name in crate::workload::scenario_names() {
            crate::workload::common::emit(name);
        }
        return Ok(0);
    }
    super::settings::check_duration("--duration", args.duration)
        .map_err(super::settings::UsageError)?;
    let options = options(args)?;
    if args.verify {
        crate::verify::run_verify(&options)
    } else {
        crate::workload::run(&options)
    }
}
