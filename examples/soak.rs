//! A soak test of `tfwatch attach`: it watches, at `--interval 100ms` for N minutes, a
//! process that starts and ends 2,000 threads a second (a small C program compiled with
//! `cc -pthread` at run time), while its two metrics endpoints misbehave — one accepts
//! connections and never answers, one answers garbage (a bad status line, a body cut
//! short, a chunked body that lies, a huge Content-Length, binary noise, an exposition
//! that is not one). Both are bound to 127.0.0.1.
//!
//! It checks, and prints: tfwatch's RSS (`VmRSS` of `/proc/PID/status`, once a second)
//! stays flat — first, last and max, and the last against the RSS after the first
//! minute (or the first tenth of a shorter run); no sample is missed — the `sample`
//! lines against the run time over the interval, and the largest gap between two; no
//! panic — the exit status, and no `panicked` on stderr. It exits 1 when a check fails.
//!
//! ```text
//! cargo build --release --bin tfwatch
//! cargo run --release --example soak -- --minutes 10
//! ```
//!
//! Options: `--minutes M` (default 10, fractions allowed), `--rate N` threads started a
//! second (default 2000), `--interval DURATION` (default 100ms), `--bin PATH` (default
//! `target/release/tfwatch`). Bounded in time: tfwatch runs with `--duration`, and is
//! killed if it has not ended a minute after that.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

struct Options {
    minutes: f64,
    rate: u64,
    interval: Duration,
    bin: PathBuf,
}

fn options() -> Result<Options, String> {
    let mut options = Options {
        minutes: 10.0,
        rate: 2_000,
        interval: Duration::from_millis(100),
        bin: PathBuf::from("target/release/tfwatch"),
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--minutes" => {
                options.minutes = value
                    .parse::<f64>()
                    .ok()
                    .filter(|m| m.is_finite() && *m > 0.0 && *m <= 24.0 * 60.0)
                    .ok_or_else(|| format!("--minutes: {value:?} is not a number of minutes"))?;
            }
            "--rate" => {
                options.rate = value
                    .parse()
                    .ok()
                    .filter(|r| (1..=100_000).contains(r))
                    .ok_or_else(|| format!("--rate: {value:?} is not 1..=100000"))?;
            }
            "--interval" => {
                options.interval = humantime::parse_duration(&value)
                    .ok()
                    .filter(|d| !d.is_zero())
                    .ok_or_else(|| format!("--interval: {value:?} is not a duration"))?;
            }
            "--bin" => options.bin = PathBuf::from(value),
            other => return Err(format!("unknown option {other}")),
        }
    }
    Ok(options)
}

/// The churning target: `rate` detached threads a second, each living 0–100 ms (so
/// about `rate / 20` are alive at once), in batches every millisecond. It prints the
/// threads it has started, once a second.
const CHURN_C: &str = r#"
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

static void *worker(void *arg) {
    long micros = (long)arg;
    volatile unsigned long spin = 0;
    for (int i = 0; i < 2000; i++) spin += i;
    usleep(micros);
    return NULL;
}

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
    long rate = argc > 1 ? atol(argv[1]) : 2000;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, 64 * 1024);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    double start = now(), last_report = start;
    unsigned long started = 0, failed = 0, seed = 12345;
    setvbuf(stdout, NULL, _IOLBF, 0);
    for (;;) {
        double t = now();
        unsigned long due = (unsigned long)((t - start) * rate);
        while (started < due) {
            seed = seed * 6364136223846793005UL + 1442695040888963407UL;
            long micros = (long)((seed >> 33) % 100000);
            pthread_t thread;
            if (pthread_create(&thread, &attr, worker, (void *)micros) != 0) {
                failed++;
                break;
            }
            started++;
        }
        if (t - last_report >= 1.0) {
            printf("%lu %lu\n", started, failed);
            last_report = t;
        }
        usleep(1000);
    }
}
"#;

