use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::Duration;

use super::exposition::{escape_help, escape_label_value, format_value, metric_expression, render};
use super::*;
use crate::detect::DetectConfig;
use crate::model::jobs::JobLabels;
use crate::model::metrics::METRICS;
use crate::model::{
    CpuBudget, FindingKind, GpuDevice, GpuProcess, GpuSample, MemoryLimit, ProcessSample, Sample,
    ThreadSample, Unavailable,
};

fn thread(tid: i32, state: char, wchan: Option<&str>, switches: u64) -> ThreadSample {
    ThreadSample {
        tid,
        state,
        wchan: wchan.map(str::to_string),
        nonvoluntary_ctxt_switches: Some(switches),
        ..ThreadSample::default()
    }
}

/// A tree of two processes: the root with a running, a lock-waiting, a sleeping and a
/// zombie thread; a child named with a quote and a backslash, in I/O and input waits.
fn sample(t: f64, switches: u64) -> Sample {
    Sample {
        elapsed_seconds: t,
        time_unix_seconds: 1_700_000_000.0 + t,
        root_pid: 10,
        processes: vec![
            ProcessSample {
                pid: 10,
                comm: "python3".to_string(),
                rss_bytes: 1 << 20,
                cpu_seconds: t,
                threads: vec![
                    thread(10, 'R', None, switches),
                    thread(11, 'S', Some("futex_wait_queue"), switches),
                    thread(12, 'S', Some("hrtimer_nanosleep"), 0),
                    thread(13, 'Z', None, 0),
                ]
                .into(),
                ..ProcessSample::default()
            },
            ProcessSample {
                pid: 20,
                ppid: 10,
                comm: "we\"ird\\name".to_string(),
                rss_bytes: 2 << 20,
                threads: vec![
                    thread(20, 'D', None, 0),
                    thread(21, 'S', Some("ep_poll"), 0),
                ]
                .into(),
                ..ProcessSample::default()
            },
        ],
        cpus: CpuBudget {
            usable: 2.0,
            online: 4,
            ..CpuBudget::default()
        },
        memory_limit: MemoryLimit {
            bytes: 1 << 30,
            ..MemoryLimit::default()
        },
        unavailable: vec![Unavailable {
            source: "schedstat".to_string(),
            pid: Some(10),
            reason: "not readable".to_string(),
            fix: None,
        }],
        gpu: Some(GpuSample {
            devices: vec![GpuDevice {
                index: 0,
                memory_used_bytes: 3000,
                memory_total_bytes: 10_000,
                utilization_percent: Some(40),
                processes: vec![
                    GpuProcess {
                        pid: 10,
                        kind: crate::model::GpuProcessKind::Compute,
                        used_memory_bytes: Some(1000),
                    },
                    GpuProcess {
                        pid: 99,
                        kind: crate::model::GpuProcessKind::Compute,
                        used_memory_bytes: Some(2000),
                    },
                ],
                ..GpuDevice::default()
            }],
            unavailable: None,
        }),
        ..Sample::default()
    }
}

/// Feeds samples through a real watch and the exporter's state.
fn watched(samples: Vec<Sample>) -> (ExportState, Watch) {
    let rules = RuleSet::defaults();
    let mut state = ExportState::new(&rules);
    let mut watch = Watch::new(DetectConfig::default(), rules);
    for s in samples {
        let events = watch.observe(s);
        let Some(Event::Sample(line)) = events.first() else {
            panic!("the sample line comes first");
        };
        state.record(line, &watch.timeline, &watch.active_findings());
    }
    (state, watch)
}

/// `name{labels} value` lines of `text`, by series.
fn series(text: &str) -> Vec<(&str, f64)> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (name, value) = l.rsplit_once(' ').unwrap();
            (name, value.parse().unwrap())
        })
        .collect()
}

fn value(text: &str, name: &str) -> f64 {
    series(text)
        .into_iter()
        .find(|(n, _)| *n == name)
        .unwrap_or_else(|| panic!("{name} missing from\n{text}"))
        .1
}

