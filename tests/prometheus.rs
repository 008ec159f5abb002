//! The exporter and the exported rules against the real Prometheus tools (Debian's
//! `prometheus` package): `promtool check rules` on exported rules, `promtool check
//! metrics` on a scrape of `tfwatch attach --listen`, and a Prometheus server on 127.0.0.1
//! that scrapes tfwatch watching the thread-explosion workload until the exported thread
//! alert fires. Every process started is ended by its guard, on failure too; a test skips
//! with a printed reason only when the tools are not installed (and fails then where
//! `TFWATCH_REQUIRE` names `prometheus`).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tfwatch::source::scrape::http::{Client, HttpUrl};

use crate::support::{ChildGuard, tfwatch, tfwatch_output, wait_for};

/// A Prometheus tool on PATH or where Debian installs it.
pub(crate) fn find_tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/bin"), PathBuf::from("/usr/local/bin")])
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

/// The tool, or `None` after skipping the test (`crate::support::skip`).
pub(crate) fn tool_or_skip(name: &str) -> Option<PathBuf> {
    let found = find_tool(name);
    if found.is_none() {
        crate::support::skip(
            "prometheus",
            format!("`{name}` is not installed (Debian package `prometheus`; .ci/run installs it)"),
        );
    }
    found
}

/// A directory under the system temp dir, removed on drop.
pub(crate) struct TempDir(PathBuf);

impl TempDir {
    pub(crate) fn new(what: &str) -> TempDir {
        static COUNT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = COUNT.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let dir =
            std::env::temp_dir().join(format!("tfwatch-test-{what}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create the temporary directory");
        TempDir(dir)
    }

    pub(crate) fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Collects a child's stdout and stderr on threads, so a full pipe never blocks it.
#[derive(Clone, Default)]
pub(crate) struct Output(Arc<Mutex<String>>);

impl Output {
    pub(crate) fn text(&self) -> String {
        self.0.lock().map(|t| t.clone()).unwrap_or_default()
    }
}

/// Drains the guard's stdout and stderr; each line is also sent on the returned channel.
pub(crate) fn drain(guard: &mut ChildGuard) -> (Output, mpsc::Receiver<String>) {
    let output = Output::default();
    let (sender, lines) = mpsc::channel();
    let stdout = guard
        .child
        .stdout
        .take()
        .map(|s| Box::new(s) as Box<dyn Read + Send>);
    let stderr = guard
        .child
        .stderr
        .take()
        .map(|s| Box::new(s) as Box<dyn Read + Send>);
    for stream in [stdout, stderr].into_iter().flatten() {
        let output = output.clone();
        let sender = sender.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines() {
                let Ok(line) = line else { break };
                if let Ok(mut text) = output.0.lock() {
                    text.push_str(&line);
                    text.push('\n');
                }
                let _ = sender.send(line);
            }
        });
    }
    (output, lines)
}

/// `tfwatch run-workload --scenario thread-explosion` for `duration`.
fn thread_explosion(duration: &str) -> (ChildGuard, Output) {
    let mut guard = ChildGuard::spawn(tfwatch(&[
        "run-workload",
        "--scenario",
        "thread-explosion",
        "--duration",
        duration,
    ]));
    let (output, _) = drain(&mut guard);
    (guard, output)
}

/// `tfwatch attach PID --no-tui --listen 127.0.0.1:0`, and the URL it prints.
fn attach_listening(pid: i32) -> (ChildGuard, Output, String) {
    let pid = pid.to_string();
    listening(tfwatch(&[
        "attach",
        &pid,
        "--no-tui",
        "--listen",
        "127.0.0.1:0",
        "--interval",
        "500ms",
        "--no-gpu",
    ]))
}

