//! Events as lines: JSON lines for scripts, short text lines for people.

use std::io::Write;

use anyhow::{Context, Result};

use crate::engine::sink::{Control, Ending, Sink};
use crate::engine::{Event, ExitLine, Watch};
use crate::model::Severity;
use crate::sink::line::Line;

/// How lines are written: JSON for scripts (one [`Line`] each), text for people.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    Text,
}

impl Format {
    /// JSON when `json`, else text.
    pub fn json_if(json: bool) -> Format {
        if json { Format::Json } else { Format::Text }
    }
}

/// Whether a kind of line is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineChoice {
    Write,
    Skip,
}

/// Which lines an [`EventSink`] writes beside findings, alerts and resolutions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lines {
    /// The `sample` line of every interval.
    pub samples: LineChoice,
    /// The closing `exit` line (`run` writes its own).
    pub exit: LineChoice,
}

impl Lines {
    /// Every line.
    pub const EVERY: Lines = Lines {
        samples: LineChoice::Write,
        exit: LineChoice::Write,
    };
    /// Every line but the closing `exit` line (`run` writes its own).
    pub const ALL_BUT_EXIT: Lines = Lines {
        samples: LineChoice::Write,
        exit: LineChoice::Skip,
    };
    /// Findings, alerts and resolutions only.
    pub const CHANGES: Lines = Lines {
        samples: LineChoice::Skip,
        exit: LineChoice::Skip,
    };
}

/// Where events go: JSON lines for scripts, short text lines for people.
pub struct EventSink<W: Write> {
    out: W,
    /// One event's bytes, gathered so that an event is one `write` (stderr, which `run`
    /// writes to, is unbuffered), then flushed: live lines appear as they happen.
    line: Vec<u8>,
    format: Format,
    lines: Lines,
    /// Text: how often each finding (by key) was said, so that one that resolves and
    /// comes back (an idle pool between batches) is one line the next times.
    said: std::collections::HashMap<String, u32>,
    /// Findings and alerts below this are not written (`run --min-severity`).
    min_severity: Severity,
    /// The findings (by key) and alerts (by rule) left out as below `min_severity`:
    /// their resolutions are left out too.
    hidden: std::collections::BTreeSet<String>,
}

impl<W: Write> EventSink<W> {
    /// Every event, the closing `exit` line included.
    pub fn new(out: W, format: Format) -> Self {
        EventSink {
            out,
            line: Vec::with_capacity(1024),
            format,
            lines: Lines::EVERY,
            said: std::collections::HashMap::new(),
            min_severity: Severity::Info,
            hidden: std::collections::BTreeSet::new(),
        }
    }

    /// Leaves out the findings and alerts below `severity`, and their resolutions.
    pub fn min_severity(mut self, severity: Severity) -> Self {
        self.min_severity = severity;
        self
    }

    /// How many findings (by key) and alerts (by rule) were left out as below the
    /// minimum severity.
    pub fn hidden(&self) -> usize {
        self.hidden.len()
    }

    /// Whether `event` is left out as below the minimum severity.
    fn below_minimum(&mut self, event: &Event) -> bool {
        let (name, severity) = match event {
            Event::Finding(f) => (format!("finding {}", f.key), f.finding.severity),
            Event::Alert(a) => (format!("alert {}", a.alert.rule), a.alert.severity),
            Event::Resolved(r) => {
                let name = match (&r.key, &r.rule) {
                    (Some(key), _) => format!("finding {key}"),
                    (None, Some(rule)) => format!("alert {rule}"),
                    (None, None) => return false,
                };
                return self.hidden.contains(&name);
            }
            Event::Sample(_) | Event::Exit(_) => return false,
        };
        if severity < self.min_severity {
            self.hidden.insert(name);
            return true;
        }
        false
    }

    /// Which lines to write.
    pub fn lines(mut self, lines: Lines) -> Self {
        self.lines = lines;
        self
    }

