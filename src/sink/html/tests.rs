//! The page over recorded and synthetic timelines: its charts, marks, notes and escaping.

use super::*;
use crate::detect::DetectConfig;
use crate::engine::Watch;
use crate::model::{
    AppMetrics, CpuBudget, GpuDevice, GpuSample, MemoryLimit, ProcessSample, ThreadSample,
};
use crate::rules::RuleSet;
use crate::sink::report;

/// The settings the recorded-timeline tests judge with (3 s hang window, 384 MiB).
fn detect() -> DetectConfig {
    DetectConfig {
        hang_after_seconds: 3.0,
        memory_limit_override: Some(384 << 20),
        ..DetectConfig::default()
    }
}

fn fixture(name: &str) -> Vec<Sample> {
    let path = format!(
        "{}/fixtures/timelines/{name}.jsonl",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read_to_string(&path)
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Replays `samples` through a watch with an [`HtmlSink`]; returns the page.
fn page_of(samples: Vec<Sample>) -> (String, ChartData) {
    let mut watch = Watch::new(detect(), RuleSet::defaults());
    let mut sink = HtmlSink::new();
    let mut findings = std::collections::BTreeMap::new();
    for sample in samples {
        let events = watch.observe(sample);
        for event in &events {
            if let Event::Finding(f) = event {
                findings.insert(f.key.clone(), f.finding.clone());
            }
        }
        sink.sample(&watch, &events).unwrap();
    }
    let report = report::from_watch(&watch);
    let page = Page {
        title: "tfwatch replay: test".into(),
        facts: vec![("timeline".into(), "test".into())],
        command: None,
        data: &sink.data,
        findings: findings.into_values().collect(),
        diagnosis: report
            .as_ref()
            .map(|r| (r, "the last two samples".to_string())),
        notes: vec!["a note".into()],
    };
    let mut out = Vec::new();
    write_page(&page, &mut out).unwrap();
    (String::from_utf8(out).unwrap(), sink.data.clone())
}

/// The part of the page between `<figure id="chart-ID">` and its `</figure>`.
fn figure<'a>(page: &'a str, id: &str) -> &'a str {
    let start = page
        .find(&format!("<figure id=\"chart-{id}\">"))
        .unwrap_or_else(|| panic!("no chart {id}"));
    let end = start + page[start..].find("</figure>").unwrap();
    &page[start..end]
}

#[test]
fn the_deadlock_page_has_its_charts_the_hang_on_the_axis_and_the_diagnosis() {
    let samples = fixture("deadlock");
    let count = samples.len();
    let (page, data) = page_of(samples);
    assert_eq!(data.samples(), count);
    assert_eq!(data.points().len(), count);
    for id in ["threads", "cpu", "memory"] {
        assert!(figure(&page, id).contains("<svg"), "{id} is drawn");
    }
    // Nothing ran in the deadlock: the wait ratio cannot be computed, and says so.
    assert!(figure(&page, "wait").contains(crate::model::RATIO_NOT_COMPUTED));
    assert!(figure(&page, "gpu").contains("no GPU data"));
    assert!(figure(&page, "queue").contains("no application metrics"));
    assert!(figure(&page, "latency").contains("no application metrics"));
    // The hang is marked on the time axis of every drawn chart, in the error colour…
    let hang = data
        .marks()
        .iter()
        .position(|m| m.what == "no-progress" || m.what == "deadlock")
        .expect("the hang is marked");
    assert_eq!(data.marks()[hang].severity, Severity::Error);
    let red = charts::severity_color(Severity::Error);
    let red = format!("#{:02X}{:02X}{:02X}", red.0, red.1, red.2);
    for id in ["threads", "cpu", "memory"] {
        assert!(figure(&page, id).contains(&red), "{id} marks the hang");
    }
    // …listed with its number, and explained in the findings and the diagnosis.
    let marks = &page[page.find("id=\"marks\"").unwrap()..];
    assert!(marks.contains(&format!("<b>{}</b>", hang + 1)), "{marks}");
    assert!(marks.contains(&data.marks()[hang].what));
    let diagnosis = &page[page.find("id=\"diagnosis\"").unwrap()..];
    assert!(diagnosis.contains("worker-a") && diagnosis.contains("worker-b"));
    assert!(diagnosis.contains("FINDINGS"));
    // The threads chart counts the lock waiters the fixture holds.
    let last = data.points().last().unwrap();
    assert!(last.lock_waiters >= 2, "{last:?}");
    assert_eq!(last.running, 0);
}

