//! The charts of the HTML report, drawn with plotters' SVG backend into strings. Each
//! chart has the same time axis, with the findings and alerts marked on it.

use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;

use super::{ChartData, Mark, Point};
use crate::model::Severity;
use crate::units::{format_bytes, format_number, format_seconds};

const WIDTH: u32 = 1160;
const HEIGHT: u32 = 250;

const GREEN: RGBColor = RGBColor(46, 139, 87);
const RED: RGBColor = RGBColor(200, 40, 40);
const ORANGE: RGBColor = RGBColor(230, 140, 20);
const BLUE: RGBColor = RGBColor(40, 100, 200);
const GREY: RGBColor = RGBColor(170, 170, 170);
const PURPLE: RGBColor = RGBColor(150, 110, 190);
const DARK: RGBColor = RGBColor(60, 60, 60);
const TEAL: RGBColor = RGBColor(0, 140, 150);

/// One chart of the page: its title, the SVG (or why there is none) and a line of the
/// figures that matter.
pub struct Chart {
    pub id: &'static str,
    pub title: &'static str,
    /// The SVG, or the reason the chart is not drawn ("no GPU data: …").
    pub svg: Result<String, String>,
    /// What each colour shows.
    pub legend: Vec<(&'static str, RGBColor)>,
    pub caption: String,
}

/// How a y axis is labelled.
#[derive(Debug, Clone, Copy)]
enum Unit {
    Count,
    Cpus,
    Ratio,
    Bytes,
    Seconds,
}

impl Unit {
    fn format(self, value: f64) -> String {
        match self {
            Unit::Count => format_number(value.round()),
            Unit::Cpus => format!("{value:.1}"),
            Unit::Ratio => format!("{value:.2}"),
            Unit::Bytes => format_bytes(value.max(0.0) as u64),
            Unit::Seconds => format_seconds(value),
        }
    }
}

/// Findings and alerts of one moment: one line on the axis, labelled with their numbers.
struct MarkGroup {
    elapsed_seconds: f64,
    severity: Severity,
    label: String,
}

/// Marks of the same sample share a line; numbers follow the order of [`ChartData::marks`].
fn mark_groups(marks: &[Mark]) -> Vec<MarkGroup> {
    let mut groups: Vec<MarkGroup> = Vec::new();
    for (index, mark) in marks.iter().enumerate() {
        let number = (index + 1).to_string();
        match groups
            .iter_mut()
            .find(|g| g.elapsed_seconds == mark.elapsed_seconds)
        {
            Some(group) => {
                group.severity = group.severity.max(mark.severity);
                group.label.push(',');
                group.label.push_str(&number);
            }
            None => groups.push(MarkGroup {
                elapsed_seconds: mark.elapsed_seconds,
                severity: mark.severity,
                label: number,
            }),
        }
    }
    groups
}

pub fn severity_color(severity: Severity) -> RGBColor {
    match severity {
        Severity::Error => RED,
        Severity::Warning => ORANGE,
        Severity::Info => BLUE,
    }
}

/// One series of a line chart.
struct Line {
    name: &'static str,
    color: RGBColor,
    points: Vec<(f64, f64)>,
}

impl Line {
    fn new(
        name: &'static str,
        color: RGBColor,
        points: &[Point],
        value: impl Fn(&Point) -> Option<f64>,
    ) -> Line {
        Line {
            name,
            color,
            points: points
                .iter()
                .filter_map(|p| value(p).map(|v| (p.elapsed_seconds, v)))
                .filter(|(x, y)| x.is_finite() && y.is_finite())
                .collect(),
        }
    }

    fn max(&self) -> f64 {
        self.points.iter().map(|(_, y)| *y).fold(0.0, f64::max)
    }
}

type Plot<'a, 'b> = ChartContext<'a, SVGBackend<'b>, Cartesian2d<RangedCoordf64, RangedCoordf64>>;

fn failed(err: impl std::fmt::Display) -> String {
    format!("the chart could not be drawn: {err}")
}

/// The time axis: the samples' span, never empty.
fn x_range(data: &ChartData) -> (f64, f64) {
    let xs = data
        .points()
        .iter()
        .map(|p| p.elapsed_seconds)
        .chain(data.marks().iter().map(|m| m.elapsed_seconds))
        .filter(|x| x.is_finite());
    let (low, high) = xs.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), x| {
        (lo.min(x), hi.max(x))
    });
    if !low.is_finite() || !high.is_finite() {
        return (0.0, 1.0);
    }
    if high - low < 1e-3 {
        // One moment: a second around it, never before the watch began.
        let start = (low - 0.5).max(0.0).min(low);
        return (start, start + 1.0);
    }
    // A little room on the right, so a mark at the last sample shows its label.
    (low, high + (high - low) * 0.02)
}