fn compile_churn(dir: &Path) -> Result<PathBuf, String> {
    let source = dir.join("churn.c");
    let binary = dir.join("churn");
    std::fs::write(&source, CHURN_C).map_err(|e| format!("cannot write {source:?}: {e}"))?;
    let status = Command::new("cc")
        .args(["-O2", "-pthread", "-o"])
        .arg(&binary)
        .arg(&source)
        .status()
        .map_err(|e| format!("cannot run cc: {e}"))?;
    if !status.success() {
        return Err(format!("cc failed: {status}"));
    }
    Ok(binary)
}

/// An endpoint that accepts and never answers; it holds the last 256 connections.
fn silent_endpoint(stop: Arc<AtomicBool>, accepted: Arc<AtomicU64>) -> Result<u16, String> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("bind: {e}"))?;
    let port = listener.local_addr().map_err(|e| e.to_string())?.port();
    std::thread::spawn(move || {
        let mut held = std::collections::VecDeque::new();
        for stream in listener.incoming() {
            if stop.load(Ordering::Relaxed) {
                break;
            }
            if let Ok(stream) = stream {
                accepted.fetch_add(1, Ordering::Relaxed);
                held.push_back(stream);
                if held.len() > 256 {
                    held.pop_front();
                }
            }
        }
    });
    Ok(port)
}

/// The garbage answers, taken in turn.
fn garbage(round: u64) -> Vec<u8> {
    let noise: Vec<u8> = (0..512u64)
        .map(|i| (i.wrapping_mul(2_654_435_761).wrapping_add(round) >> 3) as u8)
        .collect();
    match round % 7 {
        0 => b"SPDY/9 600 What\r\n\r\n".to_vec(),
        1 => b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\nshort".to_vec(),
        2 => {
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nffff\r\nab\r\n0\r\n\r\n".to_vec()
        }
        3 => b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999\r\n\r\n".to_vec(),
        4 => noise,
        5 => {
            let mut body = b"HTTP/1.1 200 OK\r\n\r\n".to_vec();
            body.extend_from_slice(b"# TYPE x histogram\nx_bucket 1\n{{{ \"\\q\n");
            body
        }
        _ => b"HTTP/1.1 200 OK\r\nContent-Length: 30\r\n\r\nnot_a metric line at all {}{}".to_vec(),
    }
}

/// An endpoint that reads the request and answers garbage, then closes.
fn garbage_endpoint(stop: Arc<AtomicBool>, accepted: Arc<AtomicU64>) -> Result<u16, String> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("bind: {e}"))?;
    let port = listener.local_addr().map_err(|e| e.to_string())?.port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            if stop.load(Ordering::Relaxed) {
                break;
            }
            let Ok(mut stream) = stream else { continue };
            let round = accepted.fetch_add(1, Ordering::Relaxed);
            let _ = stream.set_read_timeout(Some(Duration::from_millis(200)));
            let mut request = [0u8; 2048];
            let _ = stream.read(&mut request);
            let _ = stream.write_all(&garbage(round));
        }
    });
    Ok(port)
}

fn vm_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// What the reader of tfwatch's stdout saw.
#[derive(Default)]
struct Lines {
    samples: u64,
    other: u64,
    unparsed: u64,
    max_gap_seconds: f64,
    last_elapsed: Option<f64>,
    /// Largest and summed `sample_duration_seconds`, and the largest `lateness_seconds`.
    max_duration_seconds: f64,
    total_duration_seconds: f64,
    max_lateness_seconds: f64,
}

