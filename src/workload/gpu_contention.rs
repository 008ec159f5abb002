//! `gpu-contention`: several processes of one job contend for one device.
//!
//! There is no GPU here, so this is an explicit SIMULATION: the "device" is a pair of
//! process-shared pthread mutexes (device memory, device stream) in a memory file
//! (memfd) mapped `MAP_SHARED` by every process. Broken: rank 0 loads its model (holds memory) then
//! infers (needs the stream); rank 1 holds the stream for its warm-up inference and then
//! needs memory for activations — the two processes deadlock as in a driver stall, each
//! blocked in a futex wait. Fixed: one owner process holds the device and serves it
//! through a queue; the other processes submit requests over a Unix socket and complete.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use super::common::{self, PthreadMutex, workload_lock_mutex, workload_unlock_mutex};
use super::compute::{Matrices, work_unit};
use super::{Ctx, WorkloadOptions};

/// Internal role of a rank of the broken variant.
pub const RANK_ROLE: &str = "gpu-rank";
/// Internal role of a client of the fixed variant.
pub const CLIENT_ROLE: &str = "gpu-client";
/// Inference requests each client submits.
pub const INFERENCES: usize = 20;
const SCENARIO: &str = "gpu-contention";

/// Device memory each rank holds on a real GPU.
const GPU_BYTES_PER_RANK: usize = 256 << 20;

/// The simulated device, shared by every process of the job.
#[repr(C)]
struct SharedDevice {
    memory_lock: PthreadMutex,
    stream_lock: PthreadMutex,
    arrived: AtomicU32,
}

/// A `MAP_SHARED` mapping of the device file.
struct DeviceMapping {
    device: *mut SharedDevice,
}

impl DeviceMapping {
    /// Creates the device in an anonymous memory file (memfd). The fd is inherited by
    /// the ranks (no close-on-exec), which open it as the returned `/proc/self/fd/N`, so
    /// nothing is left on disk whatever way the job ends.
    fn create() -> Result<(DeviceMapping, std::fs::File, PathBuf)> {
        use std::os::fd::{AsRawFd, FromRawFd};
        // SAFETY: memfd_create with a NUL-terminated name; a fresh fd is owned by File.
        let fd = unsafe { libc::memfd_create(c"tfwatch-simulated-device".as_ptr(), 0) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error()).context("cannot create the device memory");
        }
        // SAFETY: fd is a fresh descriptor nothing else owns.
        let file = unsafe { std::fs::File::from_raw_fd(fd) };
        file.set_len(std::mem::size_of::<SharedDevice>() as u64)?;
        let mapping = DeviceMapping::map(&file, true)?;
        let path = PathBuf::from(format!("/proc/self/fd/{}", file.as_raw_fd()));
        Ok((mapping, file, path))
    }

    /// A rank's view of the device created by the job.
    fn open(path: &Path) -> Result<DeviceMapping> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .with_context(|| format!("cannot open the device memory {}", path.display()))?;
        DeviceMapping::map(&file, false)
    }

    fn map(file: &std::fs::File, create: bool) -> Result<DeviceMapping> {
        use std::os::fd::AsRawFd;
        let size = std::mem::size_of::<SharedDevice>();
        // SAFETY: mapping `size` bytes of a file at least that long; the mapping stays
        // valid after the file is closed and is never unmapped (the process ends first).
        let address = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                size,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            )
        };
        if address == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error()).context("cannot map the device memory");
        }
        let device = address.cast::<SharedDevice>();
        if create {
            // SAFETY: the fresh mapping is ours alone until the ranks start.
            unsafe {
                common::init_process_shared_mutex((*device).memory_lock.as_ptr())?;
                common::init_process_shared_mutex((*device).stream_lock.as_ptr())?;
                (*device).arrived = AtomicU32::new(0);
            }
        }
        Ok(DeviceMapping { device })
    }

    fn memory_lock(&self) -> &PthreadMutex {
        // SAFETY: the mapping is valid for the life of the process and the mutex was
        // initialised before any rank started.
        unsafe { &(*self.device).memory_lock }
    }

    fn stream_lock(&self) -> &PthreadMutex {
        // SAFETY: as above.
        unsafe { &(*self.device).stream_lock }
    }

    fn arrived(&self) -> &AtomicU32 {
        // SAFETY: as above; the field is only used atomically.
        unsafe { &(*self.device).arrived }
    }
}

/// The owner's socket: a name in the abstract Unix socket namespace, so no file is
/// left behind.
fn socket_name() -> PathBuf {
    PathBuf::from(format!("tfwatch-workload-{}-device", std::process::id()))
}

fn abstract_address(name: &Path) -> std::io::Result<std::os::unix::net::SocketAddr> {
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::ffi::OsStrExt;
    std::os::unix::net::SocketAddr::from_abstract_name(name.as_os_str().as_bytes())
}

