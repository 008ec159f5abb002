//! The dashboard's view model: plain values built from the watch, and the only thing the
//! widgets see.
//!
//! Two steps: [`Data::capture`] reads the watch and the [`Journal`] once per sample (and
//! not while paused); [`ViewModel::build`] applies the user's choices — process, sort,
//! filter, grouping — to it on every draw.

mod capture;
mod journal;

use std::collections::BTreeMap;

use super::app::{AppState, SortKey};

pub use journal::{Journal, JournalEntry};

/// Seconds of history the charts show.
pub const CHART_SECONDS: f64 = 300.0;

/// The header lines.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Header {
    pub pid: i32,
    pub comm: String,
    pub cmdline: String,
    /// Age of the root process.
    pub uptime_seconds: Option<f64>,
    pub watched_seconds: f64,
    pub processes: usize,
    pub threads: usize,
    /// "usable 4 = min(online 8, affinity 8, quota 4.0)".
    pub cpus: String,
    /// Loaded thread runtimes, their pools and settings.
    pub runtimes: String,
    /// GPUs, or "GPU: unavailable (why)".
    pub gpu: String,
    /// The scraped endpoint, or "metrics: not configured".
    pub metrics: String,
    /// Sources that could not be read, with how to fix it.
    pub unavailable: Vec<String>,
}

/// One line of a chart.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Series {
    pub name: &'static str,
    pub points: Vec<(f64, f64)>,
}

/// One small chart: a title carrying the current figures, its series, and why it is
/// empty when it is.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Chart {
    pub title: String,
    pub series: Vec<Series>,
    pub y_max: f64,
    pub unavailable: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Charts {
    /// Elapsed seconds at the left and right edges.
    pub x_bounds: (f64, f64),
    pub threads: Chart,
    pub wait_ratio: Chart,
    pub cpu: Chart,
    pub memory: Chart,
    pub gpu: Chart,
    pub app: Chart,
}

/// One row of the thread table: a thread, or a group of threads with one name.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ThreadRow {
    /// The tid, or for a group the lowest tid.
    pub tid: i32,
    pub name: String,
    /// "running", "lock", "io", … (for a group: the commonest, with "+" when mixed).
    pub state: String,
    pub cpu_percent: Option<f64>,
    pub wait_percent: Option<f64>,
    pub switches_per_second: Option<f64>,
    /// The wait channel, else the system call, else "-".
    pub wchan: String,
    /// Threads in the row (1 unless grouped).
    pub count: usize,
}

/// A process of the tree and its threads, as captured.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProcessData {
    pub pid: i32,
    pub ppid: i32,
    pub comm: String,
    pub state: char,
    pub depth: usize,
    pub rss_bytes: u64,
    pub cpu_percent: Option<f64>,
    pub threads: Vec<ThreadRow>,
}

/// What a sample gave, before the user's choices apply.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Data {
    pub header: Header,
    pub charts: Charts,
    /// Newest first.
    pub findings: Vec<JournalEntry>,
    /// Tree order.
    pub processes: Vec<ProcessData>,
}

/// A figure without trailing zeros: `4` → "4", `1.5` → "1.5".
pub fn short_number(value: f64) -> String {
    if value.fract() == 0.0 && value.abs() < 1e15 {
        format!("{value:.0}")
    } else {
        format!("{value:.2}")
            .trim_end_matches('0')
            .trim_end_matches('.')
            .to_string()
    }
}

/// The thread table as shown.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ThreadTable {
    /// "pid 4242 (python3): 12 of 40 threads".
    pub title: String,
    pub sort: SortKey,
    pub filter: String,
    pub editing_filter: bool,
    pub grouped: bool,
    /// Filtered, grouped and sorted; the renderer shows those from `scroll` on.
    pub rows: Vec<ThreadRow>,
    pub scroll: usize,
}

/// One line of the process tree.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TreeRow {
    pub depth: usize,
    pub pid: i32,
    pub comm: String,
    pub state: char,
    pub threads: usize,
    pub rss_bytes: u64,
    pub cpu_percent: Option<f64>,
    pub selected: bool,
}

/// The bottom line.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Footer {
    /// A message from the last action or the end of the watch ("snapshot written to …").
    pub status: Option<String>,
    pub paused: bool,
    /// The filter being typed.
    pub filter_prompt: Option<String>,
}

/// Everything one frame shows.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ViewModel {
    pub header: Header,
    pub charts: Charts,
    pub findings: Vec<JournalEntry>,
    pub threads: ThreadTable,
    pub tree: Vec<TreeRow>,
    pub footer: Footer,
    pub help: bool,
    /// Before the first sample arrives.
    pub waiting: bool,
}

