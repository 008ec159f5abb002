//! Reading rule files: TOML into checked [`Rule`]s, every error with its file, line and
//! column.

use std::path::Path;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::{InvalidRule, Location, Op, Rule, RulesError, Threshold};
use crate::model::Severity;
use crate::model::metrics::{metric_info, similar_metrics};

/// A rule file as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    rule: Vec<RawRule>,
    /// Which scraped series mean queue depth, latency, completions and failures.
    #[serde(default)]
    metrics: Option<crate::model::metrics::MetricsMapping>,
}

/// A number, or text (a percentage, a duration).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum NumberOrText {
    Number(f64),
    Text(String),
}

/// One `[[rule]]` table as written; checked into a [`Rule`].
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    name: Spanned<String>,
    metric: Spanned<String>,
    op: Spanned<String>,
    threshold: Spanned<NumberOrText>,
    #[serde(rename = "for", default)]
    for_: Option<Spanned<NumberOrText>>,
    #[serde(default)]
    severity: Option<Spanned<String>>,
    #[serde(default)]
    message: Option<Spanned<String>>,
    #[serde(default)]
    remedy: Option<Spanned<String>>,
}

/// Placeholders a message or remedy may use.
pub(crate) const PLACEHOLDERS: &[&str] = &["value", "threshold", "metric", "for", "name", "op"];

/// 1-based line and column of byte `offset` in `text` (column in characters).
pub(crate) fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

/// Parses and checks the rules in `text`, read from `file`. Every problem found is
/// returned, in the order of the file.
/// The rules of a file and its `[metrics]` mapping, if it has one.
pub(crate) type ParsedFile = (Vec<Rule>, Option<crate::model::metrics::MetricsMapping>);

pub(crate) fn parse_rules(text: &str, file: &Path) -> Result<ParsedFile, Vec<RulesError>> {
    let at = |offset: usize| {
        let (line, column) = line_column(text, offset);
        Location {
            file: file.to_path_buf(),
            line: Some(line),
            column: Some(column),
        }
    };
    let raw: RawFile = toml::from_str(text).map_err(|err| {
        let location = match err.span() {
            Some(span) => at(span.start),
            None => Location {
                file: file.to_path_buf(),
                line: None,
                column: None,
            },
        };
        let message = err.message().trim().to_string();
        let problem = if message.starts_with("unknown field") {
            InvalidRule::UnknownField { message }
        } else if message.starts_with("missing field") {
            InvalidRule::MissingField { message }
        } else {
            InvalidRule::Toml { message }
        };
        vec![RulesError::Invalid {
            at: location,
            problem,
        }]
    })?;

    let mut rules: Vec<Rule> = Vec::new();
    let mut errors = Vec::new();
    // Every name seen so far with its line, including those of rules with errors.
    let mut names: Vec<(String, usize)> = Vec::new();
    let mapping = raw.metrics;
    for raw in raw.rule {
        let name = raw.name.get_ref().trim().to_string();
        let (line, _) = line_column(text, raw.name.span().start);
        match check_rule(raw, &at, &names) {
            Ok(rule) => rules.push(rule),
            Err(problems) => errors.extend(problems),
        }
        names.push((name, line));
    }
    if errors.is_empty() {
        Ok((rules, mapping))
    } else {
        Err(errors)
    }
}

