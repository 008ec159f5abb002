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

impl Sink for Gate<'_> {
    fn sample(&mut self, watch: &Watch, events: &[Event]) -> Result<Control> {
        if let Some(sample) = watch.timeline.latest() {
            self.tree = sample.processes.iter().map(|p| p.pid).collect();
        }
        for event in events {
            match event {
                Event::Sample(line) => self.summary.add(&line.metrics),
                Event::Finding(f) => {
                    crate::detect::keep_most_severe(&mut self.findings, &f.finding);
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
