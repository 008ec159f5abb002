use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Paragraph, Wrap};

use crate::sink::tui::view::JournalEntry;
use crate::units::format_seconds;

use super::severity_style;

/// Evidence lines shown per entry.
const EVIDENCE_LINES: usize = 3;

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
        for evidence in entry.evidence.iter().take(EVIDENCE_LINES) {
            lines.push(Line::styled(format!("    · {evidence}"), body_style));
        }
        if entry.evidence.len() > EVIDENCE_LINES {
            lines.push(Line::styled(
                format!("    · … {} more", entry.evidence.len() - EVIDENCE_LINES),
                dim,
            ));
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
    let evidence = entry.evidence.len().min(EVIDENCE_LINES + 1);
    1 + evidence + usize::from(!entry.remedy.is_empty())
}
