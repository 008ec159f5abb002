//! The dashboard of `tfwatch node` on a terminal: the node view (one row per job with
//! its CPU, runnable threads, run-queue wait, findings and a CPU sparkline); Enter opens
//! the job view, the same screen `attach` shows for that job's watch; Esc goes back.
//!
//! The node loop feeds it each job's sample ([`NodeDashboard::job_sample`]) and the
//! jobs that end; it draws and reads keys while the loop waits for the next scan
//! ([`NodeDashboard::idle`]).

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use anyhow::{Context, Result};
use crossterm::event::{Event as TermEvent, KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use ratatui::Frame;
use ratatui::Terminal;
use ratatui::backend::Backend;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Cell, Paragraph, Row, Table};

use crate::engine::{Event, Watch};
use crate::model::jobs::JobLabels;
use crate::model::{Finding, Severity};

use super::app::{Action, AppState, handle_key};
use super::run::{TermInput, write_snapshot};
use super::view::{Data, Journal, ViewModel};
use super::widgets::{render_screen, severity_style};

/// A job's watch by its labels, from the node loop.
pub type WatchOf<'w> = &'w dyn Fn(&JobLabels) -> Option<&'w Watch>;

/// Points of CPU history each job's sparkline keeps (one per scan).
pub const SPARK_POINTS: usize = 30;

/// A job's figures over the newest interval, as the node's judgement read them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct JobFigures {
    pub pids: usize,
    pub threads: usize,
    /// CPUs used.
    pub cpus_used: f64,
    /// Threads wanting a CPU on average (running or waiting for one).
    pub runnable: f64,
    /// CPUs' worth of run-queue wait.
    pub waiting: f64,
    /// The job's own CPU quota, where its cgroup sets one.
    pub quota: Option<f64>,
}

/// One row of the node view.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct JobRow {
    pub figures: JobFigures,
    /// Active findings: severity and kind, worst first.
    pub findings: Vec<(Severity, String)>,
    pub cpu_history: VecDeque<f64>,
}

/// Which screen is shown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Screen {
    Jobs,
    Job(JobLabels),
}

/// The node dashboard.
pub struct NodeDashboard<B: Backend, I: TermInput> {
    terminal: Terminal<B>,
    input: I,
    rows: BTreeMap<JobLabels, JobRow>,
    journals: BTreeMap<JobLabels, Journal>,
    selected: usize,
    screen: Screen,
    /// The open job's captured data and the user's choices in its view.
    job_data: Data,
    job_state: AppState,
    node_finding: Option<(Severity, String)>,
    online_cpus: f64,
    status: Option<String>,
    dirty: bool,
}

impl<B: Backend, I: TermInput> NodeDashboard<B, I>
where
    B::Error: Send + Sync + 'static,
{
    pub fn new(terminal: Terminal<B>, input: I, online_cpus: f64) -> Self {
        NodeDashboard {
            terminal,
            input,
            rows: BTreeMap::new(),
            journals: BTreeMap::new(),
            selected: 0,
            screen: Screen::Jobs,
            job_data: Data::default(),
            job_state: AppState::default(),
            node_finding: None,
            online_cpus,
            status: None,
            dirty: true,
        }
    }

    pub fn terminal(&self) -> &Terminal<B> {
        &self.terminal
    }

    pub fn screen(&self) -> &Screen {
        &self.screen
    }

    fn capture(&mut self, labels: &JobLabels, watch: &Watch) {
        let journal = self.journals.entry(labels.clone()).or_default();
        self.job_data = Data::capture(watch, journal);
        self.job_state.process_count = self.job_data.processes.len();
    }

    /// Applies one key; `true` to quit.
    fn key(&mut self, key: KeyEvent, watch_of: WatchOf<'_>) -> bool {
        if key.kind == KeyEventKind::Release {
            return false;
        }
        if key.modifiers.contains(KeyModifiers::CONTROL) && key.code == KeyCode::Char('c') {
            return true;
        }
        self.dirty = true;
        match self.screen.clone() {
            Screen::Jobs => match key.code {
                KeyCode::Char('q') => return true,
                KeyCode::Down | KeyCode::Char('j') => {
                    self.selected = (self.selected + 1).min(self.rows.len().saturating_sub(1));
                }
                KeyCode::Up | KeyCode::Char('k') => self.selected = self.selected.saturating_sub(1),
                KeyCode::Enter => {
                    if let Some(labels) = self.rows.keys().nth(self.selected).cloned() {
                        self.job_state = AppState::default();
                        match watch_of(&labels) {
                            Some(watch) => self.capture(&labels, watch),
                            None => self.job_data = Data::default(),
                        }
                        self.status = None;
                        self.screen = Screen::Job(labels);
                    }
                }
                _ => self.dirty = false,
            },
            Screen::Job(labels) => {
                let back = key.code == KeyCode::Esc
                    && !self.job_state.editing_filter
                    && !self.job_state.show_help
                    && self.job_state.filter.is_empty();
                if back {
                    self.screen = Screen::Jobs;
                    self.status = None;
                    return false;
                }
                match handle_key(&mut self.job_state, key) {
                    Action::Quit => return true,
                    Action::None => self.dirty = false,
                    Action::Redraw => {
                        if !self.job_state.paused
                            && let Some(watch) = watch_of(&labels)
                        {
                            self.capture(&labels, watch);
                        }
                    }
                    Action::Snapshot => {
                        let written =
                            watch_of(&labels)
                                .context("the job has ended")
                                .and_then(|watch| {
                                    let root = watch.timeline.latest().map_or(0, |s| s.root_pid);
                                    write_snapshot(watch, root, std::path::Path::new("."))
                                });
                        self.status = Some(match written {
                            Ok(path) => format!("snapshot written to {}", path.display()),
                            Err(e) => format!("snapshot failed: {e:#}"),
                        });
                    }
                }
            }
        }
        false
    }

    fn draw(&mut self) -> Result<()> {
        if !self.dirty {
            return Ok(());
        }
        match &self.screen {
            Screen::Jobs => {
                let view = NodeViewModel {
                    rows: &self.rows,
                    selected: self.selected,
                    node_finding: self.node_finding.as_ref(),
                    online_cpus: self.online_cpus,
                    status: self.status.as_deref(),
                };
                self.terminal
                    .draw(|frame| render_jobs(frame, &view))
                    .context("cannot draw the node view")?;
            }
            Screen::Job(labels) => {
                let status = match &self.status {
                    Some(status) => {
                        format!("job {} · Esc: back to the jobs · {status}", labels.job)
                    }
                    None => format!("job {} · Esc: back to the jobs", labels.job),
                };
                let view = ViewModel::build(&self.job_data, &self.job_state, Some(&status));
                self.job_state.scroll = view.threads.scroll;
                self.terminal
                    .draw(|frame| render_screen(frame, &view))
                    .context("cannot draw the job view")?;
            }
        }
        self.dirty = false;
        Ok(())
    }
}