#[test]
fn the_page_loads_nothing_from_outside() {
    let (page, _) = page_of(fixture("oversubscribe"));
    for outside in [
        "<script", "<link", "src=", "href=", "url(", "@import", "<iframe",
    ] {
        assert!(!page.contains(outside), "the page holds {outside}");
    }
    // The only address in the page is the SVG namespace, which loads nothing.
    let addresses = page.matches("http").count();
    let namespaces = page.matches("xmlns=\"http://www.w3.org/2000/svg\"").count();
    assert_eq!(addresses, namespaces);
    assert!(namespaces >= 3);
}

fn process(comm: &str, cmdline: &[&str], rss: u64, threads: Vec<ThreadSample>) -> ProcessSample {
    ProcessSample {
        pid: 10,
        comm: comm.into(),
        cmdline: cmdline.iter().map(|s| s.to_string()).collect(),
        state: 'S',
        num_threads: threads.len() as u32,
        rss_bytes: rss,
        cpu_seconds: threads.iter().map(|t| t.cpu_seconds).sum(),
        threads: threads.into(),
        ..ProcessSample::default()
    }
}

fn thread(tid: i32, name: &str, state: char, cpu: f64) -> ThreadSample {
    ThreadSample {
        tid,
        name: name.into(),
        state,
        cpu_seconds: cpu,
        run_seconds: Some(cpu),
        runqueue_wait_seconds: Some(cpu / 2.0),
        ..ThreadSample::default()
    }
}

fn sample(t: f64, processes: Vec<ProcessSample>) -> Sample {
    Sample {
        time_unix_seconds: 1.0e9 + t,
        elapsed_seconds: t,
        root_pid: 10,
        processes,
        cpus: CpuBudget {
            online: 4,
            usable: 4.0,
            ..CpuBudget::default()
        },
        memory_limit: MemoryLimit {
            bytes: 1 << 30,
            source: "MemTotal".into(),
            mem_total_bytes: 1 << 30,
        },
        ..Sample::default()
    }
}

#[test]
fn text_from_the_watched_process_is_escaped() {
    let evil = "<script>alert('x')</script>&\"";
    let samples = (0..3)
        .map(|t| {
            let t = f64::from(t);
            sample(
                t,
                vec![process(
                    evil,
                    &["python3", evil, "\x1b]0;title\x07"],
                    1 << 20,
                    vec![thread(10, evil, 'R', t)],
                )],
            )
        })
        .collect();
    let (page, _) = page_of(samples);
    assert!(!page.contains("<script"), "raw markup from the target");
    assert!(page.contains("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;&amp;&quot;"));
    assert!(!page.contains('\x1b') && !page.contains('\x07'));
    assert!(page.contains("\\x1b]0;title\\x07"));
    assert_eq!(escape("a<b>&'\"c"), "a&lt;b&gt;&amp;&#39;&quot;c");
}

#[test]
fn bidi_controls_from_the_watched_process_are_escaped_and_isolated() {
    let evil = "\u{202e}gnp.exe\u{2066}";
    let samples = (0..3)
        .map(|t| {
            let t = f64::from(t);
            sample(
                t,
                vec![process(
                    evil,
                    &["python3", evil],
                    1 << 20,
                    vec![thread(10, evil, 'R', t)],
                )],
            )
        })
        .collect();
    let (page, _) = page_of(samples);
    for c in ["\u{202e}", "\u{2066}"] {
        assert!(!page.contains(c), "a raw bidi control in the page");
    }
    assert!(
        page.contains("\\u{202e}gnp.exe\\u{2066}"),
        "escaped visibly"
    );
    assert!(page.contains("<html lang=\"en\" dir=\"ltr\">"));
    // The diagnosis, which names the process, is isolated from tfwatch's own words.
    let diagnosis = &page[page.find("id=\"diagnosis\"").unwrap()..];
    assert!(diagnosis.contains("<pre><bdi>"), "{diagnosis}");
    assert_eq!(isolate("a\u{200f}<b>"), "<bdi>a\\u{200f}&lt;b&gt;</bdi>");
}

