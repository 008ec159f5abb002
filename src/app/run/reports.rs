//! What `run` writes: the JSON report, and the files around it.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use anyhow::{Context, Result};
use serde::Serialize;

use crate::model::Finding;
use crate::sink::report::SnapshotReport;
use crate::sink::summary::{Comparison, RunSummary};

/// How the run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// The command ended by itself and no gate failed.
    Passed,
    RuleGateFailed,
    BaselineRegression,
    HangDetected,
    TimedOut,
    /// tfwatch was interrupted (SIGINT/SIGTERM), passed it on, and the command ended.
    Interrupted,
}

impl Outcome {
    /// The outcome as words for the closing line.
    pub fn describe(self) -> &'static str {
        match self {
            Outcome::Passed => "passed",
            Outcome::RuleGateFailed => "rule gate failed",
            Outcome::BaselineRegression => "baseline regression",
            Outcome::HangDetected => "hang detected",
            Outcome::TimedOut => "timed out",
            Outcome::Interrupted => "interrupted",
        }
    }
}

/// The JSON report of a run (`--report`).
#[derive(Debug, Serialize)]
pub struct RunReport {
    pub schema: u32,
    pub command: Vec<String>,
    pub pid: i32,
    pub outcome: Outcome,
    pub exit_code: u8,
    /// The command's own exit code, or 128 + signal when a signal ended it.
    pub command_exit_code: Option<i32>,
    pub summary: RunSummary,
    /// Every finding raised during the run (the last version of each).
    pub findings: Vec<Finding>,
    pub alerts: Vec<serde_json::Value>,
    pub baseline: Option<Vec<Comparison>>,
    /// The snapshot report taken on a hang or a timeout.
    pub diagnosis: Option<SnapshotReport>,
}

pub fn write_file(
    path: &Path,
    what: &str,
    write: impl FnOnce(&mut BufWriter<File>) -> std::io::Result<()>,
) -> Result<()> {
    let file = File::create(path)
        .with_context(|| format!("cannot create the {what} {}", path.display()))?;
    let mut out = BufWriter::new(file);
    write(&mut out)
        .and_then(|()| out.flush())
        .with_context(|| format!("cannot write the {what} {}", path.display()))
}
