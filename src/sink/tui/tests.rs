//! Snapshots of every widget and of the whole screen, rendered into ratatui's
//! `TestBackend` from view models built by running recorded and synthetic samples through
//! a real [`Watch`]. The clock is the samples' own: nothing reads the system's.

use std::collections::BTreeMap;
use std::path::Path;

use ratatui::Terminal;
use ratatui::backend::TestBackend;
use ratatui::layout::Rect;

use crate::detect::DetectConfig;
use crate::engine::{Event, FindingEvent, Watch};
use crate::model::{
    AppMetrics, CpuBudget, Finding, FindingKind, GpuDevice, GpuProcess, GpuSample, LoadedRuntime,
    MemoryLimit, PoolPrediction, ProcessSample, RuntimeAudit, Sample, Severity, ThreadSample,
    Unavailable,
};
use crate::rules::RuleSet;
use crate::source::proc::{SampleTime, Sampler, SamplerConfig};

use super::app::{AppState, SortKey};
use super::view::{Data, Journal, ViewModel};
use super::widgets::{self, HEADER_HEIGHT};

/// The wall clock of the first sample (2026-11-17).
const T0: f64 = 1_795_400_000.0;
/// Samples per scenario, one a second.
const SECONDS: u32 = 40;

fn no_gpu() -> GpuSample {
    GpuSample {
        devices: Vec::new(),
        unavailable: Some("no NVML library (no NVIDIA driver)".to_string()),
    }
}

/// The recorded `threads_child` tree (python3 with three workers waiting on an Event and
/// a forked child reading a pipe), its main thread made busy so the job progresses.
fn healthy_samples(gpu: bool) -> Vec<Sample> {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures");
    let mut sampler = Sampler::new(
        11416,
        SamplerConfig {
            proc_root: fixtures.join("proc/threads_child"),
            cgroup_root: fixtures.join("cgroup/v2"),
            ..SamplerConfig::default()
        },
    )
    .expect("the recorded tree opens");
    sampler.request_details();
    let base = sampler
        .sample(SampleTime::default())
        .expect("the recorded tree samples");
    (0..SECONDS)
        .map(|i| {
            let t = f64::from(i);
            let mut s = base.clone();
            s.elapsed_seconds = t;
            s.time_unix_seconds = T0 + t;
            s.uptime_seconds = Some(86_400.0 + t);
            let root = &mut s.processes[0];
            root.cpu_seconds += 0.8 * t;
            root.rss_bytes = (900 << 20) + (i as u64 % 5) * (4 << 20);
            let main = &mut root.threads[0];
            main.state = 'R';
            main.wchan = None;
            main.syscall = None;
            main.run_seconds = Some(main.run_seconds.unwrap_or(0.0) + 0.8 * t);
            main.runqueue_wait_seconds = Some(main.runqueue_wait_seconds.unwrap_or(0.0) + 0.05 * t);
            main.nonvoluntary_ctxt_switches = Some(100 + 3 * u64::from(i));
            s.gpu = Some(if gpu {
                GpuSample {
                    devices: vec![GpuDevice {
                        index: 0,
                        name: "NVIDIA H100 80GB HBM3".to_string(),
                        uuid: "GPU-0".to_string(),
                        memory_used_bytes: (12 << 30) + (i as u64) * (64 << 20),
                        memory_total_bytes: 80 << 30,
                        utilization_percent: Some(87),
                        processes: vec![GpuProcess {
                            pid: 11416,
                            kind: crate::model::GpuProcessKind::Compute,
                            used_memory_bytes: Some((12 << 30) + (i as u64) * (64 << 20)),
                        }],
                    }],
                    unavailable: None,
                }
            } else {
                no_gpu()
            });
            if gpu {
                s.app = Some(AppMetrics {
                    source: "http://127.0.0.1:9100/metrics".to_string(),
                    queue_depth: Some(f64::from(3 + i % 4)),
                    completions_total: Some(50.0 * t),
                    failures_total: Some(0.0),
                    latency_p50_seconds: Some(0.020 + 0.001 * f64::from(i % 3)),
                    latency_p90_seconds: Some(0.05),
                    latency_p99_seconds: Some(0.080 + 0.005 * f64::from(i % 4)),
                    unavailable: None,
                    ..AppMetrics::default()
                });
            } else {
                s.unavailable.push(Unavailable {
                    source: "gpu".to_string(),
                    pid: None,
                    reason: "no NVML library (no NVIDIA driver)".to_string(),
                    fix: None,
                });
            }
            s
        })
        .collect()
}

