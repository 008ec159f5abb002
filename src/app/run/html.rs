//! `run --html FILE`: the page of a run — its charts, the findings and alerts on the
//! time axis, and the diagnosis taken at the hang or timeout (else the report of the
//! last two samples).

use std::path::Path;

use anyhow::Result;

use super::Outcome;
use super::reports::write_file;
use crate::app::settings::RunSettings;
use crate::engine::Watch;
use crate::model::{Finding, FindingKind};
use crate::sink::html::{self, ChartData, Page};
use crate::sink::report::{self, SnapshotReport};

/// What the page of a run is made of.
pub struct RunPage<'a> {
    pub settings: &'a RunSettings,
    pub pid: i32,
    pub outcome: Outcome,
    pub code: u8,
    /// The closing line ("hang detected — …; tfwatch exit 122").
    pub closing: &'a str,
    /// Every finding raised during the run.
    pub findings: &'a [Finding],
    /// The diagnosis taken at a hang or a timeout.
    pub diagnosis: Option<&'a SnapshotReport>,
    pub watch: &'a Watch,
}

impl RunPage<'_> {
    pub fn write(&self, path: &Path, data: &ChartData) -> Result<()> {
        let command = self.settings.command.join(" ");
        let last = if self.diagnosis.is_none() {
            report::from_watch(self.watch)
        } else {
            None
        };
        let diagnosis = match (self.diagnosis, &last) {
            (Some(at_hang), _) => Some((
                at_hang,
                match self.outcome {
                    Outcome::TimedOut => "The diagnosis taken at the timeout.",
                    _ => "The diagnosis taken at the hang, before the command was ended.",
                }
                .to_string(),
            )),
            (None, Some(last)) => Some((
                last,
                "The report of the last two samples before the command ended, with the findings active then."
                    .to_string(),
            )),
            (None, None) => None,
        };
        let mut findings =
            updated_by_diagnosis(self.findings, self.diagnosis.map(|d| d.findings.as_slice()));
        crate::detect::sort_findings(&mut findings);
        let page = Page {
            title: format!("tfwatch run: {command}"),
            facts: vec![
                ("pid".to_string(), self.pid.to_string()),
                ("outcome".to_string(), self.outcome.describe().to_string()),
                ("tfwatch exit code".to_string(), self.code.to_string()),
                ("how it ended".to_string(), self.closing.to_string()),
            ],
            command: Some(command),
            data,
            findings,
            diagnosis,
            notes: Vec::new(),
        };
        write_file(path, "HTML report", |out| html::write_page(&page, out))
    }
}

/// The findings of the run, each hang replaced by its version in the diagnosis, where
/// the stacks taken at the hang rewrote it (a no-progress proven a deadlock): the page
/// says what the stacks showed, not what was known before them.
fn updated_by_diagnosis(findings: &[Finding], diagnosis: Option<&[Finding]>) -> Vec<Finding> {
    let Some(diagnosis) = diagnosis else {
        return findings.to_vec();
    };
    let hang = |f: &Finding| matches!(f.kind, FindingKind::NoProgress | FindingKind::Deadlock);
    let mut out: Vec<Finding> = Vec::with_capacity(findings.len());
    for finding in findings {
        let key = crate::detect::finding_key(finding);
        let updated = diagnosis.iter().find(|d| {
            crate::detect::finding_key(d) == key
                || (hang(finding) && hang(d) && d.pids == finding.pids)
        });
        let chosen = updated.unwrap_or(finding);
        if !out
            .iter()
            .any(|o| crate::detect::finding_key(o) == crate::detect::finding_key(chosen))
        {
            out.push(chosen.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Severity;

    #[test]
    fn a_hang_the_stacks_rewrote_is_shown_as_rewritten_once() {
        let mut before = Finding::new(
            FindingKind::NoProgress,
            Severity::Error,
            "pid 7 made no progress for 12 s, take stacks",
        );
        before.pids = vec![7];
        let mut after = Finding::new(
            FindingKind::Deadlock,
            Severity::Error,
            "pid 7: lock-order deadlock",
        );
        after.pids = vec![7];
        let mut other = Finding::new(FindingKind::Idle, Severity::Info, "pid 8 is idle");
        other.pids = vec![8];
        let diagnosis = [after.clone()];
        let shown = updated_by_diagnosis(&[before, other.clone()], Some(&diagnosis));
        assert_eq!(shown, vec![after, other.clone()]);
        assert_eq!(updated_by_diagnosis(&[other.clone()], None), vec![other]);
    }
}
