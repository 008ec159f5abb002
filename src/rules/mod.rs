//! Alert rules from TOML files: a metric (see [`crate::model::metrics`]), a comparison, a
//! threshold, an optional `for` duration, a severity, a message and a remedy.
//!
//! - `load`: reading and checking rule files, errors with file, line and column;
//! - `eval`: the [`RuleEngine`] that turns metric values into alerts over time.
//!
//! `rules/default.toml` is embedded and used when no rule file is given. Several files
//! merge in order; a later rule with the same name replaces the earlier one.

mod eval;
mod load;

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

pub use eval::{Alert, AlertEvent, Resolution, RuleEngine};

use crate::model::Severity;
use crate::model::metrics::{UNIT_BYTES, UNIT_SECONDS, metric_info};

/// The default rules, shipped as `rules/default.toml`.
pub const DEFAULT_RULES: &str = include_str!("../../rules/default.toml");

/// Where the default rules come from in messages.
pub const DEFAULT_RULES_ORIGIN: &str = "rules/default.toml (built in)";

/// A comparison of a metric with a threshold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub enum Op {
    #[serde(rename = ">")]
    Greater,
    #[serde(rename = ">=")]
    GreaterOrEqual,
    #[serde(rename = "<")]
    Less,
    #[serde(rename = "<=")]
    LessOrEqual,
    #[serde(rename = "==")]
    Equal,
    #[serde(rename = "!=")]
    NotEqual,
}

impl Op {
    pub const ALL: [Op; 6] = [
        Op::Greater,
        Op::GreaterOrEqual,
        Op::Less,
        Op::LessOrEqual,
        Op::Equal,
        Op::NotEqual,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Op::Greater => ">",
            Op::GreaterOrEqual => ">=",
            Op::Less => "<",
            Op::LessOrEqual => "<=",
            Op::Equal => "==",
            Op::NotEqual => "!=",
        }
    }

    pub fn parse(text: &str) -> Option<Op> {
        Op::ALL.into_iter().find(|op| op.as_str() == text.trim())
    }

    /// Whether `value op threshold` holds. `==` and `!=` allow for rounding in values
    /// computed from counters (a relative 1e-9).
    pub fn holds(self, value: f64, threshold: f64) -> bool {
        let equal = (value - threshold).abs() <= 1e-9 * threshold.abs().max(1.0);
        match self {
            Op::Greater => value > threshold,
            Op::GreaterOrEqual => value >= threshold || equal,
            Op::Less => value < threshold,
            Op::LessOrEqual => value <= threshold || equal,
            Op::Equal => equal,
            Op::NotEqual => !equal,
        }
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A rule's threshold in the metric's base unit.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, schemars::JsonSchema)]
pub struct Threshold {
    pub value: f64,
    /// Written as a percentage ("80%"): values and threshold are shown as percentages.
    pub percent: bool,
}

/// One checked rule.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct Rule {
    pub name: String,
    /// A name from [`crate::model::metrics::METRICS`].
    pub metric: String,
    pub op: Op,
    pub threshold: Threshold,
    /// How long the condition must hold before the rule fires; zero fires at once.
    #[serde(serialize_with = "serialize_seconds")]
    #[schemars(with = "f64")]
    pub for_duration: Duration,
    /// `for` as written in the file ("10s"), for messages and exports.
    pub for_text: Option<String>,
    pub severity: Severity,
    /// Template with `{value}`, `{threshold}`, `{metric}`, `{for}`, `{name}`, `{op}`.
    pub message: String,
    /// Template with the same placeholders.
    pub remedy: String,
    /// Where the rule was defined (its `name`).
    pub defined_at: Location,
}

fn serialize_seconds<S: serde::Serializer>(duration: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(duration.as_secs_f64())
}

impl Rule {
    /// Whether the condition holds for `value`.
    pub fn holds(&self, value: f64) -> bool {
        self.op.holds(value, self.threshold.value)
    }

    /// `template` with the placeholders filled in for `value`. Values and thresholds are
    /// shown in the metric's unit: seconds as durations, bytes in KiB/MiB/GiB,
    /// percentages where the threshold was written as one.
    pub fn render(&self, template: &str, value: f64) -> String {
        self.render_with(template, &self.format_value(value), |out, text| {
            out.push_str(text)
        })
    }