fn thread(tid: i32, name: &str, state: char, wchan: Option<&str>) -> ThreadSample {
    ThreadSample {
        tid,
        name: name.to_string(),
        state,
        wchan: wchan.map(str::to_string),
        run_seconds: Some(0.0),
        runqueue_wait_seconds: Some(0.0),
        nonvoluntary_ctxt_switches: Some(0),
        voluntary_ctxt_switches: Some(0),
        ..ThreadSample::default()
    }
}

fn process(
    pid: i32,
    ppid: i32,
    comm: &str,
    cmdline: &[&str],
    threads: Vec<ThreadSample>,
) -> ProcessSample {
    ProcessSample {
        pid,
        ppid,
        comm: comm.to_string(),
        cmdline: cmdline.iter().map(|s| s.to_string()).collect(),
        state: 'S',
        num_threads: threads.len() as u32,
        rss_bytes: 1 << 30,
        start_time_seconds: 1000.0,
        threads: threads.into(),
        ..ProcessSample::default()
    }
}

fn openmp_audit() -> RuntimeAudit {
    RuntimeAudit {
        runtimes: vec![
            LoadedRuntime {
                name: "GNU OpenMP".to_string(),
                family: "openmp".to_string(),
                library: "/usr/lib/x86_64-linux-gnu/libgomp.so.1".to_string(),
                version: None,
            },
            LoadedRuntime {
                name: "OpenBLAS".to_string(),
                family: "blas".to_string(),
                library: "/usr/lib/x86_64-linux-gnu/libopenblas.so.0".to_string(),
                version: Some("0.3.21".to_string()),
            },
        ],
        env: BTreeMap::from([("MKL_NUM_THREADS".to_string(), "1".to_string())]),
        env_unavailable: None,
        pools: vec![PoolPrediction {
            runtime: "GNU OpenMP".to_string(),
            threads: 8,
            variable: None,
            reason: "OMP_NUM_THREADS unset: libgomp uses the 8 CPUs of the affinity mask"
                .to_string(),
        }],
        ..RuntimeAudit::default()
    }
}

/// A trainer and two data workers, each with 8 OpenMP threads always runnable, on 4
/// usable CPUs (a 4-CPU cgroup quota on an 8-CPU host).
fn oversubscribed_samples() -> Vec<Sample> {
    (0..SECONDS)
        .map(|i| {
            let t = f64::from(i);
            let mut processes = Vec::new();
            for (n, pid) in [5000, 5100, 5200].into_iter().enumerate() {
                let mut threads = vec![thread(pid, "python3", 'S', Some("do_epoll_wait"))];
                threads.extend((1..=8).map(|k| {
                    let mut w = thread(pid + k, "omp_worker", 'R', None);
                    // 24 runnable threads share 4 CPUs: each runs 1/6 s and waits 5/6 s.
                    w.run_seconds = Some(t / 6.0);
                    w.runqueue_wait_seconds = Some(t * 5.0 / 6.0);
                    w.nonvoluntary_ctxt_switches = Some(40 * u64::from(i) + k as u64);
                    w
                }));
                let mut p = process(
                    pid,
                    if n == 0 { 4999 } else { 5000 },
                    "python3",
                    if n == 0 {
                        &["python3", "train.py", "--workers", "2"]
                    } else {
                        &["python3", "-m", "torch.utils.data.worker"]
                    },
                    threads,
                );
                p.cpu_seconds = 8.0 * t / 6.0;
                p.audit = Some(openmp_audit());
                processes.push(p);
            }
            Sample {
                time_unix_seconds: T0 + t,
                elapsed_seconds: t,
                root_pid: 5000,
                processes,
                cpus: CpuBudget {
                    online: 8,
                    affinity: Some(8),
                    affinity_list: Some("0-7".to_string()),
                    quota: Some(4.0),
                    quota_source: Some("cgroup v2 cpu.max=400000 100000".to_string()),
                    usable: 4.0,
                    throttling: None,
                },
                memory_limit: MemoryLimit {
                    bytes: 16 << 30,
                    source: "cgroup v2 memory.max".to_string(),
                    mem_total_bytes: 64 << 30,
                },
                uptime_seconds: Some(1000.0 + 3600.0 + t),
                gpu: Some(no_gpu()),
                ..Sample::default()
            }
        })
        .collect()
}

