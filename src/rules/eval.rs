//! Evaluating rules over time, as Prometheus does: a rule whose condition holds is
//! pending until it has held for its `for` duration, then fires; when the condition no
//! longer holds it resolves. A metric missing from a sample changes nothing.

use serde::Serialize;

use super::{Rule, RuleSet};
use crate::model::Severity;
use crate::model::metrics::MetricValues;

/// A firing rule: what `attach` prints as `{"type":"alert",...}`.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct Alert {
    pub rule: String,
    pub metric: String,
    pub severity: Severity,
    /// `>`, `>=`, `<`, `<=`, `==` or `!=`.
    pub op: &'static str,
    /// The metric's value when the rule fired (in [`RuleEngine::active`]: the latest).
    pub value: f64,
    /// The threshold in the metric's base unit ("80%" is 0.8).
    pub threshold: f64,
    /// The rule's message with its placeholders filled in.
    pub message: String,
    /// The rule's remedy with its placeholders filled in.
    pub remedy: String,
    /// Elapsed seconds (the sample clock) when the condition began to hold.
    pub since: f64,
    /// Elapsed seconds when the rule fired: `since` plus the rule's `for`.
    pub fired_at: f64,
}

/// A rule that stopped firing: what `attach` prints as `{"type":"resolved",...}`.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct Resolution {
    pub rule: String,
    pub metric: String,
    pub severity: Severity,
    /// The value that no longer meets the condition.
    pub value: f64,
    pub threshold: f64,
    /// Seconds from firing to resolving.
    pub duration_firing: f64,
    /// Elapsed seconds when the rule resolved.
    pub resolved_at: f64,
}

/// A change of a rule's state. Serialised with a `type` tag: `alert` or `resolved`.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
#[serde(tag = "type")]
pub enum AlertEvent {
    #[serde(rename = "alert")]
    Fired(Alert),
    #[serde(rename = "resolved")]
    Resolved(Resolution),
}

impl AlertEvent {
    /// The rule the event is about.
    pub fn rule(&self) -> &str {
        match self {
            AlertEvent::Fired(alert) => &alert.rule,
            AlertEvent::Resolved(resolution) => &resolution.rule,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
enum State {
    Inactive,
    /// The condition holds since `since` but not yet for the rule's `for`.
    Pending {
        since: f64,
    },
    Firing(Alert),
}

/// The rules and the state of each.
#[derive(Debug, Clone)]
pub struct RuleEngine {
    rules: Vec<(Rule, State)>,
}

impl RuleEngine {
    pub fn new(rules: RuleSet) -> RuleEngine {
        RuleEngine {
            rules: rules
                .rules
                .into_iter()
                .map(|rule| (rule, State::Inactive))
                .collect(),
        }
    }

    pub fn rules(&self) -> impl Iterator<Item = &Rule> {
        self.rules.iter().map(|(rule, _)| rule)
    }

    /// Evaluates every rule against one sample's values at `elapsed_seconds` on the
    /// sample clock; returns the rules that fired or resolved, in rule order.
    pub fn evaluate(&mut self, elapsed_seconds: f64, values: &MetricValues) -> Vec<AlertEvent> {
        let mut events = Vec::new();
        for (rule, state) in &mut self.rules {
            let Some(&value) = values.get(&rule.metric) else {
                continue;
            };
            if value.is_nan() {
                continue;
            }
            if rule.holds(value) {
                let since = match state {
                    State::Firing(alert) => {
                        alert.value = value;
                        continue;
                    }
                    State::Pending { since } => *since,
                    State::Inactive => elapsed_seconds,
                };
                let held = elapsed_seconds - since;
                // A small tolerance: samples land a little before or after the second.
                if held + 1e-6 >= rule.for_duration.as_secs_f64() {
                    let alert = fire(rule, value, since, elapsed_seconds);
                    events.push(AlertEvent::Fired(alert.clone()));
                    *state = State::Firing(alert);
                } else {
                    *state = State::Pending { since };
                }
            } else {
                if let State::Firing(alert) = state {
                    events.push(AlertEvent::Resolved(Resolution {
                        rule: rule.name.clone(),
                        metric: rule.metric.clone(),
                        severity: rule.severity,
                        value,
                        threshold: rule.threshold.value,
                        duration_firing: (elapsed_seconds - alert.fired_at).max(0.0),
                        resolved_at: elapsed_seconds,
                    }));
                }
                *state = State::Inactive;
            }
        }
        events
    }

    /// The rules firing now, in rule order, each with its latest value.
    pub fn active(&self) -> Vec<Alert> {
        self.rules
            .iter()
            .filter_map(|(_, state)| match state {
                State::Firing(alert) => Some(alert.clone()),
                _ => None,
            })
            .collect()
    }

    /// Names of the rules whose condition holds but whose `for` has not yet passed.
    pub fn pending(&self) -> Vec<&str> {
        self.rules
            .iter()
            .filter(|(_, state)| matches!(state, State::Pending { .. }))
            .map(|(rule, _)| rule.name.as_str())
            .collect()
    }
}

fn fire(rule: &Rule, value: f64, since: f64, now: f64) -> Alert {
    Alert {
        rule: rule.name.clone(),
        metric: rule.metric.clone(),
        severity: rule.severity,
        op: rule.op.as_str(),
        value,
        threshold: rule.threshold.value,
        message: rule.render(&rule.message, value),
        remedy: rule.render(&rule.remedy, value),
        since,
        fired_at: now,
    }
}
