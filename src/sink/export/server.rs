//! The `/metrics` endpoint: a small HTTP/1.1 server on `std::net` that answers with the
//! exposition of the shared state ([`super::ExportState`], or [`super::NodeExportState`]
//! of `tfwatch node`). It serves nothing else: `GET` and `HEAD` of
//! `/metrics`, 404 for other paths, 405 for other methods. There is no control surface.
//!
//! It runs on every watched node, so it is bounded in everything a client controls:
//!
//! - one thread (`tfwatch-metrics`) accepts connections and reads request heads for all
//!   of them, non-blocking, through `poll(2)`; an idle or slow client costs a descriptor
//!   and a few bytes, never a thread;
//! - at most [`Limits::max_connections`] connections are open at once (fewer under a low
//!   `RLIMIT_NOFILE`); at the cap, the oldest connection still sending its head is
//!   closed to make room, so idle connections cannot lock scrapers out;
//! - a request head must arrive whole within [`Limits::head_deadline`] (in total, not
//!   per byte) and within [`Limits::max_head_bytes`], else 408 or 431 and the connection
//!   is closed;
//! - [`Limits::workers`] threads (`tfwatch-metrics-N`) render and write responses, each
//!   write within [`Limits::write_deadline`] in total; one response per connection
//!   (`Connection: close`);
//! - an accept error never ends the server: running out of descriptors (`EMFILE`) is
//!   reported on stderr (at most once a minute), the oldest pending connection is shed and accepting
//!   resumes after a short pause; a listener that really fails is reported and bound
//!   again every second.
//!
//! `tiny_http` (still used by the workload's demo endpoint) is not used here: it starts
//! a thread per connection with no cap and has no request-head deadline.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, poll};

use super::{ExportError, Render, exposition};

/// How often the accept thread looks at its stop flag while idle.
const POLL: Duration = Duration::from_millis(100);
/// Pause before accepting again after the process ran out of descriptors.
const ACCEPT_PAUSE: Duration = Duration::from_millis(100);
/// Pause between attempts to bind a failed listener again.
const REBIND_PAUSE: Duration = Duration::from_secs(1);
/// Most connections accepted in one turn of the loop, so heads are read in between.
const ACCEPT_BURST: usize = 64;
/// An accept failure for want of descriptors is reported at most this often.
const REPORT_EVERY: Duration = Duration::from_secs(60);

/// What the server allows its clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Threads that render and write responses.
    pub workers: usize,
    /// Connections open at once: reading their head, queued or being answered.
    pub max_connections: usize,
    /// Time from accept until the request head is complete.
    pub head_deadline: Duration,
    /// Time to write the whole response.
    pub write_deadline: Duration,
    /// Bytes of request line and headers.
    pub max_head_bytes: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            workers: 4,
            max_connections: 256,
            head_deadline: Duration::from_secs(5),
            write_deadline: Duration::from_secs(5),
            max_head_bytes: 8 * 1024,
        }
    }
}

impl Limits {
    /// The defaults, with the connection cap at a quarter of the soft `RLIMIT_NOFILE` so
    /// that clients can never take the sampler's descriptors (at least 8).
    pub fn for_this_process() -> Limits {
        let defaults = Limits::default();
        Limits {
            max_connections: connection_cap(defaults.max_connections, soft_nofile_limit()),
            ..defaults
        }
    }
}

/// Connections the kernel queues before `accept` (std binds with 128).
const BACKLOG: i32 = 1024;

/// Raises the listen backlog to [`BACKLOG`] (Linux applies a second `listen` to a
/// listening socket), so that a burst of connects is queued, not answered with SYNs
/// dropped and retried a second later. Best effort: the socket keeps 128 otherwise.
fn deepen_backlog(listener: &TcpListener) {
    use std::os::fd::AsRawFd;
    // SAFETY: listen(2) on a socket this server owns; it touches no memory.
    let _ = unsafe { libc::listen(listener.as_raw_fd(), BACKLOG) };
}

/// `wanted`, but at most a quarter of `nofile` descriptors and at least 8.
pub fn connection_cap(wanted: usize, nofile: u64) -> usize {
    let quarter = usize::try_from(nofile / 4).unwrap_or(usize::MAX);
    wanted.min(quarter).max(8)
}

fn soft_nofile_limit() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes the struct passed by pointer.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return 1024;
    }
    limit.rlim_cur
}