/// Two workers each holding one mutex and waiting for the other's; nothing runs. ptrace
/// is denied, so the mutex owners come from a hand-made finding.
fn deadlocked_samples() -> Vec<Sample> {
    (0..SECONDS)
        .map(|i| {
            let t = f64::from(i);
            let threads = vec![
                thread(4240, "python3", 'S', Some("futex_wait_queue")),
                thread(4241, "heartbeat", 'S', Some("hrtimer_nanosleep")),
                thread(4242, "worker-a", 'S', Some("futex_wait_queue")),
                thread(4243, "worker-b", 'S', Some("futex_wait_queue")),
            ];
            let mut p = process(4240, 1, "python3", &["python3", "serve.py"], threads);
            p.cpu_seconds = 12.5;
            p.rss_bytes = 350 << 20;
            Sample {
                time_unix_seconds: T0 + t,
                elapsed_seconds: t,
                root_pid: 4240,
                processes: vec![p],
                cpus: CpuBudget {
                    online: 2,
                    affinity: Some(2),
                    usable: 2.0,
                    ..CpuBudget::default()
                },
                memory_limit: MemoryLimit {
                    bytes: 8 << 30,
                    source: "MemTotal".to_string(),
                    mem_total_bytes: 8 << 30,
                },
                unavailable: vec![Unavailable {
                    source: "ptrace".to_string(),
                    pid: Some(4240),
                    reason: "denied (ptrace_scope 1)".to_string(),
                    fix: Some("run as root or with CAP_SYS_PTRACE".to_string()),
                }],
                uptime_seconds: Some(1000.0 + 600.0 + t),
                gpu: Some(no_gpu()),
                ..Sample::default()
            }
        })
        .collect()
}

fn deadlock_finding() -> Finding {
    let mut f = Finding::new(
        FindingKind::Deadlock,
        Severity::Error,
        "thread 4242 (worker-a) waits for mutex 0x7f3a2c0010 held by 4243 (worker-b), \
         which waits for mutex 0x7f3a2c0050 held by 4242 (worker-a)",
    );
    f.evidence = vec![
        "4242 (worker-a) in futex_wait on 0x7f3a2c0010, owner 4243, for 28.0s".to_string(),
        "4243 (worker-b) in futex_wait on 0x7f3a2c0050, owner 4242, for 28.0s".to_string(),
        "no CPU progress in pid 4240 for 28.0s".to_string(),
    ];
    f.remedy = "take the two mutexes in one order everywhere (or with std::lock / \
                scoped_lock); see the stacks with `tfwatch snapshot 4240 --stacks`"
        .to_string();
    f.pids = vec![4240];
    f.tids = vec![4242, 4243];
    f
}

/// Runs the samples through a watch (and the extra events at their times) and captures
/// the dashboard's data.
fn capture(samples: Vec<Sample>, extra: Vec<(f64, Event)>) -> Data {
    let mut watch = Watch::new(
        DetectConfig {
            hang_after_seconds: 10.0,
            ..DetectConfig::default()
        },
        RuleSet::defaults(),
    );
    let mut journal = Journal::default();
    for sample in samples {
        let t = sample.elapsed_seconds;
        journal.record(&watch.observe(sample));
        for (_, event) in extra.iter().filter(|(at, _)| *at == t) {
            journal.record(std::slice::from_ref(event));
        }
    }
    Data::capture(&watch, &journal)
}

fn scenario(name: &str) -> Data {
    match name {
        "healthy" => capture(healthy_samples(true), Vec::new()),
        "no_gpu" => capture(healthy_samples(false), Vec::new()),
        "oversubscribed" => capture(oversubscribed_samples(), Vec::new()),
        "deadlocked" => {
            let finding = deadlock_finding();
            let event = Event::Finding(FindingEvent {
                time_unix_seconds: T0 + 12.0,
                elapsed_seconds: 12.0,
                key: crate::detect::finding_key(&finding),
                finding,
            });
            capture(deadlocked_samples(), vec![(12.0, event)])
        }
        other => panic!("no scenario {other}"),
    }
}