fn read_lines(stdout: impl Read + Send + 'static, lines: Arc<Mutex<Lines>>) {
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let value: Option<serde_json::Value> = serde_json::from_str(&line).ok();
            let Ok(mut seen) = lines.lock() else { break };
            match value {
                Some(v) if v["type"] == "sample" => {
                    seen.samples += 1;
                    let duration = v["sample_duration_seconds"].as_f64().unwrap_or(0.0);
                    seen.max_duration_seconds = seen.max_duration_seconds.max(duration);
                    seen.total_duration_seconds += duration;
                    let lateness = v["lateness_seconds"].as_f64().unwrap_or(0.0);
                    seen.max_lateness_seconds = seen.max_lateness_seconds.max(lateness);
                    if let Some(elapsed) = v["elapsed_seconds"].as_f64() {
                        if let Some(last) = seen.last_elapsed {
                            seen.max_gap_seconds = seen.max_gap_seconds.max(elapsed - last);
                        }
                        seen.last_elapsed = Some(elapsed);
                    }
                }
                Some(_) => seen.other += 1,
                None => seen.unparsed += 1,
            }
        }
    });
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn main() {
    match soak() {
        Ok(true) => {}
        Ok(false) => std::process::exit(1),
        Err(message) => {
            eprintln!("soak: {message}");
            std::process::exit(2);
        }
    }
}

