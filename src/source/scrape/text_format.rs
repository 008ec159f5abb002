//! A strict parser of the Prometheus text exposition format 0.0.4, and of OpenMetrics
//! 1.0 where it differs (`# EOF`, `# UNIT`, counters sampled as `_total`, `_created`
//! samples, exemplars after `#`, float timestamps in seconds).
//!
//! It follows the strictness of Prometheus's own text parser: a line that is not a
//! comment, a blank, or a well-formed sample is an error with its line number; so is a
//! second `TYPE` or `HELP` for one family, or a `TYPE` after its samples. Garbage input
//! yields an error, never a panic.

use std::collections::HashMap;

/// The type a `# TYPE` line gives a family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricType {
    Counter,
    Gauge,
    Histogram,
    /// OpenMetrics `gaugehistogram`.
    GaugeHistogram,
    Summary,
    /// OpenMetrics `info`.
    Info,
    /// OpenMetrics `stateset`.
    StateSet,
    /// `untyped` (0.0.4), `unknown` (OpenMetrics), or no `TYPE` line at all.
    Untyped,
}

impl MetricType {
    fn from_token(token: &str) -> Option<MetricType> {
        Some(match token {
            "counter" => MetricType::Counter,
            "gauge" => MetricType::Gauge,
            "histogram" => MetricType::Histogram,
            "gaugehistogram" => MetricType::GaugeHistogram,
            "summary" => MetricType::Summary,
            "info" => MetricType::Info,
            "stateset" => MetricType::StateSet,
            "untyped" | "unknown" => MetricType::Untyped,
            _ => return None,
        })
    }

    /// Sample-name suffixes a family of this type may carry ("" is the bare name).
    fn suffixes(self) -> &'static [&'static str] {
        match self {
            MetricType::Counter => &["", "_total", "_created"],
            MetricType::Histogram => &["_bucket", "_sum", "_count", "_created"],
            MetricType::GaugeHistogram => &["_bucket", "_gsum", "_gcount"],
            MetricType::Summary => &["", "_sum", "_count", "_created"],
            MetricType::Info => &["_info"],
            MetricType::Gauge | MetricType::StateSet | MetricType::Untyped => &[""],
        }
    }
}

/// Label names and values in the order written.
pub type Labels = Vec<(String, String)>;

/// One sample line: `name{labels} value [timestamp]`.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricSample {
    pub name: String,
    /// In the order written; names are unique within a sample.
    pub labels: Labels,
    pub value: f64,
    /// As written: milliseconds in 0.0.4, seconds in OpenMetrics.
    pub timestamp: Option<f64>,
}

impl MetricSample {
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A metric family: its declared type, help and unit, and its samples.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricFamily {
    pub name: String,
    pub metric_type: MetricType,
    pub help: Option<String>,
    pub unit: Option<String>,
    pub samples: Vec<MetricSample>,
}

/// A parsed exposition.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Exposition {
    /// In order of first appearance.
    pub families: Vec<MetricFamily>,
    /// The text ended with `# EOF` (OpenMetrics).
    pub openmetrics: bool,
}

impl Exposition {
    pub fn family(&self, name: &str) -> Option<&MetricFamily> {
        self.families.iter().find(|f| f.name == name)
    }
}

/// Why a text is not a valid exposition.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {reason}")]
pub struct ParseError {
    /// 1-based.
    pub line: usize,
    pub reason: String,
}

/// Why a text was not read under [`parse_exposition_limited`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitedParseError {
    #[error(transparent)]
    Parse(#[from] ParseError),
    /// More sample lines (series, label sets) than the cap; parsing stopped there.
    #[error(
        "too large: more than {max_samples} series (label sets) in the exposition; parsing stopped at line {line}"
    )]
    TooManySamples { max_samples: usize, line: usize },
    /// The deadline passed while parsing (a huge body on a busy machine).
    #[error("parsing did not finish in time; stopped at line {line}")]
    OutOfTime { line: usize },
}

