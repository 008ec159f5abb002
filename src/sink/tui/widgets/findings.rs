use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Paragraph, Wrap};

use crate::model::stacks::is_paused_line;
use crate::sink::tui::view::JournalEntry;
use crate::units::format_seconds;

use super::severity_style;

/// Evidence lines shown per entry.
const EVIDENCE_LINES: usize = 3;
/// Evidence lines of an entry explained from stacks (one per thread that matters).
const EXPLAINED_LINES: usize = 10;

/// The evidence lines an entry shows, and how many are left out. An entry explained
/// from stacks says how long each process was paused in its heading instead.
fn shown_evidence(entry: &JournalEntry) -> (Vec<&str>, usize) {
    let limit = if entry.explained {
        EXPLAINED_LINES
    } else {
        EVIDENCE_LINES
    };
    let lines: Vec<&str> = entry
        .evidence
        .iter()
        .map(String::as_str)
        .filter(|l| !(entry.explained && is_paused_line(l)))
        .collect();
    let hidden = lines.len().saturating_sub(limit);
    (lines.into_iter().take(limit).collect(), hidden)
}

/// "    from its stacks (pid 4240 paused 12 ms):".
fn stacks_heading(entry: &JournalEntry) -> String {
    let paused: Vec<String> = entry
        .evidence
        .iter()
        .filter(|l| is_paused_line(l))
        .map(|l| l.replacen(" for its stacks", "", 1))
        .collect();
    if paused.is_empty() {
        "    from its stacks:".to_string()
    } else {
        format!("    from its stacks ({}):", paused.join("; "))
    }
}

/// Findings and alerts, newest first, with evidence and remedy; resolved ones dimmed.
pub fn render_findings(frame: &mut Frame, area: Rect, findings: &[JournalEntry]) {
    let active = findings
        .iter()
        .filter(|f| f.resolved_after.is_none())
        .count();
    let block = Block::bordered()
        .border_style(Style::new().fg(Color::DarkGray))
        .title(format!(
            "findings and alerts: {active} active, {} resolved",
            findings.len() - active
        ));
    let dim = Style::new().fg(Color::DarkGray);
    let mut lines: Vec<Line> = Vec::new();
    if findings.is_empty() {
        lines.push(Line::styled("no findings", dim));
    }
    // When every entry in full does not fit, the first (newest active) keeps its evidence
    // and remedy and the others show their headline, so none is hidden below the fold.
    let full_lines: usize = findings.iter().map(full_height).sum();
    let expand = if full_lines <= area.height.saturating_sub(2) as usize {
        findings.len()
    } else {
        1
    };
    for (index, entry) in findings.iter().enumerate() {
        let (marker, head_style, body_style) = match entry.resolved_after {
            None => ("●", severity_style(entry.severity), Style::new()),
            Some(_) => ("✓", dim, dim),
        };
        let state = match entry.resolved_after {
            None => "active".to_string(),
            Some(after) => format!("resolved after {}", format_seconds(after)),
        };
        lines.push(Line::from(vec![
            Span::styled(
                format!(
                    "{marker} {:<7} {:>6.1}s {}",
                    entry.severity.as_str().to_uppercase(),
                    entry.elapsed_seconds,
                    entry.title
                ),
                head_style.add_modifier(Modifier::BOLD),
            ),
            Span::styled(format!(" [{state}] "), dim),
            Span::styled(entry.summary.clone(), body_style),
        ]));
        if entry.resolved_after.is_some() || index >= expand {
            continue;
        }
        if entry.explained {
            lines.push(Line::styled(
                stacks_heading(entry),
                Style::new().fg(Color::Cyan),
            ));
        }
        let (shown, hidden) = shown_evidence(entry);
        for evidence in shown {
            lines.push(Line::styled(format!("    · {evidence}"), body_style));
        }
        if hidden > 0 {
            lines.push(Line::styled(format!("    · … {hidden} more"), dim));
        }
        if !entry.remedy.is_empty() {
            lines.push(Line::from(vec![
                Span::styled("    remedy: ", Style::new().fg(Color::Green)),
                Span::styled(entry.remedy.clone(), body_style),
            ]));
        }
    }
    frame.render_widget(
        Paragraph::new(lines)
            .block(block)
            .wrap(Wrap { trim: false }),
        area,
    );
}

/// Lines an entry takes in full (before wrapping).
fn full_height(entry: &JournalEntry) -> usize {
    if entry.resolved_after.is_some() {
        return 1;
    }
    let (shown, hidden) = shown_evidence(entry);
    1 + usize::from(entry.explained)
        + shown.len()
        + usize::from(hidden > 0)
        + usize::from(!entry.remedy.is_empty())
}