/// Starts a tfwatch `command` that listens on 127.0.0.1:0, and the URL it prints.
pub(crate) fn listening(command: Command) -> (ChildGuard, Output, String) {
    let mut guard = ChildGuard::spawn(command);
    let (output, lines) = drain(&mut guard);
    let deadline = Instant::now() + Duration::from_secs(20);
    let url = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) => {
                if let Some(url) = line.strip_prefix("tfwatch: listening on ") {
                    break url.trim().to_string();
                }
            }
            Err(_) => panic!(
                "tfwatch printed no `listening on` line within 20s:\n{}",
                output.text()
            ),
        }
    };
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");
    (guard, output, url)
}

/// GETs `url`; the body of a 200 response, or `None`.
pub(crate) fn http_get(url: &str) -> Option<String> {
    let parsed = HttpUrl::parse(url).ok()?;
    let addresses = parsed.resolve().ok()?;
    let body = Client::new(&parsed, &addresses, Duration::from_secs(5))
        .get(16 << 20)
        .ok()?;
    String::from_utf8(body).ok()
}

fn percent_encode(text: &str) -> String {
    let mut out = String::new();
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-_.~".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// The value of `name` (a series written as in the exposition) in `text`.
fn exposed(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

pub(crate) fn write_file(path: &Path, text: &str) {
    std::fs::File::create(path)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
}

/// `promtool ARGS` with `stdin`; its success and its combined output.
pub(crate) fn promtool(promtool: &Path, args: &[&str], stdin: Option<&str>) -> (bool, String) {
    let mut command = Command::new(promtool);
    command
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().expect("promtool starts");
    if let (Some(text), Some(mut input)) = (stdin, child.stdin.take()) {
        input
            .write_all(text.as_bytes())
            .expect("write promtool's stdin");
    }
    let output = child.wait_with_output().expect("promtool ends");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

/// A custom rule file with every comparison, a percentage, `for`, and text that needs
/// quoting: double quotes, backslashes, braces, a line break, non-ASCII.
const CUSTOM_RULES: &str = r#"
[[rule]]
name = "threads-exploding"
metric = "threads"
op = ">="
threshold = 20
for = "1m30s"
severity = "error"
message = "{value} \"threads\" in C:\\job — {{not a placeholder}} (limit {threshold}, {op})"
remedy = "Line one.\nLine two: cap {metric} for {for}; rule {name}."

[[rule]]
name = "memory"
metric = "memory_used_ratio"
op = ">"
threshold = "85%"
severity = "info"

[[rule]]
name = "exactly-one-cpu"
metric = "usable_cpus"
op = "=="
threshold = 1
message = "only {value} CPU"

[[rule]]
name = "queue-not-empty"
metric = "queue_depth"
op = "!="
threshold = 0
for = "500ms"

[[rule]]
name = "few"
metric = "threads_runnable"
op = "<"
threshold = 1

[[rule]]
name = "latency"
metric = "latency_p99_seconds"
op = "<="
threshold = 0.25
message = "p99 {value}"

[[rule]]
name = "rss"
metric = "rss_bytes"
op = ">"
threshold = 1073741824
message = "RSS {value} over {threshold}"
"#;

#[test]
fn exported_rules_pass_promtool_check_rules() {
    let Some(promtool_bin) = tool_or_skip("promtool") else {
        return;
    };
    let dir = TempDir::new("rules");

    let defaults = tfwatch_output(&["rules", "export", "--format", "prometheus"]);
    assert!(defaults.status.success(), "{defaults:?}");
    let default_file = dir.path().join("default.yml");
    write_file(&default_file, &String::from_utf8_lossy(&defaults.stdout));
    let (ok, text) = promtool(
        &promtool_bin,
        &["check", "rules", &default_file.display().to_string()],
        None,
    );
    assert!(ok, "promtool refused the default rules:\n{text}");
    // Every default rule, and the four rules across the ranks of distributed jobs.
    let count = tfwatch::rules::RuleSet::defaults().len() + 4;
    assert!(
        text.contains(&format!("SUCCESS: {count} rules found")),
        "{text}"
    );

    let custom_toml = dir.path().join("custom.toml");
    write_file(&custom_toml, CUSTOM_RULES);
    let custom = tfwatch_output(&["rules", "export", &custom_toml.display().to_string()]);
    assert!(custom.status.success(), "{custom:?}");
    let yaml = String::from_utf8_lossy(&custom.stdout).to_string();
    let custom_file = dir.path().join("custom.yml");
    write_file(&custom_file, &yaml);
    let (ok, text) = promtool(
        &promtool_bin,
        &["check", "rules", &custom_file.display().to_string()],
        None,
    );
    assert!(ok, "promtool refused the custom rules:\n{text}\n{yaml}");
    assert!(text.contains("SUCCESS: 11 rules found"), "{text}");
    assert!(yaml.contains("alert: \"ThreadsExploding\""), "{yaml}");
    assert!(
        yaml.contains(
            "expr: \"sum without (state) (tfwatch_threads) >= 20\"\n        for: \"90s\""
        ),
        "{yaml}"
    );

    // A bad file is refused as `rules check` refuses it, with file and line.
    let bad = dir.path().join("bad.toml");
    write_file(
        &bad,
        "[[rule]]\nname = \"x\"\nmetric = \"thread\"\nop = \">\"\nthreshold = 1\n",
    );
    let refused = tfwatch_output(&["rules", "export", &bad.display().to_string()]);
    assert_eq!(refused.status.code(), Some(2), "{refused:?}");
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("bad.toml:3") && stderr.contains("threads"),
        "{stderr}"
    );
    assert!(refused.stdout.is_empty());
}

#[test]
fn scrape_passes_promtool_check_metrics() {
    let Some(promtool_bin) = tool_or_skip("promtool") else {
        return;
    };
    let (workload, _) = thread_explosion("30s");
    let (_attach, attach_output, url) = attach_listening(workload.pid());
    // Two samples or more, so rates and counters are in.
    let body = wait_for("two samples exported", Duration::from_secs(20), || {
        let body = http_get(&url)?;
        (exposed(&body, "tfwatch_samples_total")? >= 2.0).then_some(body)
    });
    assert_eq!(exposed(&body, "tfwatch_up"), Some(1.0), "{body}");
    let pid = workload.pid();
    assert!(
        body.contains(&format!("tfwatch_process_threads{{pid=\"{pid}\",comm=")),
        "{body}"
    );
    assert!(
        body.contains("tfwatch_threads{state=\"running\"}"),
        "{body}"
    );
    assert!(
        body.contains("tfwatch_alert_active{rule=\"too-many-threads\""),
        "{body}"
    );

    let (ok, text) = promtool(&promtool_bin, &["check", "metrics"], Some(&body));
    assert!(
        ok,
        "promtool check metrics failed:\n{text}\n--- scrape:\n{body}"
    );
    assert!(text.trim().is_empty(), "promtool lint problems:\n{text}");

    // Only /metrics is served.
    let other = url.replace("/metrics", "/");
    assert!(http_get(&other).is_none(), "{other} should be 404");
    // Nothing on stdout from a headless attach.
    assert!(
        !attach_output.text().contains("\"type\""),
        "{}",
        attach_output.text()
    );
}

#[test]
fn non_loopback_listen_is_refused_without_allow_remote() {
    let pid = std::process::id().to_string();
    let refused = tfwatch_output(&["attach", &pid, "--no-tui", "--listen", "0.0.0.0:0"]);
    // A usage error (README, exit codes).
    assert_eq!(refused.status.code(), Some(2), "{refused:?}");
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("not a loopback address") && stderr.contains("--allow-remote"),
        "{stderr}"
    );
}

/// A free port on 127.0.0.1: bound, then released for the server to take.
pub(crate) fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local address").port()
}