#[test]
fn listen_addresses() {
    assert_eq!(
        listen_address("127.0.0.1:9464", false).unwrap(),
        "127.0.0.1:9464".parse().unwrap()
    );
    assert_eq!(
        listen_address("[::1]:0", false).unwrap(),
        "[::1]:0".parse().unwrap()
    );
    assert_eq!(
        listen_address("localhost:80", false).unwrap(),
        "127.0.0.1:80".parse().unwrap()
    );
    assert_eq!(
        listen_address(":9464", false).unwrap(),
        "127.0.0.1:9464".parse().unwrap()
    );
    let err = listen_address("0.0.0.0:9464", false)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("not a loopback address") && err.contains("--allow-remote"),
        "{err}"
    );
    assert!(listen_address("0.0.0.0:9464", true).is_ok());
    // IPv4 loopback written as IPv6 is loopback; other mapped addresses are not.
    assert_eq!(
        listen_address("[::ffff:127.0.0.1]:9464", false).unwrap(),
        "[::ffff:127.0.0.1]:9464".parse().unwrap()
    );
    assert!(listen_address("[::ffff:127.1.2.3]:0", false).is_ok());
    assert!(listen_address("[::ffff:10.0.0.1]:9464", false).is_err());
    assert!(listen_address("[::ffff:0.0.0.0]:9464", false).is_err());
    let err = listen_address("9464", false).unwrap_err().to_string();
    assert!(err.contains("\"9464\"") && err.contains("IP:PORT"), "{err}");
    assert!(listen_address("localhost:http", false).is_err());
}