fn render(width: u16, height: u16, draw: impl FnOnce(&mut ratatui::Frame, Rect)) -> String {
    let mut terminal = Terminal::new(TestBackend::new(width, height)).expect("test terminal");
    terminal
        .draw(|frame| {
            let area = frame.area();
            draw(frame, area)
        })
        .expect("draws");
    terminal.backend().to_string()
}

const SCENARIOS: [&str; 4] = ["healthy", "oversubscribed", "deadlocked", "no_gpu"];

#[test]
fn widget_snapshots() {
    for name in SCENARIOS {
        let view = ViewModel::build(&scenario(name), &AppState::default(), None);
        let header = render(120, HEADER_HEIGHT, |f, a| {
            widgets::render_header(f, a, &view.header, false)
        });
        insta::assert_snapshot!(format!("{name}_header"), header);
        let charts = render(120, 10, |f, a| widgets::render_charts(f, a, &view.charts));
        insta::assert_snapshot!(format!("{name}_charts"), charts);
        let findings = render(120, 10, |f, a| {
            widgets::render_findings(f, a, &view.findings)
        });
        insta::assert_snapshot!(format!("{name}_findings"), findings);
        let threads = render(84, 14, |f, a| widgets::render_threads(f, a, &view.threads));
        insta::assert_snapshot!(format!("{name}_threads"), threads);
        let tree = render(42, 6, |f, a| widgets::render_tree(f, a, &view.tree));
        insta::assert_snapshot!(format!("{name}_tree"), tree);
    }
}

#[test]
fn full_screen_snapshots() {
    for name in SCENARIOS {
        let view = ViewModel::build(&scenario(name), &AppState::default(), None);
        let screen = render(120, 40, |f, _| widgets::render_screen(f, &view));
        insta::assert_snapshot!(format!("{name}_screen"), screen);
    }
}

#[test]
fn footer_snapshots() {
    let footer = |state: &AppState, status: Option<&str>| {
        let view = ViewModel::build(&Data::default(), state, status);
        render(120, 1, |f, a| widgets::render_footer(f, a, &view.footer))
    };
    insta::assert_snapshot!("footer_keys", footer(&AppState::default(), None));
    let typing = AppState {
        editing_filter: true,
        filter: "worker".to_string(),
        paused: true,
        ..AppState::default()
    };
    insta::assert_snapshot!("footer_paused_filtering", footer(&typing, None));
    insta::assert_snapshot!(
        "footer_status",
        footer(
            &AppState::default(),
            Some("process 4240 exited; the last reading stays, q quits")
        )
    );
}

#[test]
fn help_overlay_and_tiny_terminal() {
    let state = AppState {
        show_help: true,
        ..AppState::default()
    };
    let view = ViewModel::build(&scenario("deadlocked"), &state, None);
    insta::assert_snapshot!(
        "help_overlay",
        render(120, 40, |f, _| widgets::render_screen(f, &view))
    );
    let tiny = render(30, 8, |f, _| widgets::render_screen(f, &view));
    assert!(tiny.contains("terminal too small"), "{tiny}");
    insta::assert_snapshot!("tiny_terminal", tiny);
}

#[test]
fn waiting_for_the_first_sample() {
    let mut data = Data::default();
    data.header.pid = 4240;
    let view = ViewModel::build(&data, &AppState::default(), None);
    assert!(view.waiting);
    let screen = render(120, 40, |f, _| widgets::render_screen(f, &view));
    assert!(
        screen.contains("pid 4240: waiting for the first sample"),
        "{screen}"
    );
}

