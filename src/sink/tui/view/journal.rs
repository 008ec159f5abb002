//! Findings and alerts as they come and go, for the panel that lists them.

use std::collections::VecDeque;

use crate::engine::{Event, Watch};
use crate::model::Severity;

use super::{CHART_SECONDS, short_number};

/// Findings and alerts kept in the panel.
const JOURNAL_ENTRIES: usize = 200;

/// Findings and alerts as they came and went, newest last, and the series the timeline
/// does not keep (GPU memory).
#[derive(Debug, Clone, Default)]
pub struct Journal {
    pub entries: Vec<JournalEntry>,
    pub gpu_memory: VecDeque<(f64, f64)>,
}

/// A finding or an alert, and when it resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct JournalEntry {
    /// The finding's key or the alert's rule: what a `resolved` event names.
    pub key: String,
    pub elapsed_seconds: f64,
    pub severity: Severity,
    /// "deadlock", "alert threads-high", …
    pub title: String,
    pub summary: String,
    pub evidence: Vec<String>,
    pub remedy: String,
    /// Seconds it had been active when it resolved.
    pub resolved_after: Option<f64>,
    /// Explained from stacks (taken on the hang): the evidence is who waits for what,
    /// one line per thread that matters, and how long the process was paused.
    pub explained: bool,
}

impl Journal {
    /// Takes the explanations from stacks the watch holds for the open entries (a hang
    /// explained by `attach`'s stacks): the entry then shows them instead of the
    /// evidence from /proc.
    pub fn take_explanations(&mut self, watch: &Watch) {
        for entry in self
            .entries
            .iter_mut()
            .filter(|e| e.resolved_after.is_none() && !e.explained)
        {
            if let Some(finding) = watch.explained(&entry.key) {
                // The stacks may say more than /proc did: a deadlock, an error.
                entry.severity = finding.severity;
                entry.title = finding.kind.to_string();
                entry.summary = finding.summary.clone();
                entry.evidence = finding.evidence.clone();
                entry.remedy = finding.remedy.clone();
                entry.explained = true;
            }
        }
    }

    /// Takes the events of one sample.
    pub fn record(&mut self, events: &[Event]) {
        for event in events {
            match event {
                Event::Sample(line) => {
                    if let Some(bytes) = line.metrics.get("gpu_memory_used_bytes") {
                        self.gpu_memory.push_back((line.elapsed_seconds, *bytes));
                    }
                    while self
                        .gpu_memory
                        .front()
                        .is_some_and(|(t, _)| line.elapsed_seconds - t > CHART_SECONDS)
                    {
                        self.gpu_memory.pop_front();
                    }
                }
                Event::Finding(f) => {
                    let entry = JournalEntry {
                        key: f.key.clone(),
                        elapsed_seconds: f.elapsed_seconds,
                        severity: f.finding.severity,
                        title: f.finding.kind.to_string(),
                        summary: f.finding.summary.clone(),
                        evidence: f.finding.evidence.clone(),
                        remedy: f.finding.remedy.clone(),
                        resolved_after: None,
                        explained: false,
                    };
                    // A finding whose severity rose replaces its open entry.
                    self.entries
                        .retain(|e| e.key != entry.key || e.resolved_after.is_some());
                    self.entries.push(entry);
                }
                Event::Alert(a) => self.entries.push(JournalEntry {
                    key: format!("rule:{}", a.alert.rule),
                    elapsed_seconds: a.elapsed_seconds,
                    severity: a.alert.severity,
                    title: format!("alert {}", a.alert.rule),
                    summary: a.alert.message.clone(),
                    evidence: vec![format!(
                        "{} = {} {} {}",
                        a.alert.metric,
                        short_number(a.alert.value),
                        a.alert.op,
                        short_number(a.alert.threshold)
                    )],
                    remedy: a.alert.remedy.clone(),
                    resolved_after: None,
                    explained: false,
                }),
                Event::Resolved(r) => {
                    let key = match (&r.key, &r.rule) {
                        (Some(key), _) => key.clone(),
                        (None, Some(rule)) => format!("rule:{rule}"),
                        (None, None) => continue,
                    };
                    if let Some(entry) = self
                        .entries
                        .iter_mut()
                        .rev()
                        .find(|e| e.key == key && e.resolved_after.is_none())
                    {
                        entry.resolved_after = Some(r.active_seconds);
                    }
                }
                Event::Exit(_) => {}
            }
        }
        if self.entries.len() > JOURNAL_ENTRIES {
            let extra = self.entries.len() - JOURNAL_ENTRIES;
            self.entries.drain(..extra);
        }
    }
}
