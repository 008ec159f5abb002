//! The snapshot triage report: built from samples and findings, rendered as text or JSON.

use anyhow::Result;

use crate::cli::SnapshotArgs;

/// `tfwatch snapshot`: samples the tree twice, runs the detectors, prints the report.
pub fn snapshot_command(_args: &SnapshotArgs) -> Result<u8> {
    anyhow::bail!("snapshot is being built")
}