#[test]
fn sort_filter_group_and_process_switch_change_the_table() {
    let data = scenario("oversubscribed");
    let mut state = AppState {
        process_count: data.processes.len(),
        ..AppState::default()
    };
    let rows = |state: &AppState| ViewModel::build(&data, state, None).threads.rows;
    // Busiest first: the OpenMP workers, then the idle main thread.
    let by_cpu = rows(&state);
    assert_eq!(by_cpu.len(), 9);
    assert_eq!(by_cpu[0].name, "omp_worker");
    assert_eq!(by_cpu[8].name, "python3");
    state.sort = SortKey::Tid;
    assert_eq!(rows(&state)[0].tid, 5000);
    state.sort = SortKey::Name;
    assert_eq!(rows(&state)[8].name, "python3");

    state.filter = "PYTHON".to_string();
    let filtered = ViewModel::build(&data, &state, None).threads;
    assert_eq!(filtered.rows.len(), 1, "the filter ignores case");
    assert!(filtered.title.contains("1 of 9"), "{}", filtered.title);
    state.filter.clear();

    state.group_by_name = true;
    let grouped = rows(&state);
    assert_eq!(grouped.len(), 2);
    let workers = grouped
        .iter()
        .find(|r| r.name == "omp_worker")
        .expect("a group of workers");
    assert_eq!(workers.count, 8);
    assert_eq!(workers.state, "running");
    // Eight threads at 1/6 of a CPU each.
    assert!((workers.cpu_percent.unwrap_or(0.0) - 800.0 / 6.0).abs() < 0.5);

    state.selected_process = 2;
    let view = ViewModel::build(&data, &state, None);
    assert!(
        view.threads.title.contains("pid 5200"),
        "{}",
        view.threads.title
    );
    assert!(view.tree[2].selected && !view.tree[0].selected);
}

#[test]
fn journal_keeps_resolved_entries_dimmed_and_replaces_raised_ones() {
    let data = scenario("deadlocked");
    let kinds: Vec<&str> = data.findings.iter().map(|f| f.title.as_str()).collect();
    assert_eq!(kinds.first(), Some(&"deadlock"), "newest first: {kinds:?}");
    assert!(kinds.contains(&"no-progress"), "{kinds:?}");
    let mut journal = Journal::default();
    let finding = deadlock_finding();
    let event = |severity| {
        let mut f = finding.clone();
        f.severity = severity;
        Event::Finding(FindingEvent {
            time_unix_seconds: T0,
            elapsed_seconds: 1.0,
            key: "deadlock:4240".to_string(),
            finding: f,
        })
    };
    journal.record(&[event(Severity::Warning), event(Severity::Error)]);
    assert_eq!(journal.entries.len(), 1);
    assert_eq!(journal.entries[0].severity, Severity::Error);
    journal.record(&[Event::Resolved(crate::engine::ResolvedLine {
        time_unix_seconds: T0 + 5.0,
        elapsed_seconds: 5.0,
        kind: Some(FindingKind::Deadlock),
        key: Some("deadlock:4240".to_string()),
        rule: None,
        active_seconds: 4.0,
    })]);
    assert_eq!(journal.entries[0].resolved_after, Some(4.0));
}

#[test]
fn a_rank_of_a_distributed_job_shows_its_rank_in_the_tree() {
    let samples: Vec<Sample> = healthy_samples(true)
        .into_iter()
        .map(|mut s| {
            for (i, p) in s.processes.iter_mut().enumerate() {
                if let Some(audit) = p.audit.as_mut() {
                    audit.rank = Some(crate::model::ranks::RankInfo {
                        rank: i as u32,
                        world_size: Some(2),
                        source: "RANK".to_string(),
                        launcher: "torchrun".to_string(),
                        ..Default::default()
                    });
                }
            }
            s
        })
        .collect();
    let view = ViewModel::build(&capture(samples, Vec::new()), &AppState::default(), None);
    assert!(
        view.tree.iter().any(|row| row.comm.ends_with("(rank 1/2)")),
        "{:#?}",
        view.tree
    );
    assert!(
        ViewModel::build(&scenario("healthy"), &AppState::default(), None)
            .tree
            .iter()
            .all(|row| !row.comm.contains("rank")),
        "no rank where the environment names none"
    );
}

