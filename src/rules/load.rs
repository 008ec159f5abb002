//! Reading rule files: TOML into checked [`Rule`]s, every error with its file, line and
//! column. The file is parsed into a TOML tree with positions first; each rule is then
//! checked field by field, so every problem of the file is found in one pass, not only
//! the first.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;
use toml::de::{DeTable, DeValue, ValueDeserializer};

use super::{InvalidRule, Location, Op, Rule, RulesError, Threshold};
use crate::model::Severity;
use crate::model::metrics::{edit_distance, metric_info, similar_metrics};

/// The longest `for` a rule may have: 30 days.
pub const MAX_FOR: Duration = Duration::from_secs(30 * 24 * 3600);

/// A number, or text (a percentage, a duration).
#[derive(Debug, Clone, PartialEq)]
enum NumberOrText {
    Number(f64),
    Text(String),
}

/// The fields of a `[[rule]]` table.
const FIELDS: [&str; 8] = [
    "name",
    "metric",
    "op",
    "threshold",
    "for",
    "severity",
    "message",
    "remedy",
];

/// The fields every rule needs.
const REQUIRED: [&str; 4] = ["name", "metric", "op", "threshold"];

/// One `[[rule]]` table as written, each field with its byte range in the file (`None`
/// when absent or of the wrong type); checked into a [`Rule`].
#[derive(Debug, Default)]
struct RawRule {
    name: Option<Spanned<String>>,
    metric: Option<Spanned<String>>,
    op: Option<Spanned<String>>,
    threshold: Option<Spanned<NumberOrText>>,
    for_: Option<Spanned<NumberOrText>>,
    severity: Option<Spanned<String>>,
    message: Option<Spanned<String>>,
    remedy: Option<Spanned<String>>,
}

/// Placeholders a message or remedy may use.
pub(crate) const PLACEHOLDERS: &[&str] = &["value", "threshold", "metric", "for", "name", "op"];

/// Line and column of byte offsets in one text: the line starts are found once, each
/// look-up is a binary search, so positions for every rule of a file cost linear time.
pub(crate) struct LineIndex<'t> {
    text: &'t str,
    /// Byte offset of the start of each line; the first is 0.
    starts: Vec<usize>,
}