impl ViewModel {
    pub fn build(data: &Data, state: &AppState, status: Option<&str>) -> ViewModel {
        let selected = state
            .selected_process
            .min(data.processes.len().saturating_sub(1));
        let threads = match data.processes.get(selected) {
            Some(process) => thread_table(process, state),
            None => ThreadTable::default(),
        };
        ViewModel {
            header: data.header.clone(),
            charts: data.charts.clone(),
            findings: data.findings.clone(),
            threads,
            tree: data
                .processes
                .iter()
                .enumerate()
                .map(|(i, p)| TreeRow {
                    depth: p.depth,
                    pid: p.pid,
                    comm: p.comm.clone(),
                    state: p.state,
                    threads: p.threads.len(),
                    rss_bytes: p.rss_bytes,
                    cpu_percent: p.cpu_percent,
                    selected: i == selected,
                })
                .collect(),
            footer: Footer {
                status: status.map(str::to_string),
                paused: state.paused,
                filter_prompt: state.editing_filter.then(|| state.filter.clone()),
            },
            help: state.show_help,
            waiting: data.processes.is_empty(),
        }
    }
}

fn thread_table(process: &ProcessData, state: &AppState) -> ThreadTable {
    let needle = state.filter.to_lowercase();
    let matches = |t: &&ThreadRow| {
        needle.is_empty()
            || t.name.to_lowercase().contains(&needle)
            || t.tid.to_string().contains(&needle)
            || t.state.contains(&needle)
            || t.wchan.to_lowercase().contains(&needle)
    };
    let shown: Vec<&ThreadRow> = process.threads.iter().filter(matches).collect();
    let shown_count = shown.len();
    let mut rows: Vec<ThreadRow> = if state.group_by_name {
        group_by_name(&shown)
    } else {
        shown.into_iter().cloned().collect()
    };
    sort_rows(&mut rows, state.sort);
    let total = process.threads.len();
    let mut title = format!(
        "threads of pid {} ({}): {}",
        process.pid,
        process.comm,
        if shown_count == total {
            format!("{total}")
        } else {
            format!("{shown_count} of {total}")
        }
    );
    if state.group_by_name {
        title.push_str(&format!(" in {} names", rows.len()));
    }
    ThreadTable {
        title,
        sort: state.sort,
        filter: state.filter.clone(),
        editing_filter: state.editing_filter,
        grouped: state.group_by_name,
        scroll: state.scroll.min(rows.len().saturating_sub(1)),
        rows,
    }
}

fn group_by_name(threads: &[&ThreadRow]) -> Vec<ThreadRow> {
    let mut groups: BTreeMap<&str, Vec<&ThreadRow>> = BTreeMap::new();
    for t in threads {
        groups.entry(t.name.as_str()).or_default().push(t);
    }
    groups
        .into_iter()
        .map(|(name, members)| {
            let sum = |f: fn(&ThreadRow) -> Option<f64>| {
                members
                    .iter()
                    .filter_map(|t| f(t))
                    .fold(None, |acc, v| Some(acc.unwrap_or(0.0) + v))
            };
            ThreadRow {
                tid: members.iter().map(|t| t.tid).min().unwrap_or(0),
                name: name.to_string(),
                state: commonest(members.iter().map(|t| t.state.as_str())),
                cpu_percent: sum(|t| t.cpu_percent),
                wait_percent: sum(|t| t.wait_percent),
                switches_per_second: sum(|t| t.switches_per_second),
                wchan: commonest(members.iter().map(|t| t.wchan.as_str())),
                count: members.len(),
            }
        })
        .collect()
}

/// The commonest value, with "+" when the values differ.
fn commonest<'a>(values: impl Iterator<Item = &'a str>) -> String {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for v in values {
        *counts.entry(v).or_default() += 1;
    }
    let mixed = counts.len() > 1;
    let top = counts
        .into_iter()
        .max_by(|a, b| a.1.cmp(&b.1).then(b.0.cmp(a.0)))
        .map(|(v, _)| v.to_string())
        .unwrap_or_default();
    if mixed { format!("{top}+") } else { top }
}

fn sort_rows(rows: &mut [ThreadRow], key: SortKey) {
    let desc = |a: Option<f64>, b: Option<f64>| {
        b.unwrap_or(-1.0)
            .partial_cmp(&a.unwrap_or(-1.0))
            .unwrap_or(std::cmp::Ordering::Equal)
    };
    rows.sort_by(|a, b| {
        match key {
            SortKey::Cpu => desc(a.cpu_percent, b.cpu_percent),
            SortKey::RunqueueWait => desc(a.wait_percent, b.wait_percent),
            SortKey::Switches => desc(a.switches_per_second, b.switches_per_second),
            SortKey::State => a.state.cmp(&b.state).then(a.name.cmp(&b.name)),
            SortKey::Name => a.name.cmp(&b.name),
            SortKey::Tid => std::cmp::Ordering::Equal,
        }
        .then(a.tid.cmp(&b.tid))
    });
}
