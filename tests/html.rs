//! `tfwatch replay` over the recorded fixtures, and the HTML page of `run`, `snapshot`
//! and `replay`, looked at in a real browser where one is installed.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::support::{ChildGuard, Lines, tfwatch, tfwatch_bin, tfwatch_output};

const HANG: i32 = 122;
const USAGE: i32 = 2;

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tfwatch-html-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn fixture(name: &str) -> String {
    format!(
        "{}/fixtures/timelines/{name}.jsonl",
        env!("CARGO_MANIFEST_DIR")
    )
}

/// `tfwatch replay FIXTURE --json` with the settings the unit tests judge the fixtures
/// with (`src/engine/recorded_tests.rs`: 3 s hang window, 384 MiB memory budget); returns
/// the finding kinds raised at warning or above and the alerts, from the `replayed` line.
fn replay(name: &str) -> (BTreeSet<String>, BTreeSet<String>) {
    let path = fixture(name);
    let out = tfwatch_output(&[
        "replay",
        &path,
        "--json",
        "--hang-after",
        "3s",
        "--memory-limit",
        "384MiB",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{name}: {e}: {l}")))
        .collect();
    let replayed = lines.last().unwrap();
    assert_eq!(replayed["type"], "replayed", "{stdout}");
    assert!(replayed["samples"].as_u64().unwrap() >= 5, "{replayed}");
    let kinds: BTreeSet<String> = replayed["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["severity"] != "info")
        .map(|f| f["kind"].as_str().unwrap().to_string())
        .collect();
    let alerts: BTreeSet<String> = replayed["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["rule"].as_str().unwrap().to_string())
        .collect();
    // Every finding in the summary was announced by its own line as it was raised.
    let announced: BTreeSet<String> = lines
        .iter()
        .filter(|l| l["type"] == "finding" && l["severity"] != "info")
        .map(|l| l["kind"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(announced, kinds, "{name}");
    (kinds, alerts)
}

#[test]
fn replay_of_the_recorded_fixtures_gives_the_findings_the_unit_tests_expect() {
    let set =
        |names: &[&str]| -> BTreeSet<String> { names.iter().map(|s| s.to_string()).collect() };
    let (kinds, _) = replay("deadlock");
    assert!(
        kinds.contains("no-progress") || kinds.contains("deadlock"),
        "{kinds:?}"
    );
    let (kinds, _) = replay("fork-lock");
    assert!(kinds.contains("fork-inherited-lock"), "{kinds:?}");
    assert!(
        !kinds.contains("no-progress"),
        "the parent is healthy: {kinds:?}"
    );
    let (kinds, _) = replay("oversubscribe");
    assert!(kinds.contains("oversubscription"), "{kinds:?}");
    let (kinds, alerts) = replay("thread-explosion");
    assert!(kinds.contains("thread-explosion"), "{kinds:?}");
    assert!(alerts.contains("too-many-threads"), "{alerts:?}");
    let (kinds, _) = replay("memory-growth");
    assert!(kinds.contains("memory-pressure"), "{kinds:?}");
    for quiet in ["oversubscribe-fixed", "memory-growth-fixed", "healthy"] {
        let (kinds, alerts) = replay(quiet);
        assert_eq!(kinds, set(&[]), "{quiet}");
        assert_eq!(alerts, set(&[]), "{quiet}");
    }
}

#[test]
fn replay_text_names_the_findings() {
    let path = fixture("memory-growth");
    let out = tfwatch_output(&["replay", &path, "--memory-limit", "384MiB"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("FINDING [error] memory-pressure"), "{text}");
    assert!(text.contains("findings raised:"), "{text}");
    assert!(
        text.contains("alerts fired:\n  [warning] memory-pressure"),
        "{text}"
    );
    // Judged on the recorded limit instead (MemTotal of the recording machine), the
    // same growth is no memory pressure.
    let out = tfwatch_output(&["replay", &path]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!text.contains("FINDING [error] memory-pressure"), "{text}");
}

#[test]
fn replay_refuses_what_is_not_a_timeline() {
    let dir = temp_dir("bad");
    let deadlock = std::fs::read_to_string(fixture("deadlock")).unwrap();
    let mut lines = deadlock.lines();
    let (first, second) = (lines.next().unwrap(), lines.next().unwrap());
    let cases = [
        ("missing.jsonl", None, "cannot open the timeline"),
        ("empty.jsonl", Some(String::new()), "holds no sample"),
        (
            "garbage.jsonl",
            Some(format!("{first}\nnot json at all\n")),
            "line 2: not a recorded sample",
        ),
        (
            "joined.jsonl",
            Some(format!("{second}\n{first}\n")),
            "line 2: elapsed_seconds",
        ),
        (
            "huge-elapsed.jsonl",
            Some(format!(
                "{first}\n{}\n",
                with_field(first, "elapsed_seconds", 2e19)
            )),
            "line 2: elapsed_seconds 2e19 is not a time",
        ),
        (
            "negative-cpu.jsonl",
            Some(format!("{}\n", with_process_cpu(first, -1e300))),
            "line 1: pid ",
        ),
    ];
    for (name, text, expected) in cases {
        let path = dir.join(name);
        if let Some(text) = text {
            std::fs::write(&path, text).unwrap();
        }
        let out = tfwatch_output(&["replay", path.to_str().unwrap()]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(USAGE), "{name}: {err}");
        assert!(err.contains(expected), "{name}: {err}");
        assert!(err.contains(name), "{name} is named: {err}");
    }
    // A recording cut off mid-line (its recorder was killed): the complete samples count.
    let cut = dir.join("cut.jsonl");
    std::fs::write(
        &cut,
        format!("{first}\n{second}\n{}", &first[..first.len() / 2]),
    )
    .unwrap();
    let out = tfwatch_output(&["replay", cut.to_str().unwrap()]);
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("line 3 is cut off"), "{err}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("2 sample(s)"));
    // A recording longer than the watch's history: the span is the whole recording's.
    let long = dir.join("long.jsonl");
    let mut text = String::new();
    for i in 0..4 {
        let mut sample: Value = serde_json::from_str(first).unwrap();
        sample["elapsed_seconds"] = Value::from(f64::from(i) * 400.0);
        text.push_str(&format!("{sample}\n"));
    }
    std::fs::write(&long, text).unwrap();
    let out = tfwatch_output(&["replay", long.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("4 sample(s) of pid"), "{stdout}");
    assert!(stdout.contains("over 20m00s"), "{stdout}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The sample `line` with `field` set to `value`.
fn with_field(line: &str, field: &str, value: f64) -> String {
    let mut sample: Value = serde_json::from_str(line).unwrap();
    sample[field] = Value::from(value);
    sample.to_string()
}

/// The sample `line` with its first process's CPU seconds set to `value`.
fn with_process_cpu(line: &str, value: f64) -> String {
    let mut sample: Value = serde_json::from_str(line).unwrap();
    sample["processes"][0]["cpu_seconds"] = Value::from(value);
    sample.to_string()
}

#[test]
fn replay_of_a_fifo_nothing_writes_to_is_refused_in_bounded_time() {
    let dir = temp_dir("fifo");
    let fifo = dir.join("timeline.fifo");
    let _ = std::fs::remove_file(&fifo);
    let name = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: mkfifo with a valid path and mode.
    assert_eq!(unsafe { libc::mkfifo(name.as_ptr(), 0o600) }, 0);
    let started = std::time::Instant::now();
    let mut replay = ChildGuard::spawn(tfwatch(&["replay", fifo.to_str().unwrap()]));
    let status = crate::support::wait_for("replay to give up", Duration::from_secs(30), || {
        replay.child.try_wait().unwrap()
    });
    let mut err = String::new();
    std::io::Read::read_to_string(replay.child.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert_eq!(status.code(), Some(USAGE), "{err}");
    assert!(
        err.contains("is a FIFO and nothing could be read from it within"),
        "{err}"
    );
    assert!(started.elapsed() < Duration::from_secs(30));
    // A FIFO with a writer is read as any timeline.
    let deadlock = std::fs::read_to_string(fixture("deadlock")).unwrap();
    let writer_path = fifo.clone();
    let writer = std::thread::spawn(move || std::fs::write(writer_path, deadlock).unwrap());
    let out = tfwatch_output(&["replay", fifo.to_str().unwrap()]);
    // Should tfwatch not have opened it, a reader of our own lets the writer go.
    let _unblock = {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&fifo)
    };
    let _ = writer.join();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("findings raised:"));
    let _ = std::fs::remove_dir_all(&dir);
}

/// The sections every page has.
fn assert_page(page: &str, charts: &[&str]) {
    assert!(page.starts_with("<!DOCTYPE html>"));
    assert!(page.trim_end().ends_with("</html>"));
    for id in [
        "threads", "cpu", "wait", "memory", "gpu", "queue", "latency",
    ] {
        assert!(
            page.contains(&format!("<figure id=\"chart-{id}\">")),
            "chart {id}"
        );
    }
    for id in charts {
        let start = page.find(&format!("<figure id=\"chart-{id}\">")).unwrap();
        let end = start + page[start..].find("</figure>").unwrap();
        assert!(page[start..end].contains("<svg"), "chart {id} is drawn");
    }
    for section in ["findings", "marks", "diagnosis"] {
        assert!(page.contains(&format!("id=\"{section}\"")), "{section}");
    }
    assert!(!page.contains("<script") && !page.contains("src="));
}

#[test]
fn replay_html_page() {
    let dir = temp_dir("replay");
    let html = dir.join("page.html");
    let out = tfwatch_output(&[
        "replay",
        &fixture("thread-explosion"),
        "--hang-after",
        "3s",
        "--html",
        html.to_str().unwrap(),
    ]);
    assert!(out.status.success());
    let page = std::fs::read_to_string(&html).unwrap();
    assert_page(&page, &["threads", "cpu", "wait", "memory"]);
    assert!(page.contains("thread-explosion"));
    assert!(page.contains("alert too-many-threads"));
    let _ = std::fs::remove_dir_all(&dir);
}

/// Runs `tfwatch run ARGS` to completion in its own process group.
fn run(args: &[&str]) -> (i32, String) {
    let mut all = vec!["run"];
    all.extend_from_slice(args);
    let mut guard = ChildGuard::spawn(tfwatch(&all));
    let stdout = Lines::new(guard.child.stdout.take().unwrap());
    let stderr = Lines::new(guard.child.stderr.take().unwrap());
    stdout.until("stdout to close", Duration::from_secs(120), |_| false);
    let err = stderr.until("stderr to close", Duration::from_secs(120), |_| false);
    let status = guard.child.wait().unwrap();
    (status.code().unwrap_or(-1), err.join("\n"))
}

#[test]
fn run_html_of_a_hung_job_holds_the_charts_and_the_finding_and_renders() {
    let dir = temp_dir("run");
    let html = dir.join("run.html");
    let bin = tfwatch_bin().to_string_lossy().to_string();
    let (code, err) = run(&[
        "--no-gpu",
        "--hang-after",
        "2s",
        "--interval",
        "500ms",
        "--grace",
        "1s",
        "--html",
        html.to_str().unwrap(),
        "--",
        &bin,
        "run-workload",
        "--scenario",
        "deadlock",
        "--duration",
        "60s",
    ]);
    assert_eq!(code, HANG, "{err}");
    let page = std::fs::read_to_string(&html).unwrap();
    assert_page(&page, &["threads", "cpu", "memory"]);
    assert!(page.contains("hang detected"), "the outcome");
    assert!(
        page.contains("<b>no-progress</b>") || page.contains("<b>deadlock</b>"),
        "the finding"
    );
    // The sample that proved the hang is charted, and the hang marked on the time axis.
    let marks = &page[page.find("id=\"marks\"").unwrap()..page.find("id=\"diagnosis\"").unwrap()];
    assert!(
        marks.contains("no-progress") || marks.contains("deadlock"),
        "{marks}"
    );
    assert!(
        !page.contains("1 sample(s)"),
        "more than the first sample is charted"
    );
    assert!(page.contains("The diagnosis taken at the hang"));
    assert!(page.contains("worker-a") && page.contains("worker-b"));
    assert!(page.contains("no GPU data"));
    screenshot_is_not_blank(&html, &dir);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Debian's chromium, where installed.
fn chromium() -> Option<PathBuf> {
    ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

/// Takes a headless screenshot of `html` and checks the page drew: many colours, much
/// that is not white, and the error red of the hang's badge and marks.
fn screenshot_is_not_blank(html: &Path, dir: &Path) {
    let Some(chromium) = chromium() else {
        crate::support::skip(
            "chromium",
            "the screenshot: no chromium (apt-get install chromium)",
        );
        return;
    };
    let png = dir.join("page.png");
    let mut command = Command::new(&chromium);
    command
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            &format!("--user-data-dir={}", dir.join("profile").display()),
            &format!("--screenshot={}", png.display()),
            "--window-size=1280,2000",
        ])
        .arg(format!("file://{}", html.display()));
    let mut guard = ChildGuard::spawn(command);
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    let status = loop {
        if let Some(status) = guard.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "chromium did not finish in 90 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success(), "chromium failed: {status}");
    let bytes = std::fs::read(&png).unwrap();
    let mut decoder = png::Decoder::new(std::io::Cursor::new(bytes));
    decoder.set_transformations(png::Transformations::EXPAND | png::Transformations::STRIP_16);
    let mut reader = decoder.read_info().unwrap();
    let mut pixels = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut pixels).unwrap();
    assert_eq!((info.width, info.height), (1280, 2000));
    let channels = match info.color_type {
        png::ColorType::Rgba => 4,
        png::ColorType::Rgb => 3,
        other => panic!("unexpected PNG colour type {other:?}"),
    };
    let mut colours = BTreeSet::new();
    let (mut not_white, mut red, mut total) = (0usize, 0usize, 0usize);
    for px in pixels[..info.buffer_size()].chunks_exact(channels) {
        let (r, g, b) = (px[0], px[1], px[2]);
        total += 1;
        colours.insert((r, g, b));
        if (r, g, b) != (255, 255, 255) {
            not_white += 1;
        }
        // The error colour (#c82828) of the badge, the marks and the lock waiters.
        if r.abs_diff(200) < 24 && g.abs_diff(40) < 30 && b.abs_diff(40) < 30 {
            red += 1;
        }
    }
    assert!(colours.len() > 200, "{} colours", colours.len());
    assert!(
        not_white * 20 > total,
        "{not_white} of {total} pixels are not white"
    );
    assert!(red > 1000, "{red} pixels of the error colour");
}

#[test]
fn html_that_cannot_be_written_is_refused_before_the_command_starts() {
    let dir = temp_dir("unwritable");
    let missing = dir.join("no-such-dir").join("page.html");
    let marker = dir.join("started");
    let touch = format!("touch {}", marker.display());
    let out = tfwatch_output(&[
        "run",
        "--no-gpu",
        "--html",
        missing.to_str().unwrap(),
        "--",
        "sh",
        "-c",
        &touch,
    ]);
    assert_eq!(out.status.code(), Some(USAGE));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--html"));
    assert!(!marker.exists(), "the command was not started");
    for command in [
        vec!["snapshot", "1", "--html", missing.to_str().unwrap()],
        vec![
            "replay",
            "fixtures/timelines/healthy.jsonl",
            "--html",
            missing.to_str().unwrap(),
        ],
    ] {
        let mut command = tfwatch(&command);
        command.current_dir(env!("CARGO_MANIFEST_DIR"));
        let out = command.output().unwrap();
        assert_eq!(out.status.code(), Some(USAGE), "{command:?}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("--html"));
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn snapshot_html_of_a_live_process() {
    let dir = temp_dir("snapshot");
    let html = dir.join("snapshot.html");
    let mut sleeper = Command::new("sleep");
    sleeper.arg("60");
    let sleeper = ChildGuard::spawn(sleeper);
    let pid = sleeper.pid().to_string();
    let out = tfwatch_output(&[
        "snapshot",
        &pid,
        "--no-gpu",
        "--window",
        "200ms",
        "--html",
        html.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The text report is still printed.
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&format!("tfwatch snapshot of pid {pid}"))
    );
    let page = std::fs::read_to_string(&html).unwrap();
    assert_page(&page, &["threads", "cpu", "memory"]);
    assert!(page.contains("2 sample(s)"));
    assert!(page.contains(&format!("tfwatch snapshot of pid {pid} (sleep)")));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_megabyte_argv_gives_a_page_that_holds_it_once() {
    let dir = temp_dir("argv");
    let html = dir.join("page.html");
    // 12 arguments of 100 KB (one argument may hold at most 128 KiB): 1.2 MB of argv.
    let big: Vec<String> = (0..12)
        .map(|i| format!("--arg{i}={}", "x".repeat(100_000)))
        .collect();
    let mut args = vec!["--no-gpu", "--html", html.to_str().unwrap()];
    args.extend(["--", "sh", "-c", "sleep 0.3", "sh"]);
    args.extend(big.iter().map(String::as_str));
    let (code, err) = run(&args);
    assert_eq!(code, 0, "{}", &err[..err.len().min(2000)]);
    let page = std::fs::read_to_string(&html).unwrap();
    let argv_bytes: usize = big.iter().map(|a| a.len() + 1).sum();
    assert!(argv_bytes > 1_200_000);
    // The whole command line once, and not much besides.
    assert!(
        page.len() < argv_bytes + 256 * 1024,
        "{} bytes for {argv_bytes} bytes of argv",
        page.len()
    );
    assert_eq!(page.matches(big[11].as_str()).count(), 1);
    let title = &page[page.find("<title>").unwrap()..page.find("</title>").unwrap()];
    assert!(title.len() < 400, "{} bytes of title", title.len());
    assert!(page.contains("<h2 id=\"command\">Command line</h2>"));
    let _ = std::fs::remove_dir_all(&dir);
}