/// The server threads; stopped and joined on drop (the listener closes with them).
pub struct MetricsServer {
    address: SocketAddr,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl MetricsServer {
    /// Binds `address` and starts answering requests from `state`, within
    /// [`Limits::for_this_process`].
    pub fn start<S: Render>(
        address: SocketAddr,
        state: Arc<Mutex<S>>,
    ) -> Result<MetricsServer, ExportError> {
        MetricsServer::start_with(address, state, Limits::for_this_process())
    }

    /// Binds `address` and starts answering requests from `state` within `limits`.
    pub fn start_with<S: Render>(
        address: SocketAddr,
        state: Arc<Mutex<S>>,
        limits: Limits,
    ) -> Result<MetricsServer, ExportError> {
        let bind_error = |reason: String| ExportError::Bind { address, reason };
        let listener = TcpListener::bind(address).map_err(|e| bind_error(e.to_string()))?;
        listener
            .set_nonblocking(true)
            .map_err(|e| bind_error(format!("cannot make the socket non-blocking: {e}")))?;
        deepen_backlog(&listener);
        let bound = listener.local_addr().unwrap_or(address);
        let stop = Arc::new(AtomicBool::new(false));
        let in_flight = Arc::new(AtomicUsize::new(0));
        let limits = Limits {
            workers: limits.workers.max(1),
            max_connections: limits.max_connections.max(1),
            ..limits
        };

        let (jobs, queue) = std::sync::mpsc::sync_channel::<Job>(limits.max_connections);
        let queue = Arc::new(Mutex::new(queue));
        let mut threads = Vec::with_capacity(limits.workers + 1);
        for n in 0..limits.workers {
            let queue = Arc::clone(&queue);
            let state = Arc::clone(&state);
            let in_flight = Arc::clone(&in_flight);
            let spawned = std::thread::Builder::new()
                .name(format!("tfwatch-metrics-{n}"))
                .spawn(move || work(&queue, &state, &in_flight, limits.write_deadline));
            match spawned {
                Ok(thread) => threads.push(thread),
                // Fewer workers still serve; none cannot.
                Err(e) if threads.is_empty() => {
                    return Err(bind_error(format!("cannot start a server thread: {e}")));
                }
                Err(_) => break,
            }
        }
        let acceptor = {
            let stop = Arc::clone(&stop);
            let mut server = Acceptor {
                listener: Some(listener),
                address: bound,
                limits,
                pending: Vec::new(),
                jobs,
                in_flight,
                reported: None,
                unreported: 0,
                paused_until: None,
            };
            std::thread::Builder::new()
                .name("tfwatch-metrics".to_string())
                .spawn(move || server.run(&stop))
        };
        match acceptor {
            Ok(thread) => threads.push(thread),
            Err(e) => {
                // The workers end once the queue's sender (moved into the closure) is gone.
                for thread in threads {
                    let _ = thread.join();
                }
                return Err(bind_error(format!("cannot start the server thread: {e}")));
            }
        }
        Ok(MetricsServer {
            address: bound,
            stop,
            threads,
        })
    }

    /// The address bound.
    pub fn address(&self) -> SocketAddr {
        self.address
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // The accept thread ends first and drops the queue; then the workers end.
        for thread in self.threads.drain(..).rev() {
            let _ = thread.join();
        }
    }
}

/// A connection whose request head is still arriving.
struct Pending {
    stream: TcpStream,
    head: Vec<u8>,
    accepted: Instant,
}

/// A parsed request for a worker to answer.
struct Job {
    stream: TcpStream,
    method: String,
    target: String,
}

/// The accept-and-read loop's state.
struct Acceptor {
    /// `None` while the listener is gone and being bound again.
    listener: Option<TcpListener>,
    address: SocketAddr,
    limits: Limits,
    pending: Vec<Pending>,
    jobs: SyncSender<Job>,
    /// Connections handed to workers and not yet closed.
    in_flight: Arc<AtomicUsize>,
    /// When running out of descriptors was last reported, and the failures since.
    reported: Option<Instant>,
    unreported: u64,
    /// No accept before this instant (after `EMFILE`, or between rebinds).
    paused_until: Option<Instant>,
}

/// What to do about an accept error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AcceptFailure {
    /// The connection failed before it was taken (or nothing to take): go on.
    Transient,
    /// Out of descriptors or memory: shed a connection, pause, retry.
    Resources,
    /// The listener itself is broken: bind it again.
    Listener,
}