/// Parses a whole exposition text.
pub fn parse_exposition(text: &str) -> Result<Exposition, ParseError> {
    parse_exposition_limited(text, usize::MAX).map_err(|err| match err {
        LimitedParseError::Parse(err) => err,
        LimitedParseError::TooManySamples { line, .. } | LimitedParseError::OutOfTime { line } => {
            ParseError {
                line,
                reason: "too many samples".to_string(),
            }
        }
    })
}

/// Parses a whole exposition text of at most `max_samples` sample lines: the cost of
/// parsing (and of everything done with the result) is bounded by the cap.
pub fn parse_exposition_limited(
    text: &str,
    max_samples: usize,
) -> Result<Exposition, LimitedParseError> {
    parse_exposition_bounded(text, max_samples, None)
}

/// [`parse_exposition_limited`] that also stops when `deadline` passes (looked at every
/// 1,024 lines).
pub fn parse_exposition_bounded(
    text: &str,
    max_samples: usize,
    deadline: Option<std::time::Instant>,
) -> Result<Exposition, LimitedParseError> {
    let mut parser = Parser::default();
    for (index, raw) in text.split('\n').enumerate() {
        let line = raw.strip_suffix('\r').unwrap_or(raw);
        parser.line(line).map_err(|reason| ParseError {
            line: index + 1,
            reason,
        })?;
        if index % 1024 == 1023
            && deadline.is_some_and(|deadline| std::time::Instant::now() >= deadline)
        {
            return Err(LimitedParseError::OutOfTime { line: index + 1 });
        }
        if parser.samples > max_samples {
            return Err(LimitedParseError::TooManySamples {
                max_samples,
                line: index + 1,
            });
        }
    }
    Ok(parser.finish())
}

#[derive(Default)]
struct Parser {
    families: Vec<MetricFamily>,
    /// Family name → index in `families`.
    index: HashMap<String, usize>,
    /// Families whose type or help was declared (they may carry suffixed samples).
    declared: HashMap<String, usize>,
    eof: bool,
    /// Sample lines read.
    samples: usize,
}

impl Parser {
    fn finish(self) -> Exposition {
        Exposition {
            families: self.families,
            openmetrics: self.eof,
        }
    }

    fn line(&mut self, line: &str) -> Result<(), String> {
        let line = line.trim_start_matches([' ', '\t']);
        if self.eof {
            if line.is_empty() {
                return Ok(());
            }
            return Err(format!("content after `# EOF`: {}", quote(line)));
        }
        if line.trim_end_matches([' ', '\t']).is_empty() {
            return Ok(());
        }
        if let Some(comment) = line.strip_prefix('#') {
            return self.comment(comment);
        }
        let sample = parse_sample(line)?;
        self.add_sample(sample)
    }

    fn comment(&mut self, comment: &str) -> Result<(), String> {
        let rest = comment.trim_start_matches([' ', '\t']);
        let (keyword, rest) = split_token(rest);
        match keyword {
            "EOF" => {
                if !rest.trim().is_empty() {
                    return Err(format!("unexpected text after `# EOF`: {}", quote(rest)));
                }
                self.eof = true;
                Ok(())
            }
            "HELP" | "TYPE" | "UNIT" => {
                let (name, value) = split_token(rest);
                if !is_metric_name(name) {
                    return Err(format!(
                        "`# {keyword}` needs a metric name, found {}",
                        quote(name)
                    ));
                }
                match keyword {
                    "HELP" => {
                        let help = unescape(value, false)?;
                        let family = self.declare(name)?;
                        if family.help.is_some() {
                            return Err(format!("second `# HELP` for {}", quote(name)));
                        }
                        family.help = Some(help);
                    }
                    "TYPE" => {
                        let value = value.trim_end_matches([' ', '\t']);
                        let metric_type = MetricType::from_token(value).ok_or_else(|| {
                            format!(
                                "unknown type {} for {} (expected counter, gauge, histogram, summary, untyped)",
                                quote(value),
                                quote(name)
                            )
                        })?;
                        let family = self.declare(name)?;
                        if family.metric_type != MetricType::Untyped {
                            return Err(format!("second `# TYPE` for {}", quote(name)));
                        }
                        if !family.samples.is_empty() {
                            return Err(format!(
                                "`# TYPE` for {} comes after its samples; it must come first",
                                quote(name)
                            ));
                        }
                        family.metric_type = metric_type;
                    }
                    _ => {
                        let family = self.declare(name)?;
                        if family.unit.is_some() {
                            return Err(format!("second `# UNIT` for {}", quote(name)));
                        }
                        family.unit = Some(value.trim_end_matches([' ', '\t']).to_string());
                    }
                }
                Ok(())
            }
            // Any other comment is allowed and ignored.
            _ => Ok(()),
        }
    }

