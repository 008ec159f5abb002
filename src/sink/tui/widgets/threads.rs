use ratatui::Frame;
use ratatui::layout::{Constraint, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::Line;
use ratatui::widgets::{Block, Paragraph, Row, Table};

use crate::sink::tui::app::SortKey;
use crate::sink::tui::view::{ThreadTable, TreeRow};
use crate::units::format_bytes;

fn percent(value: Option<f64>) -> String {
    value.map_or("-".to_string(), |v| format!("{v:.1}"))
}

fn state_style(state: &str) -> Style {
    match state.trim_end_matches('+') {
        "running" => Style::new().fg(Color::Green),
        "lock" => Style::new().fg(Color::Red),
        "io" => Style::new().fg(Color::Yellow),
        "stopped" | "dead" => Style::new().fg(Color::Magenta),
        _ => Style::new(),
    }
}

/// The threads of the selected process: sorted, filtered, optionally grouped by name.
pub fn render_threads(frame: &mut Frame, area: Rect, table: &ThreadTable) {
    let mut title = format!("{} · sort {}", table.title, table.sort.label());
    if !table.filter.is_empty() || table.editing_filter {
        title.push_str(&format!(" · filter \"{}\"", table.filter));
    }
    if table.grouped {
        title.push_str(" · grouped by name");
    }
    let block = Block::bordered()
        .border_style(Style::new().fg(Color::DarkGray))
        .title(title);
    let mark = |key: SortKey, label: &str| {
        if table.sort == key {
            format!("{label}▼")
        } else {
            label.to_string()
        }
    };
    let first = if table.grouped { "n" } else { "tid" };
    let header = Row::new(vec![
        if table.grouped {
            first.to_string()
        } else {
            mark(SortKey::Tid, first)
        },
        mark(SortKey::Name, "name"),
        mark(SortKey::State, "state"),
        mark(SortKey::Cpu, "CPU%"),
        mark(SortKey::RunqueueWait, "wait%"),
        mark(SortKey::Switches, "invol/s"),
        "wait channel".to_string(),
    ])
    .style(Style::new().add_modifier(Modifier::BOLD));
    let visible = area.height.saturating_sub(3) as usize;
    let rows = table.rows.iter().skip(table.scroll).take(visible).map(|r| {
        Row::new(vec![
            if table.grouped {
                r.count.to_string()
            } else {
                r.tid.to_string()
            },
            r.name.clone(),
            r.state.clone(),
            percent(r.cpu_percent),
            percent(r.wait_percent),
            percent(r.switches_per_second),
            r.wchan.clone(),
        ])
        .style(state_style(&r.state))
    });
    let widths = [
        Constraint::Length(7),
        Constraint::Length(15),
        Constraint::Length(8),
        Constraint::Length(6),
        Constraint::Length(6),
        Constraint::Length(7),
        Constraint::Fill(1),
    ];
    if table.rows.is_empty() {
        let text = if table.filter.is_empty() {
            "no threads"
        } else {
            "no thread matches the filter"
        };
        frame.render_widget(
            Paragraph::new(Line::styled(text, Style::new().fg(Color::DarkGray))).block(block),
            area,
        );
        return;
    }
    frame.render_widget(Table::new(rows, widths).header(header).block(block), area);
}

/// The processes of the job, indented under their parents; the selected one marked.
pub fn render_tree(frame: &mut Frame, area: Rect, tree: &[TreeRow]) {
    let block = Block::bordered()
        .border_style(Style::new().fg(Color::DarkGray))
        .title("process tree (tab)");
    let lines: Vec<Line> = tree
        .iter()
        .map(|p| {
            let text = format!(
                "{}{}{} {} {} {}t {} {}",
                if p.selected { "▶" } else { " " },
                "  ".repeat(p.depth),
                p.pid,
                p.comm,
                p.state,
                p.threads,
                format_bytes(p.rss_bytes),
                p.cpu_percent
                    .map_or("-".to_string(), |c| format!("{c:.0}%"))
            );
            if p.selected {
                Line::styled(
                    text,
                    Style::new().add_modifier(Modifier::BOLD | Modifier::REVERSED),
                )
            } else {
                Line::from(text)
            }
        })
        .collect();
    frame.render_widget(Paragraph::new(lines).block(block), area);
}