impl<'t> LineIndex<'t> {
    pub(crate) fn new(text: &'t str) -> LineIndex<'t> {
        let starts = std::iter::once(0)
            .chain(text.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        LineIndex { text, starts }
    }

    /// 1-based line and column of byte `offset` (column in characters). An offset past
    /// the end is the end; one inside a character is that character.
    pub(crate) fn line_column(&self, offset: usize) -> (usize, usize) {
        let mut offset = offset.min(self.text.len());
        while !self.text.is_char_boundary(offset) {
            offset -= 1;
        }
        // The number of line starts at or before `offset`; at least 1 (the start at 0).
        let line = self.starts.partition_point(|&start| start <= offset).max(1);
        let line_start = self.starts.get(line - 1).copied().unwrap_or(0);
        let column = self
            .text
            .get(line_start..offset)
            .map_or(0, |s| s.chars().count())
            + 1;
        (line, column)
    }
}

/// A problem at a byte offset of the file (`None`: no position).
type Problem = (Option<usize>, InvalidRule);

/// The rules of a file and its `[metrics]` mapping, if it has one.
pub(crate) type ParsedFile = (Vec<Rule>, Option<crate::model::metrics::MetricsMapping>);

/// Parses and checks the rules in `text`, read from `file`. Every problem found is
/// returned, in the order of the file.
pub(crate) fn parse_rules(text: &str, file: &Path) -> Result<ParsedFile, Vec<RulesError>> {
    let lines = LineIndex::new(text);
    let located = |problems: Vec<Problem>| -> Vec<RulesError> {
        let mut problems = problems;
        // File order; problems without a position first. The sort is stable, so the
        // problems at one place keep the order in which they were found.
        problems.sort_by_key(|(offset, _)| *offset);
        problems
            .into_iter()
            .map(|(offset, problem)| {
                let (line, column) = match offset {
                    Some(offset) => {
                        let (line, column) = lines.line_column(offset);
                        (Some(line), Some(column))
                    }
                    None => (None, None),
                };
                RulesError::Invalid {
                    at: Location {
                        file: file.to_path_buf(),
                        line,
                        column,
                    },
                    problem,
                }
            })
            .collect()
    };

    // Syntax errors: what follows one cannot be trusted, so the rules are not checked.
    let (root, syntax) = DeTable::parse_recoverable(text);
    if !syntax.is_empty() {
        return Err(located(
            syntax
                .iter()
                .map(|err| (err.span().map(|s| s.start), toml_problem(err.message())))
                .collect(),
        ));
    }

    let mut problems: Vec<Problem> = Vec::new();
    let mut rules: Vec<Rule> = Vec::new();
    let mut mapping = None;
    let mut tables: Vec<&Spanned<DeValue>> = Vec::new();
    for (key, value) in root.get_ref() {
        match key.get_ref().as_ref() {
            "rule" => match value.get_ref() {
                DeValue::Array(array) => tables.extend(array.iter()),
                other => problems.push((
                    Some(key.span().start),
                    InvalidRule::Toml {
                        message: format!(
                            "`rule` must be an array of tables, not {}: write each rule as a [[rule]] table",
                            other.type_str()
                        ),
                    },
                )),
            },
            "metrics" => match crate::model::metrics::MetricsMapping::deserialize(
                ValueDeserializer::from(value.clone()),
            ) {
                Ok(parsed) => mapping = Some(parsed),
                Err(err) => problems.push((
                    Some(err.span().unwrap_or_else(|| value.span()).start),
                    toml_problem(err.message()),
                )),
            },
            other => problems.push((
                Some(key.span().start),
                InvalidRule::UnknownField {
                    message: format!(
                        "unknown field `{}`, expected `rule` or `metrics`{}",
                        other.escape_debug(),
                        suggest_field(other, &["rule", "metrics"])
                    ),
                },
            )),
        }
    }

    // Every name seen so far with the line of its first definition, including those of
    // rules with errors.
    let mut names: HashMap<String, usize> = HashMap::new();
    for table in tables {
        let Some(raw) = raw_rule(table, text, &mut problems) else {
            continue;
        };
        let name = raw.name.as_ref().map(|n| {
            (
                n.get_ref().trim().to_string(),
                lines.line_column(n.span().start).0,
            )
        });
        let duplicate_of = name.as_ref().and_then(|(name, _)| names.get(name).copied());
        let defined_at = raw.name.as_ref().map(|n| {
            let (line, column) = lines.line_column(n.span().start);
            Location {
                file: file.to_path_buf(),
                line: Some(line),
                column: Some(column),
            }
        });
        if let Some(rule) = check_rule(raw, text, duplicate_of, defined_at, &mut problems) {
            rules.push(rule);
        }
        if let Some((name, line)) = name
            && !name.is_empty()
            && let Entry::Vacant(entry) = names.entry(name)
        {
            entry.insert(line);
        }
    }
    if problems.is_empty() {
        Ok((rules, mapping))
    } else {
        Err(located(problems))
    }
}

/// An error of the TOML parser or of a section's deserialisation as a problem.
fn toml_problem(message: &str) -> InvalidRule {
    let message = message.trim().to_string();
    if message.starts_with("unknown field") {
        InvalidRule::UnknownField { message }
    } else if message.starts_with("missing field") {
        InvalidRule::MissingField { message }
    } else {
        InvalidRule::Toml { message }
    }
}

/// " (did you mean `x`?)" for the field of `known` nearest to `written`, or "".
fn suggest_field(written: &str, known: &[&str]) -> String {
    nearest_field(written, known)
        .map_or_else(String::new, |field| format!(" (did you mean `{field}`?)"))
}

fn nearest_field<'k>(written: &str, known: &[&'k str]) -> Option<&'k str> {
    // Longer keys cannot be within two edits of a field name; skip the work.
    if written.len() > 12 {
        return None;
    }
    let written = written.to_ascii_lowercase();
    known
        .iter()
        .map(|field| (edit_distance(&written, field), *field))
        .filter(|(distance, field)| *distance <= 2 && *distance < field.len())
        .min()
        .map(|(_, field)| field)
}