/// The stacks of the deadlocked tree as `attach` takes them on the hang: worker-a and
/// worker-b in a Python RLock cycle (the owners read from memory), the main thread in
/// `join`, the heartbeat asleep, three idle OpenBLAS threads.
fn deadlocked_stacks() -> crate::model::stacks::StacksReport {
    use crate::model::stacks::{Pause, PythonLockObject, StackFrame, StacksReport, ThreadStack};
    use crate::model::waits::{explain, name_wait};
    let native = |function: &str| StackFrame {
        function: Some(function.into()),
        address: Some(0x1000),
        ..StackFrame::default()
    };
    let python = |function: &str, line: u32, code: &str, scope: &[&str]| StackFrame {
        function: Some(function.into()),
        file: Some("/srv/serve.py".into()),
        line: Some(line),
        python: true,
        code: Some(code.into()),
        scope: scope.iter().map(|s| s.to_string()).collect(),
        ..StackFrame::default()
    };
    let stack = |tid: i32, name: &str, frames: Vec<StackFrame>, wchan: &str| {
        let mut stack = ThreadStack {
            pid: 4240,
            tid,
            name: Some(name.into()),
            kind: crate::model::stacks::StackKind::Mixed,
            frames,
            state: Some('S'),
            wchan: Some(wchan.into()),
            ..ThreadStack::default()
        };
        stack.wait = Some(name_wait(
            &stack.frames,
            stack.state,
            stack.wchan.as_deref(),
        ));
        stack
    };
    let locks = || {
        vec![
            PythonLockObject {
                name: "first".into(),
                address: 0x7f3a2c0010,
                kind: "RLock".into(),
                owner_ident: Some(0xa),
            },
            PythonLockObject {
                name: "second".into(),
                address: 0x7f3a2c0050,
                kind: "RLock".into(),
                owner_ident: Some(0xb),
            },
        ]
    };
    let worker = |tid: i32, name: &str, waits: &str, holds: &str, ident: u64| {
        let mut frame = python(
            "worker",
            12,
            &format!("with {waits}:"),
            &[&format!("with {holds}:"), "def worker(first, second):"],
        );
        frame.locks = locks();
        let mut stack = stack(
            tid,
            name,
            vec![
                native("__futex_abstimed_wait_common"),
                native("rlock_acquire"),
                frame,
            ],
            "futex_wait_queue",
        );
        stack.python_ident = Some(ident);
        stack
    };
    let mut threads = vec![
        stack(
            4240,
            "MainThread",
            vec![
                native("__futex_abstimed_wait_common"),
                native("lock_PyThread_acquire_lock"),
                StackFrame {
                    file: Some("/usr/lib/python3.11/threading.py".into()),
                    ..python(
                        "_wait_for_tstate_lock",
                        1119,
                        "if lock.acquire(block, timeout):",
                        &[],
                    )
                },
                StackFrame {
                    file: Some("/usr/lib/python3.11/threading.py".into()),
                    ..python("join", 1096, "self._wait_for_tstate_lock()", &[])
                },
                python("<module>", 30, "a.join()", &[]),
            ],
            "futex_wait_queue",
        ),
        stack(
            4241,
            "heartbeat",
            vec![
                native("clock_nanosleep"),
                python(
                    "beat",
                    20,
                    "time.sleep(1.0)",
                    &["while True:", "def beat():"],
                ),
            ],
            "hrtimer_nanosleep",
        ),
        worker(4242, "worker-a", "second", "first", 0xa),
        worker(4243, "worker-b", "first", "second", 0xb),
    ];
    for tid in 4244..4247 {
        threads.push(stack(
            tid,
            "python3",
            vec![
                native("syscall"),
                native("blas_thread_server"),
                native("start_thread"),
            ],
            "futex_wait_queue",
        ));
    }
    let pauses = vec![
        Pause {
            pid: 4240,
            kind: crate::model::stacks::StackKind::Native,
            seconds: 0.0096,
            threads: 7,
            ..Pause::default()
        },
        Pause {
            pid: 4240,
            kind: crate::model::stacks::StackKind::Python,
            seconds: 0.0021,
            threads: 4,
            ..Pause::default()
        },
    ];
    let refs: Vec<&ThreadStack> = threads.iter().collect();
    let explained = explain(4240, &refs, Some(11.7));
    StacksReport {
        threads,
        pauses,
        explained: vec![explained],
        ..StacksReport::default()
    }
}

