//! What `run` writes: the JSON report, and the files around it.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use anyhow::{Context, Result};
use serde::Serialize;

use crate::model::Finding;
use crate::sink::report::SnapshotReport;
use crate::sink::summary::{Comparison, RunSummary};

pub use crate::sink::line::Outcome;

/// The JSON report of a run (`--report`).
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct RunReport {
    pub schema: u32,
    pub command: Vec<String>,
    pub pid: i32,
    pub outcome: Outcome,
    pub exit_code: u8,
    /// The command's own exit code, or 128 + signal when a signal ended it.
    pub command_exit_code: Option<i32>,
    pub summary: RunSummary,
    /// Every finding raised during the run (the most severe version of each, the newest among equals).
    pub findings: Vec<Finding>,
    pub alerts: Vec<serde_json::Value>,
    pub baseline: Option<Vec<Comparison>>,
    /// The snapshot report taken on a hang or a timeout.
    pub diagnosis: Option<SnapshotReport>,
    /// What tfwatch could not write during the run (its lines on stderr), one entry
    /// per output; any makes the exit code 125.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
}

/// How the command ended, in words: "command exited 7", "command was killed by signal
/// 11 (SIGSEGV)".
pub fn describe_status(status: Option<std::process::ExitStatus>) -> String {
    use std::os::unix::process::ExitStatusExt;
    match status {
        Some(s) => match (s.code(), s.signal()) {
            (Some(code), _) => format!("command exited {code}"),
            (None, Some(signal)) => format!(
                "command was killed by signal {signal} ({})",
                super::process::signal_name(signal)
            ),
            (None, None) => "command status unknown".to_string(),
        },
        None => "command status unknown".to_string(),
    }
}

/// The closing line (without "tfwatch: ").
pub fn closing_line(
    outcome: Outcome,
    status: Option<std::process::ExitStatus>,
    code: u8,
) -> String {
    let status = describe_status(status);
    match outcome {
        Outcome::Passed => format!("passed — {status}; tfwatch exit {code}"),
        Outcome::CommandFailed | Outcome::CommandKilled => {
            format!("{status}; no gate failed — tfwatch exit {code}")
        }
        other => format!("{} — {status}; tfwatch exit {code}", other.describe()),
    }
}

/// The closing line when a report could not be written: tfwatch exits 125 whatever
/// the outcome.
pub fn closing_line_unwritten(
    outcome: Outcome,
    status: Option<std::process::ExitStatus>,
    error: &anyhow::Error,
) -> String {
    format!(
        "{} — {}; {error:#} — tfwatch exit {}",
        outcome.describe(),
        describe_status(status),
        crate::app::exit::TFWATCH_FAILED
    )
}

/// Checks before the command starts that `path` can be written (`what`: "--report"), by
/// opening it for appending (creating it when missing; the contents are replaced at the
/// end), so a long job does not learn at its end that its report cannot be written.
pub fn check_writable(path: &Path, what: &str) -> Result<()> {
    std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(path)
        .map(drop)
        .with_context(|| format!("{what} {}: cannot be written", path.display()))
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;
    use std::process::ExitStatus;

    #[test]
    fn closing_lines_say_how_the_command_ended() {
        assert_eq!(
            closing_line(Outcome::Passed, Some(ExitStatus::from_raw(0)), 0),
            "passed — command exited 0; tfwatch exit 0"
        );
        assert_eq!(
            closing_line(
                Outcome::CommandFailed,
                Some(ExitStatus::from_raw(7 << 8)),
                7
            ),
            "command exited 7; no gate failed — tfwatch exit 7"
        );
        // A raw wait status of 11: killed by SIGSEGV.
        assert_eq!(
            closing_line(Outcome::CommandKilled, Some(ExitStatus::from_raw(11)), 139),
            "command was killed by signal 11 (SIGSEGV); no gate failed — tfwatch exit 139"
        );
    }
}