impl AcceptFailure {
    pub fn of(error: &io::Error) -> AcceptFailure {
        match error.raw_os_error() {
            Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM) => {
                AcceptFailure::Resources
            }
            Some(libc::EBADF | libc::EINVAL | libc::ENOTSOCK | libc::EOPNOTSUPP) => {
                AcceptFailure::Listener
            }
            // EAGAIN, EINTR, ECONNABORTED, EPROTO, network errors of the new connection,
            // EPERM from a firewall: that connection only.
            _ => AcceptFailure::Transient,
        }
    }
}

impl Acceptor {
    fn run(&mut self, stop: &AtomicBool) {
        while !stop.load(Ordering::SeqCst) {
            let now = Instant::now();
            self.expire(now);
            if self.listener.is_none() {
                self.rebind(now);
            }
            let accepting = self.listener.is_some() && self.paused_until.is_none_or(|t| now >= t);
            if accepting {
                self.paused_until = None;
            }
            let (listener_ready, readable) = self.wait(accepting, now);
            if listener_ready {
                self.accept_burst();
            }
            self.read_heads(&readable);
        }
    }

    /// Polls the listener (when `accepting`) and the pending connections until one is
    /// ready, the next head deadline or [`POLL`]; whether the listener is ready and the
    /// pending connections (by index) that are.
    fn wait(&self, accepting: bool, now: Instant) -> (bool, Vec<usize>) {
        let mut timeout = POLL;
        if let Some(oldest) = self.pending.iter().map(|p| p.accepted).min() {
            let due = (oldest + self.limits.head_deadline).saturating_duration_since(now);
            timeout = timeout.min(due + Duration::from_millis(1));
        }
        if let Some(until) = self.paused_until {
            timeout = timeout.min(until.saturating_duration_since(now));
        }
        let listen = self.listener.as_ref().filter(|_| accepting);
        let mut fds: Vec<PollFd> = Vec::with_capacity(self.pending.len() + 1);
        if let Some(listener) = listen {
            fds.push(PollFd::new(listener.as_fd(), PollFlags::POLLIN));
        }
        fds.extend(
            self.pending
                .iter()
                .map(|p| PollFd::new(p.stream.as_fd(), PollFlags::POLLIN)),
        );
        let millis = u16::try_from(timeout.as_millis()).unwrap_or(u16::MAX);
        if poll(&mut fds, millis).is_err() {
            // EINTR or ENOMEM: look again next turn.
            return (false, Vec::new());
        }
        let ready = |fd: &PollFd| fd.revents().is_some_and(|r| !r.is_empty());
        let skip = usize::from(listen.is_some());
        let listener_ready = listen.is_some() && fds.first().is_some_and(ready);
        let readable = fds
            .iter()
            .skip(skip)
            .enumerate()
            .filter(|(_, fd)| ready(fd))
            .map(|(i, _)| i)
            .collect();
        (listener_ready, readable)
    }

    fn open_connections(&self) -> usize {
        self.pending.len() + self.in_flight.load(Ordering::SeqCst)
    }