#[test]
fn the_findings_pane_shows_a_hang_explained_from_its_stacks() {
    let mut watch = Watch::new(
        DetectConfig {
            hang_after_seconds: 10.0,
            ..DetectConfig::default()
        },
        RuleSet::defaults(),
    );
    let mut journal = Journal::default();
    let mut samples = deadlocked_samples().into_iter();
    let mut hang = None;
    // Until the hang is reported, as `attach`'s stacks sink sees it.
    for sample in samples.by_ref() {
        let events = watch.observe(sample);
        journal.record(&events);
        hang = events.iter().find_map(|e| match e {
            Event::Finding(f) if f.finding.kind.is_hang() => Some(f.clone()),
            _ => None,
        });
        if hang.is_some() {
            break;
        }
    }
    let hang = hang.expect("the deadlocked tree is reported as a hang");
    let stacks = deadlocked_stacks();
    let mut findings = vec![hang.finding.clone()];
    crate::detect::explain_with_stacks(&mut findings, &stacks);
    let explained = findings.pop().expect("one finding");
    assert!(watch.explain(&hang.key, explained));
    // The explanation stays while the finding does: later samples keep it.
    for sample in samples.take(3) {
        journal.record(&watch.observe(sample));
    }
    journal.take_explanations(&watch);
    let data = Data::capture(&watch, &journal);
    let view = ViewModel::build(&data, &AppState::default(), None);
    let pane = render(120, 16, |f, a| {
        widgets::render_findings(f, a, &view.findings)
    });
    insta::assert_snapshot!("explained_findings", pane);
    let screen = render(120, 40, |f, _| widgets::render_screen(f, &view));
    insta::assert_snapshot!("explained_screen", screen);
    assert!(
        screen.contains("from its stacks (pid 4240 paused 12 ms):"),
        "{screen}"
    );
    let entry = &view.findings[0];
    assert!(
        entry.explained,
        "the explained hang is first: {:?}",
        view.findings
    );
    for wanted in [
        "worker-a) waits on Python RLock `second`",
        "worker-b) waits on Python RLock `first`",
        "3 idle pool thread(s)",
        "a proven Python lock-order deadlock",
        "from its stacks (pid 4240 paused 12 ms):",
    ] {
        assert!(pane.contains(wanted), "{wanted:?} not in\n{pane}");
    }
    assert_eq!(
        pane.matches("blas").count() + pane.matches("4244").count(),
        0,
        "idle pool threads are collapsed to a count:\n{pane}"
    );
    // The diagnosis a `w` snapshot writes carries the explanation too.
    let diagnosis = watch.diagnosis();
    assert!(
        diagnosis
            .findings
            .iter()
            .any(|f| f.evidence.iter().any(|e| e.contains("paused 12 ms"))),
        "{:?}",
        diagnosis.findings
    );
}