pub fn run(ctx: &Ctx, args: &WorkloadOptions) -> Result<i32> {
    let procs = args.procs.unwrap_or(2);
    if !(2..=16).contains(&procs) {
        bail!("--procs {procs}: device contention needs 2 to 16 processes");
    }
    match super::cuda::probe() {
        Ok(name) => ctx.say(format!(
            "real GPU {name}: each process holds device memory on it; the device locks are simulated beside it"
        )),
        Err(why) => ctx.say(format!(
            "simulated device (no GPU is used: {why}): {procs} processes of one job share it"
        )),
    }
    if ctx.fixed() {
        run_owner(ctx, procs)
    } else {
        run_ranks(ctx, procs)
    }
}

/// Broken: every rank maps the device and takes its two locks in its own order.
fn run_ranks(ctx: &Ctx, procs: usize) -> Result<i32> {
    let (_device, _device_file, path) = DeviceMapping::create()?;
    let mut children = Vec::new();
    for index in 0..procs {
        let mut command = common::self_command(SCENARIO, RANK_ROLE)?;
        command
            .arg("--endpoint")
            .arg(&path)
            .arg("--index")
            .arg(index.to_string())
            .arg("--procs")
            .arg(procs.to_string())
            .arg("--duration")
            .arg(remaining_arg(ctx));
        let child = command.spawn().context("cannot start a rank process")?;
        common::emit_child(child.id(), &format!("{RANK_ROLE}-{index}"));
        children.push(child);
    }
    let exits = wait_children(ctx, children);
    finish(ctx, &exits, "ranks")
}