#[test]
fn escaping() {
    assert_eq!(escape_label_value("a\"b\\c\nd"), r#"a\"b\\c\nd"#);
    assert_eq!(escape_help("x\\y\nz \"q\""), r#"x\\y\nz "q""#);
    assert_eq!(format_value(3.0), "3");
    assert_eq!(format_value(0.25), "0.25");
    assert_eq!(format_value(f64::NAN), "NaN");
    assert_eq!(format_value(f64::INFINITY), "+Inf");
    assert_eq!(format_value(f64::NEG_INFINITY), "-Inf");
}

#[test]
fn before_the_first_sample() {
    let text = render(&ExportState::new(&RuleSet::defaults()));
    assert_eq!(value(&text, "tfwatch_up"), 0.0);
    assert_eq!(value(&text, "tfwatch_samples_total"), 0.0);
    assert_eq!(
        value(
            &text,
            "tfwatch_alert_active{rule=\"too-many-threads\",severity=\"warning\"}"
        ),
        0.0
    );
    assert!(!text.contains("tfwatch_threads"), "{text}");
}

#[test]
fn tree_process_and_gpu_series() {
    let (state, _) = watched(vec![sample(0.0, 100), sample(1.0, 130), sample(2.0, 190)]);
    let text = render(&state);
    assert_eq!(value(&text, "tfwatch_up"), 1.0);
    assert_eq!(value(&text, "tfwatch_samples_total"), 3.0);
    // States by classify; the zombie counts as other, so the states add up.
    for (label, expected) in [
        ("running", 1.0),
        ("lock", 1.0),
        ("input", 1.0),
        ("sleep", 1.0),
        ("io", 1.0),
        ("other", 1.0),
    ] {
        assert_eq!(
            value(&text, &format!("tfwatch_threads{{state=\"{label}\"}}")),
            expected,
            "{label}"
        );
    }
    assert_eq!(state.tree_threads.total(), 6);
    assert_eq!(state.tree["threads"], 6.0);
    assert_eq!(
        value(
            &text,
            r#"tfwatch_process_threads{pid="20",comm="we\"ird\\name",state="io"}"#
        ),
        1.0
    );
    assert_eq!(
        value(
            &text,
            r#"tfwatch_process_rss_bytes{pid="10",comm="python3"}"#
        ),
        1_048_576.0
    );
    // Two threads of the root switch 30 then 60 times: a counter of the changes.
    assert_eq!(value(&text, "tfwatch_involuntary_switches_total"), 180.0);
    assert_eq!(
        value(
            &text,
            r#"tfwatch_process_involuntary_switches_total{pid="10",comm="python3"}"#
        ),
        180.0
    );
    assert_eq!(value(&text, "tfwatch_cpu_seconds_total"), 2.0);
    // Catalogue gauges under their own names.
    assert_eq!(value(&text, "tfwatch_usable_cpus"), 2.0);
    assert_eq!(value(&text, "tfwatch_rss_bytes"), 3_145_728.0);
    assert_eq!(value(&text, "tfwatch_memory_limit_bytes"), 1_073_741_824.0);
    assert!(
        !text.contains("tfwatch_queue_depth"),
        "no app metrics, no series"
    );
    // GPUs: the device, and the tree's part of it.
    assert_eq!(
        value(&text, r#"tfwatch_gpu_device_processes{gpu="0"}"#),
        2.0
    );
    assert_eq!(
        value(&text, r#"tfwatch_gpu_device_tree_processes{gpu="0"}"#),
        1.0
    );
    assert_eq!(
        value(
            &text,
            r#"tfwatch_gpu_device_tree_memory_used_bytes{gpu="0"}"#
        ),
        1000.0
    );
    assert_eq!(
        value(&text, r#"tfwatch_gpu_device_utilization_ratio{gpu="0"}"#),
        0.4
    );
    assert_eq!(
        value(&text, r#"tfwatch_source_unavailable{source="schedstat"}"#),
        1.0
    );
}

#[test]
fn a_rank_of_a_distributed_job_carries_a_rank_label_on_its_process_series() {
    let ranked = |t: f64| {
        let mut s = sample(t, 0);
        s.processes[1].audit = Some(crate::model::RuntimeAudit {
            rank: Some(crate::model::ranks::RankInfo {
                rank: 1,
                world_size: Some(2),
                ..Default::default()
            }),
            ..Default::default()
        });
        s
    };
    let (state, _) = watched(vec![ranked(0.0), ranked(1.0)]);
    assert_eq!(state.processes[1].rank, Some(1));
    let text = render(&state);
    assert_eq!(
        value(
            &text,
            r#"tfwatch_process_rss_bytes{pid="20",comm="we\"ird\\name",rank="1"}"#
        ),
        2_097_152.0
    );
    assert_eq!(
        value(
            &text,
            r#"tfwatch_process_threads{pid="20",comm="we\"ird\\name",rank="1",state="io"}"#
        ),
        1.0
    );
    assert_eq!(
        value(
            &text,
            r#"tfwatch_process_rss_bytes{pid="10",comm="python3"}"#
        ),
        1_048_576.0,
        "a process that is no rank has no rank label"
    );
}

#[test]
fn every_family_has_help_and_type_and_counters_end_in_total() {
    let (mut state, _) = watched(vec![sample(0.0, 0), sample(1.0, 10)]);
    state.findings_active.insert("deadlock".to_string(), true);
    let text = render(&state);
    let mut families = BTreeSet::new();
    let mut helped = BTreeSet::new();
    let mut typed = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let name = rest.split(' ').next().unwrap();
            assert!(helped.insert(name.to_string()), "HELP twice for {name}");
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            typed.push((name.to_string(), kind.to_string()));
        } else {
            let name = line.split(['{', ' ']).next().unwrap();
            assert!(name.starts_with("tfwatch_"), "{line}");
            families.insert(name.to_string());
            assert!(
                typed.last().is_some_and(|(n, _)| n == name),
                "{name} is not under its own TYPE line"
            );
        }
    }
    let typed_names: BTreeSet<String> = typed.iter().map(|(n, _)| n.clone()).collect();
    assert_eq!(typed_names.len(), typed.len(), "a family typed twice");
    assert_eq!(families, typed_names);
    assert_eq!(families, helped);
    for (name, kind) in &typed {
        assert_eq!(kind == "counter", name.ends_with("_total"), "{name} {kind}");
        assert!(
            name.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'),
            "{name}"
        );
    }
}

#[test]
fn every_catalogue_metric_is_readable_by_its_rule_expression() {
    let (mut state, _) = watched(vec![sample(0.0, 0)]);
    for metric in METRICS {
        state.tree.entry(metric.name.to_string()).or_insert(1.0);
    }
    let text = render(&state);
    for metric in METRICS {
        let expression = metric_expression(metric.name);
        let family = expression
            .split(['(', ')', ' '])
            .find(|word| word.starts_with("tfwatch_"))
            .unwrap();
        // `*_total` metrics (cgroup throttled time) are counters, the rest gauges.
        let kind = if metric.name.ends_with("_total") {
            "counter"
        } else {
            "gauge"
        };
        assert!(
            text.contains(&format!("# TYPE {family} {kind}")),
            "{} read as {expression}, which is not exposed",
            metric.name
        );
    }
}

#[test]
fn findings_and_alerts_stay_at_zero_after_they_resolve() {
    let rules = RuleSet::parse(
        r#"
[[rule]]
name = "many"
metric = "threads"
op = ">"
threshold = 5
severity = "error"
"#,
        Path::new("t.toml"),
    )
    .unwrap();
    let mut state = ExportState::new(&rules);
    let mut watch = Watch::new(DetectConfig::default(), rules);
    let mut record = |s: Sample, state: &mut ExportState| {
        let events = watch.observe(s);
        let Some(Event::Sample(line)) = events.first() else {
            panic!("no sample line");
        };
        let deadlock = crate::model::Finding::new(FindingKind::Deadlock, Severity::Error, "x");
        let findings = if line.elapsed_seconds < 1.0 {
            vec![&deadlock]
        } else {
            vec![]
        };
        state.record(line, &watch.timeline, &findings);
    };
    record(sample(0.0, 0), &mut state);
    let text = render(&state);
    assert_eq!(
        value(
            &text,
            r#"tfwatch_alert_active{rule="many",severity="error"}"#
        ),
        1.0
    );
    assert_eq!(
        value(&text, r#"tfwatch_finding_active{kind="deadlock"}"#),
        1.0
    );
    let mut small = sample(1.0, 0);
    small.processes.truncate(1);
    small.processes[0].threads.truncate(2);
    record(small, &mut state);
    let text = render(&state);
    assert_eq!(
        value(
            &text,
            r#"tfwatch_alert_active{rule="many",severity="error"}"#
        ),
        0.0
    );
    assert_eq!(
        value(&text, r#"tfwatch_finding_active{kind="deadlock"}"#),
        0.0
    );
    // The child left the tree: its series go with it.
    assert!(!text.contains("pid=\"20\""), "{text}");
}

fn http(address: SocketAddr, request: &str) -> String {
    let mut stream = TcpStream::connect(address).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response
}

#[test]
fn server_serves_only_metrics() {
    let (state, _) = watched(vec![sample(0.0, 0)]);
    let address = listen_address("127.0.0.1:0", false).unwrap();
    let exporter = Exporter::start(address, state).unwrap();
    let bound = exporter.address();
    assert_ne!(bound.port(), 0);
    assert_eq!(exporter.url(), format!("http://{bound}/metrics"));

    let get = http(
        bound,
        "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert!(get.starts_with("HTTP/1.1 200"), "{get}");
    assert!(
        get.to_ascii_lowercase()
            .contains("content-type: text/plain; version=0.0.4"),
        "{get}"
    );
    assert!(get.contains("\ntfwatch_up 1\n"), "{get}");

    let head = http(
        bound,
        "HEAD /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(!head.contains("tfwatch_up"), "{head}");

    let other = http(
        bound,
        "GET /debug HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert!(other.starts_with("HTTP/1.1 404"), "{other}");
    let post = http(
        bound,
        "POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    );
    assert!(post.starts_with("HTTP/1.1 405"), "{post}");
    assert!(post.contains("Allow: GET, HEAD"), "{post}");

    // A client that connects and sends nothing holds up neither the server nor updates.
    let _idle = TcpStream::connect(bound).unwrap();
    exporter.state.lock().unwrap().samples_total = 41;
    let again = http(
        bound,
        "GET /metrics?x=1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert!(again.contains("\ntfwatch_samples_total 41\n"), "{again}");
    drop(exporter);
    // The listener closes once the server's accept thread has seen the drop.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while TcpStream::connect(bound).is_ok() {
        assert!(
            std::time::Instant::now() < deadline,
            "still listening after drop"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn documentation_lists_every_family() {
    let docs = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/prometheus.md"));
    let (mut state, _) = watched(vec![sample(0.0, 0), sample(1.0, 1)]);
    state.findings_active.insert("deadlock".to_string(), true);
    let mut node = NodeExportState::new(&RuleSet::defaults());
    node.findings_active
        .insert("oversubscription".to_string(), true);
    let text = render(&state) + &exposition::render_node(&node);
    for label in [
        "watched_job",
        "watched_pod",
        "watched_container",
        "watched_namespace",
    ] {
        assert!(
            docs.contains(&format!("`{label}`")),
            "docs/prometheus.md lacks {label}"
        );
    }
    for family in text.lines().filter_map(|l| l.strip_prefix("# TYPE ")) {
        let name = family.split(' ').next().unwrap();
        assert!(
            docs.contains(&format!("`{name}`")) || docs.contains(&format!("`{name}{{")),
            "docs/prometheus.md lacks {name}"
        );
    }
    for metric in METRICS {
        assert!(
            docs.contains(&format!("`tfwatch_{}", metric.name)),
            "docs/prometheus.md lacks tfwatch_{}",
            metric.name
        );
    }
}

#[test]
fn process_series_are_capped_but_the_tree_counts_every_process() {
    let mut big = sample(0.0, 0);
    let template = big.processes[1].clone();
    for i in 0..(MAX_PROCESS_SERIES as i32 + 50) {
        let mut p = template.clone();
        p.pid = 1000 + i;
        big.processes.push(p);
    }
    let (state, _) = watched(vec![big]);
    assert_eq!(state.processes.len(), MAX_PROCESS_SERIES);
    assert_eq!(state.processes[0].pid, 10, "the root keeps its series");
    assert_eq!(
        state.tree_threads.total(),
        6 + 2 * (MAX_PROCESS_SERIES as u64 + 50)
    );
}

#[test]
fn request_heads_are_parsed_and_capped() {
    use super::server::{Head, parse_head};
    assert_eq!(
        parse_head(b"GET /metrics HTTP/1.1\r\nHost: x\r\n", 100),
        Head::Incomplete
    );
    assert_eq!(
        parse_head(b"GET /metrics?a=b HTTP/1.0\r\nHost: x\r\n\r\n", 100),
        Head::Request {
            method: "GET".to_string(),
            target: "/metrics?a=b".to_string()
        }
    );
    assert_eq!(
        parse_head(b"HEAD /metrics HTTP/1.1\n\n", 100),
        Head::Request {
            method: "HEAD".to_string(),
            target: "/metrics".to_string()
        }
    );
    assert_eq!(parse_head(b"GET metrics HTTP/1.1\r\n\r\n", 100), Head::Bad);
    assert_eq!(parse_head(b"GET /metrics SPDY/3\r\n\r\n", 100), Head::Bad);
    assert_eq!(
        parse_head(b"\xff\xfe /metrics HTTP/1.1\r\n\r\n", 100),
        Head::Bad
    );
    let long = format!("GET /metrics HTTP/1.1\r\nX: {}\r\n", "a".repeat(200));
    assert_eq!(parse_head(long.as_bytes(), 100), Head::TooLarge);
    assert_eq!(
        parse_head(format!("{long}\r\n").as_bytes(), 100),
        Head::TooLarge
    );
    assert!(matches!(
        parse_head(format!("{long}\r\n").as_bytes(), 1000),
        Head::Request { .. }
    ));
}

#[test]
fn routes_and_accept_failures() {
    use super::server::{AcceptFailure, connection_cap, route};
    assert_eq!(route("GET", "/metrics?x"), (200, None));
    assert_eq!(route("HEAD", "/metrics"), (200, None));
    assert_eq!(route("POST", "/metrics").0, 405);
    assert_eq!(route("GET", "/").0, 404);
    let of = |errno| AcceptFailure::of(&std::io::Error::from_raw_os_error(errno));
    assert_eq!(of(libc::EMFILE), AcceptFailure::Resources);
    assert_eq!(of(libc::ENFILE), AcceptFailure::Resources);
    assert_eq!(of(libc::ECONNABORTED), AcceptFailure::Transient);
    assert_eq!(of(libc::EINTR), AcceptFailure::Transient);
    assert_eq!(of(libc::EBADF), AcceptFailure::Listener);
    assert_eq!(connection_cap(256, 20_000), 256);
    assert_eq!(connection_cap(256, 256), 64);
    assert_eq!(connection_cap(256, 4), 8);
}

/// Reads from `stream` until it is closed or `within` passes; what arrived, and whether
/// the server closed it in time.
fn read_until_closed(stream: &mut TcpStream, within: Duration) -> (String, bool) {
    let deadline = std::time::Instant::now() + within;
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return (String::from_utf8_lossy(&got).to_string(), false);
        }
        stream.set_read_timeout(Some(left)).unwrap();
        match stream.read(&mut buf) {
            Ok(0) => return (String::from_utf8_lossy(&got).to_string(), true),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                return (String::from_utf8_lossy(&got).to_string(), true);
            }
            Err(_) => {}
        }
    }
}

#[test]
fn server_bounds_idle_slow_and_oversized_clients() {
    use super::server::{Limits, MetricsServer};
    let (state, _) = watched(vec![sample(0.0, 0)]);
    let limits = Limits {
        workers: 2,
        max_connections: 8,
        head_deadline: Duration::from_millis(600),
        write_deadline: Duration::from_secs(2),
        max_head_bytes: 256,
    };
    let server = MetricsServer::start_with(
        "127.0.0.1:0".parse().unwrap(),
        Arc::new(Mutex::new(state)),
        limits,
    )
    .unwrap();
    let bound = server.address();
    let get = "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n";

    // More idle connections than the cap: a scrape still gets through at once (the
    // oldest idle one is shed for it).
    let idle: Vec<TcpStream> = (0..20)
        .map(|_| TcpStream::connect(bound).unwrap())
        .collect();
    let started = std::time::Instant::now();
    let answer = http(bound, get);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("\ntfwatch_up 1\n"), "{answer}");
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "{:?}",
        started.elapsed()
    );

    // A client that sends its head a byte at a time is closed at the head deadline, not
    // kept while it trickles.
    let mut slow = TcpStream::connect(bound).unwrap();
    let opened = std::time::Instant::now();
    let mut closed = false;
    for byte in get.as_bytes().iter().take(20) {
        if slow.write_all(&[*byte]).is_err() {
            closed = true;
            break;
        }
        let (_, gone) = read_until_closed(&mut slow, Duration::from_millis(100));
        if gone {
            closed = true;
            break;
        }
    }
    let took = opened.elapsed();
    assert!(closed, "a trickling client was kept for {took:?}");
    assert!(took < Duration::from_millis(1500), "closed after {took:?}");

    // An oversized head is refused with 431.
    let mut big = TcpStream::connect(bound).unwrap();
    let _ =
        big.write_all(format!("GET /metrics HTTP/1.1\r\nX: {}\r\n", "a".repeat(400)).as_bytes());
    let (text, gone) = read_until_closed(&mut big, Duration::from_secs(2));
    assert!(gone && text.starts_with("HTTP/1.1 431"), "{text}");

    // A bad request line gets 400.
    let bad = http(bound, "HELLO\r\n\r\n");
    assert!(bad.starts_with("HTTP/1.1 400"), "{bad}");

    // The idle ones were all closed by the server (shed or past the deadline).
    for mut stream in idle {
        let (_, gone) = read_until_closed(&mut stream, Duration::from_secs(2));
        assert!(gone, "an idle connection outlived the head deadline");
    }
    let again = http(bound, get);
    assert!(again.starts_with("HTTP/1.1 200"), "{again}");
}

/// Every PromQL expression of a Grafana dashboard (panels, annotations, variables).
fn dashboard_expressions(value: &serde_json::Value, out: &mut Vec<String>) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, value) in map {
                match (key.as_str(), value) {
                    ("expr" | "definition", serde_json::Value::String(expr)) => {
                        out.push(expr.clone());
                    }
                    ("query", serde_json::Value::String(expr)) if expr.contains("tfwatch_") => {
                        out.push(expr.clone());
                    }
                    _ => dashboard_expressions(value, out),
                }
            }
        }
        serde_json::Value::Array(items) => {
            for item in items {
                dashboard_expressions(item, out);
            }
        }
        _ => {}
    }
}

#[test]
fn every_grafana_query_names_an_exported_series() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/grafana/tfwatch.json");
    let text = std::fs::read_to_string(&path).unwrap();
    let dashboard: serde_json::Value = serde_json::from_str(&text).unwrap();
    // Every family the exporter can write: a tree with GPUs, every catalogue metric, a
    // finding and the default rules' alerts.
    let (mut state, _) = watched(vec![sample(0.0, 0), sample(1.0, 1)]);
    for metric in METRICS {
        state.tree.entry(metric.name.to_string()).or_insert(1.0);
    }
    state.findings_active.insert("deadlock".to_string(), true);
    state.ranks.push(super::ranks::RankSeries {
        pid: 7,
        job: "10.0.0.1:29500".to_string(),
        rank: 0,
        local_rank: Some(0),
        world_size: Some(2),
        state: super::ranks::RankState::Collective,
        collective: "all_reduce".to_string(),
        call_site: "train.py:5".to_string(),
        function: "main".to_string(),
        seconds_without_progress: 30.0,
    });
    let exported: BTreeSet<String> = render(&state)
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .map(|l| l.split(' ').next().unwrap().to_string())
        .collect();
    let mut expressions = Vec::new();
    dashboard_expressions(&dashboard, &mut expressions);
    let panels = dashboard["panels"].as_array().unwrap();
    assert!(panels.len() >= 10, "{} panels", panels.len());
    for panel in panels {
        let targets = panel["targets"].as_array().map_or(0, Vec::len);
        assert!(targets > 0, "panel {} has no query", panel["title"]);
    }
    let mut named = BTreeSet::new();
    let mut unknown = Vec::new();
    for expr in &expressions {
        let names: Vec<&str> = expr
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .filter(|word| word.starts_with("tfwatch_"))
            .collect();
        assert!(!names.is_empty(), "query names no tfwatch series: {expr}");
        for name in names {
            if !exported.contains(name) {
                unknown.push(format!("{name} (in {expr})"));
            }
            named.insert(name.to_string());
        }
    }
    assert!(
        unknown.is_empty(),
        "docs/grafana/tfwatch.json queries series tfwatch does not export:\n{}",
        unknown.join("\n")
    );
    // The charts the dashboard is for.
    for family in [
        "tfwatch_threads",
        "tfwatch_cpu_utilization_cpus",
        "tfwatch_usable_cpus",
        "tfwatch_runqueue_wait_ratio",
        "tfwatch_cpu_throttled_ratio",
        "tfwatch_rss_bytes",
        "tfwatch_memory_limit_bytes",
        "tfwatch_gpu_memory_used_bytes",
        "tfwatch_queue_depth",
        "tfwatch_latency_p99_seconds",
        "tfwatch_finding_active",
        "tfwatch_alert_active",
    ] {
        assert!(
            named.contains(family),
            "the dashboard does not chart {family}"
        );
    }
}

/// A tree of `processes` one-thread processes under pid 1000.
fn wide_sample(t: f64, processes: i32) -> Sample {
    let mut sample = sample(t, 0);
    sample.root_pid = 1000;
    sample.processes = (0..processes)
        .map(|i| ProcessSample {
            pid: 1000 + i,
            ppid: if i == 0 { 1 } else { 1000 },
            comm: format!("worker{i}"),
            cpu_seconds: t,
            threads: vec![thread(1000 + i, 'S', Some("futex_wait_queue"), 0)].into(),
            ..ProcessSample::default()
        })
        .collect();
    sample
}

/// Feeds `samples` through a watch into job `labels` of `node`.
fn record_job(node: &mut NodeExportState, labels: &JobLabels, samples: Vec<Sample>) {
    let mut watch = Watch::new(DetectConfig::default(), RuleSet::defaults());
    for s in samples {
        let events = watch.observe(s);
        let Some(Event::Sample(line)) = events.first() else {
            panic!("the sample line comes first");
        };
        node.record_job(labels, line, &watch.timeline, &watch.active_findings());
    }
}

fn tree_job(name: &str) -> JobLabels {
    JobLabels {
        job: name.to_string(),
        ..JobLabels::default()
    }
}

#[test]
fn node_series_carry_their_jobs_labels_under_one_header_per_family() {
    let mut node = NodeExportState::new(&RuleSet::defaults());
    let before = exposition::render_node(&node);
    assert_eq!(value(&before, "tfwatch_up"), 0.0);
    assert_eq!(value(&before, "tfwatch_node_jobs"), 0.0);

    let pod = JobLabels {
        job: "pod/1234/trainer".to_string(),
        pod: Some("1234".to_string()),
        container: Some("trainer".to_string()),
        namespace: Some("ml".to_string()),
    };
    let tree = tree_job("tree/77-python3");
    record_job(&mut node, &pod, vec![sample(0.0, 0), sample(1.0, 5)]);
    record_job(&mut node, &tree, vec![sample(0.0, 0), sample(1.0, 9)]);
    let finding = Finding::new(
        FindingKind::Oversubscription,
        Severity::Warning,
        "jobs oversubscribe the node",
    );
    node.record_scan(0.02, 0.001, &[&finding]);
    let text = exposition::render_node(&node);

    assert_eq!(value(&text, "tfwatch_up"), 1.0);
    assert_eq!(value(&text, "tfwatch_samples_total"), 1.0);
    assert_eq!(value(&text, "tfwatch_node_jobs"), 2.0);
    // One HELP and one TYPE per family however many jobs have samples in it.
    let mut types = BTreeSet::new();
    for line in text.lines().filter(|l| l.starts_with("# TYPE ")) {
        assert!(types.insert(line), "{line} twice in\n{text}");
    }
    // Every series of a job names it; a pod's names its pod, container and namespace.
    let pod_labels = r#"watched_job="pod/1234/trainer",watched_pod="1234",watched_container="trainer",watched_namespace="ml""#;
    for job in [pod_labels, r#"watched_job="tree/77-python3""#] {
        let threads = format!("tfwatch_threads{{{job},state=\"lock\"}}");
        assert_eq!(value(&text, &threads), 1.0, "{threads}");
        let process = format!("tfwatch_process_rss_bytes{{{job},pid=\"10\",comm=\"python3\"}}");
        assert_eq!(value(&text, &process), f64::from(1 << 20), "{process}");
        let rule =
            format!("tfwatch_alert_active{{{job},rule=\"too-many-threads\",severity=\"warning\"}}");
        assert_eq!(value(&text, &rule), 0.0, "{rule}");
    }
    let (samples_of_jobs, health): (Vec<_>, Vec<_>) = series(&text)
        .into_iter()
        .partition(|(name, _)| name.contains("watched_job="));
    let health: Vec<&str> = health
        .iter()
        .map(|(name, _)| name.split('{').next().unwrap())
        .collect();
    assert!(
        health.iter().all(|name| [
            "tfwatch_up",
            "tfwatch_build_info",
            "tfwatch_samples_total",
            "tfwatch_sample_duration_seconds",
            "tfwatch_sample_lateness_seconds",
            "tfwatch_node_jobs",
            "tfwatch_node_finding_active",
        ]
        .contains(name)),
        "series without a job: {health:?}"
    );
    assert!(samples_of_jobs.len() > 40, "{}", samples_of_jobs.len());
    assert_eq!(
        value(
            &text,
            "tfwatch_node_finding_active{kind=\"oversubscription\"}"
        ),
        1.0
    );

    // A job that ends takes its series with it; a resolved node finding reads 0.
    node.job_ended(&pod);
    node.record_scan(0.02, 0.0, &[]);
    let text = exposition::render_node(&node);
    assert!(!text.contains("watched_pod"), "{text}");
    assert_eq!(value(&text, "tfwatch_node_jobs"), 1.0);
    assert_eq!(
        value(
            &text,
            "tfwatch_node_finding_active{kind=\"oversubscription\"}"
        ),
        0.0
    );
}

#[test]
fn node_series_are_bounded_however_many_jobs_and_processes() {
    use crate::model::jobs::{MAX_JOBS, NodeProcess, group_jobs};
    // 300 unrelated processes: 300 candidate jobs, grouped into at most MAX_JOBS.
    let processes: Vec<NodeProcess> = (0..300)
        .map(|i| NodeProcess {
            pid: 5000 + i,
            ppid: 1,
            comm: "trainer".to_string(),
            num_threads: 1 + i as u32 % 7,
            ..NodeProcess::default()
        })
        .collect();
    let jobs = group_jobs(&processes);
    assert_eq!(jobs.len(), MAX_JOBS);

    // Each job with 50 processes: only MAX_NODE_PROCESS_SERIES of them get series.
    let one_job = |processes: i32| {
        let mut node = NodeExportState::new(&RuleSet::defaults());
        record_job(
            &mut node,
            &tree_job("tree/1000-worker0"),
            vec![wide_sample(0.0, processes), wide_sample(1.0, processes)],
        );
        series(&exposition::render_node(&node)).len()
    };
    let capped = one_job(MAX_NODE_PROCESS_SERIES as i32);
    assert_eq!(one_job(50), capped, "processes past the cap get no series");
    assert!(one_job(2) < capped);

    let mut node = NodeExportState::new(&RuleSet::defaults());
    for labels in jobs.keys() {
        record_job(
            &mut node,
            labels,
            vec![wide_sample(0.0, 50), wide_sample(1.0, 50)],
        );
    }
    node.record_scan(0.1, 0.0, &[]);
    let text = exposition::render_node(&node);
    let all = series(&text);
    let pids: BTreeSet<&str> = all
        .iter()
        .filter_map(|(name, _)| name.split("pid=\"").nth(1))
        .filter_map(|rest| rest.split('"').next())
        .collect();
    assert!(pids.len() <= MAX_NODE_PROCESS_SERIES, "{}", pids.len());
    let jobs_named: BTreeSet<&str> = all
        .iter()
        .filter_map(|(name, _)| name.split("watched_job=\"").nth(1))
        .filter_map(|rest| rest.split('"').next())
        .collect();
    assert_eq!(jobs_named.len(), MAX_JOBS);
    assert!(
        all.len() <= MAX_JOBS * capped,
        "{} series for {MAX_JOBS} jobs of at most {capped}",
        all.len()
    );
}
