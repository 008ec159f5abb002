//! The `--listen` endpoint under hostile clients: many idle connections, slowloris
//! clients, and a process out of descriptors. `tfwatch attach` watches a `sleep` child;
//! every connection goes to 127.0.0.1 and every process started is ended by its guard.

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::support::{ChildGuard, tfwatch, wait_for};

/// The server's head deadline (`Limits::default().head_deadline`).
const HEAD_DEADLINE: Duration = Duration::from_secs(5);

/// `tfwatch attach` on a `sleep` child with `--listen 127.0.0.1:0`: the guards (target
/// last, so it outlives tfwatch), tfwatch's stderr so far, and the address it listens on.
struct Exporter {
    tfwatch: ChildGuard,
    _target: ChildGuard,
    stderr: Arc<Mutex<String>>,
    address: SocketAddr,
}

impl Exporter {
    fn start(configure: impl FnOnce(&mut Command)) -> Exporter {
        let mut sleep = Command::new("sleep");
        sleep.arg("300");
        let target = ChildGuard::spawn(sleep);
        let pid = target.pid().to_string();
        let mut command = tfwatch(&[
            "attach",
            &pid,
            "--no-tui",
            "--listen",
            "127.0.0.1:0",
            "--interval",
            "250ms",
            "--no-gpu",
        ]);
        configure(&mut command);
        let mut guard = ChildGuard::spawn(command);
        let stderr = Arc::new(Mutex::new(String::new()));
        let (lines, received) = mpsc::channel();
        if let Some(out) = guard.child.stderr.take() {
            let stderr = Arc::clone(&stderr);
            std::thread::spawn(move || {
                for line in BufReader::new(out).lines() {
                    let Ok(line) = line else { break };
                    if let Ok(mut text) = stderr.lock() {
                        text.push_str(&line);
                        text.push('\n');
                    }
                    let _ = lines.send(line);
                }
            });
        }
        if let Some(mut out) = guard.child.stdout.take() {
            std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        let address = loop {
            match received.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(line) => {
                    if let Some(url) = line.strip_prefix("tfwatch: listening on http://") {
                        break url.trim().trim_end_matches("/metrics").parse().unwrap();
                    }
                }
                Err(_) => panic!(
                    "no `listening on` line within 20s:\n{}",
                    stderr.lock().unwrap()
                ),
            }
        };
        Exporter {
            tfwatch: guard,
            _target: target,
            stderr,
            address,
        }
    }

    fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    fn threads(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.tfwatch.pid()))
            .expect("tfwatch is alive");
        status
            .lines()
            .find_map(|l| l.strip_prefix("Threads:"))
            .and_then(|n| n.trim().parse().ok())
            .expect("a Threads line")
    }

    fn assert_alive(&mut self) {
        if let Ok(Some(status)) = self.tfwatch.child.try_wait() {
            panic!("tfwatch exited with {status}:\n{}", self.stderr());
        }
    }

    /// `GET /metrics` within `within`: the body of a 200, or why not.
    fn scrape(&self, within: Duration) -> Result<String, String> {
        let mut stream = TcpStream::connect_timeout(&self.address, within)
            .map_err(|e| format!("connect: {e}"))?;
        stream
            .set_read_timeout(Some(within))
            .map_err(|e| e.to_string())?;
        stream
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            .map_err(|e| format!("write: {e}"))?;
        let mut response = String::new();
        stream
            .read_to_string(&mut response)
            .map_err(|e| format!("read: {e} after {response:?}"))?;
        if response.starts_with("HTTP/1.1 200") {
            Ok(response)
        } else {
            Err(format!("not a 200: {response:?}"))
        }
    }

    /// The first scrape that answers within 5s, within `timeout` in all.
    fn scrape_soon(&self, timeout: Duration) -> (String, Duration) {
        let started = Instant::now();
        let mut last = String::new();
        while started.elapsed() < timeout {
            match self.scrape(Duration::from_secs(5)) {
                Ok(body) => return (body, started.elapsed()),
                Err(why) => last = why,
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "no scrape answered within {timeout:?}: {last}\n{}",
            self.stderr()
        );
    }
}