/// The fields of one `[[rule]]` table; problems with its shape (not a table, unknown,
/// missing or mistyped fields) go to `problems`.
fn raw_rule(table: &Spanned<DeValue>, text: &str, problems: &mut Vec<Problem>) -> Option<RawRule> {
    let DeValue::Table(fields) = table.get_ref() else {
        problems.push((
            Some(table.span().start),
            InvalidRule::Toml {
                message: format!(
                    "`rule` must be a table, not {}: write each rule as a [[rule]] table",
                    table.get_ref().type_str()
                ),
            },
        ));
        return None;
    };
    let mut raw = RawRule::default();
    let mut misspelt: Vec<&str> = Vec::new();
    for (key, value) in fields {
        let field = key.get_ref().as_ref();
        let string = |problems: &mut Vec<Problem>| string_field(field, value, text, problems);
        match field {
            "name" => raw.name = string(problems),
            "metric" => raw.metric = string(problems),
            "op" => raw.op = string(problems),
            "severity" => raw.severity = string(problems),
            "message" => raw.message = string(problems),
            "remedy" => raw.remedy = string(problems),
            "threshold" => raw.threshold = number_or_text_field(field, value, text, problems),
            "for" => raw.for_ = number_or_text_field(field, value, text, problems),
            other => {
                let nearest = nearest_field(other, &FIELDS);
                misspelt.extend(nearest);
                problems.push((
                    Some(key.span().start),
                    InvalidRule::UnknownField {
                        message: format!(
                            "unknown field `{}`{}, expected one of {}",
                            other.escape_debug(),
                            nearest.map_or_else(String::new, |f| format!(" (did you mean `{f}`?)")),
                            FIELDS.map(|f| format!("`{f}`")).join(", ")
                        ),
                    },
                ));
            }
        }
    }
    // A required field that is only misspelt is already reported as the unknown field.
    let present = [
        raw.name.is_some(),
        raw.metric.is_some(),
        raw.op.is_some(),
        raw.threshold.is_some(),
    ];
    for (field, present) in REQUIRED.into_iter().zip(present) {
        let written = fields.keys().any(|k| k.get_ref().as_ref() == field);
        if !present && !written && !misspelt.contains(&field) {
            problems.push((
                Some(table.span().start),
                InvalidRule::MissingField {
                    message: format!("missing field `{field}`"),
                },
            ));
        }
    }
    Some(raw)
}

/// The text of a value as written in the file, for messages; `None` for a span outside
/// the text.
fn source_text<'t>(value: &Spanned<DeValue>, text: &'t str) -> Option<&'t str> {
    text.get(value.span())
}

/// `text`, cut to 40 characters for a message.
fn short(text: &str) -> String {
    match text.char_indices().nth(40) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_string(),
    }
}

fn wrong_type(
    field: &'static str,
    expected: &'static str,
    value: &Spanned<DeValue>,
    text: &str,
) -> Problem {
    (
        Some(value.span().start),
        InvalidRule::WrongType {
            field,
            expected,
            found: format!(
                "{} {}",
                value.get_ref().type_str(),
                short(source_text(value, text).unwrap_or(""))
            ),
        },
    )
}

fn string_field(
    field: &str,
    value: &Spanned<DeValue>,
    text: &str,
    problems: &mut Vec<Problem>,
) -> Option<Spanned<String>> {
    match value.get_ref() {
        DeValue::String(s) => Some(Spanned::new(value.span(), s.to_string())),
        _ => {
            problems.push(wrong_type(static_field(field), "a string", value, text));
            None
        }
    }
}

fn number_or_text_field(
    field: &str,
    value: &Spanned<DeValue>,
    text: &str,
    problems: &mut Vec<Problem>,
) -> Option<Spanned<NumberOrText>> {
    let parsed = match value.get_ref() {
        DeValue::String(s) => Ok(NumberOrText::Text(s.to_string())),
        DeValue::Integer(_) | DeValue::Float(_) => {
            f64::deserialize(ValueDeserializer::from(value.clone()))
                .ok()
                // Out of the f64 range (`1e400`): the number as written, infinite, for
                // the range checks to refuse with the value quoted.
                .or_else(|| {
                    source_text(value, text)
                        .and_then(|written| written.replace('_', "").parse::<f64>().ok())
                })
                .map(NumberOrText::Number)
                .ok_or_else(|| wrong_type(static_field(field), "a number", value, text))
        }
        _ => Err(wrong_type(
            static_field(field),
            "a number or a string",
            value,
            text,
        )),
    };
    match parsed {
        Ok(parsed) => Some(Spanned::new(value.span(), parsed)),
        Err(problem) => {
            problems.push(problem);
            None
        }
    }
}

/// Whether a rule name is made of letters, digits and `_ . : -` only (`[A-Za-z0-9_.:-]+`):
/// it becomes the `rule` label of exported series and alerts, where a newline or a
/// Prometheus template (`{{ … }}`) would be expanded or break the text.
fn is_safe_rule_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-'))
}

/// The field name from [`FIELDS`] (those are the only ones typed).
fn static_field(field: &str) -> &'static str {
    FIELDS.into_iter().find(|f| *f == field).unwrap_or("field")
}