/// What the node view shows.
pub struct NodeViewModel<'a> {
    pub rows: &'a BTreeMap<JobLabels, JobRow>,
    pub selected: usize,
    pub node_finding: Option<&'a (Severity, String)>,
    pub online_cpus: f64,
    pub status: Option<&'a str>,
}

/// `values` as a line of block characters, scaled to `max` (at least 1).
pub fn sparkline(values: impl IntoIterator<Item = f64>, max: f64) -> String {
    const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
    let max = max.max(1.0);
    values
        .into_iter()
        .map(|v| {
            let at = ((v.max(0.0) / max) * 7.0).round() as usize;
            BARS[at.min(7)]
        })
        .collect()
}

/// Draws the node view: a header with the node's finding, the jobs table, the keys.
pub fn render_jobs(frame: &mut Frame, view: &NodeViewModel) {
    let area = frame.area();
    let [header, table, footer] = Layout::vertical([
        Constraint::Length(3),
        Constraint::Fill(1),
        Constraint::Length(1),
    ])
    .areas(area);
    let threads: usize = view.rows.values().map(|r| r.figures.threads).sum();
    let wanted: f64 = view.rows.values().map(|r| r.figures.runnable).sum();
    let title = format!(
        "tfwatch node · {} jobs · {threads} threads · {wanted:.1} runnable on {} CPUs",
        view.rows.len(),
        view.online_cpus
    );
    let node_line = match view.node_finding {
        Some((severity, text)) => Line::from(Span::styled(
            format!("node: {text}"),
            severity_style(*severity),
        )),
        None => Line::from("node: no finding"),
    };
    frame.render_widget(
        Paragraph::new(vec![Line::from(title), node_line])
            .block(Block::default().borders(Borders::BOTTOM)),
        header,
    );
    render_table(frame, table, view);
    let keys = "↑/↓ select · Enter: open the job · q quit";
    let footer_text = match view.status {
        Some(status) => format!("{keys} · {status}"),
        None => keys.to_string(),
    };
    frame.render_widget(
        Paragraph::new(footer_text).style(Style::new().add_modifier(Modifier::DIM)),
        footer,
    );
}