    fn accept_burst(&mut self) {
        for _ in 0..ACCEPT_BURST {
            let Some(listener) = &self.listener else {
                return;
            };
            match listener.accept() {
                Ok((stream, _)) => self.admit(stream),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) => match AcceptFailure::of(&e) {
                    AcceptFailure::Transient => {}
                    AcceptFailure::Resources => {
                        self.report_resources(&e);
                        self.shed_oldest();
                        self.paused_until = Some(Instant::now() + ACCEPT_PAUSE);
                        return;
                    }
                    AcceptFailure::Listener => {
                        eprintln!(
                            "tfwatch: the metrics endpoint on {} lost its listener: {e}; /metrics is not served until it is bound again (tried every {}s; sampling goes on)",
                            self.address,
                            REBIND_PAUSE.as_secs()
                        );
                        self.listener = None;
                        self.paused_until = Some(Instant::now() + REBIND_PAUSE);
                        return;
                    }
                },
            }
        }
    }

    /// Reports an accept that failed for want of descriptors: the first at once, then at
    /// most one line per [`REPORT_EVERY`] with the count since.
    fn report_resources(&mut self, error: &io::Error) {
        let now = Instant::now();
        if self.reported.is_some_and(|at| now < at + REPORT_EVERY) {
            self.unreported += 1;
            return;
        }
        let since = if self.unreported > 0 {
            format!(" ({} more since the last report)", self.unreported)
        } else {
            String::new()
        };
        eprintln!(
            "tfwatch: the metrics endpoint on {} cannot accept a connection: {error}{since}; it closes its oldest idle connection and retries every {}ms (raise `ulimit -n` if this goes on; reported at most once a minute)",
            self.address,
            ACCEPT_PAUSE.as_millis()
        );
        self.reported = Some(now);
        self.unreported = 0;
    }

    /// Takes a new connection in, closing the oldest pending one at the cap.
    fn admit(&mut self, stream: TcpStream) {
        if self.open_connections() >= self.limits.max_connections && !self.shed_oldest() {
            // Every slot is a request being answered: refuse this one.
            refuse(stream, 503, "Service Unavailable", "busy: try again\n");
            return;
        }
        if stream.set_nonblocking(true).is_err() {
            return;
        }
        self.pending.push(Pending {
            stream,
            head: Vec::new(),
            accepted: Instant::now(),
        });
    }

    /// Closes the pending connection accepted first; false when there is none.
    fn shed_oldest(&mut self) -> bool {
        let oldest = self
            .pending
            .iter()
            .enumerate()
            .min_by_key(|(_, p)| p.accepted)
            .map(|(i, _)| i);
        match oldest {
            Some(i) => {
                let shed = self.pending.swap_remove(i);
                refuse(shed.stream, 503, "Service Unavailable", "busy: try again\n");
                true
            }
            None => false,
        }
    }

    /// Closes the connections whose head did not arrive in time.
    fn expire(&mut self, now: Instant) {
        let deadline = self.limits.head_deadline;
        let mut i = 0;
        while i < self.pending.len() {
            if now.duration_since(self.pending[i].accepted) >= deadline {
                let late = self.pending.swap_remove(i);
                refuse(
                    late.stream,
                    408,
                    "Request Timeout",
                    "the request head did not arrive in time\n",
                );
            } else {
                i += 1;
            }
        }
    }

    /// Reads what arrived on the ready pending connections; complete heads go to the
    /// workers.
    fn read_heads(&mut self, readable: &[usize]) {
        let mut done: Vec<(usize, Outcome)> = Vec::new();
        let mut buf = [0u8; 4096];
        for &i in readable {
            let Some(pending) = self.pending.get_mut(i) else {
                continue;
            };
            let outcome = loop {
                match pending.stream.read(&mut buf) {
                    Ok(0) => break Some(Outcome::Gone),
                    Ok(n) => {
                        pending.head.extend_from_slice(&buf[..n]);
                        match parse_head(&pending.head, self.limits.max_head_bytes) {
                            Head::Incomplete => {}
                            other => break Some(Outcome::Head(other)),
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break None,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => break Some(Outcome::Gone),
                }
            };
            if let Some(outcome) = outcome {
                done.push((i, outcome));
            }
        }
        // Highest index first, so swap_remove leaves the other indices valid.
        done.sort_by_key(|(i, _)| std::cmp::Reverse(*i));
        for (i, outcome) in done {
            let pending = self.pending.swap_remove(i);
            match outcome {
                Outcome::Gone => {}
                Outcome::Head(Head::Request { method, target }) => self.dispatch(Job {
                    stream: pending.stream,
                    method,
                    target,
                }),
                Outcome::Head(Head::TooLarge) => refuse(
                    pending.stream,
                    431,
                    "Request Header Fields Too Large",
                    "the request head is too large\n",
                ),
                Outcome::Head(Head::Bad | Head::Incomplete) => {
                    refuse(pending.stream, 400, "Bad Request", "bad request\n")
                }
            }
        }
    }

    fn dispatch(&mut self, job: Job) {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        match self.jobs.try_send(job) {
            Ok(()) => {}
            // The queue holds max_connections and only admitted connections enter it, so
            // it is never full; if it were, or the workers were gone, refuse.
            Err(TrySendError::Full(job) | TrySendError::Disconnected(job)) => {
                self.in_flight.fetch_sub(1, Ordering::SeqCst);
                refuse(job.stream, 503, "Service Unavailable", "busy: try again\n");
            }
        }
    }

    fn rebind(&mut self, now: Instant) {
        if self.paused_until.is_some_and(|t| now < t) {
            return;
        }
        match TcpListener::bind(self.address).and_then(|l| l.set_nonblocking(true).map(|()| l)) {
            Ok(listener) => {
                deepen_backlog(&listener);
                eprintln!(
                    "tfwatch: the metrics endpoint listens on {} again",
                    self.address
                );
                self.listener = Some(listener);
                self.paused_until = None;
            }
            Err(_) => self.paused_until = Some(now + REBIND_PAUSE),
        }
    }
}

enum Outcome {
    Gone,
    Head(Head),
}

/// A request head, as far as it arrived.
#[derive(Debug, PartialEq, Eq)]
pub enum Head {
    Incomplete,
    TooLarge,
    Bad,
    Request { method: String, target: String },
}

/// Parses the request line of `bytes` once the head (up to an empty line) is whole.
pub fn parse_head(bytes: &[u8], max_head_bytes: usize) -> Head {
    let end = bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .or_else(|| bytes.windows(2).position(|w| w == b"\n\n"));
    let Some(end) = end else {
        return if bytes.len() > max_head_bytes {
            Head::TooLarge
        } else {
            Head::Incomplete
        };
    };
    if end > max_head_bytes {
        return Head::TooLarge;
    }
    let Ok(head) = std::str::from_utf8(&bytes[..end]) else {
        return Head::Bad;
    };
    let line = head.lines().next().unwrap_or_default();
    let mut parts = line.split(' ');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(method), Some(target), Some(version), None)
            if !method.is_empty() && target.starts_with('/') && version.starts_with("HTTP/1.") =>
        {
            Head::Request {
                method: method.to_string(),
                target: target.to_string(),
            }
        }
        _ => Head::Bad,
    }
}

