//! The watch engine: feeds samples into the timeline, runs the detectors and the rules,
//! and turns what changed into events (`sample`, `finding`, `alert`, `resolved`, `exit`).
//!
//! [`Watch::observe`] is a pure function of the samples it is given, so recorded
//! timelines drive it in tests exactly as a live collector does.

pub mod diagnose;
pub mod sink;
pub mod values;

#[cfg(test)]
mod recorded_tests;

/// The `source` of a sample's memory limit when `--memory-limit` set it.
pub const MEMORY_LIMIT_OVERRIDE_SOURCE: &str = "--memory-limit";

use std::collections::BTreeMap;

use serde::Serialize;

use crate::detect::{self, DetectConfig, finding_key};
use crate::model::locks::LockNote;
use crate::model::{Finding, FindingKind, Sample, Severity, Unavailable};
use crate::rules::{Alert, AlertEvent, RuleEngine, RuleSet};
use crate::timeline::Timeline;
pub use sink::Reason;

pub use diagnose::{Diagnosis, diagnose_window};
pub use values::{Values, metric_values};

/// A finding must be absent this many samples in a row before it is resolved, so a
/// measure hovering at its threshold does not flap.
const RESOLVE_AFTER_SAMPLES: u32 = 3;

/// One line of the event stream.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum Event {
    Sample(SampleLine),
    Finding(FindingEvent),
    Alert(AlertLine),
    Resolved(ResolvedLine),
    Exit(ExitLine),
}

/// The per-interval summary line.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct SampleLine {
    pub time_unix_seconds: f64,
    pub elapsed_seconds: f64,
    pub pid: i32,
    pub pids: Vec<i32>,
    /// Metric name → value (see docs/metrics.md).
    pub metrics: Values,
    pub findings_active: Vec<String>,
    pub alerts_active: Vec<String>,
    pub sample_duration_seconds: f64,
    pub lateness_seconds: f64,
    /// Sources unavailable in this sample (listed once each).
    pub unavailable: Vec<Unavailable>,
    /// The processes of `pids` that are ranks of a distributed job, with their rank.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ranks: Vec<PidRank>,
}

/// A pid and its rank in a distributed job (`rank 1/2`, `worker 0`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct PidRank {
    pub pid: i32,
    pub rank: String,
}

/// The ranks of a sample's processes, in the sample's order.
pub fn ranks_of(sample: &Sample) -> Vec<PidRank> {
    sample
        .processes
        .iter()
        .filter_map(|p| {
            let rank = p.audit.as_ref()?.rank.as_ref()?;
            Some(PidRank {
                pid: p.pid,
                rank: rank.label(),
            })
        })
        .collect()
}

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct FindingEvent {
    pub time_unix_seconds: f64,
    pub elapsed_seconds: f64,
    /// Identity of the finding across events: kind and pids.
    pub key: String,
    #[serde(flatten)]
    pub finding: Finding,
}

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct AlertLine {
    pub time_unix_seconds: f64,
    pub elapsed_seconds: f64,
    #[serde(flatten)]
    pub alert: Alert,
}

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct ResolvedLine {
    pub time_unix_seconds: f64,
    pub elapsed_seconds: f64,
    /// Set when a finding resolved.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<FindingKind>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// Set when an alert resolved.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// How long it was active, seconds.
    pub active_seconds: f64,
}

/// How a watch ended: the fields every command's `exit` line has (`run` and `node` add
/// their own, `sink::events::ExitEvent`).
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct ExitLine {
    pub time_unix_seconds: f64,
    pub elapsed_seconds: f64,
    /// The watched pid; absent where there is none (`node`, a command not started).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid: Option<i32>,
    pub reason: Reason,
    /// `run` and `node`: tfwatch's own exit code. `attach`, `replay`: the target's exit
    /// code where known (tfwatch is not its parent: `null`).
    pub exit_code: Option<i32>,
    pub message: String,
}

struct Active {
    finding: Finding,
    since: f64,
    missing: u32,
    /// The finding as the stacks explained it (a sink of the command layer took them):
    /// kept while the finding stays active, shown instead of `finding`.
    explained: Option<Finding>,
}

impl Active {
    /// The finding as shown: its explanation where the stacks gave one.
    fn shown(&self) -> &Finding {
        self.explained.as_ref().unwrap_or(&self.finding)
    }
}

/// The state of one watch.
pub struct Watch {
    pub timeline: Timeline,
    pub detect: DetectConfig,
    rules: RuleEngine,
    active: BTreeMap<String, Active>,
    /// Audit findings from the newest sample that carried audits.
    audit_findings: Vec<Finding>,
    unavailable_seen: Vec<Unavailable>,
    last_values: Values,
    /// Lock notes of the newest sample's wait-for graph.
    lock_notes: Vec<LockNote>,
    rules_mapping: crate::model::metrics::MetricsMapping,
}