fn check_rule(
    raw: RawRule,
    at: &impl Fn(usize) -> Location,
    earlier: &[(String, usize)],
) -> Result<Rule, Vec<RulesError>> {
    let mut errors = Vec::new();
    let mut fail = |offset: usize, problem: InvalidRule| {
        errors.push(RulesError::Invalid {
            at: at(offset),
            problem,
        });
    };

    let name = raw.name.get_ref().trim().to_string();
    let name_at = at(raw.name.span().start);
    if name.is_empty() {
        fail(raw.name.span().start, InvalidRule::EmptyName);
    } else if let Some((_, first_line)) = earlier.iter().find(|(seen, _)| *seen == name) {
        fail(
            raw.name.span().start,
            InvalidRule::DuplicateName {
                name: name.clone(),
                first_line: *first_line,
            },
        );
    }

    let metric_name = raw.metric.get_ref().trim();
    let metric = metric_info(metric_name);
    if metric.is_none() {
        fail(
            raw.metric.span().start,
            InvalidRule::UnknownMetric {
                metric: metric_name.to_string(),
                suggestions: similar_metrics(metric_name)
                    .into_iter()
                    .map(str::to_string)
                    .collect(),
            },
        );
    }

    let op = Op::parse(raw.op.get_ref());
    if op.is_none() {
        fail(
            raw.op.span().start,
            InvalidRule::BadOp {
                op: raw.op.get_ref().clone(),
            },
        );
    }

    let is_ratio = metric.is_some_and(|m| m.is_ratio());
    let threshold = match parse_threshold(raw.threshold.get_ref(), is_ratio) {
        Ok(threshold) => Some(threshold),
        Err(reason) => {
            fail(
                raw.threshold.span().start,
                InvalidRule::BadThreshold {
                    written: written(raw.threshold.get_ref()),
                    reason,
                },
            );
            None
        }
    };

    let (for_duration, for_text) = match &raw.for_ {
        None => (Duration::ZERO, None),
        Some(spanned) => match parse_for(spanned.get_ref()) {
            Ok(duration) => (duration, Some(written(spanned.get_ref()))),
            Err(reason) => {
                fail(
                    spanned.span().start,
                    InvalidRule::BadDuration {
                        written: written(spanned.get_ref()),
                        reason,
                    },
                );
                (Duration::ZERO, None)
            }
        },
    };

    let severity = match &raw.severity {
        None => Some(Severity::Warning),
        Some(spanned) => {
            let severity = parse_severity(spanned.get_ref());
            if severity.is_none() {
                fail(
                    spanned.span().start,
                    InvalidRule::BadSeverity {
                        severity: spanned.get_ref().clone(),
                    },
                );
            }
            severity
        }
    };

    for (field, text) in [("message", &raw.message), ("remedy", &raw.remedy)] {
        if let Some(text) = text
            && let Some(placeholder) = unknown_placeholder(text.get_ref())
        {
            fail(
                text.span().start,
                InvalidRule::UnknownPlaceholder {
                    field,
                    placeholder: placeholder.to_string(),
                },
            );
        }
    }

    match (metric, op, threshold, severity) {
        (Some(metric), Some(op), Some(threshold), Some(severity)) if errors.is_empty() => {
            Ok(Rule {
                name,
                metric: metric.name.to_string(),
                op,
                threshold,
                for_duration,
                for_text,
                severity,
                message: raw
                    .message
                    .map(Spanned::into_inner)
                    .unwrap_or_else(|| "{metric} is {value} ({op} {threshold})".to_string()),
                remedy: raw.remedy.map(Spanned::into_inner).unwrap_or_default(),
                defined_at: name_at,
            })
        }
        _ => Err(errors),
    }
}

/// The value as the user wrote it, for messages.
fn written(value: &NumberOrText) -> String {
    match value {
        NumberOrText::Number(n) => n.to_string(),
        NumberOrText::Text(text) => text.clone(),
    }
}

fn parse_threshold(value: &NumberOrText, is_ratio: bool) -> Result<Threshold, String> {
    match value {
        NumberOrText::Number(n) if n.is_finite() => Ok(Threshold {
            value: *n,
            percent: false,
        }),
        NumberOrText::Number(_) => Err("the threshold must be a finite number".to_string()),
        NumberOrText::Text(text) => {
            let trimmed = text.trim();
            let Some(number) = trimmed.strip_suffix('%') else {
                return Err(if trimmed.parse::<f64>().is_ok() {
                    format!("write the number without quotes: threshold = {trimmed}")
                } else {
                    "expected a number, or a percentage such as \"80%\" for a *_ratio metric"
                        .to_string()
                });
            };
            if !is_ratio {
                return Err(
                    "a percentage is only allowed for *_ratio metrics; write a number in the metric's unit (docs/metrics.md)"
                        .to_string(),
                );
            }
            match number.trim().parse::<f64>() {
                Ok(percent) if percent.is_finite() => Ok(Threshold {
                    value: percent / 100.0,
                    percent: true,
                }),
                _ => Err("expected a percentage such as \"80%\"".to_string()),
            }
        }
    }
}

