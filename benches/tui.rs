//! Redraw cost of the live dashboard: one full frame for a process of 1,000 threads,
//! 160×50 cells, into ratatui's `TestBackend` (so it measures building the view model and
//! laying out and rendering every widget, not the terminal's own speed). The timeline
//! behind it holds five minutes of one-second samples, so the charts are full.
//!
//! - `frame`: `ViewModel::build` (filter, sort, group) and `Terminal::draw`, what a key
//!   press costs;
//! - `capture + frame`: also `Data::capture` from the watch, what a new sample costs;
//! - `frame, grouped + filtered`: the frame with threads grouped by name and a filter.
//!
//! Target: under 5 ms per frame. Run: `cargo bench --bench tui`.

use std::hint::black_box;
use std::time::Duration;

use criterion::Criterion;
use ratatui::Terminal;
use ratatui::backend::TestBackend;
use tfwatch::detect::DetectConfig;
use tfwatch::engine::Watch;
use tfwatch::model::{CpuBudget, MemoryLimit, ProcessSample, Sample, ThreadSample};
use tfwatch::rules::RuleSet;
use tfwatch::sink::tui::app::AppState;
use tfwatch::sink::tui::view::{Data, Journal, ViewModel};
use tfwatch::sink::tui::widgets::render_screen;

const THREADS: i32 = 1_000;
const SECONDS: u32 = 300;

/// A process of 1,000 threads in a few pools: some running, most waiting on locks.
fn sample(second: u32) -> Sample {
    let t = f64::from(second);
    let threads = (0..THREADS)
        .map(|i| {
            let running = i % 10 == 0;
            ThreadSample {
                tid: 10_000 + i,
                name: format!("pool-{}", i % 16),
                state: if running { 'R' } else { 'S' },
                wchan: (!running).then(|| "futex_wait_queue".to_string()),
                cpu_seconds: if running { t * 0.5 } else { 0.0 },
                run_seconds: Some(if running {
                    t * 0.5
                } else {
                    0.001 * f64::from(i)
                }),
                runqueue_wait_seconds: Some(if running { t * 0.3 } else { 0.0 }),
                nonvoluntary_ctxt_switches: Some(u64::from(second) * (i as u64 % 7)),
                ..ThreadSample::default()
            }
        })
        .collect();
    Sample {
        time_unix_seconds: 1_795_400_000.0 + t,
        elapsed_seconds: t,
        root_pid: 10_000,
        processes: vec![ProcessSample {
            pid: 10_000,
            ppid: 1,
            comm: "python3".to_string(),
            cmdline: vec!["python3".to_string(), "train.py".to_string()],
            state: 'S',
            num_threads: THREADS as u32,
            rss_bytes: 8 << 30,
            cpu_seconds: t * 50.0,
            threads,
            ..ProcessSample::default()
        }],
        cpus: CpuBudget {
            online: 64,
            affinity: Some(64),
            usable: 64.0,
            ..CpuBudget::default()
        },
        memory_limit: MemoryLimit {
            bytes: 64 << 30,
            source: "MemTotal".to_string(),
            mem_total_bytes: 64 << 30,
        },
        uptime_seconds: Some(10_000.0 + t),
        ..Sample::default()
    }
}

fn main() {
    let mut criterion = Criterion::default()
        .sample_size(50)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    let mut watch = Watch::new(DetectConfig::default(), RuleSet::defaults());
    let mut journal = Journal::default();
    for second in 0..SECONDS {
        journal.record(&watch.observe(sample(second)));
    }
    let data = Data::capture(&watch, &journal);
    assert_eq!(data.processes[0].threads.len(), THREADS as usize);
    let mut terminal = Terminal::new(TestBackend::new(160, 50)).expect("test terminal");
    let plain = AppState::default();
    let grouped = AppState {
        group_by_name: true,
        filter: "pool-1".to_string(),
        ..AppState::default()
    };

    let mut group = criterion.benchmark_group("tui 1000 threads 160x50");
    group.bench_function("frame", |b| {
        b.iter(|| {
            let view = ViewModel::build(black_box(&data), &plain, None);
            terminal
                .draw(|frame| render_screen(frame, &view))
                .expect("draws");
        })
    });
    group.bench_function("capture + frame", |b| {
        b.iter(|| {
            let data = Data::capture(black_box(&watch), &journal);
            let view = ViewModel::build(&data, &plain, None);
            terminal
                .draw(|frame| render_screen(frame, &view))
                .expect("draws");
        })
    });
    group.bench_function("frame, grouped + filtered", |b| {
        b.iter(|| {
            let view = ViewModel::build(black_box(&data), &grouped, None);
            terminal
                .draw(|frame| render_screen(frame, &view))
                .expect("draws");
        })
    });
    group.finish();
    criterion.final_summary();

    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .map(|m| m.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_default();
    println!(
        "\nmachine: {cpus} CPUs (nproc), {model}, kernel {}",
        kernel.trim()
    );
}