    fn declare(&mut self, name: &str) -> Result<&mut MetricFamily, String> {
        let index = match self.declared.get(name) {
            Some(&index) => index,
            None if self.index.contains_key(name) => {
                return Err(format!(
                    "metadata for {} comes after its samples; it must come first",
                    quote(name)
                ));
            }
            None => {
                let index = self.new_family(name);
                self.declared.insert(name.to_string(), index);
                index
            }
        };
        Ok(&mut self.families[index])
    }

    fn new_family(&mut self, name: &str) -> usize {
        self.families.push(MetricFamily {
            name: name.to_string(),
            metric_type: MetricType::Untyped,
            help: None,
            unit: None,
            samples: Vec::new(),
        });
        let index = self.families.len() - 1;
        self.index.insert(name.to_string(), index);
        index
    }

    /// The declared family a sample name belongs to, by the suffixes its type allows.
    fn declared_family_of(&self, sample_name: &str) -> Option<usize> {
        const SUFFIXES: [&str; 9] = [
            "", "_total", "_created", "_bucket", "_sum", "_count", "_gsum", "_gcount", "_info",
        ];
        SUFFIXES.iter().find_map(|suffix| {
            let base = sample_name.strip_suffix(suffix)?;
            let &index = self.declared.get(base)?;
            self.families[index]
                .metric_type
                .suffixes()
                .contains(suffix)
                .then_some(index)
        })
    }

    fn add_sample(&mut self, sample: MetricSample) -> Result<(), String> {
        let index = match self.declared_family_of(&sample.name) {
            Some(index) => index,
            None => match self.index.get(&sample.name) {
                Some(&index) => index,
                None => self.new_family(&sample.name.clone()),
            },
        };
        let family = &mut self.families[index];
        let suffix = &sample.name[family.name.len()..];
        match family.metric_type {
            MetricType::Histogram | MetricType::GaugeHistogram if suffix == "_bucket" => {
                let le = sample.label("le").ok_or_else(|| {
                    format!("histogram bucket {} has no `le` label", quote(&sample.name))
                })?;
                parse_float(le).ok_or_else(|| {
                    format!(
                        "`le` label {} of {} is not a number",
                        quote(le),
                        quote(&sample.name)
                    )
                })?;
            }
            MetricType::Summary if suffix.is_empty() => {
                let quantile = sample.label("quantile").ok_or_else(|| {
                    format!(
                        "summary sample {} has no `quantile` label",
                        quote(&sample.name)
                    )
                })?;
                parse_float(quantile).ok_or_else(|| {
                    format!(
                        "`quantile` label {} of {} is not a number",
                        quote(quantile),
                        quote(&sample.name)
                    )
                })?;
            }
            _ => {}
        }
        family.samples.push(sample);
        self.samples += 1;
        Ok(())
    }
}

