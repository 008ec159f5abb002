//! A real FUSE mount whose server never answers: a process that touches a file there
//! sleeps in the kernel (uninterruptible before the server answers `INIT`, in
//! `request_wait_answer` after it) and, once killed while the server holds its
//! request, cannot die until the connection is aborted. tfwatch must still return,
//! name the wait, and write its reports.
//!
//! Each mount lives in a [`FuseMount`] guard that aborts the connection and detaches
//! the mount on drop, so nothing is left behind even when an assertion fails. The
//! tests skip (with the reason) where mount(2) of `fuse` is refused, and fail there where
//! `TFWATCH_REQUIRE` names `fuse`.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::support::{ChildGuard, tfwatch, wait_for};

/// How the server behaves: it never answers at all, or answers `INIT` and then never
/// answers a request (it reads them, so a killed requester cannot bail out).
#[derive(Clone, Copy, PartialEq)]
enum Server {
    NeverInit,
    InitThenSilent,
}

/// A mounted FUSE filesystem served (or not) by a thread of the test.
struct FuseMount {
    dir: PathBuf,
    device: Option<Arc<File>>,
    stop: Arc<AtomicBool>,
    server: Option<std::thread::JoinHandle<()>>,
    /// Requests the server read and left unanswered.
    held: Arc<std::sync::atomic::AtomicUsize>,
}

const FUSE_INIT: u32 = 26;
const IN_HEADER: usize = 40;

impl FuseMount {
    /// Mounts a FUSE filesystem on a fresh directory; `Err` says why it could not.
    fn mount(name: &str, server: Server) -> Result<FuseMount, String> {
        let dev = Path::new("/dev/fuse");
        if !dev.exists() {
            return Err("no /dev/fuse".into());
        }
        let dir = std::env::temp_dir().join(format!("tfwatch-fuse-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {dir:?}: {e}"))?;
        // Opened close-on-exec: no other test's child may hold the connection open.
        let device = match std::fs::OpenOptions::new().read(true).write(true).open(dev) {
            Ok(device) => Arc::new(device),
            Err(e) => {
                let _ = std::fs::remove_dir(&dir);
                return Err(format!("cannot open /dev/fuse: {e}"));
            }
        };
        let options = format!(
            "fd={},rootmode=40000,user_id=0,group_id=0",
            device.as_raw_fd()
        );
        let c = |s: &str| std::ffi::CString::new(s).unwrap();
        let (source, target, fstype, data) = (
            c("tfwatch-test"),
            c(dir.to_str().unwrap()),
            c("fuse.tfwatch-test"),
            c(&options),
        );
        // SAFETY: mount(2) with NUL-terminated strings that outlive the call.
        let mounted = unsafe {
            libc::mount(
                source.as_ptr(),
                target.as_ptr(),
                fstype.as_ptr(),
                libc::MS_NOSUID | libc::MS_NODEV,
                data.as_ptr().cast(),
            )
        };
        if mounted != 0 {
            let error = std::io::Error::last_os_error();
            let _ = std::fs::remove_dir(&dir);
            return Err(format!("mount(2) of fuse refused: {error}"));
        }
        let stop = Arc::new(AtomicBool::new(false));
        let held = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let thread = (server == Server::InitThenSilent).then(|| {
            let (device, stop, held) = (device.clone(), stop.clone(), held.clone());
            std::thread::spawn(move || serve_init_then_nothing(&device, &stop, &held))
        });
        Ok(FuseMount {
            dir,
            device: Some(device),
            stop,
            server: thread,
            held,
        })
    }

    fn path(&self, file: &str) -> String {
        self.dir.join(file).display().to_string()
    }

    /// The connection's number under /sys/fs/fuse/connections: the mount's device
    /// number, from mountinfo (a stat of the mount would wait on the server).
    fn connection(&self) -> Option<u32> {
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
        let dir = self.dir.to_str()?;
        let line = mountinfo
            .lines()
            .find(|l| l.split(' ').nth(4) == Some(dir))?;
        let (major, minor) = line.split(' ').nth(2)?.split_once(':')?;
        Some((major.parse::<u32>().ok()? << 20) | minor.parse::<u32>().ok()?)
    }
}