/// Checks one rule's fields; returns the rule when it has no problems. `first_line` is
/// the line of an earlier rule of the same name.
fn check_rule(
    raw: RawRule,
    text: &str,
    first_line: Option<usize>,
    defined_at: Option<Location>,
    problems: &mut Vec<Problem>,
) -> Option<Rule> {
    let before = problems.len();
    let mut fail = |offset: usize, problem: InvalidRule| problems.push((Some(offset), problem));
    let written_at = |span: std::ops::Range<usize>| text.get(span).unwrap_or("").to_string();

    let name = raw.name.as_ref().map(|n| n.get_ref().trim().to_string());
    if let (Some(spanned), Some(name)) = (&raw.name, &name) {
        if name.is_empty() {
            fail(spanned.span().start, InvalidRule::EmptyName);
        } else if !is_safe_rule_name(name) {
            fail(
                spanned.span().start,
                InvalidRule::UnsafeName { name: name.clone() },
            );
        } else if let Some(first_line) = first_line {
            fail(
                spanned.span().start,
                InvalidRule::DuplicateName {
                    name: name.clone(),
                    first_line,
                },
            );
        }
    }

    let metric = raw.metric.as_ref().and_then(|spanned| {
        let metric_name = spanned.get_ref().trim();
        let metric = metric_info(metric_name);
        if metric.is_none() {
            fail(
                spanned.span().start,
                InvalidRule::UnknownMetric {
                    metric: metric_name.to_string(),
                    suggestions: similar_metrics(metric_name)
                        .into_iter()
                        .map(str::to_string)
                        .collect(),
                },
            );
        }
        metric
    });

    let op = raw.op.as_ref().and_then(|spanned| {
        let op = Op::parse(spanned.get_ref());
        if op.is_none() {
            fail(
                spanned.span().start,
                InvalidRule::BadOp {
                    op: spanned.get_ref().clone(),
                },
            );
        }
        op
    });

    let is_ratio = metric.is_some_and(|m| m.is_ratio());
    let threshold = raw.threshold.as_ref().and_then(|spanned| {
        match parse_threshold(spanned.get_ref(), is_ratio) {
            Ok(threshold) => Some(threshold),
            Err(reason) => {
                fail(
                    spanned.span().start,
                    InvalidRule::BadThreshold {
                        written: written(spanned, &written_at),
                        reason,
                    },
                );
                None
            }
        }
    });

    let (for_duration, for_text) = match &raw.for_ {
        None => (Duration::ZERO, None),
        Some(spanned) => {
            let as_written = written(spanned, &written_at);
            match parse_for(spanned.get_ref(), &as_written) {
                Ok(duration) => (duration, Some(for_text(spanned.get_ref()))),
                Err(reason) => {
                    fail(
                        spanned.span().start,
                        InvalidRule::BadDuration {
                            written: as_written,
                            reason,
                        },
                    );
                    (Duration::ZERO, None)
                }
            }
        }
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

    for (field, template) in [("message", &raw.message), ("remedy", &raw.remedy)] {
        if let Some(template) = template
            && let Some(placeholder) = unknown_placeholder(template.get_ref())
        {
            fail(
                template.span().start,
                InvalidRule::UnknownPlaceholder {
                    field,
                    placeholder: placeholder.to_string(),
                },
            );
        }
    }

    match (name, metric, op, threshold, severity, defined_at) {
        (Some(name), Some(metric), Some(op), Some(threshold), Some(severity), Some(defined_at))
            if problems.len() == before =>
        {
            Some(Rule {
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
                defined_at,
            })
        }
        _ => None,
    }
}

/// The value as the user wrote it, for messages: a number as in the file (`1e20`, not
/// its 21 digits), text as its content.
fn written(
    value: &Spanned<NumberOrText>,
    source: &impl Fn(std::ops::Range<usize>) -> String,
) -> String {
    match value.get_ref() {
        NumberOrText::Number(n) => {
            let text = source(value.span());
            if text.is_empty() { n.to_string() } else { text }
        }
        NumberOrText::Text(text) => text.clone(),
    }
}

/// `for` as shown by `{for}`: the text, or the number of seconds.
fn for_text(value: &NumberOrText) -> String {
    match value {
        NumberOrText::Number(n) => super::format_number(*n),
        NumberOrText::Text(text) => text.clone(),
    }
}

fn parse_threshold(value: &NumberOrText, is_ratio: bool) -> Result<Threshold, String> {
    match value {
        NumberOrText::Number(n) if n.is_finite() => Ok(Threshold {
            value: *n,
            percent: false,
        }),
        NumberOrText::Number(_) => Err(
            "the threshold must be a finite number (not inf or nan), in the metric's unit"
                .to_string(),
        ),
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
                    "a percentage is only allowed for *_ratio metrics; write a number in the metric's unit (`tfwatch metrics` lists the units)"
                        .to_string(),
                );
            }
            match number.trim().parse::<f64>() {
                Ok(percent) if percent.is_finite() && (percent / 100.0).is_finite() => {
                    Ok(Threshold {
                        value: percent / 100.0,
                        percent: true,
                    })
                }
                Ok(_) => Err("the percentage must be a finite number such as \"80%\"".to_string()),
                _ => Err("expected a percentage such as \"80%\"".to_string()),
            }
        }
    }
}

