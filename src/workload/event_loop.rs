//! `event-loop`: a single-threaded event loop (the main thread in `epoll_wait`, as
//! asyncio's selector loop) serving requests on 127.0.0.1, whose handler makes
//! a 150 ms model call (a matrix multiply loop).
//!
//! Broken: the call runs on the loop thread, so the loop does not get back to its poll
//! for 150 ms at a time and every request waits behind the one being served. Fixed: the
//! loop hands each call to a pool of one worker per usable CPU and goes back to its
//! poll (`await asyncio.to_thread(...)`); a worker's result wakes it through a pipe.
//! Clients — one per usable CPU, each sending its next request when the reply comes —
//! start after the loop has idled [`IDLE_BEFORE_LOAD`] in its poll. Measured: requests
//! per second, and the p99 latency the clients saw.

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use super::common;
use super::compute::{Matrices, UNIT_N, work_unit};
use super::{Ctx, WorkloadOptions};

/// The model call a request makes.
pub const MODEL_CALL: Duration = Duration::from_millis(150);

/// How long the loop idles in its poll before the clients connect.
pub const IDLE_BEFORE_LOAD: Duration = Duration::from_secs(2);

/// How long one `epoll_wait` waits at most (the loop checks its deadline between).
const POLL_TIMEOUT_MS: i32 = 50;

/// epoll tokens: the listener, the workers' wake pipe, then connection i at
/// `FIRST_CONNECTION + i`.
const LISTENER: u64 = 0;
const WAKE: u64 = 1;
const FIRST_CONNECTION: u64 = 2;

/// The model call: matrix multiplies for [`MODEL_CALL`].
fn model_call(m: &Matrices, c: &mut [f64]) {
    let end = Instant::now() + MODEL_CALL;
    common::work_until(end, || {
        work_unit(m, c);
    });
}

pub fn run(ctx: &Ctx, _args: &WorkloadOptions) -> Result<i32> {
    let clients = ctx.usable_cpus.max(1);
    let listener = TcpListener::bind("127.0.0.1:0").context("cannot bind 127.0.0.1")?;
    listener.set_nonblocking(true)?;
    let address = listener.local_addr()?;
    ctx.say(format!(
        "event loop on {address}: {} ms model call {}, {clients} client(s) after {:.0} s idle",
        MODEL_CALL.as_millis(),
        if ctx.fixed() {
            "handed to a worker pool"
        } else {
            "on the loop thread"
        },
        IDLE_BEFORE_LOAD.as_secs_f64()
    ));
    let deadline = ctx.deadline;
    let fixed = ctx.fixed();
    let workers = ctx.usable_cpus.max(1);
    // The clients start once the loop has idled in its poll; the loop runs on the main
    // thread, where `asyncio.run` runs it.
    let load = std::thread::Builder::new()
        .name("load".to_string())
        .spawn(move || -> Result<(Vec<f64>, f64)> {
            common::sleep_until((Instant::now() + IDLE_BEFORE_LOAD).min(deadline));
            common::emit_onset("event-loop");
            let started = Instant::now();
            let mut handles = Vec::new();
            for index in 0..clients {
                let handle = std::thread::Builder::new()
                    .name(format!("client-{index}"))
                    .spawn(move || client(address, deadline))
                    .context("cannot start a client thread")?;
                handles.push(handle);
            }
            let mut latencies = Vec::new();
            for handle in handles {
                let mut seen = handle
                    .join()
                    .map_err(|_| anyhow::anyhow!("a client thread panicked"))?;
                latencies.append(&mut seen);
            }
            Ok((latencies, started.elapsed().as_secs_f64().max(1e-9)))
        })
        .context("cannot start the load thread")?;
    serve(listener, fixed, workers, deadline).context("the event loop failed")?;
    let (mut latencies, seconds) = load
        .join()
        .map_err(|_| anyhow::anyhow!("the load thread panicked"))??;
    latencies.sort_by(f64::total_cmp);
    let quantile = |q: f64| -> Option<f64> {
        let last = latencies.len().checked_sub(1)?;
        latencies.get(((last as f64) * q).round() as usize).copied()
    };
    let throughput = latencies.len() as f64 / seconds;
    ctx.say(format!(
        "{throughput:.1} requests/s, p50 {:.0} ms, p99 {:.0} ms",
        quantile(0.5).unwrap_or(0.0) * 1000.0,
        quantile(0.99).unwrap_or(0.0) * 1000.0
    ));
    let mut result = ctx.result(!latencies.is_empty());
    result.throughput = Some(throughput);
    result.work_units = Some(latencies.len() as u64);
    result.latency_p50_seconds = quantile(0.5);
    result.latency_p99_seconds = quantile(0.99);
    result.latency_max_seconds = latencies.last().copied();
    result.detail = format!(
        "{clients} client(s), {} ms calls {}",
        MODEL_CALL.as_millis(),
        if fixed {
            format!("on a pool of {workers}")
        } else {
            "on the loop".to_string()
        }
    );
    Ok(ctx.finish(&result))
}

/// One client: a request, then wait for its reply, until the deadline; the latencies.
fn client(address: std::net::SocketAddr, deadline: Instant) -> Vec<f64> {
    let mut latencies = Vec::new();
    let Ok(mut stream) = TcpStream::connect(address) else {
        return latencies;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(200)));
    let mut byte = [0u8; 1];
    'requests: while Instant::now() < deadline {
        let sent = Instant::now();
        if stream.write_all(b"r").is_err() {
            break;
        }
        loop {
            match stream.read(&mut byte) {
                Ok(1) => break,
                Ok(_) => break 'requests,
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    if Instant::now() >= deadline {
                        break 'requests;
                    }
                }
                Err(_) => break 'requests,
            }
        }
        latencies.push(sent.elapsed().as_secs_f64());
    }
    latencies
}

