//! One render function per part of the screen, each taking its piece of the view model
//! and an area, so each renders alone into a `TestBackend`.

mod charts;
mod findings;
mod footer;
mod header;
mod threads;

pub use charts::render_charts;
pub use findings::render_findings;
pub use footer::{render_footer, render_help, render_too_small};
pub use header::render_header;
pub use threads::{render_threads, render_tree};

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};

use crate::model::Severity;

use super::view::ViewModel;

/// The smallest terminal the layout fits.
pub const MIN_WIDTH: u16 = 80;
pub const MIN_HEIGHT: u16 = 24;

/// Lines of the header.
pub const HEADER_HEIGHT: u16 = 6;

/// Width of the process tree beside the thread table.
const TREE_WIDTH: u16 = 42;

/// Draws one whole frame.
pub fn render_screen(frame: &mut Frame, view: &ViewModel) {
    let area = frame.area();
    if area.width < MIN_WIDTH || area.height < MIN_HEIGHT {
        render_too_small(frame, area);
        return;
    }
    let tall = area.height >= 36;
    // A hang explained from its stacks gets the room for its threads' lines.
    let explained = view
        .findings
        .first()
        .is_some_and(|f| f.explained && f.resolved_after.is_none());
    let (charts_height, findings_height) = match (tall, explained) {
        (true, false) => (10, 10),
        (true, true) => (8, 16),
        (false, false) => (8, 5),
        (false, true) => (5, 9),
    };
    let [header, charts, findings, bottom, footer] = Layout::vertical([
        Constraint::Length(HEADER_HEIGHT),
        Constraint::Length(charts_height),
        Constraint::Length(findings_height),
        Constraint::Fill(1),
        Constraint::Length(1),
    ])
    .areas(area);
    render_header(frame, header, &view.header, view.waiting);
    render_charts(frame, charts, &view.charts);
    render_findings(frame, findings, &view.findings);
    let [threads, tree] =
        Layout::horizontal([Constraint::Fill(1), Constraint::Length(TREE_WIDTH)]).areas(bottom);
    render_threads(frame, threads, &view.threads);
    render_tree(frame, tree, &view.tree);
    render_footer(frame, footer, &view.footer);
    if view.help {
        render_help(frame, area);
    }
}

/// Colour of a severity.
pub fn severity_style(severity: Severity) -> Style {
    match severity {
        Severity::Error => Style::new().fg(Color::Red).add_modifier(Modifier::BOLD),
        Severity::Warning => Style::new().fg(Color::Yellow),
        Severity::Info => Style::new().fg(Color::Cyan),
    }
}

/// A rectangle of `width` × `height` centred in `area` (clipped to it).
pub fn centered(area: Rect, width: u16, height: u16) -> Rect {
    let width = width.min(area.width);
    let height = height.min(area.height);
    Rect {
        x: area.x + (area.width - width) / 2,
        y: area.y + (area.height - height) / 2,
        width,
        height,
    }
}