impl Watch {
    pub fn new(detect: DetectConfig, rules: RuleSet) -> Watch {
        let history = (detect.hang_after_seconds * 2.0).max(600.0);
        Watch {
            timeline: Timeline::new(history),
            detect,
            rules_mapping: rules.metrics_mapping(),
            rules: RuleEngine::new(rules),
            active: BTreeMap::new(),
            audit_findings: Vec::new(),
            unavailable_seen: Vec::new(),
            last_values: Values::new(),
            lock_notes: Vec::new(),
        }
    }

    /// Takes one sample; returns the events it causes, the `sample` line first.
    pub fn observe(&mut self, mut sample: Sample) -> Vec<Event> {
        // `--memory-limit`: the limit of this watch, for the detector, the rules, the
        // metrics and the exporter alike.
        if let Some(bytes) = self.detect.memory_limit_override {
            sample.memory_limit.bytes = bytes;
            sample.memory_limit.source = MEMORY_LIMIT_OVERRIDE_SOURCE.to_string();
        }
        let time = sample.time_unix_seconds;
        let elapsed = sample.elapsed_seconds;
        let pid = sample.root_pid;
        let pids = sample.processes.iter().map(|p| p.pid).collect();
        let ranks = ranks_of(&sample);
        let cost = sample.cost;
        let new_unavailable: Vec<Unavailable> = sample
            .unavailable
            .iter()
            .filter(|u| !self.unavailable_seen.contains(u))
            .cloned()
            .collect();
        self.unavailable_seen
            .extend(new_unavailable.iter().cloned());
        if sample.processes.iter().any(|p| p.audit.is_some()) {
            self.audit_findings = crate::detect::audit::audit_findings(&sample);
        }
        self.timeline.push(sample);

        let values = metric_values(&self.timeline);
        let judgement = detect::judge(&self.timeline, &self.detect);
        self.lock_notes = judgement.lock_notes;
        let mut findings = judgement.findings;
        findings.extend(self.audit_findings.iter().cloned());

        let mut events = Vec::new();
        let mut current = BTreeMap::new();
        for finding in findings {
            current.insert(finding_key(&finding), finding);
        }
        for (key, finding) in &current {
            match self.active.get_mut(key) {
                Some(active) => {
                    active.missing = 0;
                    let rose = finding.severity > active.finding.severity;
                    active.finding = finding.clone();
                    if let Some(explained) = active.explained.as_mut() {
                        // What the stacks proved stays at least as severe.
                        explained.severity = explained.severity.max(finding.severity);
                    }
                    if rose {
                        events.push(finding_event(time, elapsed, key, active.shown()));
                    }
                }
                None => {
                    events.push(finding_event(time, elapsed, key, finding));
                    self.active.insert(
                        key.clone(),
                        Active {
                            finding: finding.clone(),
                            since: elapsed,
                            missing: 0,
                            explained: None,
                        },
                    );
                }
            }
        }
        let gone: Vec<String> = self
            .active
            .iter_mut()
            .filter(|(key, _)| !current.contains_key(*key))
            .filter_map(|(key, active)| {
                active.missing += 1;
                (active.missing >= RESOLVE_AFTER_SAMPLES).then(|| key.clone())
            })
            .collect();
        for key in gone {
            if let Some(active) = self.active.remove(&key) {
                events.push(Event::Resolved(ResolvedLine {
                    time_unix_seconds: time,
                    elapsed_seconds: elapsed,
                    kind: Some(active.finding.kind),
                    key: Some(key),
                    rule: None,
                    active_seconds: elapsed - active.since,
                }));
            }
        }
        for alert in self.rules.evaluate(elapsed, &values) {
            events.push(match alert {
                AlertEvent::Resolved(resolution) => Event::Resolved(ResolvedLine {
                    time_unix_seconds: time,
                    elapsed_seconds: elapsed,
                    kind: None,
                    key: None,
                    rule: Some(resolution.rule),
                    active_seconds: resolution.duration_firing,
                }),
                AlertEvent::Fired(fired) => Event::Alert(AlertLine {
                    time_unix_seconds: time,
                    elapsed_seconds: elapsed,
                    alert: fired,
                }),
            });
        }

        let line = Event::Sample(SampleLine {
            time_unix_seconds: time,
            elapsed_seconds: elapsed,
            pid,
            pids,
            metrics: values.clone(),
            findings_active: self.active.keys().cloned().collect(),
            alerts_active: self.rules.active().into_iter().map(|a| a.rule).collect(),
            sample_duration_seconds: cost.duration_seconds,
            lateness_seconds: cost.lateness_seconds,
            unavailable: new_unavailable,
            ranks,
        });
        self.last_values = values;
        events.insert(0, line);
        events
    }

    /// Findings active now, most severe first (explained from stacks where they were).
    pub fn active_findings(&self) -> Vec<&Finding> {
        let mut list: Vec<&Finding> = self.active.values().map(Active::shown).collect();
        list.sort_by(|a, b| detect::severity_order(a, b));
        list
    }