fn soak() -> Result<bool, String> {
    let options = options()?;
    if !options.bin.exists() {
        return Err(format!(
            "{} not found: run `cargo build --release --bin tfwatch` first, or pass --bin",
            options.bin.display()
        ));
    }
    let dir = std::env::temp_dir().join(format!("tfwatch-soak-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {dir:?}: {e}"))?;
    let churn = compile_churn(&dir)?;

    let stop = Arc::new(AtomicBool::new(false));
    let silent_accepts = Arc::new(AtomicU64::new(0));
    let garbage_answers = Arc::new(AtomicU64::new(0));
    let silent = silent_endpoint(stop.clone(), silent_accepts.clone())?;
    let bad = garbage_endpoint(stop.clone(), garbage_answers.clone())?;

    let mut target = Command::new(&churn)
        .arg(options.rate.to_string())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start the churning target: {e}"))?;
    let target_stdout = target.stdout.take();
    let target = Killed(target);
    let started_threads = Arc::new(Mutex::new((0u64, 0u64)));
    if let Some(out) = target_stdout {
        let started_threads = started_threads.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                let mut numbers = line.split_whitespace().filter_map(|n| n.parse().ok());
                if let (Some(started), Some(failed), Ok(mut slot)) =
                    (numbers.next(), numbers.next(), started_threads.lock())
                {
                    *slot = (started, failed);
                }
            }
        });
    }
    std::thread::sleep(Duration::from_millis(500));

    let run = Duration::from_secs_f64(options.minutes * 60.0);
    let interval_text = humantime::format_duration(options.interval).to_string();
    let duration_text = format!("{}ms", run.as_millis());
    let mut tfwatch = Command::new(&options.bin);
    tfwatch
        .args(["attach", &target.0.id().to_string(), "--json", "--no-gpu"])
        .args(["--interval", &interval_text, "--duration", &duration_text])
        .args(["--metrics-timeout", "300ms"])
        .args([
            "--metrics-url",
            &format!("http://127.0.0.1:{silent}/metrics"),
        ])
        .args(["--metrics-url", &format!("http://127.0.0.1:{bad}/metrics")])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    println!(
        "soak: {:?} watching a target churning {} threads/s for {:.1} min",
        tfwatch, options.rate, options.minutes
    );
    let started = Instant::now();
    let mut child = tfwatch
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", options.bin.display()))?;
    let pid = child.id();
    let lines = Arc::new(Mutex::new(Lines::default()));
    if let Some(stdout) = child.stdout.take() {
        read_lines(stdout, lines.clone());
    }
    let stderr_text = Arc::new(Mutex::new(String::new()));
    if let Some(mut stderr) = child.stderr.take() {
        let stderr_text = stderr_text.clone();
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = stderr.read_to_string(&mut text);
            if let Ok(mut slot) = stderr_text.lock() {
                *slot = text;
            }
        });
    }

    // RSS once a second until tfwatch ends (or a minute past its duration: killed).
    let deadline = started + run + Duration::from_secs(60);
    let warm_up = (run / 10).min(Duration::from_secs(60));
    let mut rss: Vec<(f64, u64)> = Vec::new();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) => {}
            Err(e) => return Err(format!("cannot wait for tfwatch: {e}")),
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        if let Some(kib) = vm_rss_kib(pid) {
            let at = started.elapsed().as_secs_f64();
            if rss.last().is_none_or(|(t, _)| at - t >= 1.0) {
                rss.push((at, kib));
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let wall = started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    std::thread::sleep(Duration::from_millis(300));
    drop(target);

    let seen = lines.lock().map_err(|_| "the line reader panicked")?;
    let stderr = stderr_text
        .lock()
        .map_err(|_| "the stderr reader panicked")?;
    let (threads_started, threads_failed) = *started_threads
        .lock()
        .map_err(|_| "the target reader panicked")?;
    let expected = (run.as_secs_f64() / options.interval.as_secs_f64()).floor() as u64;
    let first = rss.first().map_or(0, |r| r.1);
    let last = rss.last().map_or(0, |r| r.1);
    let max = rss.iter().map(|r| r.1).max().unwrap_or(0);
    let settled = rss
        .iter()
        .find(|(t, _)| *t >= warm_up.as_secs_f64())
        .map_or(first, |r| r.1);

    println!("\n| figure | value |\n|---|---:|");
    println!("| run (wall s) | {wall:.1} |");
    println!(
        "| target threads started (failed) | {threads_started} ({threads_failed}), {:.0}/s |",
        threads_started as f64 / wall.max(1e-9)
    );
    println!(
        "| silent endpoint: connections accepted | {} |",
        silent_accepts.load(Ordering::Relaxed)
    );
    println!(
        "| garbage endpoint: answers sent | {} |",
        garbage_answers.load(Ordering::Relaxed)
    );
    println!(
        "| sample lines (expected ≈ {expected}) | {} |",
        seen.samples
    );
    println!("| other event lines | {} |", seen.other);
    println!("| lines that are not JSON | {} |", seen.unparsed);
    println!(
        "| max gap between samples (s) | {:.3} |",
        seen.max_gap_seconds
    );
    println!(
        "| VmRSS first / after {:.0} s / last / max (KiB) | {first} / {settled} / {last} / {max} |",
        warm_up.as_secs_f64()
    );
    println!(
        "| sample duration mean / max (ms) | {:.1} / {:.1} |",
        seen.total_duration_seconds * 1e3 / (seen.samples.max(1) as f64),
        seen.max_duration_seconds * 1e3
    );
    println!(
        "| max lateness (ms) | {:.1} |",
        seen.max_lateness_seconds * 1e3
    );
    let deciles: Vec<String> = (0..=10)
        .filter_map(|d| rss.get((rss.len().saturating_sub(1)) * d / 10))
        .map(|(t, kib)| format!("{t:.0}s {kib}"))
        .collect();
    println!("| VmRSS over the run (KiB) | {} |", deciles.join(", "));
    println!("| tfwatch exit | {status:?} |");

    let mut ok = true;
    let mut check = |pass: bool, what: String| {
        println!("{} {what}", if pass { "ok  " } else { "FAIL" });
        ok &= pass;
    };
    check(
        status.is_some_and(|s| s.success()),
        format!("tfwatch ended by --duration with status 0 ({status:?})"),
    );
    check(
        !stderr.contains("panicked"),
        "no panic on stderr".to_string(),
    );
    check(
        seen.samples + 2 >= expected * 98 / 100,
        format!("{} sample lines of about {expected} (98 %)", seen.samples),
    );
    check(
        seen.max_gap_seconds <= 3.0 * options.interval.as_secs_f64(),
        format!("max gap {:.3} s ≤ 3 intervals", seen.max_gap_seconds),
    );
    check(
        last <= settled + settled / 4 + 4 * 1024,
        format!("RSS flat: last {last} KiB ≤ 1.25 × {settled} KiB + 4 MiB"),
    );
    if !stderr.trim().is_empty() {
        let tail: Vec<&str> = stderr.lines().rev().take(10).collect();
        println!("tfwatch stderr (last lines):");
        for line in tail.iter().rev() {
            println!("  {line}");
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(ok)
}
