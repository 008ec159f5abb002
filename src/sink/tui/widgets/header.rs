use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;

use crate::sink::tui::view::Header;
use crate::units::format_seconds;

/// Process, command line, ages, CPU budget, GPUs, metrics, runtimes and what could not
/// be read.
pub fn render_header(frame: &mut Frame, area: Rect, header: &Header, waiting: bool) {
    let bold = Style::new().add_modifier(Modifier::BOLD);
    let dim = Style::new().fg(Color::DarkGray);
    if waiting {
        let line = Line::from(vec![
            Span::styled(" tfwatch ", bold.fg(Color::Black).bg(Color::Cyan)),
            Span::raw(format!(
                " pid {}: waiting for the first sample…",
                header.pid
            )),
        ]);
        frame.render_widget(Paragraph::new(line), area);
        return;
    }
    let title = Line::from(vec![
        Span::styled(" tfwatch ", bold.fg(Color::Black).bg(Color::Cyan)),
        Span::styled(format!(" pid {} {}", header.pid, header.comm), bold),
        Span::raw(format!(
            "  up {}  watched {}  {} process{}, {} threads",
            header
                .uptime_seconds
                .map_or("?".to_string(), format_seconds),
            format_seconds(header.watched_seconds),
            header.processes,
            if header.processes == 1 { "" } else { "es" },
            header.threads
        )),
    ]);
    let cmd = Line::from(vec![
        Span::styled(" cmd ", dim),
        Span::raw(if header.cmdline.is_empty() {
            "(no command line)".to_string()
        } else {
            header.cmdline.clone()
        }),
    ]);
    let unavailable_style = |text: &str| {
        if text.contains("unavailable") || text.contains("not configured") {
            Style::new().fg(Color::Yellow)
        } else {
            Style::new()
        }
    };
    let budget = Line::from(vec![
        Span::raw(format!(" {}", header.cpus)),
        Span::styled(" · ", dim),
        Span::styled(header.metrics.clone(), unavailable_style(&header.metrics)),
    ]);
    let gpu = Line::styled(format!(" {}", header.gpu), unavailable_style(&header.gpu));
    let runtimes = Line::from(format!(" {}", header.runtimes));
    let unavailable = if header.unavailable.is_empty() {
        Line::styled(" all sources readable", dim)
    } else {
        Line::from(vec![
            Span::styled(" unavailable: ", Style::new().fg(Color::Yellow)),
            Span::raw(header.unavailable.join("; ")),
        ])
    };
    frame.render_widget(
        Paragraph::new(vec![title, cmd, budget, gpu, runtimes, unavailable]),
        area,
    );
}
