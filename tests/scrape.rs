//! The metrics scraper against real HTTP servers on 127.0.0.1: a good endpoint, one
//! that is down, slow, returns garbage, a huge body, or a 500. Every server handles a
//! fixed number of connections, gives up at a deadline, and is joined.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tfwatch::model::metrics::MetricsMapping;
use tfwatch::source::scrape::Scraper;

/// How long any test server waits for its connections before giving up.
const SERVER_DEADLINE: Duration = Duration::from_secs(10);

/// A server on 127.0.0.1 that serves one connection per handler, in order.
struct TestServer {
    url: String,
    thread: Option<JoinHandle<usize>>,
}

type Handler = Box<dyn FnOnce(TcpStream) + Send>;

impl TestServer {
    fn start(handlers: Vec<Handler>) -> TestServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1");
        let url = format!(
            "http://{}/metrics",
            listener.local_addr().expect("local address")
        );
        listener
            .set_nonblocking(true)
            .expect("non-blocking listener");
        let thread = std::thread::spawn(move || {
            let deadline = Instant::now() + SERVER_DEADLINE;
            let mut served = 0;
            for handler in handlers {
                let stream = loop {
                    match listener.accept() {
                        Ok((stream, _)) => break Some(stream),
                        Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => {
                            if Instant::now() >= deadline {
                                break None;
                            }
                            std::thread::sleep(Duration::from_millis(5));
                        }
                        Err(_) => break None,
                    }
                };
                let Some(stream) = stream else { break };
                stream.set_nonblocking(false).expect("blocking stream");
                stream
                    .set_read_timeout(Some(Duration::from_secs(5)))
                    .expect("read timeout");
                read_request(&stream);
                handler(stream);
                served += 1;
            }
            served
        });
        TestServer {
            url,
            thread: Some(thread),
        }
    }

    /// Waits for the server to finish; returns how many connections it served.
    fn join(mut self) -> usize {
        self.thread
            .take()
            .expect("joined once")
            .join()
            .expect("server thread")
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Reads the request head (up to the blank line, bounded).
fn read_request(mut stream: &TcpStream) -> String {
    let mut request = Vec::new();
    let mut byte = [0_u8; 1];
    while !request.ends_with(b"\r\n\r\n") && request.len() < 16 * 1024 {
        match stream.read(&mut byte) {
            Ok(1) => request.push(byte[0]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&request).into_owned()
}

fn respond(status: &'static str, body: String) -> Handler {
    Box::new(move |mut stream: TcpStream| {
        let _ = write!(
            stream,
            "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
    })
}

fn respond_chunked(body: String) -> Handler {
    Box::new(move |mut stream: TcpStream| {
        let _ = write!(
            stream,
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        );
        for piece in body.as_bytes().chunks(100) {
            let _ = write!(stream, "{:x}\r\n", piece.len());
            let _ = stream.write_all(piece);
            let _ = write!(stream, "\r\n");
        }
        let _ = write!(stream, "0\r\n\r\n");
    })
}

fn exposition(fast: u64, slow: u64, depth: u64) -> String {
    let total = fast + slow;
    format!(
        "# HELP serve_queue_depth Requests waiting.\n# TYPE serve_queue_depth gauge\nserve_queue_depth {depth}\n# TYPE serve_requests_total counter\nserve_requests_total{{code=\"200\"}} {total}\n# TYPE serve_failures_total counter\nserve_failures_total 1\n# TYPE serve_latency_seconds histogram\nserve_latency_seconds_bucket{{le=\"0.1\"}} {fast}\nserve_latency_seconds_bucket{{le=\"1\"}} {fast}\nserve_latency_seconds_bucket{{le=\"60\"}} {total}\nserve_latency_seconds_bucket{{le=\"+Inf\"}} {total}\nserve_latency_seconds_sum 1\nserve_latency_seconds_count {total}\n"
    )
}

fn scraper(url: &str, timeout: Duration) -> Scraper {
    Scraper::new(url, timeout, MetricsMapping::default()).expect("valid URL")
}

#[test]
fn good_endpoint_gives_windowed_quantiles() {
    let server = TestServer::start(vec![
        respond("200 OK", exposition(100, 0, 2)),
        respond_chunked(exposition(100, 20, 25)),
    ]);
    let mut scraper = scraper(&server.url, Duration::from_secs(2));

    let first = scraper.scrape();
    assert_eq!(first.unavailable, None, "{first:?}");
    assert_eq!(first.source, server.url);
    assert_eq!(first.queue_depth, Some(2.0));
    assert_eq!(first.completions_total, Some(100.0));
    assert_eq!(first.failures_total, Some(1.0));
    // Cumulative on the first scrape: everything was fast.
    assert!(first.latency_p99_seconds.unwrap() <= 0.1, "{first:?}");

    let second = scraper.scrape();
    assert_eq!(second.unavailable, None, "{second:?}");
    assert_eq!(second.queue_depth, Some(25.0));
    // Over the window only the 20 slow requests were observed.
    let p50 = second.latency_p50_seconds.unwrap();
    assert!(p50 > 1.0 && p50 <= 60.0, "{second:?}");
    assert_eq!(server.join(), 2);
}

#[test]
fn endpoint_down_is_unavailable_and_retried() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/metrics", listener.local_addr().unwrap());
    drop(listener);
    let mut scraper = scraper(&url, Duration::from_secs(2));
    for _ in 0..2 {
        let started = Instant::now();
        let metrics = scraper.scrape();
        let reason = metrics.unavailable.expect("unavailable");
        assert!(reason.contains("connection refused"), "{reason}");
        assert_eq!(metrics.source, url);
        assert_eq!(metrics.queue_depth, None);
        assert!(started.elapsed() < Duration::from_secs(2));
    }
}

#[test]
fn slow_endpoint_gives_up_at_the_timeout() {
    let timeout = Duration::from_millis(300);
    let margin = Duration::from_millis(700);
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let (drip_tx, drip_rx) = mpsc::channel::<()>();
    let server = TestServer::start(vec![
        // Accepts and says nothing until released.
        Box::new(move |stream: TcpStream| {
            let _ = release_rx.recv_timeout(SERVER_DEADLINE);
            drop(stream);
        }),
        // Sends the head, then drips the body a byte at a time: every read succeeds, yet
        // the whole response takes far longer than the timeout.
        Box::new(move |mut stream: TcpStream| {
            let _ = write!(stream, "HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n");
            for _ in 0..1000 {
                if stream.write_all(b"#").is_err() {
                    break;
                }
                if drip_rx.recv_timeout(Duration::from_millis(20)).is_ok() {
                    break;
                }
            }
        }),
    ]);
    let mut scraper = scraper(&server.url, timeout);

    let mut scrape_within_timeout = || {
        let started = Instant::now();
        let metrics = scraper.scrape();
        let elapsed = started.elapsed();
        let reason = metrics.unavailable.expect("unavailable");
        assert!(
            reason.contains("no complete response within 300 ms"),
            "{reason}"
        );
        assert!(elapsed < timeout + margin, "took {elapsed:?}");
    };
    scrape_within_timeout();
    // The silent connection is done with; the next one drips.
    release_tx.send(()).unwrap();
    scrape_within_timeout();
    let _ = drip_tx.send(());
    assert_eq!(server.join(), 2);
}

#[test]
fn garbage_body_is_unavailable_with_the_line() {
    let server = TestServer::start(vec![
        respond("200 OK", "<html>\n<body>Not Found</body>\n</html>\n".into()),
        Box::new(|mut stream: TcpStream| {
            let _ = stream.write_all(b"\x00\xff\xfe garbage that is not HTTP\r\n\r\n");
        }),
        respond("200 OK", "app_queue_depth \u{1}\u{2}\n".into()),
    ]);
    let mut scraper = scraper(&server.url, Duration::from_secs(2));
    let reason = scraper.scrape().unavailable.expect("unavailable");
    assert!(
        reason.contains("line 1") && reason.contains("metric name"),
        "{reason}"
    );
    let reason = scraper.scrape().unavailable.expect("unavailable");
    assert!(reason.contains("malformed HTTP response"), "{reason}");
    let reason = scraper.scrape().unavailable.expect("unavailable");
    assert!(reason.contains("not a number"), "{reason}");
    assert_eq!(server.join(), 3);
}

#[test]
fn huge_body_is_refused_at_the_cap() {
    const HUGE: usize = 5 * 1024 * 1024;
    let server = TestServer::start(vec![
        // No Content-Length: the body runs until close.
        Box::new(|mut stream: TcpStream| {
            let _ = write!(stream, "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n");
            let line = b"filler_metric{label=\"padding padding padding\"} 1\n";
            let mut sent = 0;
            while sent < HUGE {
                if stream.write_all(line).is_err() {
                    break;
                }
                sent += line.len();
            }
        }),
        // A Content-Length above the cap is refused before the body is read.
        Box::new(|mut stream: TcpStream| {
            let _ = write!(stream, "HTTP/1.1 200 OK\r\nContent-Length: {HUGE}\r\n\r\n");
        }),
    ]);
    let mut scraper = scraper(&server.url, Duration::from_secs(5));
    for _ in 0..2 {
        let reason = scraper.scrape().unavailable.expect("unavailable");
        assert!(
            reason.contains("body larger than 4194304 bytes"),
            "{reason}"
        );
    }
    assert_eq!(server.join(), 2);
}

#[test]
fn error_status_is_unavailable_then_recovers() {
    let server = TestServer::start(vec![
        respond("500 Internal Server Error", "boom".into()),
        respond("404 Not Found", "no".into()),
        respond("200 OK", exposition(10, 0, 1)),
    ]);
    let mut scraper = scraper(&server.url, Duration::from_secs(2));
    let reason = scraper.scrape().unavailable.expect("unavailable");
    assert!(reason.contains("HTTP status 500"), "{reason}");
    let reason = scraper.scrape().unavailable.expect("unavailable");
    assert!(reason.contains("HTTP status 404"), "{reason}");
    let metrics = scraper.scrape();
    assert_eq!(metrics.unavailable, None, "{metrics:?}");
    assert_eq!(metrics.queue_depth, Some(1.0));
    assert_eq!(server.join(), 3);
}

// --- The sampler never waits for an endpoint -------------------------------------------

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// A server on 127.0.0.1 that hands every connection to `handle` until it is dropped,
/// at most `max_connections` of them and never past `deadline`.
struct ServeUntilDropped {
    url: String,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<usize>>,
}

impl ServeUntilDropped {
    fn start(
        max_connections: usize,
        deadline: Duration,
        mut handle: impl FnMut(TcpStream) + Send + 'static,
    ) -> ServeUntilDropped {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1");
        let url = format!("http://{}/metrics", listener.local_addr().unwrap());
        listener.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let stop_flag = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let deadline = Instant::now() + deadline;
            let mut served = 0;
            while served < max_connections
                && Instant::now() < deadline
                && !stop_flag.load(Ordering::Relaxed)
            {
                match listener.accept() {
                    Ok((stream, _)) => {
                        stream.set_nonblocking(false).unwrap();
                        stream
                            .set_read_timeout(Some(Duration::from_secs(2)))
                            .unwrap();
                        handle(stream);
                        served += 1;
                    }
                    Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    Err(_) => break,
                }
            }
            served
        });
        ServeUntilDropped {
            url,
            stop,
            thread: Some(thread),
        }
    }

    /// Stops accepting; returns how many connections were taken.
    fn stop(mut self) -> usize {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap()
    }
}

impl Drop for ServeUntilDropped {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Accepts and never answers: every connection is held open until the server stops.
fn silent_endpoint() -> ServeUntilDropped {
    let mut held = Vec::new();
    ServeUntilDropped::start(1000, Duration::from_secs(90), move |stream| {
        held.push(stream)
    })
}

/// `label_sets` series of one gauge (about 13 bytes each): a body under the byte cap
/// whose series count is far above the parse cap.
fn huge_body(label_sets: usize) -> String {
    let mut body = String::from("# TYPE big_queue_depth gauge\n");
    for i in 0..label_sets {
        body.push_str(&format!("big_queue_depth{{s=\"{i}\"}} 1\n"));
    }
    body
}

fn huge_endpoint(label_sets: usize) -> ServeUntilDropped {
    let body = huge_body(label_sets);
    ServeUntilDropped::start(1000, Duration::from_secs(90), move |mut stream| {
        read_request(&stream);
        let _ = write!(
            stream,
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        let _ = stream.write_all(body.as_bytes());
    })
}

/// `tfwatch attach` at 200 ms on an idle process with `url` as its metrics endpoint:
/// the sample lines seen in the 3 s after the first one, with the unavailable entries.
fn samples_in_three_seconds(url: &str) -> (Vec<serde_json::Value>, Vec<serde_json::Value>) {
    use crate::support::{ChildGuard, line_channel, tfwatch};
    let mut target_command = std::process::Command::new("sleep");
    target_command.arg("60");
    let target = ChildGuard::spawn(target_command);
    let pid = target.pid().to_string();
    let mut attach = ChildGuard::spawn(tfwatch(&[
        "attach",
        &pid,
        "--json",
        "--no-gpu",
        "--interval",
        "200ms",
        "--duration",
        "20s",
        "--metrics-url",
        url,
    ]));
    let lines = line_channel(attach.child.stdout.take().unwrap());
    let mut samples = Vec::new();
    let mut unavailable = Vec::new();
    let first_deadline = Instant::now() + Duration::from_secs(15);
    let mut window_end: Option<Instant> = None;
    loop {
        let deadline = window_end.unwrap_or(first_deadline);
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        let Ok(line) = lines.recv_timeout(left) else {
            break;
        };
        let event: serde_json::Value = serde_json::from_str(&line).unwrap();
        if event["type"] != "sample" {
            continue;
        }
        window_end.get_or_insert_with(|| Instant::now() + Duration::from_secs(3));
        unavailable.extend(event["unavailable"].as_array().unwrap().iter().cloned());
        samples.push(event);
    }
    assert!(window_end.is_some(), "no sample within 15 s");
    (samples, unavailable)
}

fn metrics_reasons(unavailable: &[serde_json::Value]) -> Vec<String> {
    unavailable
        .iter()
        .filter(|u| u["source"] == "metrics")
        .map(|u| u["reason"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn silent_endpoint_does_not_slow_sampling() {
    let server = silent_endpoint();
    let (samples, unavailable) = samples_in_three_seconds(&server.url);
    // 200 ms apart: about 15 in 3 s (a scrape inside the sample gave 5).
    assert!(samples.len() >= 8, "{} samples in 3 s", samples.len());
    for pair in samples.windows(2) {
        let gap = pair[1]["elapsed_seconds"].as_f64().unwrap()
            - pair[0]["elapsed_seconds"].as_f64().unwrap();
        assert!(gap < 0.45, "samples {gap:.3} s apart");
    }
    let reasons = metrics_reasons(&unavailable);
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("no complete response within 500 ms")
                || r.contains("no answer within 400 ms")),
        "{reasons:?}"
    );
    for sample in &samples {
        let duration = sample["sample_duration_seconds"].as_f64().unwrap();
        assert!(duration < 0.2, "a sample took {duration} s");
    }
    assert!(
        server.stop() >= 2,
        "the endpoint was scraped again and again"
    );
}

#[test]
fn huge_endpoint_is_too_large_and_does_not_slow_sampling() {
    let server = huge_endpoint(100_000);
    let (samples, unavailable) = samples_in_three_seconds(&server.url);
    assert!(samples.len() >= 8, "{} samples in 3 s", samples.len());
    let reasons = metrics_reasons(&unavailable);
    // The series cap stops the parse; on a heavily loaded machine the parse deadline
    // may come first. Either way the endpoint is unavailable, with the reason, and the
    // samples kept coming.
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("too large: more than 50000 series")
                || r.contains("parsing did not finish in time")),
        "{reasons:?}"
    );
    assert!(server.stop() >= 2);
}

#[test]
fn huge_endpoint_does_not_hide_a_hang_in_run() {
    use crate::support::{ChildGuard, Lines, tfwatch, tfwatch_bin};
    let server = huge_endpoint(100_000);
    let bin = tfwatch_bin().to_string_lossy().to_string();
    let mut guard = ChildGuard::spawn(tfwatch(&[
        "run",
        "--no-gpu",
        "--hang-after",
        "3s",
        "--metrics-url",
        &server.url,
        "--",
        &bin,
        "run-workload",
        "--scenario",
        "deadlock",
        "--duration",
        "20s",
    ]));
    let stdout = Lines::new(guard.child.stdout.take().unwrap());
    let stderr = Lines::new(guard.child.stderr.take().unwrap());
    let _ = stdout.until("stdout to close", Duration::from_secs(60), |_| false);
    let err = stderr
        .until("stderr to close", Duration::from_secs(60), |_| false)
        .join("\n");
    let code = guard.child.wait().unwrap().code();
    assert_eq!(code, Some(122), "{err}");
    assert!(err.contains("hang detected"), "{err}");
}
