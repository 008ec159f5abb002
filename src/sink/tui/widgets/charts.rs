use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Style};
use ratatui::symbols::Marker;
use ratatui::widgets::{Axis, Block, Chart as ChartWidget, Dataset, GraphType, Paragraph, Wrap};

use crate::sink::tui::view::{Chart, Charts};

/// Colours of a chart's series, in order.
const COLOURS: [Color; 4] = [Color::Green, Color::Red, Color::Yellow, Color::Gray];

/// Six small time-series charts in two rows over the last minutes.
pub fn render_charts(frame: &mut Frame, area: Rect, charts: &Charts) {
    let [top, bottom] = Layout::vertical([Constraint::Fill(1), Constraint::Fill(1)]).areas(area);
    let thirds = || {
        Layout::horizontal([
            Constraint::Ratio(1, 3),
            Constraint::Ratio(1, 3),
            Constraint::Ratio(1, 3),
        ])
    };
    let [a, b, c] = thirds().areas(top);
    let [d, e, f] = thirds().areas(bottom);
    let bounds = [charts.x_bounds.0, charts.x_bounds.1];
    render_chart(frame, a, &charts.threads, bounds);
    render_chart(frame, b, &charts.wait_ratio, bounds);
    render_chart(frame, c, &charts.cpu, bounds);
    render_chart(frame, d, &charts.memory, bounds);
    render_chart(frame, e, &charts.gpu, bounds);
    render_chart(frame, f, &charts.app, bounds);
}

fn render_chart(frame: &mut Frame, area: Rect, chart: &Chart, x_bounds: [f64; 2]) {
    let block = Block::bordered()
        .border_style(Style::new().fg(Color::DarkGray))
        .title(chart.title.as_str());
    if let Some(why) = &chart.unavailable {
        frame.render_widget(
            Paragraph::new(why.as_str())
                .style(Style::new().fg(Color::Yellow))
                .wrap(Wrap { trim: true })
                .block(block),
            area,
        );
        return;
    }
    let datasets = chart
        .series
        .iter()
        .enumerate()
        .map(|(i, s)| {
            Dataset::default()
                .name(s.name)
                .marker(Marker::Braille)
                .graph_type(GraphType::Line)
                .style(Style::new().fg(COLOURS[i % COLOURS.len()]))
                .data(&s.points)
        })
        .collect();
    let widget = ChartWidget::new(datasets)
        .block(block)
        .legend_position(None)
        .x_axis(Axis::default().bounds(x_bounds))
        .y_axis(Axis::default().bounds([0.0, chart.y_max * 1.05]));
    frame.render_widget(widget, area);
}