fn render_table(frame: &mut Frame, area: Rect, view: &NodeViewModel) {
    let header = Row::new([
        "JOB",
        "PROCS",
        "THREADS",
        "CPUs",
        "RUNNABLE",
        "WAIT",
        "CPU (30 scans)",
        "FINDINGS",
    ])
    .style(Style::new().add_modifier(Modifier::BOLD));
    let max_cpu = view
        .rows
        .values()
        .flat_map(|r| r.cpu_history.iter().copied())
        .fold(1.0_f64, f64::max);
    let rows = view.rows.iter().enumerate().map(|(at, (labels, row))| {
        let f = &row.figures;
        let cpus = match f.quota {
            Some(quota) => format!("{:.2}/{quota:.1}", f.cpus_used),
            None => format!("{:.2}", f.cpus_used),
        };
        // Worst first; the count first, as the kinds may not all fit.
        let findings = if row.findings.is_empty() {
            Line::from("-")
        } else {
            let mut spans = vec![Span::raw(format!("{}:", row.findings.len()))];
            for (severity, kind) in &row.findings {
                spans.push(Span::raw(" "));
                spans.push(Span::styled(kind.clone(), severity_style(*severity)));
            }
            Line::from(spans)
        };
        let style = if at == view.selected {
            Style::new().add_modifier(Modifier::REVERSED)
        } else {
            Style::new()
        };
        Row::new([
            Cell::from(labels.job.clone()),
            Cell::from(f.pids.to_string()),
            Cell::from(f.threads.to_string()),
            Cell::from(cpus),
            Cell::from(format!("{:.1}", f.runnable)),
            Cell::from(format!("{:.2}", f.waiting)),
            Cell::from(sparkline(row.cpu_history.iter().copied(), max_cpu)),
            Cell::from(findings),
        ])
        .style(style)
    });
    let widths = [
        Constraint::Fill(1),
        Constraint::Length(5),
        Constraint::Length(7),
        Constraint::Length(9),
        Constraint::Length(8),
        Constraint::Length(6),
        Constraint::Length(SPARK_POINTS as u16),
        Constraint::Fill(2),
    ];
    let table = Table::new(rows, widths).header(header).column_spacing(1);
    if view.rows.is_empty() {
        frame.render_widget(
            Paragraph::new("no jobs match yet (the node is scanned every interval)"),
            area,
        );
    } else {
        frame.render_widget(table, area);
    }
}

/// The node loop's view of a screen (the dashboard; a test's stand-in).
pub trait NodeScreen {
    /// One sample of job `labels`: its events, its watch after them and its figures.
    fn job_sample(
        &mut self,
        labels: &JobLabels,
        watch: &Watch,
        events: &[Event],
        figures: JobFigures,
    );
    /// Job `labels` ended.
    fn job_ended(&mut self, labels: &JobLabels);
    /// The node's own finding after this scan, if any.
    fn node_finding(&mut self, finding: Option<&Finding>);
    /// Draws, then waits up to `wait` for a key; `true` when the user quit.
    fn idle(&mut self, wait: Duration, watch_of: WatchOf<'_>) -> Result<bool>;
}

impl<B: Backend, I: TermInput> NodeScreen for NodeDashboard<B, I>
where
    B::Error: Send + Sync + 'static,
{
    /// One sample of job `labels`: its events, its watch after them and its figures.
    fn job_sample(
        &mut self,
        labels: &JobLabels,
        watch: &Watch,
        events: &[Event],
        figures: JobFigures,
    ) {
        let journal = self.journals.entry(labels.clone()).or_default();
        journal.record(events);
        journal.take_explanations(watch);
        let row = self.rows.entry(labels.clone()).or_default();
        row.cpu_history.push_back(figures.cpus_used);
        while row.cpu_history.len() > SPARK_POINTS {
            row.cpu_history.pop_front();
        }
        row.figures = figures;
        let mut findings: Vec<(Severity, String)> = watch
            .active_findings()
            .iter()
            .map(|f| (f.severity, f.kind.as_str().to_string()))
            .collect();
        findings.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
        row.findings = findings;
        if self.screen == Screen::Job(labels.clone()) && !self.job_state.paused {
            self.capture(labels, watch);
        }
        self.dirty = true;
    }

    /// Job `labels` ended: its row goes; its open view returns to the jobs.
    fn job_ended(&mut self, labels: &JobLabels) {
        self.rows.remove(labels);
        self.journals.remove(labels);
        if self.screen == Screen::Job(labels.clone()) {
            self.screen = Screen::Jobs;
            self.status = Some(format!("job {} ended", labels.job));
        }
        self.selected = self.selected.min(self.rows.len().saturating_sub(1));
        self.dirty = true;
    }

    /// The node's own finding after this scan, if any.
    fn node_finding(&mut self, finding: Option<&Finding>) {
        let now = finding.map(|f| (f.severity, format!("{}: {}", f.kind.as_str(), f.summary)));
        if now != self.node_finding {
            self.node_finding = now;
            self.dirty = true;
        }
    }

    /// Draws if something changed, then waits up to `wait` for a key and applies it;
    /// `true` when the user quit. `watch_of` gives a job's watch (to open its view or
    /// write its report).
    fn idle(&mut self, wait: Duration, watch_of: WatchOf<'_>) -> Result<bool> {
        self.draw()?;
        let Some(event) = self.input.poll(wait).context("cannot read the terminal")? else {
            return Ok(false);
        };
        match event {
            TermEvent::Key(key) if self.key(key, watch_of) => return Ok(true),
            TermEvent::Resize(..) => self.dirty = true,
            _ => {}
        }
        Ok(false)
    }
}
