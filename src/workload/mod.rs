//! The reference workload: small, honest reproductions of each hang and
//! oversubscription problem, with a broken and a fixed variant.

use clap::Args;

#[derive(Debug, Args)]
pub struct WorkloadArgs {}

/// Runs `tfwatch run-workload`; returns the process exit code.
pub fn run(_args: &WorkloadArgs) -> anyhow::Result<i32> {
    anyhow::bail!("run-workload is not yet available")
}