fn parse_sample(line: &str) -> Result<MetricSample, String> {
    let name_end = line
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .unwrap_or(line.len());
    let name = &line[..name_end];
    if !is_metric_name(name) {
        return Err(format!(
            "expected a metric name at the start of {}",
            quote(line)
        ));
    }
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(after_brace) = rest.strip_prefix('{') {
        let (parsed, after) = parse_labels(after_brace)?;
        labels = parsed;
        rest = after;
    }
    if !rest.starts_with([' ', '\t']) {
        return Err(format!(
            "expected a blank and a value after {}, found {}",
            quote(name),
            quote(rest)
        ));
    }
    let (value_token, rest) = split_token(rest.trim_start_matches([' ', '\t']));
    let value = parse_float(value_token).ok_or_else(|| {
        format!(
            "value {} of {} is not a number",
            quote(value_token),
            quote(name)
        )
    })?;
    let rest = rest.trim_start_matches([' ', '\t']);
    let (timestamp, rest) = if rest.is_empty() || rest.starts_with('#') {
        (None, rest)
    } else {
        let (token, rest) = split_token(rest);
        let timestamp = parse_float(token)
            .filter(|t| t.is_finite())
            .ok_or_else(|| {
                format!(
                    "timestamp {} of {} is not a number",
                    quote(token),
                    quote(name)
                )
            })?;
        (Some(timestamp), rest.trim_start_matches([' ', '\t']))
    };
    // An OpenMetrics exemplar (`# {trace_id="…"} 0.5`) may follow; it is not used.
    if !rest.trim_end_matches([' ', '\t']).is_empty() && !rest.starts_with("# {") {
        return Err(format!(
            "unexpected text after the value of {}: {}",
            quote(name),
            quote(rest)
        ));
    }
    Ok(MetricSample {
        name: name.to_string(),
        labels,
        value,
        timestamp,
    })
}

/// Parses `name="value",…}` (the opening brace already consumed); returns the labels
/// and the text after the closing brace.
fn parse_labels(mut rest: &str) -> Result<(Labels, &str), String> {
    let mut labels: Labels = Vec::new();
    loop {
        rest = rest.trim_start_matches([' ', '\t']);
        if let Some(after) = rest.strip_prefix('}') {
            return Ok((labels, after));
        }
        let name_end = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        let name = &rest[..name_end];
        if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
            return Err(format!("expected a label name, found {}", quote(rest)));
        }
        rest = rest[name_end..].trim_start_matches([' ', '\t']);
        rest = rest
            .strip_prefix('=')
            .ok_or_else(|| format!("expected `=` after label {}", quote(name)))?
            .trim_start_matches([' ', '\t']);
        rest = rest
            .strip_prefix('"')
            .ok_or_else(|| format!("expected a quoted value for label {}", quote(name)))?;
        let close = find_closing_quote(rest)
            .ok_or_else(|| format!("unterminated value of label {}", quote(name)))?;
        let value = unescape(&rest[..close], true)
            .map_err(|reason| format!("label {}: {reason}", quote(name)))?;
        if labels.iter().any(|(n, _)| n == name) {
            return Err(format!("label {} appears twice", quote(name)));
        }
        labels.push((name.to_string(), value));
        rest = rest[close + 1..].trim_start_matches([' ', '\t']);
        if let Some(after) = rest.strip_prefix(',') {
            rest = after;
        } else if !rest.starts_with('}') {
            return Err(format!(
                "expected `,` or `}}` after label {}, found {}",
                quote(name),
                quote(rest)
            ));
        }
    }
}

/// Byte offset of the first unescaped `"`.
fn find_closing_quote(text: &str) -> Option<usize> {
    let mut escaped = false;
    for (offset, c) in text.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            '"' => return Some(offset),
            _ => {}
        }
    }
    None
}

/// Resolves `\\`, `\n` and (in label values) `\"`; any other escape is an error.
fn unescape(text: &str, label_value: bool) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('\\') => out.push('\\'),
            Some('n') => out.push('\n'),
            Some('"') if label_value => out.push('"'),
            // HELP text in 0.0.4 keeps other backslashes as they are.
            Some(other) if !label_value => {
                out.push('\\');
                out.push(other);
            }
            Some(other) => return Err(format!("invalid escape `\\{other}`")),
            None if !label_value => out.push('\\'),
            None => return Err("text ends in a lone backslash".to_string()),
        }
    }
    Ok(out)
}