/// A y axis from 0 to a little above `max`; counts reach at least 5, so the axis labels
/// are whole numbers.
fn y_top(max: f64, unit: Unit) -> f64 {
    let top = if max.is_finite() && max > 0.0 {
        max * 1.1
    } else {
        1.0
    };
    match unit {
        Unit::Count => top.max(5.0),
        _ => top,
    }
}

/// Draws one chart: the frame, `body` and the marks (the legend is in the page).
fn draw(
    data: &ChartData,
    unit: Unit,
    y_max: f64,
    body: impl FnOnce(&mut Plot) -> Result<(), String>,
) -> Result<String, String> {
    let (x0, x1) = x_range(data);
    let top = y_top(y_max, unit);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, HEIGHT)).into_drawing_area();
        root.fill(&WHITE).map_err(failed)?;
        let mut chart = ChartBuilder::on(&root)
            .margin_left(8)
            .margin_right(24)
            .margin_top(18)
            .margin_bottom(6)
            .x_label_area_size(40)
            .y_label_area_size(80)
            .build_cartesian_2d(x0..x1, 0.0..top)
            .map_err(failed)?;
        chart
            .configure_mesh()
            .x_desc("seconds since the watch began")
            .x_label_formatter(&|x| format_number((x * 1000.0).round() / 1000.0))
            .y_label_formatter(&|y| unit.format(*y))
            .x_labels(12)
            .y_labels(6)
            .light_line_style(RGBColor(238, 238, 238))
            .bold_line_style(RGBColor(215, 215, 215))
            .label_style(("sans-serif", 13))
            .draw()
            .map_err(failed)?;
        body(&mut chart)?;
        for group in mark_groups(data.marks()) {
            let color = severity_color(group.severity);
            let x = group.elapsed_seconds;
            chart
                .draw_series(std::iter::once(PathElement::new(
                    vec![(x, 0.0), (x, top)],
                    color.stroke_width(2),
                )))
                .map_err(failed)?;
            chart
                .draw_series(std::iter::once(Text::new(
                    group.label,
                    (x, top),
                    ("sans-serif", 13).into_font().color(&color).pos(
                        plotters::style::text_anchor::Pos::new(
                            plotters::style::text_anchor::HPos::Left,
                            plotters::style::text_anchor::VPos::Bottom,
                        ),
                    ),
                )))
                .map_err(failed)?;
        }
        root.present().map_err(failed)?;
    }
    Ok(svg)
}

/// A chart of lines; `None` when no line has a point (then nothing is drawn).
fn legend_of(lines: &[Line]) -> Vec<(&'static str, RGBColor)> {
    lines
        .iter()
        .filter(|l| !l.points.is_empty())
        .map(|l| (l.name, l.color))
        .collect()
}

fn line_chart(data: &ChartData, unit: Unit, lines: Vec<Line>) -> Option<Result<String, String>> {
    if lines.iter().all(|l| l.points.is_empty()) {
        return None;
    }
    let y_max = lines.iter().map(Line::max).fold(0.0, f64::max);
    Some(draw(data, unit, y_max, |chart| {
        for line in lines.into_iter().filter(|l| !l.points.is_empty()) {
            let color = line.color;
            let single = line.points.len() == 1;
            chart
                .draw_series(LineSeries::new(line.points.clone(), color.stroke_width(2)))
                .map_err(failed)?;
            if single {
                // One sample draws no line: a dot shows it.
                chart
                    .draw_series(
                        line.points
                            .iter()
                            .map(|&(x, y)| Circle::new((x, y), 4, color.filled())),
                    )
                    .map_err(failed)?;
            }
        }
        Ok(())
    }))
}