impl Drop for FuseMount {
    fn drop(&mut self) {
        // Abort the connection first, so every waiter gets an error and can go; closing
        // the last descriptor of /dev/fuse aborts it too, where fusectl is not mounted.
        if let Some(n) = self.connection() {
            let _ = std::fs::write(format!("/sys/fs/fuse/connections/{n}/abort"), "1");
        }
        self.stop.store(true, Ordering::SeqCst);
        if let Some(server) = self.server.take() {
            let _ = server.join();
        }
        drop(self.device.take());
        let target = std::ffi::CString::new(self.dir.to_str().unwrap()).unwrap();
        // SAFETY: umount2 with a NUL-terminated path; MNT_DETACH never waits.
        unsafe {
            libc::umount2(target.as_ptr(), libc::MNT_DETACH);
        }
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// Answers `INIT`, then reads every request and answers none, until `stop`. Every
/// wait is a poll of 50 ms, so the guard can stop it.
fn serve_init_then_nothing(
    device: &File,
    stop: &AtomicBool,
    held: &std::sync::atomic::AtomicUsize,
) {
    use std::io::{Read, Write};
    let mut buf = vec![0u8; 1 << 17];
    let mut answered_init = false;
    while !stop.load(Ordering::SeqCst) {
        let mut poll = libc::pollfd {
            fd: device.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: poll of one descriptor that `device` keeps open.
        let ready = unsafe { libc::poll(&mut poll, 1, 50) };
        if ready <= 0 {
            continue;
        }
        if poll.revents & libc::POLLIN == 0 {
            return;
        }
        let Ok(n) = (&*device).read(&mut buf) else {
            return;
        };
        if n < IN_HEADER {
            continue;
        }
        let opcode = u32::from_le_bytes(buf[4..8].try_into().unwrap());
        let unique = u64::from_le_bytes(buf[8..16].try_into().unwrap());
        if opcode == FUSE_INIT && !answered_init {
            // fuse_out_header, then fuse_init_out (7.31: 64 bytes): major, minor,
            // max_readahead, flags, max_background, congestion_threshold, max_write,
            // time_gran, max_pages, map_alignment, flags2, max_stack_depth, unused.
            let mut out = Vec::with_capacity(80);
            out.extend_from_slice(&80u32.to_le_bytes());
            out.extend_from_slice(&0i32.to_le_bytes());
            out.extend_from_slice(&unique.to_le_bytes());
            for word in [7u32, 31, 0, 0] {
                out.extend_from_slice(&word.to_le_bytes());
            }
            out.extend_from_slice(&[0u8; 4]);
            out.extend_from_slice(&4096u32.to_le_bytes());
            out.extend_from_slice(&1u32.to_le_bytes());
            out.resize(80, 0);
            answered_init = (&*device).write_all(&out).is_ok();
        } else {
            held.fetch_add(1, Ordering::SeqCst);
        }
    }
}

fn stat_letter(pid: i32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

fn wchan(pid: i32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/wchan"))
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// A command spawned in its own group with stdout and stderr to files or null (a
/// process stuck in the kernel may hold an inherited pipe open for ever); its group is
/// killed on drop and it is reaped within a deadline.
struct Spawned {
    child: Child,
    stderr: PathBuf,
}

impl Spawned {
    fn new(mut command: Command, stdout: Stdio, stderr: PathBuf) -> Spawned {
        use std::os::unix::process::CommandExt;
        command
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(File::create(&stderr).unwrap());
        Spawned {
            child: command.spawn().expect("the command starts"),
            stderr,
        }
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        let pid = self.child.id() as i32;
        // SAFETY: signals the process group of the child this test started.
        unsafe {
            libc::kill(-pid, libc::SIGKILL);
        }
        let _ = self.child.kill();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::time::Instant::now() < deadline {
            if !matches!(self.child.try_wait(), Ok(None)) {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = std::fs::remove_file(&self.stderr);
    }
}

fn mount_or_skip(name: &str, server: Server) -> Option<FuseMount> {
    match FuseMount::mount(name, server) {
        Ok(mount) => Some(mount),
        Err(reason) => {
            crate::support::skip("fuse", reason);
            None
        }
    }
}

#[test]
fn snapshot_names_a_thread_stuck_on_a_fuse_server_that_never_answers() {
    let Some(mount) = mount_or_skip("snapshot", Server::NeverInit) else {
        return;
    };
    let mut stat = Command::new("stat");
    stat.arg(mount.path("file"));
    let stuck = ChildGuard::spawn(stat);
    let pid = stuck.pid();
    // The kernel shows "0" for a task still on its way to sleep, and the task may pass
    // through other short sleeps in D (`vma_prepare`) before it waits on the server: the
    // wait is the channel that stays the same for 200 ms.
    let mut seen: Option<(String, std::time::Instant)> = None;
    let channel = wait_for(
        "stat in D on the fuse mount",
        Duration::from_secs(10),
        || {
            let channel = wchan(pid);
            if stat_letter(pid) != Some('D') || channel.is_empty() || channel == "0" {
                seen = None;
                return None;
            }
            match &seen {
                Some((last, since)) if *last == channel => {
                    (since.elapsed() >= Duration::from_millis(200)).then_some(channel)
                }
                _ => {
                    seen = Some((channel, std::time::Instant::now()));
                    None
                }
            }
        },
    );
    let started = std::time::Instant::now();
    let command = tfwatch(&[
        "snapshot",
        &pid.to_string(),
        "--stacks",
        "--no-gpu",
        "--window",
        "100ms",
        "--format",
        "json",
    ]);
    let out_path = mount.dir.with_extension("json");
    let stdout = Stdio::from(File::create(&out_path).unwrap());
    let mut run = Spawned::new(command, stdout, mount.dir.with_extension("err"));
    let status = wait_for(
        "tfwatch snapshot to return",
        Duration::from_secs(20),
        || run.child.try_wait().unwrap(),
    );
    let took = started.elapsed();
    let text = std::fs::read_to_string(&out_path).unwrap_or_default();
    let _ = std::fs::remove_file(&out_path);
    assert!(status.success(), "{}\n{text}", run.stderr());
    let report: serde_json::Value = serde_json::from_str(&text).unwrap();
    eprintln!("snapshot of a thread in D on fuse ({channel}) returned in {took:?}");
    let thread = report["processes"][0]["threads"]
        .as_array()
        .and_then(|t| t.iter().find(|t| t["tid"] == pid))
        .unwrap_or_else(|| panic!("the stuck thread in the report: {report:#}"));
    assert_eq!(thread["state"], "D", "{thread:#}");
    assert_eq!(thread["wchan"], channel.as_str(), "{thread:#}");
    let states = report["states"].to_string();
    assert!(
        states.contains(&format!(
            "pid {pid}: 1 thread(s) in uninterruptible sleep (D) in"
        )) && states.contains(&channel),
        "{states}"
    );
    let stacks = report["stacks"]["threads"]
        .as_array()
        .and_then(|t| t.iter().find(|t| t["tid"] == pid))
        .unwrap_or_else(|| panic!("the stuck thread among the stacks: {:#}", report["stacks"]));
    assert_eq!(stacks["wait"]["kind"], "uninterruptible", "{stacks:#}");
    drop(stuck);
    drop(mount);
}

#[test]
fn run_ends_and_reports_a_command_that_cannot_die_on_a_silent_fuse_server() {
    let Some(never) = mount_or_skip("run-never", Server::NeverInit) else {
        return;
    };
    let Some(silent) = mount_or_skip("run-silent", Server::InitThenSilent) else {
        return;
    };
    let dir = std::env::temp_dir().join(format!("tfwatch-fuse-run-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let report_path = dir.join("report.json");
    // A background stat waits in D (the server never answers INIT); the command itself
    // (exec'd stat) waits on a request the server read and will never answer, so once
    // killed it stays in D until the connection is aborted.
    let script = format!(
        "stat {} >/dev/null 2>&1 & exec stat {} >/dev/null 2>&1",
        never.path("a"),
        silent.path("b")
    );
    let report_arg = report_path.display().to_string();
    let command = tfwatch(&[
        "run",
        "--no-gpu",
        "--no-stacks",
        "--timeout",
        "5s",
        "--grace",
        "1s",
        "--report",
        &report_arg,
        "--",
        "sh",
        "-c",
        &script,
    ]);
    let started = std::time::Instant::now();
    let mut run = Spawned::new(command, Stdio::null(), dir.join("stderr"));
    // 5 s of watch, 1 s of grace, 5 s waiting for the killed command, and slack for a
    // loaded machine.
    let status = wait_for("tfwatch run to end", Duration::from_secs(45), || {
        run.child.try_wait().unwrap()
    });
    let took = started.elapsed();
    let stderr = run.stderr();
    eprintln!("run over a command stuck on fuse ended in {took:?}");
    assert_eq!(status.code(), Some(124), "{stderr}");
    assert!(
        silent.held.load(Ordering::SeqCst) >= 1,
        "the server held the command's request"
    );
    assert!(
        stderr.contains("did not exit after SIGKILL"),
        "tfwatch says the command did not go: {stderr}"
    );
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report_path).unwrap_or_default())
            .unwrap_or_else(|e| panic!("the --report is written ({e}): {stderr}"));
    assert_eq!(report["outcome"], "timed-out", "{report:#}");
    assert!(report["command_exit_code"].is_null(), "{report:#}");
    let diagnosis = &report["diagnosis"];
    let d_threads: Vec<&serde_json::Value> = diagnosis["processes"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|p| p["threads"].as_array().into_iter().flatten())
        .filter(|t| t["state"] == "D")
        .collect();
    assert!(
        d_threads
            .iter()
            .any(|t| t["wchan"].as_str().is_some_and(|w| !w.is_empty())),
        "a thread in D with its wait channel: {diagnosis:#}"
    );
    let states = diagnosis["states"].to_string();
    assert!(
        states.contains("in uninterruptible sleep (D) in"),
        "{states}"
    );
    drop(run);
    drop(never);
    drop(silent);
    let _ = std::fs::remove_dir_all(&dir);
}