/// A `for` duration: text such as `10s`, `1m30s`, or a number of seconds.
fn parse_for(value: &NumberOrText) -> Result<Duration, String> {
    match value {
        NumberOrText::Number(seconds) if seconds.is_finite() && *seconds >= 0.0 => {
            Ok(Duration::from_secs_f64(*seconds))
        }
        NumberOrText::Number(seconds) => Err(format!(
            "{seconds} is not a duration: expected a non-negative duration such as \"10s\" or \"2m\""
        )),
        NumberOrText::Text(text) => crate::units::parse_duration(text),
    }
}

fn parse_severity(text: &str) -> Option<Severity> {
    match text.trim() {
        "info" => Some(Severity::Info),
        "warning" => Some(Severity::Warning),
        "error" => Some(Severity::Error),
        _ => None,
    }
}

/// The first `{name}` in `text` that is not a known placeholder. `{{` and `}}` are
/// literal braces.
fn unknown_placeholder(text: &str) -> Option<&str> {
    let mut rest = text;
    while let Some(open) = rest.find('{') {
        if rest[open..].starts_with("{{") {
            rest = &rest[open + 2..];
            continue;
        }
        let after = &rest[open + 1..];
        let Some(close) = after.find('}') else {
            return Some(after);
        };
        let name = &after[..close];
        if !PLACEHOLDERS.contains(&name) {
            return Some(name);
        }
        rest = &after[close + 1..];
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_and_columns() {
        let text = "a = 1\nbé = 2\n\nc";
        assert_eq!(line_column(text, 0), (1, 1));
        assert_eq!(line_column(text, 4), (1, 5));
        assert_eq!(line_column(text, 6), (2, 1));
        // 'é' is two bytes and one column.
        assert_eq!(line_column(text, 9), (2, 3));
        assert_eq!(line_column(text, text.len()), (4, 2));
        assert_eq!(line_column(text, 999), (4, 2));
    }

    #[test]
    fn thresholds() {
        let number = |n| NumberOrText::Number(n);
        let text = |t: &str| NumberOrText::Text(t.to_string());
        assert_eq!(
            parse_threshold(&number(50.0), false).map(|t| t.value),
            Ok(50.0)
        );
        assert_eq!(
            parse_threshold(&text("80%"), true).map(|t| t.value),
            Ok(0.8)
        );
        assert_eq!(
            parse_threshold(&text(" 150 % "), true).map(|t| t.value),
            Ok(1.5)
        );
        assert!(
            parse_threshold(&text("80%"), false)
                .unwrap_err()
                .contains("only allowed for *_ratio")
        );
        assert!(
            parse_threshold(&text("50"), false)
                .unwrap_err()
                .contains("without quotes")
        );
        assert!(parse_threshold(&text("lots"), true).is_err());
        assert!(parse_threshold(&text("x%"), true).is_err());
        assert!(parse_threshold(&number(f64::NAN), false).is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(
            parse_for(&NumberOrText::Text("10s".into())),
            Ok(Duration::from_secs(10))
        );
        assert_eq!(
            parse_for(&NumberOrText::Number(2.5)),
            Ok(Duration::from_millis(2500))
        );
        assert!(parse_for(&NumberOrText::Text("soon".into())).is_err());
        assert!(parse_for(&NumberOrText::Number(-1.0)).is_err());
    }

    #[test]
    fn placeholders() {
        assert_eq!(
            unknown_placeholder("{value} of {threshold} for {for}"),
            None
        );
        assert_eq!(unknown_placeholder("literal {{braces}}"), None);
        assert_eq!(unknown_placeholder("{valeu} threads"), Some("valeu"));
        assert_eq!(unknown_placeholder("open {value"), Some("value"));
    }
}
