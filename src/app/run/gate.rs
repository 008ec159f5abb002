//! The gate of `run` as a sink of the watch loop: it keeps every finding and alert and
//! the run summary, stops the watch on a hang, and notices when the command ends.

use std::process::{Child, ExitStatus};
use std::time::Duration;

use anyhow::Result;

use crate::engine::sink::{Control, Ending, Reason, Sink};
use crate::engine::{Event, Watch};
use crate::model::{Finding, FindingKind};
use crate::sink::junit::FiredRule;
use crate::sink::summary::SummaryBuilder;

pub struct Gate<'a> {
    child: &'a mut Child,
    /// The command's tree as last sampled.
    pub tree: Vec<i32>,
    pub summary: SummaryBuilder,
    /// Every finding raised: the most severe version of each (the newest among equals),
    /// so a warning seen while the command ran still fails `--fail-on warning` after its
    /// cause ended.
    pub findings: Vec<Finding>,
    pub alerts: Vec<serde_json::Value>,
    pub fired: Vec<FiredRule>,
    /// The first hang found.
    pub hang: Option<Finding>,
    /// The command's status, once it ended by itself.
    pub status: Option<ExitStatus>,
}

impl<'a> Gate<'a> {
    pub fn new(child: &'a mut Child) -> Self {
        let pid = child.id() as i32;
        Gate {
            child,
            tree: vec![pid],
            summary: SummaryBuilder::default(),
            findings: Vec::new(),
            alerts: Vec::new(),
            fired: Vec::new(),
            hang: None,
            status: None,
        }
    }
}

/// Puts `finding` (key `key`) in `findings` unless a more severe version of it is there.
fn keep_most_severe(findings: &mut Vec<Finding>, key: &str, finding: &Finding) {
    let kept = findings
        .iter()
        .position(|old| crate::detect::finding_key(old) == key);
    match kept {
        Some(at) if findings[at].severity > finding.severity => {}
        Some(at) => findings[at] = finding.clone(),
        None => findings.push(finding.clone()),
    }
}

impl Sink for Gate<'_> {
    fn sample(&mut self, watch: &Watch, events: &[Event]) -> Result<Control> {
        if let Some(sample) = watch.timeline.latest() {
            self.tree = sample.processes.iter().map(|p| p.pid).collect();
        }
        for event in events {
            match event {
                Event::Sample(line) => self.summary.add(&line.metrics),
                Event::Finding(f) => {
                    keep_most_severe(&mut self.findings, &f.key, &f.finding);
                    // The first hang found; a proven cycle or inherited lock found
                    // later for the same processes replaces a plain no-progress.
                    let proves_it = self.hang.as_ref().is_some_and(|h| {
                        h.kind == FindingKind::NoProgress
                            && f.finding.kind != FindingKind::NoProgress
                            && f.finding.pids.iter().any(|p| h.pids.contains(p))
                    });
                    // Only a hang seen (an error): an unconfirmed stall is said, not acted on.
                    let seen = f.finding.severity == crate::model::Severity::Error;
                    if f.finding.kind.is_hang() && seen && (self.hang.is_none() || proves_it) {
                        self.hang = Some(f.finding.clone());
                    }
                }
                Event::Alert(a) => {
                    self.alerts
                        .push(serde_json::to_value(&a.alert).unwrap_or_default());
                    self.fired.push(FiredRule {
                        rule: a.alert.rule.clone(),
                        severity: a.alert.severity,
                        message: a.alert.message.clone(),
                    });
                }
                _ => {}
            }
        }
        Ok(match &self.hang {
            Some(hang) => Control::Stop(Ending::new(
                Reason::Stopped,
                format!("hang detected: {}", hang.summary),
            )),
            None => Control::Continue,
        })
    }

    fn idle(&mut self, _watch: &Watch, _wait: Duration) -> Result<Control> {
        if let Some(status) = super::process::exited(self.child) {
            self.status = Some(status);
            return Ok(Control::Stop(Ending::new(
                Reason::TargetExited,
                "the command exited",
            )));
        }
        Ok(Control::Continue)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Severity;

    fn gil(severity: Severity, summary: &str) -> Finding {
        let mut f = Finding::new(FindingKind::GilContention, severity, summary.to_string());
        f.pids = vec![7];
        f
    }

    #[test]
    fn a_warning_seen_stays_after_its_finding_falls_back_to_info() {
        let mut findings = Vec::new();
        let first = gil(Severity::Info, "1 of 1 readings");
        let key = crate::detect::finding_key(&first);
        keep_most_severe(&mut findings, &key, &first);
        keep_most_severe(
            &mut findings,
            &key,
            &gil(Severity::Warning, "3 of 4 readings"),
        );
        keep_most_severe(&mut findings, &key, &gil(Severity::Info, "3 of 5 readings"));
        assert_eq!(findings.len(), 1);
        assert_eq!(findings[0].severity, Severity::Warning);
        assert_eq!(findings[0].summary, "3 of 4 readings");
        // A newer version as severe replaces it.
        keep_most_severe(
            &mut findings,
            &key,
            &gil(Severity::Warning, "4 of 5 readings"),
        );
        assert_eq!(findings[0].summary, "4 of 5 readings");
        assert_eq!(findings.len(), 1);
    }
}
