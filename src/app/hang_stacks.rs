//! Stacks on a hang for `attach`: when a hang finding first appears for a process, its
//! stacks are taken once (a short, reported pause) and the finding is explained with
//! them — a `stacks` JSON line in `--json` mode; the explanation goes to the watch
//! (the dashboard's findings pane shows it live) and is printed again after the
//! dashboard closes. `--no-stacks` leaves this sink out.

use std::collections::BTreeSet;
use std::io::Write;

use anyhow::Result;

use crate::engine::sink::{Control, Sink};
use crate::engine::{Event, Watch};
use crate::model::stacks::StacksReport;
use crate::model::{Finding, FindingKind};
use crate::sink::events::Format;
use crate::sink::line::{Line, StacksLine};

/// The findings whose stacks explain them: the hangs (as `run`'s gate counts them) and
/// a distributed job's straggler.
fn is_hang(finding: &Finding) -> bool {
    (finding.kind.is_hang() && finding.severity == crate::model::Severity::Error)
        || finding.kind == FindingKind::Straggler
}

/// Takes and explains stacks on the first hang finding of each process.
pub struct HangStacks {
    /// `Json`: write each explained hang as a `stacks` line on stdout.
    format: Format,
    taken: BTreeSet<String>,
    /// The explained hangs, for the closing summary.
    pub explained: Vec<(Finding, StacksReport)>,
    /// Explained since the loop last asked: it hands them to the watch (the dashboard
    /// shows them).
    pending: Vec<(String, Finding)>,
}

impl HangStacks {
    pub fn new(format: Format) -> HangStacks {
        HangStacks {
            format,
            taken: BTreeSet::new(),
            explained: Vec::new(),
            pending: Vec::new(),
        }
    }

    /// The explanation lines for people, as the closing summary prints them.
    pub fn write_text(&self, out: &mut impl Write) -> std::io::Result<()> {
        for (finding, _) in &self.explained {
            writeln!(
                out,
                "  [{}] {}: {}",
                finding.severity, finding.kind, finding.summary
            )?;
            for line in &finding.evidence {
                writeln!(out, "      {line}")?;
            }
        }
        Ok(())
    }
}

impl Sink for HangStacks {
    fn sample(&mut self, watch: &Watch, events: &[Event]) -> Result<Control> {
        for event in events {
            let Event::Finding(found) = event else {
                continue;
            };
            if !is_hang(&found.finding) || self.taken.contains(&found.key) {
                continue;
            }
            let Some(latest) = watch.timeline.latest() else {
                continue;
            };
            self.taken.insert(found.key.clone());
            // The stacks the collector took for these waits, else fresh ones.
            let kept = found.finding.pids.iter().find_map(|pid| {
                latest
                    .process(*pid)
                    .and_then(|p| p.waits.as_ref())
                    .and_then(|w| w.report.clone())
            });
            let stacks = match kept {
                Some(report) => (*report).clone(),
                None => crate::source::stacks::take(latest, std::path::Path::new("/proc")),
            };
            let mut findings = vec![found.finding.clone()];
            crate::detect::explain_with_stacks(&mut findings, &stacks);
            crate::detect::distributed::explain_all(
                &mut findings,
                &watch.timeline,
                watch.detect.hang_after_seconds,
                &stacks,
            );
            let Some(finding) = findings.pop() else {
                continue;
            };
            if self.format == Format::Json {
                let line = Line::Stacks(StacksLine {
                    time_unix_seconds: found.time_unix_seconds,
                    key: found.key.clone(),
                    finding: finding.clone(),
                    stacks: stacks.clone(),
                });
                let mut out = std::io::stdout().lock();
                line.write_json(&mut out)?;
                out.flush()?;
            }
            self.pending.push((found.key.clone(), finding.clone()));
            self.explained.push((finding, stacks));
        }
        Ok(Control::Continue)
    }

    fn explanations(&mut self) -> Vec<(String, Finding)> {
        std::mem::take(&mut self.pending)
    }
}