    pub fn write(&mut self, event: &Event) -> std::io::Result<()> {
        self.line.clear();
        match self.format {
            Format::Json => Line::of(event).write_json(&mut self.line)?,
            Format::Text => match event {
                Event::Finding(f) => {
                    // By severity too: a finding that rose (a stall proven a hang) is
                    // said in full.
                    let said = format!("{} {}", f.key, f.finding.severity);
                    let times = self.said.entry(said).or_insert(0);
                    *times += 1;
                    if *times == 1 {
                        write_text_event(&mut self.line, event)?;
                    } else {
                        let times = *times;
                        crate::units::write_escaped(&mut self.line, |out| {
                            writeln!(
                                out,
                                "[{:>7.1}s] again ({times} times) [{}] {}: {}",
                                f.elapsed_seconds,
                                f.finding.severity,
                                f.finding.kind,
                                f.finding.summary
                            )
                        })?;
                    }
                }
                _ => write_text_event(&mut self.line, event)?,
            },
        }
        self.out.write_all(&self.line)?;
        self.out.flush()
    }
}

/// One event as a line for people, with control characters escaped
/// (`units::escape_controls`): names and reasons may carry a watched process's text.
pub fn write_text_event(out: &mut impl Write, event: &Event) -> std::io::Result<()> {
    crate::units::write_escaped(out, |buffer| render_text_event(buffer, event))
}

fn render_text_event(out: &mut impl Write, event: &Event) -> std::io::Result<()> {
    match event {
        Event::Sample(s) => {
            let get = |name: &str| s.metrics.get(name).copied();
            writeln!(
                out,
                "[{:>7.1}s] threads {} runnable {} on {} CPU(s), wait ratio {}, RSS {}{}",
                s.elapsed_seconds,
                get("threads").unwrap_or(0.0),
                get("threads_runnable").unwrap_or(0.0),
                get("usable_cpus").unwrap_or(0.0),
                get("runqueue_wait_ratio")
                    .map(|r| format!("{r:.2}"))
                    .unwrap_or_else(|| crate::model::RATIO_NOT_COMPUTED.into()),
                crate::units::format_bytes(get("rss_bytes").unwrap_or(0.0) as u64),
                if s.findings_active.is_empty() {
                    String::new()
                } else {
                    format!("; active: {}", s.findings_active.join(" "))
                }
            )?;
            for u in &s.unavailable {
                writeln!(
                    out,
                    "          unavailable: {}{}: {}{}",
                    u.source,
                    u.pid.map(|p| format!(" (pid {p})")).unwrap_or_default(),
                    u.reason,
                    u.fix
                        .as_ref()
                        .map(|f| format!(" — {f}"))
                        .unwrap_or_default()
                )?;
            }
        }
        Event::Finding(f) => {
            let finding = &f.finding;
            writeln!(
                out,
                "[{:>7.1}s] FINDING [{}] {}: {}",
                f.elapsed_seconds, finding.severity, finding.kind, finding.summary
            )?;
            for line in &finding.evidence {
                writeln!(out, "            - {line}")?;
            }
            writeln!(out, "            remedy: {}", finding.remedy)?;
        }
        Event::Alert(a) => writeln!(
            out,
            "[{:>7.1}s] ALERT {}",
            a.elapsed_seconds,
            serde_json::to_string(&a.alert).unwrap_or_default()
        )?,
        Event::Resolved(r) => writeln!(
            out,
            "[{:>7.1}s] resolved {} after {:.0}s",
            r.elapsed_seconds,
            r.kind
                .map(|k| k.to_string())
                .or_else(|| r.rule.clone())
                .unwrap_or_default(),
            r.active_seconds
        )?,
        Event::Exit(e) => writeln!(out, "[{:>7.1}s] exit: {}", e.elapsed_seconds, e.message)?,
    }
    Ok(())
}