    /// Fills the placeholders of `template`: `{value}` becomes `value` as it is, and all
    /// other text (literal text, `{{`/`}}` as one brace, the other placeholders' values)
    /// goes through `literal`, which may escape it for the output's own syntax.
    pub fn render_with(
        &self,
        template: &str,
        value: &str,
        literal: impl Fn(&mut String, &str),
    ) -> String {
        let mut out = String::with_capacity(template.len() + 16);
        let mut rest = template;
        while let Some(open) = rest.find(['{', '}']) {
            literal(&mut out, &rest[..open]);
            let tail = &rest[open..];
            if tail.starts_with("{{") || tail.starts_with("}}") {
                literal(&mut out, &tail[..1]);
                rest = &tail[2..];
                continue;
            }
            if let Some(after) = tail.strip_prefix('}') {
                out.push('}');
                rest = after;
                continue;
            }
            let Some(close) = tail.find('}') else {
                literal(&mut out, tail);
                rest = "";
                break;
            };
            let replacement = match &tail[1..close] {
                "value" => {
                    out.push_str(value);
                    rest = &tail[close + 1..];
                    continue;
                }
                "threshold" => self.format_value(self.threshold.value),
                "metric" => self.metric.clone(),
                "for" => self.for_text.clone().unwrap_or_else(|| "0s".to_string()),
                "name" => self.name.clone(),
                "op" => self.op.to_string(),
                other => format!("{{{other}}}"),
            };
            literal(&mut out, &replacement);
            rest = &tail[close + 1..];
        }
        literal(&mut out, rest);
        out
    }

    /// `value` for people, in the metric's unit.
    pub fn format_value(&self, value: f64) -> String {
        let unit = metric_info(&self.metric).map_or("", |m| m.unit);
        if self.threshold.percent {
            format!("{}%", format_number(value * 100.0))
        } else if unit == UNIT_SECONDS {
            crate::units::format_seconds(value)
        } else if unit == UNIT_BYTES && (0.0..18_446_744_073_709_551_616.0).contains(&value) {
            // Below 2^64: the cast is exact to the byte, not saturated.
            crate::units::format_bytes(value as u64)
        } else if unit == UNIT_BYTES {
            format!("{} B", format_number(value))
        } else {
            format_number(value)
        }
    }
}

use crate::units::format_number;

/// A place in a rule file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct Location {
    pub file: PathBuf,
    /// 1-based; `None` when the error has no position.
    pub line: Option<usize>,
    pub column: Option<usize>,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
            if let Some(column) = self.column {
                write!(f, ":{column}")?;
            }
        }
        Ok(())
    }
}

/// What is wrong with a rule file at one place.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidRule {
    #[error("invalid TOML: {message}")]
    Toml { message: String },
    #[error("{message}")]
    UnknownField { message: String },
    #[error("{message}; every rule needs name, metric, op and threshold")]
    MissingField { message: String },
    #[error("unknown metric {metric:?}{}; `tfwatch metrics` lists them", suggest(.suggestions))]
    UnknownMetric {
        metric: String,
        suggestions: Vec<String>,
    },
    #[error("invalid op {op:?}: expected one of > >= < <= == !=")]
    BadOp { op: String },
    #[error("invalid threshold {written:?}: {reason}")]
    BadThreshold { written: String, reason: String },
    #[error("invalid `for`: {reason}")]
    BadDuration { written: String, reason: String },
    #[error("invalid severity {severity:?}: expected \"info\", \"warning\" or \"error\"")]
    BadSeverity { severity: String },
    #[error(
        "unknown placeholder {{{placeholder}}} in {field}: use {{value}}, {{threshold}}, {{metric}}, {{for}}, {{name}} or {{op}} (write {{{{ and }}}} for literal braces)"
    )]
    UnknownPlaceholder {
        field: &'static str,
        placeholder: String,
    },
    #[error("`{field}` must be {expected}, not {found}")]
    WrongType {
        field: &'static str,
        expected: &'static str,
        /// The TOML type and the value as written, cut short: "integer 7".
        found: String,
    },
    #[error("the rule name is empty: give every rule a name")]
    EmptyName,
    #[error(
        "invalid rule name {name:?}: use only letters, digits and _ . : - (the name becomes the `rule` label of exported series and alerts)"
    )]
    UnsafeName { name: String },
    #[error(
        "rule {name:?} is defined twice in this file (first at line {first_line}); rename one or delete it"
    )]
    DuplicateName { name: String, first_line: usize },
}

fn suggest(suggestions: &[String]) -> String {
    if suggestions.is_empty() {
        String::new()
    } else {
        format!(" (did you mean {}?)", suggestions.join(", "))
    }
}

/// The largest rules file tfwatch reads: 1 MiB.
pub const MAX_RULES_FILE_BYTES: u64 = 1 << 20;

/// Why rule files could not be loaded.
///
/// The messages are complete: a cause is part of the message and not also a `source`,
/// so printing the error with its chain (`{:#}`) says it once.
#[derive(Debug, thiserror::Error)]
pub enum RulesError {
    #[error("cannot read {}: {error}", path.display())]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error(
        "{} is {}{size} bytes, over the {cap} bytes ({}) a rules file may have: split the rules over several files and pass each with --rules",
        path.display(),
        if *.at_least { "at least " } else { "" },
        crate::units::format_bytes(*.cap),
    )]
    TooLarge {
        path: PathBuf,
        size: u64,
        /// The file grew while being read, or its size is unknown (a pipe).
        at_least: bool,
        cap: u64,
    },
    #[error("{} is not a text file: invalid UTF-8 at byte {offset}", path.display())]
    NotText { path: PathBuf, offset: usize },
    #[error("{at}: {problem}")]
    Invalid { at: Location, problem: InvalidRule },
    /// Several problems in one file, in file order.
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
    Several(Vec<RulesError>),
}