#[test]
fn a_megabyte_command_line_is_shown_cut_and_kept_whole_once() {
    let long = format!("python3 train.py {}", "--flag=xxxxxxxx ".repeat(70_000));
    assert!(long.len() > 1_000_000);
    let empty = ChartData::new();
    let page = Page {
        title: format!("tfwatch run: {long}"),
        facts: vec![("pid".into(), "10".into())],
        command: Some(long.clone()),
        data: &empty,
        findings: vec![],
        diagnosis: None,
        notes: vec![],
    };
    let mut out = Vec::new();
    write_page(&page, &mut out).unwrap();
    let html = String::from_utf8(out).unwrap();
    // Once whole, and a little more: not once per place it is named.
    assert!(html.len() < long.len() + 64 * 1024, "{} bytes", html.len());
    assert_eq!(html.matches(long.as_str()).count(), 1);
    let title = &html[html.find("<title>").unwrap()..html.find("</title>").unwrap()];
    assert!(title.len() < TITLE_CHARS + 100, "{title}");
    assert!(title.ends_with("more characters)"), "{title}");
    let heading = &html[html.find("<h1>").unwrap()..html.find("</h1>").unwrap()];
    assert!(heading.len() < TITLE_CHARS + 100, "{heading}");
    let facts =
        &html[html.find("<table class=\"facts\">").unwrap()..html.find("</table>").unwrap()];
    assert!(facts.len() < COMMAND_SHOWN_CHARS + 300, "{facts}");
    assert!(facts.contains("the whole command line is at the end of the page"));
    let whole = &html[html.find("<h2 id=\"command\">").unwrap()..];
    assert!(whole.contains(long.as_str()));
    // A short command is shown once, whole, with no section of its own.
    let page = Page {
        command: Some("python3 train.py".into()),
        title: "tfwatch run: python3 train.py".into(),
        ..page
    };
    let mut out = Vec::new();
    write_page(&page, &mut out).unwrap();
    let html = String::from_utf8(out).unwrap();
    assert!(html.contains("<tr><td>command</td><td><bdi>python3 train.py</bdi></td></tr>"));
    assert!(!html.contains("id=\"command\""));
    assert_eq!(shorten("abcdé", 4), "abcd… (1 more characters)");
    assert_eq!(shorten("abcd", 4), "abcd");
}

#[test]
fn gpu_and_application_metrics_are_drawn_when_read() {
    let samples = (0..5)
        .map(|t| {
            let tf = f64::from(t);
            let mut s = sample(
                tf,
                vec![process(
                    "serve",
                    &["serve"],
                    (100 + t as u64) << 20,
                    vec![thread(10, "serve", 'R', tf), thread(11, "io", 'S', 0.0)],
                )],
            );
            s.gpu = Some(GpuSample {
                devices: vec![GpuDevice {
                    index: 0,
                    name: "test GPU".into(),
                    memory_used_bytes: (1 + t as u64) << 30,
                    memory_total_bytes: 16 << 30,
                    ..GpuDevice::default()
                }],
                unavailable: None,
            });
            s.app = Some(AppMetrics {
                source: "http://127.0.0.1:1/metrics".into(),
                queue_depth: Some(10.0 * tf),
                latency_p50_seconds: Some(0.1 * tf),
                latency_p99_seconds: Some(0.5 * tf),
                ..AppMetrics::default()
            });
            s
        })
        .collect();
    let (page, data) = page_of(samples);
    let last = data.points().last().unwrap();
    assert_eq!(last.gpu_used_bytes, Some((5u64 << 30) as f64));
    assert_eq!(last.queue_depth, Some(40.0));
    for id in ["gpu", "queue", "latency"] {
        assert!(figure(&page, id).contains("<svg"), "{id} is drawn");
    }
    assert!(figure(&page, "gpu").contains("peak 5.0 GiB used"));
    assert!(figure(&page, "queue").contains("peak queue depth 40"));
    // The scraped URL is the job's own, shown nowhere as a link.
    assert!(!page.contains("href="));
}

#[test]
fn unreadable_sources_say_why() {
    let samples = (0..2)
        .map(|t| {
            let mut s = sample(
                f64::from(t),
                vec![process("job", &["job"], 1 << 20, vec![])],
            );
            s.gpu = Some(GpuSample {
                devices: vec![],
                unavailable: Some("no NVML library (libnvidia-ml.so.1)".into()),
            });
            s.app = Some(AppMetrics {
                source: "http://127.0.0.1:1/metrics".into(),
                unavailable: Some("connection refused".into()),
                ..AppMetrics::default()
            });
            s
        })
        .collect();
    let (page, _) = page_of(samples);
    assert!(figure(&page, "gpu").contains("no GPU data: no NVML library (libnvidia-ml.so.1)"));
    assert!(figure(&page, "queue").contains("no application metrics: connection refused"));
}