impl<W: Write> Sink for EventSink<W> {
    fn sample(&mut self, _watch: &Watch, events: &[Event]) -> Result<Control> {
        for event in events {
            if self.below_minimum(event) {
                continue;
            }
            if self.lines.samples == LineChoice::Write || !matches!(event, Event::Sample(_)) {
                self.write(event).context("cannot write the events")?;
            }
        }
        Ok(Control::Continue)
    }

    fn finish(&mut self, _watch: &Watch, exit: &ExitLine) -> Result<Option<Ending>> {
        if self.lines.exit == LineChoice::Write {
            self.write(&Event::Exit(exit.clone()))
                .context("cannot write the events")?;
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_finding_that_comes_back_is_one_line_with_its_count() {
        let event = |elapsed: f64| {
            Event::Finding(crate::engine::FindingEvent {
                time_unix_seconds: 0.0,
                elapsed_seconds: elapsed,
                key: "idle:7".into(),
                finding: crate::model::Finding::new(
                    crate::model::FindingKind::Idle,
                    crate::model::Severity::Info,
                    "pid 7 (python3) is idle",
                ),
            })
        };
        let mut sink = EventSink::new(Vec::new(), Format::Text);
        sink.write(&event(7.0)).unwrap();
        sink.write(&event(19.0)).unwrap();
        sink.write(&event(31.0)).unwrap();
        let text = String::from_utf8(sink.out).unwrap();
        assert_eq!(text.matches("remedy:").count(), 1, "{text}");
        assert!(
            text.contains("[   19.0s] again (2 times) [info] idle: pid 7 (python3) is idle")
                && text.contains("again (3 times)"),
            "{text}"
        );
    }

    #[test]
    fn findings_below_the_minimum_and_their_resolutions_are_left_out_and_counted() {
        let finding = |key: &str, severity: crate::model::Severity| {
            Event::Finding(crate::engine::FindingEvent {
                time_unix_seconds: 0.0,
                elapsed_seconds: 1.0,
                key: key.into(),
                finding: crate::model::Finding::new(
                    crate::model::FindingKind::Idle,
                    severity,
                    format!("finding {key}"),
                ),
            })
        };
        let resolved = |key: &str| {
            Event::Resolved(crate::engine::ResolvedLine {
                time_unix_seconds: 0.0,
                elapsed_seconds: 2.0,
                kind: Some(crate::model::FindingKind::Idle),
                key: Some(key.into()),
                rule: None,
                active_seconds: 1.0,
            })
        };
        let mut sink =
            EventSink::new(Vec::new(), Format::Text).min_severity(crate::model::Severity::Warning);
        for event in [
            finding("idle:7", crate::model::Severity::Info),
            finding("idle:8", crate::model::Severity::Info),
            finding("idle:7", crate::model::Severity::Info),
            finding("stall:9", crate::model::Severity::Warning),
            resolved("idle:7"),
            resolved("stall:9"),
        ] {
            if !sink.below_minimum(&event) {
                sink.write(&event).unwrap();
            }
        }
        assert_eq!(sink.hidden(), 2);
        let text = String::from_utf8(sink.out).unwrap();
        assert!(
            !text.contains("idle:7") && !text.contains("idle:8"),
            "{text}"
        );
        assert!(text.contains("finding stall:9"), "{text}");
        assert_eq!(text.matches("resolved").count(), 1, "{text}");
    }

    #[test]
    fn text_lines_escape_control_characters() {
        let event = Event::Exit(ExitLine {
            time_unix_seconds: 0.0,
            elapsed_seconds: 1.0,
            pid: Some(7),
            reason: crate::engine::Reason::TargetExited,
            exit_code: None,
            message: "pid 7 (\x1b]0;pwn\x07\u{9b}2J) exited\r".into(),
        });
        let mut out = Vec::new();
        write_text_event(&mut out, &event).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(!text.contains(['\x1b', '\x07', '\r', '\u{9b}']), "{text:?}");
        assert!(text.contains("\\x1b]0;pwn\\x07\\u{9b}2J"), "{text}");
        assert!(text.ends_with('\n'));
    }
}