/// What a request gets: status, and the body unless it is the exposition.
pub fn route(method: &str, target: &str) -> (u16, Option<&'static str>) {
    let path = target.split(['?', '#']).next().unwrap_or(target);
    match (method, path) {
        ("GET" | "HEAD", "/metrics") => (200, None),
        (_, "/metrics") => (405, Some("only GET and HEAD are served\n")),
        _ => (404, Some("not found: tfwatch serves only /metrics\n")),
    }
}

/// Writes a short error response without waiting (best effort) and closes.
fn refuse(mut stream: TcpStream, status: u16, reason: &str, body: &str) {
    let response = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.set_nonblocking(true);
    let _ = stream.write(response.as_bytes());
    let _ = stream.shutdown(Shutdown::Both);
}

/// A worker: answers queued requests until the queue's sender is gone.
fn work<S: Render>(
    queue: &Mutex<Receiver<Job>>,
    state: &Mutex<S>,
    in_flight: &AtomicUsize,
    write_deadline: Duration,
) {
    loop {
        let job = queue.lock().unwrap_or_else(PoisonError::into_inner).recv();
        let Ok(job) = job else {
            return;
        };
        answer(job, state, write_deadline);
        in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

fn answer<S: Render>(job: Job, state: &Mutex<S>, write_deadline: Duration) {
    let Job {
        mut stream,
        method,
        target,
    } = job;
    let (status, reason, content_type, body, extra) = match route(&method, &target) {
        (200, _) => {
            // Render under the lock, write with it released.
            let body = state
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .render();
            (200, "OK", exposition::CONTENT_TYPE, body, "")
        }
        (405, body) => (
            405,
            "Method Not Allowed",
            "text/plain; charset=utf-8",
            body.unwrap_or_default().to_string(),
            "Allow: GET, HEAD\r\n",
        ),
        (status, body) => (
            status,
            "Not Found",
            "text/plain; charset=utf-8",
            body.unwrap_or_default().to_string(),
            "",
        ),
    };
    let mut response = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n{extra}Connection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    if method != "HEAD" {
        response.extend_from_slice(body.as_bytes());
    }
    // A client that went away or reads too slowly is not an error: it is closed.
    let _ = write_within(&mut stream, &response, Instant::now() + write_deadline);
    let _ = stream.shutdown(Shutdown::Write);
}

/// Writes all of `bytes` before `deadline`, or gives up with `TimedOut`.
fn write_within(stream: &mut TcpStream, mut bytes: &[u8], deadline: Instant) -> io::Result<()> {
    stream.set_nonblocking(false)?;
    while !bytes.is_empty() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::ErrorKind::TimedOut.into());
        }
        stream.set_write_timeout(Some(left))?;
        match stream.write(bytes) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => bytes = &bytes[n..],
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
