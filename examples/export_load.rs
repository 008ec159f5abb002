//! A load test of the `--listen` endpoint: starts `tfwatch attach --listen 127.0.0.1:0`
//! on a `sleep` child, opens N idle connections and holds them, runs M concurrent
//! scrapers of `/metrics` for T seconds, and reports scrapes/s, latency percentiles,
//! failures, and tfwatch's peak thread count and RSS. Everything stays on 127.0.0.1.
//!
//! ```text
//! cargo build --release --bin tfwatch
//! ulimit -n 30000   # the idle connections are this process's descriptors too
//! cargo run --release --example export_load -- --idle 10000 --scrapers 4 --seconds 20
//! ```
//!
//! `--bin PATH` picks the tfwatch binary (default `target/release/tfwatch`).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

struct Options {
    idle: usize,
    scrapers: usize,
    seconds: u64,
    bin: String,
}

fn options() -> Result<Options, String> {
    let mut options = Options {
        idle: 10_000,
        scrapers: 4,
        seconds: 20,
        bin: "target/release/tfwatch".to_string(),
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let number = || {
            value
                .parse::<u64>()
                .map_err(|_| format!("{flag} {value:?}: expected a whole number"))
        };
        match flag.as_str() {
            "--idle" => options.idle = number()? as usize,
            "--scrapers" => options.scrapers = number()?.max(1) as usize,
            "--seconds" => options.seconds = number()?.max(1),
            "--bin" => options.bin = value,
            _ => {
                return Err(format!(
                    "unknown option {flag:?}: use --idle N --scrapers M --seconds T --bin PATH"
                ));
            }
        }
    }
    Ok(options)
}

/// Kills (by pid) and reaps on drop.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn status_field(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn scrape(address: SocketAddr) -> Result<(), String> {
    let mut stream =
        TcpStream::connect_timeout(&address, Duration::from_secs(5)).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .map_err(|e| e.to_string())?;
    let mut response = Vec::new();
    stream
        .read_to_end(&mut response)
        .map_err(|e| e.to_string())?;
    if response.starts_with(b"HTTP/1.1 200") {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(response.get(..12).unwrap_or(&response)).to_string())
    }
}

/// Whether the server closed `stream` (end of stream or reset), without waiting.
fn closed_by_server(stream: &mut TcpStream) -> bool {
    if stream.set_nonblocking(true).is_err() {
        return true;
    }
    let mut buf = [0u8; 512];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return false,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return true,
        }
    }
}