/// Waits for the children until the deadline, then kills the rest; their exit codes.
fn wait_children(ctx: &Ctx, mut children: Vec<std::process::Child>) -> Vec<Option<i32>> {
    let mut exits: Vec<Option<i32>> = vec![None; children.len()];
    while Instant::now() < ctx.deadline && exits.iter().any(Option::is_none) {
        for (child, exit) in children.iter_mut().zip(exits.iter_mut()) {
            if exit.is_none()
                && let Ok(Some(status)) = child.try_wait()
            {
                *exit = Some(status.code().unwrap_or(128));
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    for (child, exit) in children.iter_mut().zip(exits.iter()) {
        if exit.is_none() {
            ctx.say(format!(
                "process {} still blocked on the simulated device after {:.1}s; killing it",
                child.id(),
                ctx.duration.as_secs_f64()
            ));
            let _ = child.kill();
            let _ = child.wait();
        }
    }
    exits
}

fn finish(ctx: &Ctx, exits: &[Option<i32>], what: &str) -> Result<i32> {
    let done = exits.iter().filter(|exit| **exit == Some(0)).count();
    let completed = done == exits.len();
    ctx.say(format!("{done} of {} {what} completed", exits.len()));
    let mut result = ctx.result(completed);
    result.work_units = Some(done as u64);
    result.detail = if completed {
        format!("{done} {what} completed (simulated device)")
    } else {
        format!(
            "{} of {} {what} hung on the simulated device",
            exits.len() - done,
            exits.len()
        )
    };
    Ok(ctx.finish(&result))
}

fn remaining_arg(ctx: &Ctx) -> String {
    let remaining = ctx.deadline.saturating_duration_since(Instant::now());
    format!("{}ms", remaining.as_millis().max(1))
}

/// A rank of the broken variant.
pub fn run_rank(args: &WorkloadOptions) -> Result<i32> {
    let path = args
        .endpoint
        .as_deref()
        .context("a rank needs --endpoint")?;
    let index = args.index;
    let procs = args.procs.unwrap_or(2).max(2);
    let deadline = Instant::now() + args.duration;
    common::arm_watchdog(deadline + Duration::from_secs(2), || common::EXIT_OVERRAN);
    let device = DeviceMapping::open(path)?;
    let pid = std::process::id();
    let say = |text: String| common::say(SCENARIO, &format!("rank {index} (pid {pid}): {text}"));
    // "Load the model": on a real GPU, hold device memory as a framework would.
    match super::cuda::hold_device_memory(GPU_BYTES_PER_RANK) {
        Ok(name) => say(format!(
            "holds {} MiB on GPU {name}",
            GPU_BYTES_PER_RANK >> 20
        )),
        Err(why) => say(format!("simulated device ({why})")),
    }
    // Initialise: real work before touching the device.
    let matrices = Matrices::new(96);
    let mut c = vec![0.0; 96 * 96];
    common::work_until(Instant::now() + Duration::from_millis(200), || {
        work_unit(&matrices, &mut c);
    });
    let (first, first_name, second, second_name) = if index.is_multiple_of(2) {
        (
            device.memory_lock(),
            "load model: holds device memory",
            device.stream_lock(),
            "infer: waits for the device stream",
        )
    } else {
        (
            device.stream_lock(),
            "warm-up inference: holds the device stream",
            device.memory_lock(),
            "allocate activations: waits for device memory",
        )
    };
    workload_lock_mutex(first);
    say(format!("{first_name} ({:#x})", first.address()));
    let arrived = device.arrived().fetch_add(1, Ordering::AcqRel) + 1;
    if arrived == 2 {
        common::emit_onset("gpu-contention");
    }
    while device.arrived().load(Ordering::Acquire) < 2.min(procs as u32) {
        if Instant::now() >= deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    say(format!("{second_name} ({:#x})", second.address()));
    workload_lock_mutex(second);
    work_unit(&matrices, &mut c);
    workload_unlock_mutex(second);
    workload_unlock_mutex(first);
    say("done".to_string());
    Ok(0)
}

/// Fixed: this process owns the device; clients submit through a queue.
fn run_owner(ctx: &Ctx, procs: usize) -> Result<i32> {
    // On a real GPU only the owner holds device memory: one process per device.
    if let Ok(name) = super::cuda::hold_device_memory(GPU_BYTES_PER_RANK) {
        ctx.say(format!(
            "owner holds {} MiB on GPU {name}; clients never touch the device",
            GPU_BYTES_PER_RANK >> 20
        ));
    }
    let path = socket_name();
    let listener = UnixListener::bind_addr(&abstract_address(&path)?)
        .with_context(|| format!("cannot listen on @{}", path.display()))?;
    let served = Arc::new(AtomicU64::new(0));
    let (queue, requests) = mpsc::channel::<mpsc::Sender<()>>();
    {
        let served = Arc::clone(&served);
        std::thread::Builder::new()
            .name("device-owner".to_string())
            .spawn(move || serve_device(&requests, &served))?;
    }
    std::thread::Builder::new()
        .name("device-accept".to_string())
        .spawn(move || {
            for stream in listener.incoming().flatten() {
                let queue = queue.clone();
                let _ = std::thread::Builder::new()
                    .name("device-client".to_string())
                    .spawn(move || relay_client(stream, &queue));
            }
        })?;
    ctx.say(format!(
        "owner process {} serves the simulated device through a queue at @{}",
        std::process::id(),
        path.display()
    ));
    let mut children = Vec::new();
    for index in 0..procs {
        let mut command = common::self_command(SCENARIO, CLIENT_ROLE)?;
        command
            .arg("--fixed")
            .arg("--endpoint")
            .arg(&path)
            .arg("--index")
            .arg(index.to_string())
            .arg("--duration")
            .arg(remaining_arg(ctx));
        let child = command.spawn().context("cannot start a client process")?;
        common::emit_child(child.id(), &format!("{CLIENT_ROLE}-{index}"));
        children.push(child);
    }
    let exits = wait_children(ctx, children);
    ctx.say(format!(
        "device owner served {} requests",
        served.load(Ordering::Relaxed)
    ));
    finish(ctx, &exits, "clients")
}

/// The one thread that touches the device: memory then stream, always in that order.
fn serve_device(requests: &mpsc::Receiver<mpsc::Sender<()>>, served: &AtomicU64) {
    let memory_lock = PthreadMutex::new();
    let stream_lock = PthreadMutex::new();
    let matrices = Matrices::new(96);
    let mut c = vec![0.0; 96 * 96];
    for reply in requests {
        workload_lock_mutex(&memory_lock);
        workload_lock_mutex(&stream_lock);
        work_unit(&matrices, &mut c);
        workload_unlock_mutex(&stream_lock);
        workload_unlock_mutex(&memory_lock);
        served.fetch_add(1, Ordering::Relaxed);
        let _ = reply.send(());
    }
}

/// Reads a client's requests (one per line) and queues them for the device owner.
fn relay_client(stream: UnixStream, queue: &mpsc::Sender<mpsc::Sender<()>>) {
    let Ok(mut writer) = stream.try_clone() else {
        return;
    };
    for line in BufReader::new(stream).lines() {
        if line.is_err() {
            return;
        }
        let (reply, done) = mpsc::channel();
        if queue.send(reply).is_err() || done.recv().is_err() {
            return;
        }
        if writer.write_all(b"ok\n").is_err() {
            return;
        }
    }
}

/// A client of the fixed variant: load the model, then infer, through the owner.
pub fn run_client(args: &WorkloadOptions) -> Result<i32> {
    let path = args
        .endpoint
        .as_deref()
        .context("a client needs --endpoint")?;
    let deadline = Instant::now() + args.duration;
    common::arm_watchdog(deadline + Duration::from_secs(2), || common::EXIT_OVERRAN);
    let index = args.index;
    let stream = UnixStream::connect_addr(&abstract_address(path)?)
        .with_context(|| format!("cannot reach the device owner at @{}", path.display()))?;
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    let mut request = |what: &str| -> Result<()> {
        writeln!(writer, "{what}")?;
        let mut reply = String::new();
        reader.read_line(&mut reply)?;
        if reply.trim() != "ok" {
            bail!("device owner answered {reply:?} to {what}");
        }
        Ok(())
    };
    request("load")?;
    for _ in 0..INFERENCES {
        request("infer")?;
    }
    common::say(
        SCENARIO,
        &format!(
            "client {index} (pid {}): model loaded and {INFERENCES} inferences done through the owner",
            std::process::id()
        ),
    );
    Ok(0)
}