/// A `for` duration: text such as `10s`, `1m30s`, or a number of seconds; from zero to
/// [`MAX_FOR`]. `written` is the value as in the file, for messages.
fn parse_for(value: &NumberOrText, written: &str) -> Result<Duration, String> {
    let too_long = || {
        format!(
            "{written} is longer than the 30 days a rule may wait; `for` must be from 0s to 30d ({} seconds)",
            MAX_FOR.as_secs()
        )
    };
    let duration = match value {
        NumberOrText::Number(seconds) if seconds.is_finite() && *seconds >= 0.0 => {
            Duration::try_from_secs_f64(*seconds).map_err(|_| too_long())?
        }
        NumberOrText::Number(_) => {
            return Err(format!(
                "{written} is not a duration: expected a duration from 0s to 30d such as \"10s\" or \"2m\""
            ));
        }
        NumberOrText::Text(text) => match text.trim().parse::<f64>() {
            // A number of seconds in quotes: the same checks as without.
            Ok(seconds) => return parse_for(&NumberOrText::Number(seconds), written),
            Err(_) => crate::units::parse_duration(text)?,
        },
    };
    if duration > MAX_FOR {
        return Err(too_long());
    }
    Ok(duration)
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
        let index = LineIndex::new(text);
        let line_column = |_: &str, offset| index.line_column(offset);
        assert_eq!(line_column(text, 0), (1, 1));
        assert_eq!(line_column(text, 4), (1, 5));
        assert_eq!(line_column(text, 6), (2, 1));
        // 'é' is two bytes and one column.
        assert_eq!(line_column(text, 9), (2, 3));
        assert_eq!(line_column(text, text.len()), (4, 2));
        assert_eq!(line_column(text, 999), (4, 2));
        // Inside 'é': that character.
        assert_eq!(line_column(text, 8), (2, 2));
        assert_eq!(LineIndex::new("").line_column(5), (1, 1));
        let newline_last = LineIndex::new("x\n");
        assert_eq!(newline_last.line_column(1), (1, 2));
        assert_eq!(newline_last.line_column(2), (2, 1));
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
        assert!(parse_threshold(&number(f64::INFINITY), false).is_err());
        assert!(parse_threshold(&text("1e400%"), true).is_err());
        assert!(parse_threshold(&text("1e308%"), true).is_ok());
    }

    #[test]
    fn durations() {
        let text = |t: &str| parse_for(&NumberOrText::Text(t.into()), t);
        let number = |n: f64| parse_for(&NumberOrText::Number(n), &n.to_string());
        assert_eq!(text("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(number(2.5), Ok(Duration::from_millis(2500)));
        assert!(text("soon").is_err());
        assert!(number(-1.0).is_err());
        assert!(number(f64::NAN).is_err());
        // Up to 30 days, not beyond; huge values are refused, not a panic.
        assert_eq!(text("30d"), Ok(MAX_FOR));
        assert_eq!(number(2_592_000.0), Ok(MAX_FOR));
        for (n, written) in [(2_592_001.0, "2592001"), (1e19, "1e19"), (1e20, "1e20")] {
            let err = parse_for(&NumberOrText::Number(n), written).unwrap_err();
            assert!(
                err.starts_with(&format!("{written} is longer than the 30 days")),
                "{err}"
            );
            assert!(err.contains("from 0s to 30d (2592000 seconds)"), "{err}");
        }
        assert!(text("31d").unwrap_err().contains("from 0s to 30d"));
        assert!(text("1e20").unwrap_err().contains("from 0s to 30d"));
        assert!(text("100000000000000000000000y").is_err());
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