fn main() {
    let options = match options() {
        Ok(options) => options,
        Err(why) => {
            eprintln!("export_load: {why}");
            std::process::exit(2);
        }
    };
    let Ok(sleep) = Command::new("sleep").arg("3600").spawn() else {
        eprintln!("export_load: cannot start `sleep`");
        std::process::exit(1);
    };
    let target = Guard(sleep);
    let spawned = Command::new(&options.bin)
        .args(["attach", &target.0.id().to_string(), "--no-tui"])
        .args(["--listen", "127.0.0.1:0", "--interval", "1s", "--no-gpu"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn();
    let mut tfwatch = match spawned {
        Ok(child) => Guard(child),
        Err(e) => {
            eprintln!(
                "export_load: cannot start {:?}: {e} (build it with `cargo build --release --bin tfwatch`, or pass --bin PATH)",
                options.bin
            );
            std::process::exit(1);
        }
    };
    let pid = tfwatch.0.id();
    let Some(stderr) = tfwatch.0.stderr.take() else {
        std::process::exit(1);
    };
    let mut lines = BufReader::new(stderr).lines();
    let address: SocketAddr = loop {
        match lines.next() {
            Some(Ok(line)) => {
                if let Some(url) = line.strip_prefix("tfwatch: listening on http://")
                    && let Ok(address) = url.trim().trim_end_matches("/metrics").parse()
                {
                    break address;
                }
                eprintln!("tfwatch: {line}");
            }
            _ => {
                eprintln!("export_load: tfwatch printed no `listening on` line");
                std::process::exit(1);
            }
        }
    };
    // The rest of tfwatch's stderr, echoed.
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            eprintln!("  tfwatch stderr: {line}");
        }
    });
    let baseline_threads = status_field(pid, "Threads:").unwrap_or(0);

    let opened = Instant::now();
    let mut idle = Vec::with_capacity(options.idle);
    let mut refused = 0;
    let mut slow_connects = 0;
    for _ in 0..options.idle {
        let t = Instant::now();
        let connected = TcpStream::connect_timeout(&address, Duration::from_secs(5));
        if t.elapsed() > Duration::from_millis(500) {
            slow_connects += 1;
        }
        match connected {
            Ok(stream) => idle.push(stream),
            Err(_) => refused += 1,
        }
    }
    println!(
        "opened {} idle connections in {:.2?} ({refused} failed, {slow_connects} took over 500ms: SYN retried after a full backlog)",
        idle.len(),
        opened.elapsed()
    );

    let stop = Arc::new(AtomicBool::new(false));
    let peak_threads = Arc::new(AtomicU64::new(baseline_threads));
    let peak_rss_kb = Arc::new(AtomicU64::new(0));
    let watcher = {
        let (stop, threads, rss) = (
            Arc::clone(&stop),
            Arc::clone(&peak_threads),
            Arc::clone(&peak_rss_kb),
        );
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                if let Some(n) = status_field(pid, "Threads:") {
                    threads.fetch_max(n, Ordering::SeqCst);
                }
                if let Some(kb) = status_field(pid, "VmRSS:") {
                    rss.fetch_max(kb, Ordering::SeqCst);
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };
    let latencies = Arc::new(Mutex::new(Vec::new()));
    let failures = Arc::new(Mutex::new(Vec::new()));
    let started = Instant::now();
    let end = started + Duration::from_secs(options.seconds);
    let scrapers: Vec<_> = (0..options.scrapers)
        .map(|_| {
            let (latencies, failures) = (Arc::clone(&latencies), Arc::clone(&failures));
            std::thread::spawn(move || {
                let mut mine = Vec::new();
                let mut failed = Vec::new();
                while Instant::now() < end {
                    let t = Instant::now();
                    match scrape(address) {
                        Ok(()) => mine.push(t.elapsed()),
                        Err(why) => failed.push(why),
                    }
                }
                if let Ok(mut all) = latencies.lock() {
                    all.extend(mine);
                }
                if let Ok(mut all) = failures.lock() {
                    all.extend(failed);
                }
            })
        })
        .collect();
    for scraper in scrapers {
        let _ = scraper.join();
    }
    let elapsed = started.elapsed();
    stop.store(true, Ordering::SeqCst);
    let _ = watcher.join();

    // How many of the idle connections the server had closed by the end.
    let closed = idle.iter_mut().map(closed_by_server).filter(|&c| c).count();
    let idle_open = idle.len();
    drop(idle);
    let after = scrape(address);

    let mut latencies = latencies.lock().map(|l| l.clone()).unwrap_or_default();
    latencies.sort();
    let failures = failures.lock().map(|f| f.clone()).unwrap_or_default();
    let at = |q: f64| {
        latencies
            .get(((latencies.len() as f64 * q) as usize).min(latencies.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    };
    println!(
        "{} scrapers for {:.1?}: {} scrapes ok ({:.0}/s), {} failed{}",
        options.scrapers,
        elapsed,
        latencies.len(),
        latencies.len() as f64 / elapsed.as_secs_f64(),
        failures.len(),
        failures
            .first()
            .map(|f| format!(" (first: {f})"))
            .unwrap_or_default()
    );
    println!(
        "latency p50 {:.2?}, p99 {:.2?}, max {:.2?}",
        at(0.50),
        at(0.99),
        latencies.last().copied().unwrap_or_default()
    );
    println!(
        "tfwatch threads: {baseline_threads} before, {} at most; RSS at most {:.1} MB",
        peak_threads.load(Ordering::SeqCst),
        peak_rss_kb.load(Ordering::SeqCst) as f64 / 1024.0
    );
    println!("idle connections closed by the server by the end: {closed} of {idle_open}");
    println!(
        "after the idle clients closed: /metrics {}",
        match after {
            Ok(()) => "answers".to_string(),
            Err(why) => format!("FAILS: {why}"),
        }
    );
}