    /// The watch's diagnosis: its active findings (a hang it reported among them, most
    /// severe first) and the lock notes of the newest sample.
    pub fn diagnosis(&self) -> Diagnosis {
        let mut findings: Vec<Finding> = self.active.values().map(|a| a.shown().clone()).collect();
        detect::sort_findings(&mut findings);
        Diagnosis {
            findings,
            lock_notes: self.lock_notes.clone(),
            needs_longer_watch: Vec::new(),
        }
    }

    /// Keeps `finding` as the explanation of the active finding `key` (its stacks,
    /// taken by a sink of the command layer: `attach`'s stacks on a hang): the
    /// dashboard, the diagnosis and the closing summary then show it for as long as the
    /// finding stays active. False when `key` is not active (it resolved meanwhile).
    pub fn explain(&mut self, key: &str, finding: Finding) -> bool {
        match self.active.get_mut(key) {
            Some(active) => {
                active.explained = Some(finding);
                true
            }
            None => false,
        }
    }

    /// The explanation from stacks of the active finding `key`, if it has one.
    pub fn explained(&self, key: &str) -> Option<&Finding> {
        self.active.get(key).and_then(|a| a.explained.as_ref())
    }

    /// The worst severity among active findings and firing alerts.
    pub fn worst_severity(&self) -> Option<Severity> {
        self.active
            .values()
            .map(|a| a.finding.severity)
            .chain(self.rules.active().into_iter().map(|a| a.severity))
            .max()
    }

    /// The metrics mapping of the watch's rules (`[metrics]` section or defaults).
    pub fn rules_mapping(&self) -> crate::model::metrics::MetricsMapping {
        self.rules_mapping.clone()
    }

    pub fn last_values(&self) -> &Values {
        &self.last_values
    }
}

fn finding_event(time: f64, elapsed: f64, key: &str, finding: &Finding) -> Event {
    Event::Finding(FindingEvent {
        time_unix_seconds: time,
        elapsed_seconds: elapsed,
        key: key.to_string(),
        finding: finding.clone(),
    })
}

#[cfg(test)]
mod override_tests {
    use super::*;
    use crate::model::{MemoryLimit, ProcessSample};

    #[test]
    fn memory_limit_override_reaches_the_metrics_and_the_timeline() {
        let detect = DetectConfig {
            memory_limit_override: Some(8 << 20),
            ..DetectConfig::default()
        };
        let mut watch = Watch::new(detect, RuleSet::defaults());
        for t in 0..3 {
            watch.observe(Sample {
                elapsed_seconds: f64::from(t),
                root_pid: 1,
                processes: vec![ProcessSample {
                    pid: 1,
                    rss_bytes: 4 << 20,
                    ..ProcessSample::default()
                }],
                memory_limit: MemoryLimit {
                    bytes: 64 << 30,
                    source: "MemTotal".into(),
                    mem_total_bytes: 64 << 30,
                },
                ..Sample::default()
            });
        }
        let values = values::metric_values(&watch.timeline);
        assert_eq!(values["memory_limit_bytes"], f64::from(8u32 << 20));
        assert_eq!(values["memory_used_ratio"], 0.5);
        let latest = watch.timeline.latest().map(|s| s.memory_limit.clone());
        assert_eq!(
            latest.map(|l| l.source),
            Some(MEMORY_LIMIT_OVERRIDE_SOURCE.to_string())
        );
    }

    #[test]
    fn the_sample_line_names_the_rank_of_each_rank_it_lists() {
        let mut watch = Watch::new(DetectConfig::default(), RuleSet::defaults());
        let rank = crate::model::ranks::RankInfo {
            rank: 0,
            world_size: Some(2),
            ..Default::default()
        };
        let events = watch.observe(Sample {
            root_pid: 1,
            processes: vec![
                ProcessSample {
                    pid: 1,
                    ..ProcessSample::default()
                },
                ProcessSample {
                    pid: 2,
                    ppid: 1,
                    audit: Some(crate::model::RuntimeAudit {
                        rank: Some(rank),
                        ..Default::default()
                    }),
                    ..ProcessSample::default()
                },
            ],
            ..Sample::default()
        });
        let Some(Event::Sample(line)) = events.first() else {
            panic!("the sample line comes first: {events:?}");
        };
        let json = serde_json::to_value(line).unwrap();
        assert_eq!(json["pids"], serde_json::json!([1, 2]));
        assert_eq!(
            json["ranks"],
            serde_json::json!([{"pid": 2, "rank": "rank 0/2"}])
        );
        let mut plain = Watch::new(DetectConfig::default(), RuleSet::defaults());
        let events = plain.observe(Sample {
            root_pid: 1,
            processes: vec![ProcessSample {
                pid: 1,
                ..ProcessSample::default()
            }],
            ..Sample::default()
        });
        let Some(Event::Sample(line)) = events.first() else {
            panic!("the sample line comes first: {events:?}");
        };
        let json = serde_json::to_value(line).unwrap();
        assert!(json.get("ranks").is_none(), "no ranks, no field: {json}");
    }
}