/// A non-blocking pipe: (read end, write end).
fn wake_pipe() -> Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: pipe2 writes two descriptors into the array it is given.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) } != 0 {
        bail!("pipe2: {}", std::io::Error::last_os_error());
    }
    // SAFETY: both descriptors were just created and are owned here alone.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// The loop: `epoll_wait` over the listener, the connections and the workers' wake pipe.
fn serve(listener: TcpListener, fixed: bool, workers: usize, deadline: Instant) -> Result<()> {
    let (wake_read, wake_write) = wake_pipe()?;
    let wake_write = Arc::new(wake_write);
    let (job_tx, job_rx) = mpsc::channel::<usize>();
    let (done_tx, done_rx) = mpsc::channel::<usize>();
    let job_rx = Arc::new(Mutex::new(job_rx));
    let mut pool = Vec::new();
    if fixed {
        for index in 0..workers {
            let (jobs, done, wake) = (
                Arc::clone(&job_rx),
                done_tx.clone(),
                Arc::clone(&wake_write),
            );
            pool.push(
                std::thread::Builder::new()
                    .name(format!("loop-worker-{index}"))
                    .spawn(move || {
                        let m = Matrices::new(UNIT_N);
                        let mut c = vec![0.0; UNIT_N * UNIT_N];
                        loop {
                            let job = match jobs.lock() {
                                Ok(jobs) => jobs.recv(),
                                Err(_) => return,
                            };
                            let Ok(connection) = job else { return };
                            model_call(&m, &mut c);
                            if done.send(connection).is_err() {
                                return;
                            }
                            // SAFETY: a one-byte write to a descriptor this pool shares.
                            unsafe { libc::write(wake.as_raw_fd(), b"w".as_ptr().cast(), 1) };
                        }
                    })
                    .context("cannot start a loop worker")?,
            );
        }
    }
    drop(done_tx);
    let m = Matrices::new(UNIT_N);
    let mut c = vec![0.0; UNIT_N * UNIT_N];
    // A closed connection keeps its place (jobs name connections by index).
    let mut connections: Vec<Option<TcpStream>> = Vec::new();
    let mut buffer = [0u8; 64];
    // SAFETY: epoll_create1 returns a new descriptor owned here alone (or -1).
    let epoll = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    if epoll < 0 {
        bail!("epoll_create1: {}", std::io::Error::last_os_error());
    }
    // SAFETY: the descriptor was just created and is owned here alone.
    let epoll = unsafe { OwnedFd::from_raw_fd(epoll) };
    let watch = |fd: RawFd, token: u64| -> Result<()> {
        let mut event = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: token,
        };
        // SAFETY: registers a live descriptor with the loop's own epoll instance.
        if unsafe { libc::epoll_ctl(epoll.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut event) } != 0 {
            bail!("epoll_ctl: {}", std::io::Error::last_os_error());
        }
        Ok(())
    };
    watch(listener.as_raw_fd(), LISTENER)?;
    watch(wake_read.as_raw_fd(), WAKE)?;
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 64];
    while Instant::now() < deadline {
        // The loop's poll, as asyncio's selector loop sleeps in epoll_wait.
        // SAFETY: `events` is a valid array of the length given.
        let ready = unsafe {
            libc::epoll_wait(
                epoll.as_raw_fd(),
                events.as_mut_ptr(),
                events.len() as i32,
                POLL_TIMEOUT_MS,
            )
        };
        let tokens: Vec<u64> = events[..ready.max(0) as usize]
            .iter()
            .map(|e| e.u64)
            .collect();
        for token in tokens {
            match token {
                LISTENER => {
                    while let Ok((stream, _)) = listener.accept() {
                        stream.set_nonblocking(true)?;
                        let _ = stream.set_nodelay(true);
                        watch(
                            stream.as_raw_fd(),
                            FIRST_CONNECTION + connections.len() as u64,
                        )?;
                        connections.push(Some(stream));
                    }
                }
                WAKE => {
                    // SAFETY: reads into a local buffer from the loop's own pipe.
                    while unsafe {
                        libc::read(
                            wake_read.as_raw_fd(),
                            buffer.as_mut_ptr().cast(),
                            buffer.len(),
                        )
                    } > 0
                    {}
                    while let Ok(connection) = done_rx.try_recv() {
                        if let Some(Some(stream)) = connections.get_mut(connection) {
                            let _ = stream.write_all(b"k");
                        }
                    }
                }
                token => {
                    let connection = (token - FIRST_CONNECTION) as usize;
                    let Some(Some(stream)) = connections.get_mut(connection) else {
                        continue;
                    };
                    let requests = match stream.read(&mut buffer) {
                        Ok(0) => {
                            // Closing the descriptor takes it out of the epoll set.
                            connections[connection] = None;
                            continue;
                        }
                        Ok(n) => n,
                        Err(_) => 0,
                    };
                    for _ in 0..requests {
                        if fixed {
                            let _ = job_tx.send(connection);
                        } else {
                            // The model call on the loop: nothing else is served meanwhile.
                            model_call(&m, &mut c);
                            let _ = stream.write_all(b"k");
                        }
                    }
                }
            }
        }
    }
    drop(job_tx);
    for worker in pool {
        let _ = worker.join();
    }
    Ok(())
}