#[test]
fn one_sample_and_none_draw_without_failing() {
    let (page, data) = page_of(vec![sample(
        0.0,
        vec![process(
            "job",
            &["job"],
            1 << 20,
            vec![thread(10, "job", 'R', 1.0)],
        )],
    )]);
    assert_eq!(data.points().len(), 1);
    assert!(figure(&page, "threads").contains("<svg"));
    assert!(figure(&page, "memory").contains("<svg"));

    let empty = ChartData::new();
    let page = Page {
        title: "empty".into(),
        facts: vec![],
        command: None,
        data: &empty,
        findings: vec![],
        diagnosis: None,
        notes: vec![],
    };
    let mut out = Vec::new();
    write_page(&page, &mut out).unwrap();
    let page = String::from_utf8(out).unwrap();
    assert!(figure(&page, "threads").contains("no samples"));
    assert!(page.contains("No diagnosis was taken"));
    assert!(page.trim_end().ends_with("</html>"));
}

#[test]
fn long_watches_are_thinned_and_marks_capped() {
    let mut timeline = Timeline::new(f64::INFINITY);
    let mut data = ChartData::new();
    let values = Values::new();
    let total = MAX_POINTS * 2 + 10;
    for t in 0..total {
        timeline.push(sample(
            t as f64,
            vec![process("job", &["job"], 1 << 20, vec![])],
        ));
        data.observe(&timeline, &values, &[]);
    }
    assert_eq!(data.samples(), total);
    assert!(data.points().len() < MAX_POINTS, "{}", data.points().len());
    assert!(data.points().len() >= MAX_POINTS / 2);
    // The whole span is still covered, in order.
    assert_eq!(data.points()[0].elapsed_seconds, 0.0);
    assert!(data.points().last().unwrap().elapsed_seconds > (total - 10) as f64);
    assert!(
        data.points()
            .windows(2)
            .all(|w| w[0].elapsed_seconds < w[1].elapsed_seconds)
    );
    let finding = Finding::new(
        crate::model::FindingKind::ThreadExplosion,
        Severity::Warning,
        "x",
    );
    for t in 0..(MAX_MARKS + 5) {
        data.mark_findings(t as f64, std::slice::from_ref(&finding));
    }
    assert_eq!(data.marks().len(), MAX_MARKS);
    assert_eq!(data.marks_left_out, 5);
}

#[test]
fn two_snapshot_samples_make_two_points() {
    let before = sample(
        0.0,
        vec![process(
            "job",
            &["job"],
            1 << 20,
            vec![thread(10, "job", 'R', 1.0)],
        )],
    );
    let after = sample(
        0.5,
        vec![process(
            "job",
            &["job"],
            2 << 20,
            vec![thread(10, "job", 'R', 1.5)],
        )],
    );
    let data = ChartData::from_samples([&before, &after]);
    assert_eq!(data.points().len(), 2);
    let last = &data.points()[1];
    assert_eq!(last.running, 1);
    assert_eq!(last.rss_bytes, (2u64 << 20) as f64);
    assert_eq!(last.usable_cpus, 4.0);
    assert!(last.cpu_used.is_some_and(|c| c > 0.0), "{last:?}");
}

#[test]
fn a_ranks_pid_shows_its_rank_in_the_diagnosis() {
    let samples = (0..3)
        .map(|t| {
            let t = f64::from(t);
            let mut p = process(
                "python3",
                &["python3", "train.py"],
                1 << 20,
                vec![thread(10, "python3", 'S', 1.0)],
            );
            p.audit = Some(crate::model::RuntimeAudit {
                rank: Some(crate::model::ranks::RankInfo {
                    rank: 3,
                    world_size: Some(4),
                    ..Default::default()
                }),
                ..Default::default()
            });
            sample(t, vec![p])
        })
        .collect();
    let (page, _) = page_of(samples);
    let diagnosis = &page[page.find("id=\"diagnosis\"").unwrap()..];
    assert!(
        diagnosis.contains("(rank 3/4) python3 train.py")
            && diagnosis.contains("THREADS of pid 10 (python3, rank 3/4)"),
        "{diagnosis}"
    );
}
