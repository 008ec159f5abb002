use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Clear, Paragraph, Wrap};

use crate::sink::tui::view::Footer;

use super::{MIN_HEIGHT, MIN_WIDTH, centered};

/// The keys, as the footer and the help overlay list them.
pub const KEYS: [(&str, &str, &str); 9] = [
    ("q", "quit", "quit (also Ctrl-C)"),
    ("space", "pause", "pause / resume the display (space or p)"),
    (
        "s",
        "sort",
        "sort threads: CPU% → wait% → invol/s → state → name → tid",
    ),
    (
        "/",
        "filter",
        "filter threads by name, tid, state or wait channel (Enter keeps, Esc clears)",
    ),
    ("g", "group", "group threads by name"),
    (
        "tab",
        "process",
        "next process of the tree (tab / →; shift-tab / ← back)",
    ),
    (
        "↑↓",
        "scroll",
        "scroll the thread table (↑ ↓ PgUp PgDn Home)",
    ),
    (
        "w",
        "snapshot",
        "write the triage report to tfwatch-snapshot-<pid>-<time>.txt here",
    ),
    ("?", "help", "this help (any key closes it)"),
];

/// Keys, the pause mark, the filter being typed, and the last message.
pub fn render_footer(frame: &mut Frame, area: Rect, footer: &Footer) {
    let key_style = Style::new().fg(Color::Black).bg(Color::Gray);
    let mut spans = Vec::new();
    if footer.paused {
        spans.push(Span::styled(
            " PAUSED ",
            Style::new()
                .fg(Color::Black)
                .bg(Color::Yellow)
                .add_modifier(Modifier::BOLD),
        ));
        spans.push(Span::raw(" "));
    }
    // The message first: the key list may not fit beside it.
    if let Some(status) = &footer.status {
        spans.push(Span::styled(
            format!("{status} "),
            Style::new().fg(Color::Cyan).add_modifier(Modifier::BOLD),
        ));
    }
    if let Some(filter) = &footer.filter_prompt {
        spans.push(Span::styled(" filter: ", key_style));
        spans.push(Span::raw(format!(" {filter}█  Enter keep · Esc clear")));
    } else {
        for (key, what, _) in KEYS {
            spans.push(Span::styled(format!(" {key} "), key_style));
            spans.push(Span::raw(format!(" {what} ")));
        }
    }
    frame.render_widget(Paragraph::new(Line::from(spans)), area);
}

/// The help overlay over the centre of `area`.
pub fn render_help(frame: &mut Frame, area: Rect) {
    let popup = centered(area, 90, KEYS.len() as u16 + 6);
    let mut lines: Vec<Line> = KEYS
        .iter()
        .map(|(key, _, long)| {
            Line::from(vec![
                Span::styled(
                    format!(" {key:>6}  "),
                    Style::new().add_modifier(Modifier::BOLD),
                ),
                Span::raw(*long),
            ])
        })
        .collect();
    lines.push(Line::raw(""));
    lines.push(Line::raw(
        " When the watched process exits, the last reading stays on screen until q.",
    ));
    lines.push(Line::raw(
        " Findings stay listed after they resolve, dimmed; charts cover the last 5 minutes.",
    ));
    frame.render_widget(Clear, popup);
    frame.render_widget(
        Paragraph::new(lines)
            .block(Block::bordered().title("tfwatch attach: keys"))
            .wrap(Wrap { trim: false }),
        popup,
    );
}

/// What a terminal too small for the layout shows instead.
pub fn render_too_small(frame: &mut Frame, area: Rect) {
    let text = vec![
        Line::styled(
            "terminal too small",
            Style::new().fg(Color::Yellow).add_modifier(Modifier::BOLD),
        ),
        Line::raw(format!(
            "{}×{}; needs {MIN_WIDTH}×{MIN_HEIGHT}",
            area.width, area.height
        )),
        Line::raw("enlarge it, or q to quit"),
    ];
    frame.render_widget(Clear, area);
    frame.render_widget(
        Paragraph::new(text).centered().wrap(Wrap { trim: true }),
        centered(area, area.width, 3),
    );
}