/// The node view: a row per job with its figures and findings; Down and Enter open the
/// second job's screen (the `attach` screen of its watch), Esc goes back, and a job that
/// ends while open returns to the jobs saying so.
#[test]
fn node_view_lists_jobs_and_opens_one_with_enter_and_back_with_esc() {
    use std::time::Duration;

    use crossterm::event::{Event as TermEvent, KeyCode, KeyEvent};

    use super::ScriptedInput;
    use super::node::{JobFigures, NodeDashboard, NodeScreen, Screen};
    use crate::model::jobs::JobLabels;

    let config = DetectConfig {
        hang_after_seconds: 10.0,
        ..DetectConfig::default()
    };
    let key = |code| TermEvent::Key(KeyEvent::from(code));
    let input = ScriptedInput::new([
        key(KeyCode::Down),
        key(KeyCode::Enter),
        key(KeyCode::Esc),
        key(KeyCode::Enter),
    ]);
    let terminal = Terminal::new(TestBackend::new(140, 36)).expect("test terminal");
    let mut dashboard = NodeDashboard::new(terminal, input, 8.0);
    let trainer = JobLabels {
        job: "pod/1234/trainer".to_string(),
        pod: Some("1234".to_string()),
        container: Some("trainer".to_string()),
        namespace: None,
    };
    let server = JobLabels {
        job: "tree/4240-python3".to_string(),
        ..JobLabels::default()
    };
    let mut watches = BTreeMap::new();
    for (labels, samples) in [
        (&trainer, oversubscribed_samples()),
        (&server, deadlocked_samples()),
    ] {
        let mut watch = Watch::new(config.clone(), RuleSet::defaults());
        for (i, sample) in samples.into_iter().enumerate() {
            let events = watch.observe(sample);
            let figures = JobFigures {
                pids: 3,
                threads: 27,
                cpus_used: 4.0 * (i % 3) as f64 / 2.0,
                runnable: 24.0,
                waiting: 3.3,
                quota: Some(4.0),
            };
            dashboard.job_sample(labels, &watch, &events, figures);
        }
        watches.insert(labels.clone(), watch);
    }
    let watch_of = |labels: &JobLabels| watches.get(labels);
    let screen_text = |dashboard: &NodeDashboard<TestBackend, ScriptedInput>| {
        dashboard.terminal().backend().to_string()
    };

    // Draws the jobs, then takes Down.
    assert!(!dashboard.idle(Duration::ZERO, &watch_of).unwrap());
    let jobs = screen_text(&dashboard);
    assert!(
        jobs.contains("tfwatch node · 2 jobs · 54 threads"),
        "{jobs}"
    );
    assert!(
        jobs.contains("pod/1234/trainer") && jobs.contains("tree/4240-python3"),
        "{jobs}"
    );
    assert!(
        jobs.contains("0.00/4.0"),
        "the newest CPUs used beside the quota: {jobs}"
    );
    for (labels, watch) in &watches {
        let row = jobs
            .lines()
            .find(|l| l.contains(labels.job.as_str()))
            .unwrap();
        // The count, then the kinds worst first.
        let active = watch.active_findings();
        let worst = active.iter().max_by_key(|f| f.severity).unwrap();
        let shown = format!("{}: {}", active.len(), worst.kind.as_str());
        assert!(row.contains(&shown), "{shown} in {row}");
        assert!(
            row.contains('▁') && row.contains('█'),
            "the CPU sparkline: {row}"
        );
    }
    assert!(
        !watches[&trainer].active_findings().is_empty(),
        "the oversubscribed job has a finding to show"
    );

    // Enter opens the selected (second) job.
    assert!(!dashboard.idle(Duration::ZERO, &watch_of).unwrap());
    assert_eq!(dashboard.screen(), &Screen::Job(server.clone()));
    assert!(!dashboard.idle(Duration::ZERO, &watch_of).unwrap());
    let job = screen_text(&dashboard);
    assert!(
        job.contains("serve.py") && job.contains("Esc: back to the jobs"),
        "{job}"
    );
    assert_eq!(dashboard.screen(), &Screen::Jobs, "Esc went back");

    // Open it again; it ends while open.
    assert!(!dashboard.idle(Duration::ZERO, &watch_of).unwrap());
    assert_eq!(dashboard.screen(), &Screen::Job(server.clone()));
    dashboard.job_ended(&server);
    assert_eq!(dashboard.screen(), &Screen::Jobs);
    assert!(!dashboard.idle(Duration::ZERO, &watch_of).unwrap());
    let after = screen_text(&dashboard);
    assert!(after.contains("job tree/4240-python3 ended"), "{after}");
    assert!(
        after.contains("1 jobs") && !after.contains("\"tree/4240-python3"),
        "{after}"
    );
}

#[test]
fn sparklines_scale_to_the_busiest_job() {
    assert_eq!(super::node::sparkline([0.0, 1.0, 2.0], 2.0), "▁▅█");
    assert_eq!(
        super::node::sparkline([0.5, 0.5], 0.0),
        "▅▅",
        "scaled to at least 1"
    );
    assert_eq!(super::node::sparkline([9.0], 3.0), "█", "capped at the top");
}

/// Context switches are read every few samples; the rate is taken from the oldest recent
/// reading (older samples no longer keep their threads, only those counts).
#[test]
fn switch_rates_span_the_recent_samples() {
    let samples: Vec<Sample> = (0..10u32)
        .map(|i| {
            let mut t = thread(4242, "worker", 'S', Some("futex_wait_queue"));
            // 50 switches a second, read every fourth sample (held in between).
            t.nonvoluntary_ctxt_switches = Some(u64::from(i / 4 * 4) * 50);
            Sample {
                elapsed_seconds: f64::from(i),
                time_unix_seconds: T0 + f64::from(i),
                root_pid: 4242,
                processes: vec![process(4242, 1, "worker", &["worker"], vec![t])],
                ..Sample::default()
            }
        })
        .collect();
    let data = capture(samples, Vec::new());
    let row = &data.processes[0].threads[0];
    // Recent samples are 2..=9; the oldest reading is sample 2 (the count read at 0: 0
    // switches) and the latest, sample 9, holds the count read at 8 (400): 400 in 7 s.
    // (Over the last interval alone it would be 0.)
    let rate = row.switches_per_second.expect("a rate");
    assert!((rate - 400.0 / 7.0).abs() < 1e-9, "{rate}");
}