impl RulesError {
    /// The single problems, flattened.
    pub fn problems(&self) -> Vec<&RulesError> {
        match self {
            RulesError::Several(errors) => errors.iter().flat_map(RulesError::problems).collect(),
            other => vec![other],
        }
    }

    fn from_list(mut errors: Vec<RulesError>) -> RulesError {
        if errors.len() == 1 {
            errors.remove(0)
        } else {
            RulesError::Several(errors)
        }
    }
}

/// An ordered set of rules with unique names.
#[derive(Debug, Clone, Default, PartialEq, Serialize, schemars::JsonSchema)]
pub struct RuleSet {
    rules: Vec<Rule>,
    /// The `[metrics]` section: which scraped series mean what (the last file's wins).
    metrics: Option<crate::model::metrics::MetricsMapping>,
}

impl RuleSet {
    /// The built-in rules of `rules/default.toml`.
    pub fn defaults() -> RuleSet {
        // A test checks the embedded file, so this cannot fail in a built binary.
        RuleSet::parse(DEFAULT_RULES, Path::new(DEFAULT_RULES_ORIGIN))
            .expect("the embedded rules/default.toml is valid")
    }

    /// Parses the rules in `text`; `file` names it in errors.
    pub fn parse(text: &str, file: &Path) -> Result<RuleSet, RulesError> {
        load::parse_rules(text, file)
            .map(|(rules, metrics)| RuleSet { rules, metrics })
            .map_err(RulesError::from_list)
    }

    /// Reads and parses one file of at most [`MAX_RULES_FILE_BYTES`].
    pub fn load(path: &Path) -> Result<RuleSet, RulesError> {
        let text = read_rules_file(path, MAX_RULES_FILE_BYTES)?;
        RuleSet::parse(&text, path)
    }

    /// Adds `other`'s rules: a rule whose name is already here replaces it in place, a
    /// new name goes to the end.
    pub fn merge(&mut self, other: RuleSet) {
        if other.metrics.is_some() {
            self.metrics = other.metrics;
        }
        let mut index: HashMap<String, usize> = self
            .rules
            .iter()
            .enumerate()
            .map(|(i, rule)| (rule.name.clone(), i))
            .collect();
        for rule in other.rules {
            match index.get(&rule.name).and_then(|&i| self.rules.get_mut(i)) {
                Some(existing) => *existing = rule,
                None => {
                    index.insert(rule.name.clone(), self.rules.len());
                    self.rules.push(rule);
                }
            }
        }
    }

    /// The metrics mapping of the `[metrics]` section, or the default name patterns.
    pub fn metrics_mapping(&self) -> crate::model::metrics::MetricsMapping {
        self.metrics.clone().unwrap_or_default()
    }

    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    pub fn get(&self, name: &str) -> Option<&Rule> {
        self.rules.iter().find(|rule| rule.name == name)
    }

    pub fn len(&self) -> usize {
        self.rules.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }
}

/// The text of the file at `path`: refused when over `cap` bytes (by its size before it
/// is read, and by what is read: never more than `cap + 1` bytes) or not UTF-8.
fn read_rules_file(path: &Path, cap: u64) -> Result<String, RulesError> {
    use std::io::Read;
    let read_error = |error| RulesError::Read {
        path: path.to_path_buf(),
        error,
    };
    let too_large = |size, at_least| RulesError::TooLarge {
        path: path.to_path_buf(),
        size,
        at_least,
        cap,
    };
    let file = std::fs::File::open(path).map_err(read_error)?;
    let size = file.metadata().map_err(read_error)?.len();
    if size > cap {
        return Err(too_large(size, false));
    }
    let mut bytes = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
    file.take(cap.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(read_error)?;
    let read = u64::try_from(bytes.len()).unwrap_or(u64::MAX);
    if read > cap {
        return Err(too_large(read, true));
    }
    String::from_utf8(bytes).map_err(|err| RulesError::NotText {
        path: path.to_path_buf(),
        offset: err.utf8_error().valid_up_to(),
    })
}

/// Loads rule files in order and merges them (a later rule of the same name overrides).
/// With no files, the built-in defaults.
pub fn load_rule_files(paths: &[PathBuf]) -> Result<RuleSet, RulesError> {
    if paths.is_empty() {
        return Ok(RuleSet::defaults());
    }
    let mut set = RuleSet::default();
    for path in paths {
        set.merge(RuleSet::load(path)?);
    }
    Ok(set)
}

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;