fn samples_total(body: &str) -> f64 {
    body.lines()
        .find_map(|l| l.strip_prefix("tfwatch_samples_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

/// Whether the server closed `stream` (end of stream or reset), without waiting.
fn closed_by_server(stream: &mut TcpStream) -> bool {
    let mut buf = [0u8; 512];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::WouldBlock => return false,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return true,
        }
    }
}

#[test]
fn exporter_survives_idle_and_slowloris_clients() {
    let mut exporter = Exporter::start(|_| {});
    let (body, _) = exporter.scrape_soon(Duration::from_secs(10));
    assert!(body.contains("\ntfwatch_up "), "{body}");
    let baseline = exporter.threads();

    // (a) 1,000 idle connections: a scrape still answers, no thread per connection.
    let idle: Vec<TcpStream> = (0..1000)
        .map(|i| {
            TcpStream::connect(exporter.address)
                .unwrap_or_else(|e| panic!("connection {i} refused: {e}\n{}", exporter.stderr()))
        })
        .collect();
    let (_, took) = exporter.scrape_soon(Duration::from_secs(5));
    let threads = exporter.threads();
    eprintln!("1000 idle: scrape in {took:?}, threads {baseline} -> {threads}");
    assert!(took < Duration::from_secs(2), "scrape took {took:?}");
    assert!(threads <= baseline + 1, "threads {baseline} -> {threads}");

    // (b) 300 slowloris clients, one header byte a second each: scrapes still answer,
    // and the server closes every one of them by the head deadline.
    let request =
        b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaa\r\n";
    let mut slow: Vec<(TcpStream, Instant, Option<Duration>)> = (0..300)
        .map(|_| {
            let stream = TcpStream::connect(exporter.address).unwrap();
            stream.set_nonblocking(true).unwrap();
            (stream, Instant::now(), None)
        })
        .collect();
    let started = Instant::now();
    let mut scrapes = 0;
    for second in 0..(HEAD_DEADLINE.as_secs() as usize + 3) {
        for (stream, opened, closed) in slow.iter_mut().filter(|s| s.2.is_none()) {
            if closed_by_server(stream)
                || matches!(stream.write(&request[second..=second]), Err(e) if e.kind() != ErrorKind::WouldBlock)
            {
                *closed = Some(opened.elapsed());
            }
        }
        if slow.iter().all(|s| s.2.is_some()) {
            break;
        }
        let (_, took) = exporter.scrape_soon(Duration::from_secs(5));
        assert!(
            took < Duration::from_secs(2),
            "scrape under slowloris took {took:?}"
        );
        scrapes += 1;
        let next = started + Duration::from_secs(second as u64 + 1);
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
    }
    let kept: Vec<_> = slow.iter().filter(|s| s.2.is_none()).collect();
    assert!(
        kept.is_empty(),
        "{} slowloris connections still open after {:?}",
        kept.len(),
        started.elapsed()
    );
    let longest = slow.iter().filter_map(|s| s.2).max().unwrap();
    eprintln!("300 slowloris: {scrapes} scrapes answered, longest kept {longest:?}");
    // Seen closed within a second of polling after the deadline.
    assert!(
        longest <= HEAD_DEADLINE + Duration::from_millis(1500),
        "{longest:?}"
    );
    assert!(exporter.threads() <= baseline + 1);

    // (c) All clients gone: the listener still accepts and serves.
    drop(idle);
    drop(slow);
    let (body, _) = exporter.scrape_soon(Duration::from_secs(5));
    assert!(body.contains("\ntfwatch_up 1\n"), "{body}");
    exporter.assert_alive();
    assert!(
        !exporter.stderr().contains("lost its listener"),
        "{}",
        exporter.stderr()
    );
}

#[test]
fn exporter_recovers_after_running_out_of_descriptors() {
    use std::os::unix::process::CommandExt;
    // 256 descriptors, 200 of them taken before exec: the endpoint's cap (a quarter of
    // the limit, 64) is more than is left, so accept really fails with EMFILE.
    let mut exporter = Exporter::start(|command| {
        // SAFETY: between fork and exec only setrlimit and open, both async-signal-safe.
        unsafe {
            command.pre_exec(|| {
                let limit = libc::rlimit {
                    rlim_cur: 256,
                    rlim_max: 256,
                };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                for _ in 0..200 {
                    libc::open(c"/dev/null".as_ptr(), libc::O_RDONLY);
                }
                Ok(())
            });
        }
    });
    let (body, _) = exporter.scrape_soon(Duration::from_secs(10));
    let before = samples_total(&body);

    // More connections than the limit, held open.
    let held: Vec<TcpStream> = (0..400)
        .filter_map(|_| TcpStream::connect_timeout(&exporter.address, Duration::from_secs(2)).ok())
        .collect();
    assert!(held.len() > 256, "only {} connections made", held.len());
    wait_for("the EMFILE report", Duration::from_secs(10), || {
        exporter
            .stderr()
            .contains("cannot accept a connection")
            .then_some(())
    });
    exporter.assert_alive();
    drop(held);

    // /metrics answers again, and sampling went on.
    let body = wait_for("a scrape after the flood", Duration::from_secs(15), || {
        let body = exporter.scrape(Duration::from_secs(5)).ok()?;
        (samples_total(&body) > before).then_some(body)
    });
    assert!(body.contains("\ntfwatch_up 1\n"), "{body}");
    exporter.assert_alive();
    let stderr = exporter.stderr();
    assert_eq!(
        stderr.matches("cannot accept a connection").count(),
        1,
        "reported more than once:\n{stderr}"
    );
    assert!(stderr.contains("Too many open files"), "{stderr}");
    assert!(!stderr.contains("lost its listener"), "{stderr}");
}