/// A Prometheus float: decimal, or NaN / Inf with an optional sign, in any case.
pub fn parse_float(token: &str) -> Option<f64> {
    match token.to_ascii_lowercase().as_str() {
        "nan" => return Some(f64::NAN),
        "inf" | "+inf" | "infinity" | "+infinity" => return Some(f64::INFINITY),
        "-inf" | "-infinity" => return Some(f64::NEG_INFINITY),
        _ => {}
    }
    let plausible = !token.is_empty()
        && token
            .bytes()
            .all(|b| b.is_ascii_digit() || matches!(b, b'+' | b'-' | b'.' | b'e' | b'E'));
    if plausible { token.parse().ok() } else { None }
}

fn is_metric_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// The first blank-separated token and the rest after its blank.
fn split_token(text: &str) -> (&str, &str) {
    match text.find([' ', '\t']) {
        Some(end) => (&text[..end], &text[end + 1..]),
        None => (text, ""),
    }
}

/// A short quoted excerpt of untrusted text for an error message.
fn quote(text: &str) -> String {
    const MAX: usize = 60;
    match text.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{:?}…", &text[..cut]),
        None => format!("{text:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_gauge_counter_with_help_and_type() {
        let text = "# HELP app_queue_depth Requests waiting.\n# TYPE app_queue_depth gauge\napp_queue_depth 7\n# TYPE app_requests_total counter\napp_requests_total{code=\"200\"} 10 1700000000000\napp_requests_total{code=\"500\"} 2\n";
        let exposition = parse_exposition(text).unwrap();
        let depth = exposition.family("app_queue_depth").unwrap();
        assert_eq!(depth.metric_type, MetricType::Gauge);
        assert_eq!(depth.help.as_deref(), Some("Requests waiting."));
        assert_eq!(depth.samples[0].value, 7.0);
        let requests = exposition.family("app_requests_total").unwrap();
        assert_eq!(requests.metric_type, MetricType::Counter);
        assert_eq!(requests.samples.len(), 2);
        assert_eq!(requests.samples[0].timestamp, Some(1_700_000_000_000.0));
        assert_eq!(requests.samples[1].label("code"), Some("500"));
        assert!(!exposition.openmetrics);
    }

    #[test]
    fn escaped_label_values() {
        let text = r#"m{path="C:\\dir",msg="say \"hi\"\nbye",} 1"#;
        let exposition = parse_exposition(text).unwrap();
        let sample = &exposition.families[0].samples[0];
        assert_eq!(sample.label("path"), Some(r"C:\dir"));
        assert_eq!(sample.label("msg"), Some("say \"hi\"\nbye"));
    }

    #[test]
    fn label_value_with_braces_commas_and_unicode() {
        let exposition = parse_exposition("m{a=\"x},{y\", b = \"é ü\" } 2\n").unwrap();
        let sample = &exposition.families[0].samples[0];
        assert_eq!(sample.label("a"), Some("x},{y"));
        assert_eq!(sample.label("b"), Some("é ü"));
    }

    #[test]
    fn special_values() {
        let exposition = parse_exposition("a NaN\nb +Inf\nc -Inf\nd 1.5e3\ne -0.25\n").unwrap();
        let values: Vec<f64> = exposition
            .families
            .iter()
            .map(|f| f.samples[0].value)
            .collect();
        assert!(values[0].is_nan());
        assert_eq!(values[1], f64::INFINITY);
        assert_eq!(values[2], f64::NEG_INFINITY);
        assert_eq!(values[3], 1500.0);
        assert_eq!(values[4], -0.25);
    }

    #[test]
    fn histogram_and_summary_group_into_families() {
        let text = "# TYPE lat_seconds histogram\nlat_seconds_bucket{le=\"0.1\"} 1\nlat_seconds_bucket{le=\"+Inf\"} 3\nlat_seconds_sum 0.7\nlat_seconds_count 3\n# TYPE rpc summary\nrpc{quantile=\"0.5\"} 0.2\nrpc{quantile=\"0.99\"} 0.9\nrpc_sum 5\nrpc_count 20\n";
        let exposition = parse_exposition(text).unwrap();
        assert_eq!(exposition.families.len(), 2);
        let histogram = exposition.family("lat_seconds").unwrap();
        assert_eq!(histogram.metric_type, MetricType::Histogram);
        assert_eq!(histogram.samples.len(), 4);
        let summary = exposition.family("rpc").unwrap();
        assert_eq!(summary.samples.len(), 4);
    }

    #[test]
    fn openmetrics_counter_unit_created_exemplar_eof() {
        let text = "# TYPE jobs counter\n# UNIT jobs jobs\n# HELP jobs Jobs done.\njobs_total 17.0 1700000000.5\njobs_created 1700000000.0\n# TYPE lat_seconds histogram\nlat_seconds_bucket{le=\"1.0\"} 2 # {trace_id=\"a\"} 0.5\nlat_seconds_bucket{le=\"+Inf\"} 2\nlat_seconds_count 2\nlat_seconds_sum 1.0\n# EOF\n";
        let exposition = parse_exposition(text).unwrap();
        assert!(exposition.openmetrics);
        let jobs = exposition.family("jobs").unwrap();
        assert_eq!(jobs.metric_type, MetricType::Counter);
        assert_eq!(jobs.unit.as_deref(), Some("jobs"));
        assert_eq!(jobs.samples.len(), 2);
        assert_eq!(jobs.samples[0].name, "jobs_total");
        assert_eq!(exposition.family("lat_seconds").unwrap().samples.len(), 4);
    }

    #[test]
    fn blank_lines_comments_and_crlf_are_allowed() {
        let exposition = parse_exposition("\n# just a note\r\n  \nx 1\r\n\n").unwrap();
        assert_eq!(exposition.families[0].samples[0].value, 1.0);
        assert!(parse_exposition("").unwrap().families.is_empty());
    }

    fn error(text: &str) -> ParseError {
        parse_exposition(text).expect_err(text)
    }

    #[test]
    fn errors_name_line_and_reason() {
        let err = error("ok 1\n<html><body>oops</body></html>\n");
        assert_eq!(err.line, 2);
        assert!(err.reason.contains("metric name"), "{err}");
        assert!(err.to_string().starts_with("line 2: "));

        assert!(error("x\n").reason.contains("value"));
        assert!(error("x abc\n").reason.contains("not a number"));
        assert!(error("x 1 2 3\n").reason.contains("unexpected text"));
        assert!(error("x 1 NaN\n").reason.contains("timestamp"));
        assert!(error("x{a=\"1\" 2\n").reason.contains("expected `,`"));
        assert!(error("x{a=\"1} 2\n").reason.contains("unterminated"));
        assert!(error("x{a=1} 2\n").reason.contains("quoted"));
        assert!(error("x{a=\"\\t\"} 2\n").reason.contains("invalid escape"));
        assert!(error("x{a=\"1\",a=\"2\"} 2\n").reason.contains("twice"));
        assert!(error("x{1a=\"1\"} 2\n").reason.contains("label name"));
        assert!(
            error("x{} 1\n# TYPE x gauge\n")
                .reason
                .contains("after its samples")
        );
        assert!(
            error("# TYPE x gauge\n# TYPE x gauge\n")
                .reason
                .contains("second")
        );
        assert!(error("# TYPE x banana\n").reason.contains("unknown type"));
        assert!(error("# HELP x a\n# HELP x b\n").reason.contains("second"));
        assert!(error("# TYPE\n").reason.contains("metric name"));
        assert!(error("x 1\n# EOF\ny 2\n").reason.contains("after `# EOF`"));
        assert!(
            error("# TYPE h histogram\nh_bucket 1\n")
                .reason
                .contains("`le`")
        );
        assert!(
            error("# TYPE h histogram\nh_bucket{le=\"big\"} 1\n")
                .reason
                .contains("not a number")
        );
        assert!(
            error("# TYPE s summary\ns 1\n")
                .reason
                .contains("`quantile`")
        );
    }

    #[test]
    fn garbage_never_panics() {
        let inputs = [
            "\u{0}\u{1}\u{2}",
            "{",
            "x{",
            "x{a",
            "x{a=",
            "x{a=\"",
            "x{a=\"\\",
            "x{a=\"é\\",
            "# HELP",
            "# HELP x",
            "# HELP x \\",
            "#",
            "x 1e",
            "x --1",
            "x ..",
            "é 1",
            "x{é=\"1\"} 1",
        ];
        for input in inputs {
            let _ = parse_exposition(input);
        }
        // Every prefix of a valid text parses or fails cleanly.
        let text = "# TYPE h histogram\nh_bucket{le=\"0.5\",path=\"/a\\\"b\"} 1 123\n";
        for cut in 0..=text.len() {
            if text.is_char_boundary(cut) {
                let _ = parse_exposition(&text[..cut]);
            }
        }
    }

    #[test]
    fn random_texts_never_panic() {
        // Deterministic pseudo-random texts over the characters that matter to the grammar.
        const ALPHABET: &[char] = &[
            'a', '_', ':', '0', '9', '.', 'e', '+', '-', ' ', '\t', '\n', '{', '}', '=', '"', '\\',
            ',', '#', 'N', 'I', 'é', '\r',
        ];
        let mut state: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let prefixes = [
            "",
            "# TYPE a histogram\n",
            "# TYPE a summary\n",
            "# HELP a ",
        ];
        for round in 0..3000 {
            let length = (next() % 40) as usize;
            let mut text = prefixes[round % prefixes.len()].to_string();
            text.extend((0..length).map(|_| ALPHABET[(next() % ALPHABET.len() as u64) as usize]));
            let _ = parse_exposition(&text);
        }
    }

    #[test]
    fn long_values_are_cut_in_errors() {
        let long = "<".repeat(500);
        let err = error(&long);
        assert!(err.reason.len() < 200, "{}", err.reason);
    }
}

