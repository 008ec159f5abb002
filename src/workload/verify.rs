//! `run-workload --verify`.
use anyhow::Result;

pub fn run_verify(_args: &super::WorkloadArgs) -> Result<i32> {
    anyhow::bail!("not yet")
}