/// A layer of the threads chart: its name, colour and count.
type Layer = (&'static str, RGBColor, fn(&Point) -> u32);

/// The stacked layers of the threads chart, bottom first.
const STATE_LAYERS: [Layer; 6] = [
    ("running", GREEN, |p| p.running),
    ("waiting on a lock", RED, |p| p.lock_waiters),
    ("in disk I/O", ORANGE, |p| p.io_waiters),
    ("waiting for input", BLUE, |p| p.input_waiters),
    ("sleeping", GREY, |p| p.sleepers),
    ("unknown", PURPLE, |p| p.unknown_waiters),
];

fn threads_chart(data: &ChartData) -> Chart {
    let points = data.points();
    let total = |p: &Point| STATE_LAYERS.iter().map(|(_, _, f)| f(p)).sum::<u32>();
    let peak = points.iter().map(total).max().unwrap_or(0);
    let peak_lock = points.iter().map(|p| p.lock_waiters).max().unwrap_or(0);
    let caption = match points.last() {
        Some(last) => format!(
            "last sample: {} thread(s), {} running, {} waiting on a lock; peak {} thread(s), {} waiting on a lock",
            total(last),
            last.running,
            last.lock_waiters,
            peak,
            peak_lock
        ),
        None => String::new(),
    };
    let svg = if points.is_empty() {
        Err("no samples".to_string())
    } else {
        draw(data, Unit::Count, f64::from(peak), |chart| {
            // Each layer is drawn from 0 up to its cumulative top, the highest first, so
            // the lower layers cover the higher ones: a stack.
            for depth in (0..STATE_LAYERS.len()).rev() {
                let (_, color, _) = STATE_LAYERS[depth];
                let tops: Vec<(f64, f64)> = points
                    .iter()
                    .map(|p| {
                        let sum: u32 = STATE_LAYERS[..=depth].iter().map(|(_, _, f)| f(p)).sum();
                        (p.elapsed_seconds, f64::from(sum))
                    })
                    .collect();
                if let [(x, top)] = tops[..] {
                    // One sample draws no area: a bar shows it.
                    let (x0, x1) = x_range(data);
                    let half = (x1 - x0) / 100.0;
                    chart
                        .draw_series(std::iter::once(Rectangle::new(
                            [(x - half, 0.0), (x + half, top)],
                            color.filled(),
                        )))
                        .map_err(failed)?;
                } else {
                    chart
                        .draw_series(AreaSeries::new(tops, 0.0, color).border_style(color))
                        .map_err(failed)?;
                }
            }
            Ok(())
        })
    };
    Chart {
        legend: STATE_LAYERS
            .iter()
            .rev()
            .map(|(name, color, _)| (*name, *color))
            .collect(),
        id: "threads",
        title: "Threads by state",
        svg,
        caption,
    }
}

fn cpu_chart(data: &ChartData) -> Chart {
    let points = data.points();
    let lines = vec![
        Line::new("CPUs used", GREEN, points, |p| p.cpu_used),
        Line::new("usable CPUs", DARK, points, |p| Some(p.usable_cpus)),
    ];
    let peak = lines[0].max();
    let usable = points.last().map_or(0.0, |p| p.usable_cpus);
    let legend = legend_of(&lines);
    Chart {
        legend,
        id: "cpu",
        title: "CPU used against usable CPUs",
        svg: line_chart(data, Unit::Cpus, lines).unwrap_or_else(|| Err("no samples".into())),
        caption: format!(
            "peak {peak:.2} CPU(s) used of {} usable (the smallest of online CPUs, affinity and quota)",
            format_number(usable)
        ),
    }
}

fn wait_chart(data: &ChartData) -> Chart {
    let points = data.points();
    let lines = vec![
        Line::new("run-queue wait per second run", ORANGE, points, |p| {
            p.runqueue_wait_ratio
        }),
        Line::new("throttled share of quota periods", RED, points, |p| {
            p.throttled_ratio
        }),
    ];
    let wait_peak = lines[0].max();
    let throttled = if lines[1].points.is_empty() {
        "no CPU quota throttling read (no quota, or cpu.stat unreadable)".to_string()
    } else {
        format!("peak throttled share {:.2}", lines[1].max())
    };
    let caption = if lines[0].points.is_empty() {
        format!(
            "run-queue wait ratio {}; {throttled}",
            crate::model::RATIO_NOT_COMPUTED
        )
    } else {
        format!("peak run-queue wait ratio {wait_peak:.2}; {throttled}")
    };
    let legend = legend_of(&lines);
    let svg = line_chart(data, Unit::Ratio, lines).unwrap_or_else(|| {
        Err(format!(
            "no data: the run-queue wait ratio is {} and {throttled}",
            crate::model::RATIO_NOT_COMPUTED
        ))
    });
    Chart {
        id: "wait",
        title: "Run-queue wait and throttling",
        caption: if svg.is_ok() { caption } else { String::new() },
        svg,
        legend,
    }
}

fn memory_chart(data: &ChartData) -> Chart {
    let points = data.points();
    let lines = vec![
        Line::new("RSS of the tree", BLUE, points, |p| Some(p.rss_bytes)),
        Line::new("memory limit", RED, points, |p| p.memory_limit_bytes),
    ];
    let peak = lines[0].max();
    let limit = points.last().and_then(|p| p.memory_limit_bytes);
    let caption = match limit {
        Some(limit) if limit > 0.0 => format!(
            "peak RSS {} of a {} limit ({:.0} %)",
            format_bytes(peak as u64),
            format_bytes(limit as u64),
            100.0 * peak / limit
        ),
        _ => format!(
            "peak RSS {}; no memory limit read",
            format_bytes(peak as u64)
        ),
    };
    let legend = legend_of(&lines);
    Chart {
        legend,
        id: "memory",
        title: "RSS against the memory limit",
        svg: line_chart(data, Unit::Bytes, lines).unwrap_or_else(|| Err("no samples".into())),
        caption,
    }
}

fn gpu_chart(data: &ChartData) -> Chart {
    let points = data.points();
    let lines = vec![
        Line::new("GPU memory used", TEAL, points, |p| p.gpu_used_bytes),
        Line::new("GPU memory in total", DARK, points, |p| p.gpu_total_bytes),
    ];
    let peak = lines[0].max();
    let why = data
        .gpu_note
        .clone()
        .unwrap_or_else(|| "the GPU source was off or found no GPU".to_string());
    let legend = legend_of(&lines);
    let svg =
        line_chart(data, Unit::Bytes, lines).unwrap_or_else(|| Err(format!("no GPU data: {why}")));
    let caption = if svg.is_ok() {
        format!(
            "peak {} used over the machine's GPUs",
            format_bytes(peak as u64)
        )
    } else {
        String::new()
    };
    Chart {
        legend,
        id: "gpu",
        title: "GPU memory",
        svg,
        caption,
    }
}

fn app_note(data: &ChartData) -> String {
    match &data.app_note {
        Some(why) => format!("no application metrics: {why}"),
        None => "no application metrics scraped (see --metrics-url)".to_string(),
    }
}

fn queue_chart(data: &ChartData) -> Chart {
    let points = data.points();
    let lines = vec![Line::new("queue depth", PURPLE, points, |p| p.queue_depth)];
    let peak = lines[0].max();
    let legend = legend_of(&lines);
    let svg = line_chart(data, Unit::Count, lines).unwrap_or_else(|| Err(app_note(data)));
    Chart {
        legend,
        id: "queue",
        title: "Queue depth",
        caption: if svg.is_ok() {
            format!("peak queue depth {}", format_number(peak))
        } else {
            String::new()
        },
        svg,
    }
}

fn latency_chart(data: &ChartData) -> Chart {
    let points = data.points();
    let lines = vec![
        Line::new("latency p50", BLUE, points, |p| p.latency_p50_seconds),
        Line::new("latency p99", RED, points, |p| p.latency_p99_seconds),
    ];
    let peak = lines[1].max().max(lines[0].max());
    let legend = legend_of(&lines);
    let svg = line_chart(data, Unit::Seconds, lines).unwrap_or_else(|| Err(app_note(data)));
    Chart {
        legend,
        id: "latency",
        title: "Latency",
        caption: if svg.is_ok() {
            format!("peak latency {}", format_seconds(peak))
        } else {
            String::new()
        },
        svg,
    }
}

/// Every chart of the page, in order.
pub fn all(data: &ChartData) -> Vec<Chart> {
    vec![
        threads_chart(data),
        cpu_chart(data),
        wait_chart(data),
        memory_chart(data),
        gpu_chart(data),
        queue_chart(data),
        latency_chart(data),
    ]
}