/// Properties of the parser over generated input: no panic on any text (nor on valid
/// expositions with a character changed or cut short), the sample cap honoured, and an
/// exposition rendered from generated families parsed back to the same families.
#[cfg(test)]
mod proptests {
    use proptest::prelude::*;

    use super::*;

    const VALID: &str = "# HELP http_requests_total Requests.\n# TYPE http_requests_total counter\n\
        http_requests_total{method=\"get\",code=\"200\"} 1027 1395066363000\n\
        # TYPE h histogram\nh_bucket{le=\"0.5\"} 1\nh_bucket{le=\"+Inf\"} 2\nh_sum 0.7\nh_count 2\n\
        # TYPE s summary\ns{quantile=\"0.9\"} 3\ns_sum 4\ns_count 5\nx{a=\"\\\"q\\\\ \\n\"} -Inf\n";

    /// Escapes for a `HELP` text (`label_value`: also `"`).
    fn escape(text: &str, label_value: bool) -> String {
        let mut out = String::new();
        for c in text.chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                '"' if label_value => out.push_str("\\\""),
                c => out.push(c),
            }
        }
        out
    }

    fn family() -> impl Strategy<Value = (String, MetricType, String, Vec<MetricSample>)> {
        (
            "[a-z_:][a-z0-9_:]{0,10}",
            prop_oneof![
                Just(MetricType::Gauge),
                Just(MetricType::Counter),
                Just(MetricType::Untyped)
            ],
            "[a-zA-Z0-9\\\\\"\n.]([a-zA-Z0-9 \\\\\"\n.é]{0,20}[a-zA-Z0-9\\\\\"\n.])?",
            proptest::collection::vec(
                (
                    proptest::collection::btree_map("[a-z_][a-z0-9_]{0,6}", "[ -~é\n]{0,12}", 0..4),
                    prop_oneof![
                        -1e15..1e15f64,
                        Just(0.0),
                        Just(f64::INFINITY),
                        Just(f64::NEG_INFINITY),
                        any::<f64>().prop_filter("finite", |v| v.is_finite()),
                    ],
                    proptest::option::of(-(1i64 << 52)..(1i64 << 52)),
                ),
                1..5,
            ),
        )
            .prop_map(|(name, metric_type, help, samples)| {
                let samples = samples
                    .into_iter()
                    .map(|(labels, value, timestamp)| MetricSample {
                        name: String::new(),
                        labels: labels.into_iter().collect(),
                        value,
                        timestamp: timestamp.map(|t| t as f64),
                    })
                    .collect();
                (name, metric_type, help, samples)
            })
    }

    fn render(families: &[MetricFamily]) -> String {
        let mut text = String::new();
        for family in families {
            let kind = match family.metric_type {
                MetricType::Counter => "counter",
                MetricType::Gauge => "gauge",
                _ => "untyped",
            };
            let help = family.help.as_deref().unwrap_or_default();
            text.push_str(&format!("# HELP {} {}\n", family.name, escape(help, false)));
            text.push_str(&format!("# TYPE {} {kind}\n", family.name));
            for sample in &family.samples {
                text.push_str(&sample.name);
                if !sample.labels.is_empty() {
                    let labels: Vec<String> = sample
                        .labels
                        .iter()
                        .map(|(n, v)| format!("{n}=\"{}\"", escape(v, true)))
                        .collect();
                    text.push_str(&format!("{{{}}}", labels.join(",")));
                }
                let value = if sample.value.is_infinite() {
                    if sample.value > 0.0 {
                        "+Inf".to_string()
                    } else {
                        "-Inf".to_string()
                    }
                } else {
                    sample.value.to_string()
                };
                text.push_str(&format!(" {value}"));
                if let Some(timestamp) = sample.timestamp {
                    text.push_str(&format!(" {timestamp}"));
                }
                text.push('\n');
            }
        }
        text
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn any_text_parses_or_fails_cleanly(text in any::<String>()) {
            let _ = parse_exposition(&text);
        }

        #[test]
        fn grammar_soup_parses_or_fails_cleanly(
            text in "(# (HELP|TYPE|UNIT|EOF) )?[a-z_:{}=\",.0-9eE+\\- \t\n\r#\\\\NnIi]{0,80}",
        ) {
            let _ = parse_exposition(&text);
        }

        #[test]
        fn edited_valid_text_parses_or_fails_cleanly(at: usize, c: char, truncate: bool) {
            let mut text = VALID.to_string();
            let mut at = at % (text.len() + 1);
            while !text.is_char_boundary(at) {
                at -= 1;
            }
            if truncate {
                text.truncate(at);
            } else {
                text.insert(at, c);
            }
            let _ = parse_exposition(&text);
        }

        #[test]
        fn the_sample_cap_holds(lines in 0..40usize, cap in 0..20usize) {
            let text: String = (0..lines).map(|i| format!("m{{i=\"{i}\"}} {i}\n")).collect();
            match parse_exposition_limited(&text, cap) {
                Ok(exposition) => {
                    let samples: usize = exposition.families.iter().map(|f| f.samples.len()).sum();
                    prop_assert!(samples <= cap);
                    prop_assert_eq!(samples, lines);
                }
                Err(LimitedParseError::TooManySamples { .. }) => prop_assert!(lines > cap),
                Err(other) => prop_assert!(false, "{other}"),
            }
        }

        #[test]
        fn rendered_families_parse_back(generated in proptest::collection::vec(family(), 1..5)) {
            // Index the names so that no family's name is another's plus a suffix.
            let families: Vec<MetricFamily> = generated
                .into_iter()
                .enumerate()
                .map(|(i, (name, metric_type, help, samples))| {
                    let name = format!("m{i}_{name}");
                    let samples = samples
                        .into_iter()
                        .map(|s| MetricSample { name: name.clone(), ..s })
                        .collect();
                    MetricFamily { name, metric_type, help: Some(help), unit: None, samples }
                })
                .collect();
            let text = render(&families);
            let parsed = parse_exposition(&text).map_err(|e| TestCaseError::fail(format!("{e}\n{text}")))?;
            prop_assert_eq!(parsed, Exposition { families, openmetrics: false }, "{}", text);
        }
    }
}