/// The `data.result` array of a Prometheus query.
pub(crate) fn query(base: &str, promql: &str) -> Option<Vec<serde_json::Value>> {
    let body = http_get(&format!(
        "{base}/api/v1/query?query={}",
        percent_encode(promql)
    ))?;
    let json: serde_json::Value = serde_json::from_str(&body).ok()?;
    if json["status"] != "success" {
        return None;
    }
    json["data"]["result"].as_array().cloned()
}

/// The value of a one-series instant vector.
fn single_value(result: &[serde_json::Value]) -> Option<f64> {
    result.first()?["value"][1].as_str()?.parse().ok()
}

/// A Prometheus server on a free port of 127.0.0.1 that scrapes tfwatch's `url` every
/// second with the rules of `rules_file`, once it says it is ready; its guard, output
/// and URL.
fn start_prometheus(dir: &TempDir, rules_file: &Path, url: &str) -> (ChildGuard, Output, String) {
    let target = url
        .trim_start_matches("http://")
        .trim_end_matches("/metrics");
    serve_prometheus(
        dir,
        rules_file,
        "tfwatch",
        &format!("      - targets: [\"{target}\"]\n"),
    )
}

/// A Prometheus server on a free port of 127.0.0.1, scraping every second the
/// `static_configs` entries given (YAML list items) as job `job` with the rules of
/// `rules_file`, once it says it is ready; its guard, output and URL.
pub(crate) fn serve_prometheus(
    dir: &TempDir,
    rules_file: &Path,
    job: &str,
    static_configs: &str,
) -> (ChildGuard, Output, String) {
    let prometheus_bin = find_tool("prometheus").expect("the caller checked for prometheus");
    let config = dir.path().join("prometheus.yml");
    write_file(
        &config,
        &format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - {rules}\nscrape_configs:\n  - job_name: {job}\n    static_configs:\n{static_configs}",
            rules = rules_file.display()
        ),
    );
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let mut command = Command::new(&prometheus_bin);
    command.args([
        format!("--config.file={}", config.display()),
        format!("--storage.tsdb.path={}", dir.path().join("data").display()),
        format!("--web.listen-address=127.0.0.1:{port}"),
        "--log.level=warn".to_string(),
    ]);
    let mut prometheus = ChildGuard::spawn(command);
    let (output, _) = drain(&mut prometheus);
    let ready = Instant::now();
    while Instant::now() < ready + Duration::from_secs(30) {
        if http_get(&format!("{base}/-/ready")).is_some() {
            return (prometheus, output, base);
        }
        if let Ok(Some(status)) = prometheus.child.try_wait() {
            panic!(
                "prometheus exited with {status} before it was ready\n{}",
                output.text()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("prometheus not ready within 30s\n{}", output.text());
}

/// The exported rules of tfwatch's defaults, written into `dir`.
pub(crate) fn exported_rules(dir: &TempDir) -> PathBuf {
    let rules = tfwatch_output(&["rules", "export", "--format", "prometheus"]);
    assert!(rules.status.success(), "{rules:?}");
    let rules_file = dir.path().join("tfwatch-rules.yml");
    write_file(&rules_file, &String::from_utf8_lossy(&rules.stdout));
    rules_file
}

#[test]
fn prometheus_scrapes_tfwatch_and_fires_the_thread_alert() {
    let (Some(_), Some(_)) = (tool_or_skip("prometheus"), tool_or_skip("promtool")) else {
        return;
    };
    let started = Instant::now();
    // Declared first, dropped last: after every process using it has ended.
    let dir = TempDir::new("prometheus");
    let rules_file = exported_rules(&dir);

    let (workload, workload_output) = thread_explosion("60s");
    let (_attach, attach_output, url) = attach_listening(workload.pid());
    let (_prometheus, prometheus_output, base) = start_prometheus(&dir, &rules_file, &url);
    let logs = || {
        format!(
            "--- prometheus:\n{}\n--- tfwatch attach:\n{}\n--- workload:\n{}",
            prometheus_output.text(),
            attach_output.text(),
            workload_output.text()
        )
    };
    eprintln!("prometheus ready after {:.1?}", started.elapsed());

    // The tfwatch series arrive.
    let mut threads = None;
    let deadline = Instant::now() + Duration::from_secs(45);
    while threads.is_none() && Instant::now() < deadline {
        threads = query(
            &base,
            "sum without (state) (tfwatch_threads{job=\"tfwatch\"})",
        )
        .as_deref()
        .and_then(single_value);
        if threads.is_none() {
            std::thread::sleep(Duration::from_millis(250));
        }
    }
    let threads = threads.unwrap_or_else(|| panic!("no tfwatch_threads in 45s\n{}", logs()));
    eprintln!(
        "tfwatch_threads in Prometheus after {:.1?}: {threads}",
        started.elapsed()
    );
    let up = query(&base, "up{job=\"tfwatch\"}")
        .as_deref()
        .and_then(single_value);
    assert_eq!(up, Some(1.0), "the scrape of tfwatch is not up\n{}", logs());

    // The exported thread rule reaches `firing`.
    let firing = "ALERTS{alertname=\"TooManyThreads\",alertstate=\"firing\",severity=\"warning\",rule=\"too-many-threads\"}";
    let mut fired = None;
    let deadline = Instant::now() + Duration::from_secs(60);
    while fired.is_none() && Instant::now() < deadline {
        fired = query(&base, firing).filter(|r| !r.is_empty());
        if fired.is_none() {
            std::thread::sleep(Duration::from_millis(250));
        }
    }
    let fired = fired.unwrap_or_else(|| {
        let alerts = http_get(&format!("{base}/api/v1/alerts")).unwrap_or_default();
        panic!(
            "TooManyThreads did not fire within 60s; alerts: {alerts}\n{}",
            logs()
        )
    });
    eprintln!(
        "TooManyThreads firing in Prometheus after {:.1?}: {}",
        started.elapsed(),
        fired[0]
    );
    let alerts = http_get(&format!("{base}/api/v1/alerts")).unwrap_or_default();
    assert!(
        alerts.contains("\"alertname\":\"TooManyThreads\"")
            && alerts.contains("\"state\":\"firing\""),
        "{alerts}"
    );
    assert!(
        alerts.contains("threads in the process tree (limit 50)"),
        "{alerts}"
    );

    // tfwatch's own rule fired too, and Prometheus has it.
    let own = wait_for("tfwatch_alert_active = 1", Duration::from_secs(20), || {
        query(
            &base,
            "tfwatch_alert_active{rule=\"too-many-threads\",job=\"tfwatch\"} == 1",
        )
        .filter(|r| !r.is_empty())
    });
    assert_eq!(own.len(), 1);
    eprintln!("done after {:.1?}", started.elapsed());
}

/// `tfwatch node --listen` watching a thread-explosion job it did not start: the scrape
/// passes `promtool check metrics`, every job series carries `watched_job`, and the
/// exported thread rule fires in Prometheus for that job, with the job on the alert.
#[test]
fn prometheus_scrapes_tfwatch_node_and_alerts_per_job() {
    let (Some(_), Some(promtool_bin)) = (tool_or_skip("prometheus"), tool_or_skip("promtool"))
    else {
        return;
    };
    let dir = TempDir::new("prometheus-node");
    let rules_file = exported_rules(&dir);
    // A duration no other test uses, so --match picks this workload only.
    let duration = format!("{}ms", 70_000 + std::process::id() % 997);
    let (workload, workload_output) = thread_explosion(&duration);
    let (_node, node_output, url) = listening(tfwatch(&[
        "node",
        "--json",
        "--listen",
        "127.0.0.1:0",
        "--interval",
        "500ms",
        "--match",
        &format!("run-workload --scenario thread-explosion --duration {duration}"),
    ]));
    let job = format!("watched_job=\"tree/{}-", workload.pid());
    let body = wait_for("the job's series", Duration::from_secs(20), || {
        let body = http_get(&url)?;
        body.contains(&format!("tfwatch_threads{{{job}"))
            .then_some(body)
    });
    assert_eq!(exposed(&body, "tfwatch_up"), Some(1.0), "{body}");
    for line in body
        .lines()
        .filter(|l| l.starts_with("tfwatch_process_threads"))
    {
        assert!(line.contains("watched_job="), "{line}");
    }
    let (ok, text) = promtool(&promtool_bin, &["check", "metrics"], Some(&body));
    assert!(
        ok && text.trim().is_empty(),
        "promtool check metrics:\n{text}\n--- scrape:\n{body}"
    );

    let (_prometheus, prometheus_output, base) = start_prometheus(&dir, &rules_file, &url);
    let logs = || {
        format!(
            "--- prometheus:\n{}\n--- tfwatch node:\n{}\n--- workload:\n{}",
            prometheus_output.text(),
            node_output.text(),
            workload_output.text()
        )
    };
    let alert = "ALERTS{alertname=\"TooManyThreads\",alertstate=\"firing\",job=\"tfwatch\"}";
    let fired = wait_for(
        "TooManyThreads firing for the job",
        Duration::from_secs(60),
        || query(&base, alert).filter(|r| !r.is_empty()),
    );
    let labels = &fired[0]["metric"];
    let watched = labels["watched_job"].as_str().unwrap_or_default();
    assert!(
        watched.starts_with(&format!("tree/{}-", workload.pid())),
        "the alert names the job: {labels}\n{}",
        logs()
    );
    assert_eq!(
        labels["job"], "tfwatch",
        "Prometheus keeps its own job label: {labels}"
    );
}

/// `tfwatch run` under a guard that, on drop, also ends the command it started: `run`
/// puts its command in a process group of its own, which the plain guard's group kill
/// does not reach.
struct RunGuard(ChildGuard);

impl Drop for RunGuard {
    fn drop(&mut self) {
        let pid = self.0.pid();
        let children: Vec<i32> = std::fs::read_dir(format!("/proc/{pid}/task"))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|task| std::fs::read_to_string(task.path().join("children")).ok())
            .flat_map(|text| {
                text.split_whitespace()
                    .filter_map(|p| p.parse().ok())
                    .collect::<Vec<i32>>()
            })
            .collect();
        for child in children {
            // SAFETY: kill(2) on the group and pid of a process this test started.
            unsafe {
                libc::kill(-child, libc::SIGKILL);
                libc::kill(child, libc::SIGKILL);
            }
        }
    }
}

#[test]
fn run_serves_the_metrics_of_its_command() {
    let workload = crate::support::tfwatch_bin().display().to_string();
    let mut guard = RunGuard(ChildGuard::spawn(tfwatch(&[
        "run",
        "--listen",
        "127.0.0.1:0",
        "--interval",
        "500ms",
        "--no-gpu",
        "--fail-on",
        "never",
        "--",
        &workload,
        "run-workload",
        "--scenario",
        "thread-explosion",
        "--duration",
        "20s",
    ])));
    let (output, lines) = drain(&mut guard.0);
    let deadline = Instant::now() + Duration::from_secs(20);
    let url = loop {
        match lines.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(line) => {
                if let Some(url) = line.strip_prefix("tfwatch: listening on ") {
                    break url.trim().to_string();
                }
            }
            Err(_) => panic!("no `listening on` line within 20s:\n{}", output.text()),
        }
    };
    let body = wait_for(
        "the command's threads exported",
        Duration::from_secs(20),
        || {
            let body = http_get(&url)?;
            body.lines()
                .any(|l| {
                    l.starts_with("tfwatch_process_threads{") && l.contains("comm=\"tfwatch\"")
                })
                .then_some(body)
        },
    );
    assert_eq!(exposed(&body, "tfwatch_up"), Some(1.0), "{body}");
    assert!(exposed(&body, "tfwatch_samples_total").is_some_and(|n| n >= 1.0));
}
