//! `tfwatch run-workload`: each scenario is checked from outside, through `/proc`, to be
//! what it claims; each fixed variant completes.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use tfwatch::workload::{ScenarioResult, WorkloadLine, parse_line};

use crate::support::{ChildGuard, tfwatch, tfwatch_output, wait_for};

#[cfg(target_arch = "x86_64")]
const FUTEX_SYSCALL: &str = "202 ";
#[cfg(target_arch = "aarch64")]
const FUTEX_SYSCALL: &str = "98 ";
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
const FUTEX_SYSCALL: &str = "futex-syscall-number-unknown";

/// A running scenario and the lines it has printed so far.
struct Running {
    guard: ChildGuard,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Running {
    fn start(args: &[&str]) -> Running {
        let mut all = vec!["run-workload"];
        all.extend_from_slice(args);
        let mut guard = ChildGuard::spawn(tfwatch(&all));
        let stdout = guard.child.stdout.take().expect("stdout is piped");
        let lines = crate::support::line_channel(stdout);
        Running {
            guard,
            lines,
            seen: Vec::new(),
        }
    }

    fn pid(&self) -> i32 {
        self.guard.pid()
    }

    /// Waits for a machine line that `pick` accepts.
    fn wait_line<T>(
        &mut self,
        what: &str,
        timeout: Duration,
        mut pick: impl FnMut(&WorkloadLine) -> Option<T>,
    ) -> T {
        let deadline = Instant::now() + timeout;
        // Earlier lines first.
        for line in &self.seen {
            if let Some(found) = parse_line(line).as_ref().and_then(&mut pick) {
                return found;
            }
        }
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let found = parse_line(&line).as_ref().and_then(&mut pick);
                    self.seen.push(line);
                    if let Some(found) = found {
                        return found;
                    }
                }
                Err(_) => panic!(
                    "timed out after {timeout:?} waiting for {what}; output so far:\n{}",
                    self.seen.join("\n")
                ),
            }
        }
    }

    fn child_pid(&mut self, role_prefix: &str) -> i32 {
        self.wait_line(role_prefix, Duration::from_secs(10), |line| match line {
            WorkloadLine::Child { pid, role } if role.starts_with(role_prefix) => Some(*pid),
            _ => None,
        })
    }

    /// Waits for the process to exit; returns its code and its result line.
    fn wait_exit(&mut self, timeout: Duration) -> (i32, ScenarioResult) {
        let status = wait_for("the scenario to exit", timeout, || {
            self.guard.child.try_wait().expect("try_wait works")
        });
        let result = self.wait_line(
            "the result line",
            Duration::from_secs(5),
            |line| match line {
                WorkloadLine::Result(result) => Some(result.clone()),
                _ => None,
            },
        );
        (status.code().unwrap_or(-1), result)
    }
}

fn usable_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

fn read(path: &str) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// Thread ids and names of a process.
fn threads(pid: i32) -> Vec<(i32, String)> {
    let Ok(entries) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| {
            let tid: i32 = entry.file_name().to_str()?.parse().ok()?;
            let comm = read(&format!("/proc/{pid}/task/{tid}/comm"));
            Some((tid, comm.trim().to_string()))
        })
        .collect()
}

/// The thread sleeps in a futex wait (by wait channel, or by its current syscall).
fn blocked_in_futex(pid: i32, tid: i32) -> bool {
    let base = format!("/proc/{pid}/task/{tid}");
    let state = stat_state(&read(&format!("{base}/stat")));
    state == Some('S')
        && (read(&format!("{base}/wchan")).contains("futex")
            || read(&format!("{base}/syscall")).starts_with(FUTEX_SYSCALL))
}

fn stat_state(stat: &str) -> Option<char> {
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().next()?.chars().next()
}

/// utime + stime of the whole process, in clock ticks.
fn cpu_ticks(pid: i32) -> Option<u64> {
    let stat = read(&format!("/proc/{pid}/stat"));
    let after = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

fn status_field(pid: i32, name: &str) -> Option<u64> {
    read(&format!("/proc/{pid}/status"))
        .lines()
        .find_map(|line| {
            let (key, value) = line.split_once(':')?;
            (key == name).then(|| value.split_whitespace().next()?.parse().ok())?
        })
}

/// Waits until `pid` has made no CPU progress for `quiet` (polling, with a deadline).
fn wait_no_cpu_progress(pid: i32, quiet: Duration, timeout: Duration) {
    let mut last: Option<(u64, Instant)> = None;
    wait_for("no CPU progress", timeout, || {
        let ticks = cpu_ticks(pid)?;
        match last {
            Some((seen, since)) if seen == ticks => (since.elapsed() >= quiet).then_some(()),
            _ => {
                last = Some((ticks, Instant::now()));
                None
            }
        }
    });
}

/// Named threads of `pid` all blocked in futex waits.
fn wait_named_threads_blocked(pid: i32, names: &[&str]) {
    wait_for(
        "the worker threads to block in futex",
        Duration::from_secs(10),
        || {
            let threads = threads(pid);
            names
                .iter()
                .all(|name| {
                    threads
                        .iter()
                        .any(|(tid, comm)| comm == name && blocked_in_futex(pid, *tid))
                })
                .then_some(())
        },
    );
}

#[test]
fn deadlock_threads_block_in_futex_with_no_cpu_progress() {
    let mut run = Running::start(&["--scenario", "deadlock", "--duration", "30s"]);
    run.wait_line("the onset", Duration::from_secs(10), |line| {
        matches!(line, WorkloadLine::Onset { what } if what == "deadlock").then_some(())
    });
    wait_named_threads_blocked(run.pid(), &["worker-a", "worker-b"]);
    wait_no_cpu_progress(
        run.pid(),
        Duration::from_millis(500),
        Duration::from_secs(10),
    );
    // Still blocked after the quiet period: no thread got out of the cycle.
    wait_named_threads_blocked(run.pid(), &["worker-a", "worker-b"]);
}

#[test]
fn deadlock_cycle_of_three() {
    let mut run = Running::start(&[
        "--scenario",
        "deadlock",
        "--cycle",
        "3",
        "--duration",
        "30s",
    ]);
    run.wait_line("the onset", Duration::from_secs(10), |line| {
        matches!(line, WorkloadLine::Onset { .. }).then_some(())
    });
    wait_named_threads_blocked(run.pid(), &["worker-a", "worker-b", "worker-c"]);
}

#[test]
fn deadlock_ends_by_itself_and_fixed_completes() {
    let mut broken = Running::start(&["--scenario", "deadlock", "--duration", "1500ms"]);
    let mut fixed = Running::start(&["--scenario", "deadlock", "--fixed", "--duration", "30s"]);
    let (code, result) = broken.wait_exit(Duration::from_secs(10));
    assert_eq!(code, 0);
    assert!(!result.completed, "{result:?}");
    let (code, result) = fixed.wait_exit(Duration::from_secs(20));
    assert_eq!(code, 0);
    assert!(result.completed, "{result:?}");
}

#[test]
fn fork_lock_child_blocks_on_the_inherited_lock_while_parent_works() {
    let mut run = Running::start(&["--scenario", "fork-lock", "--duration", "30s"]);
    let parent = run.pid();
    let child = run.child_pid("forked-child");
    assert_eq!(status_field(child, "PPid"), Some(parent as u64));
    assert_eq!(
        status_field(child, "Threads"),
        Some(1),
        "single-threaded child"
    );
    assert!(
        status_field(parent, "Threads").unwrap_or(0) > 1,
        "multi-threaded parent"
    );
    wait_for(
        "the child to block in futex",
        Duration::from_secs(10),
        || blocked_in_futex(child, child).then_some(()),
    );
    wait_no_cpu_progress(child, Duration::from_millis(500), Duration::from_secs(10));
    // The parent keeps making progress meanwhile.
    let before = cpu_ticks(parent).expect("parent is alive");
    wait_for("parent CPU progress", Duration::from_secs(10), || {
        (cpu_ticks(parent)? > before).then_some(())
    });
    assert!(blocked_in_futex(child, child));
}

#[test]
fn fork_lock_fixed_child_completes() {
    let mut run = Running::start(&["--scenario", "fork-lock", "--fixed", "--duration", "2s"]);
    let (code, result) = run.wait_exit(Duration::from_secs(15));
    assert_eq!(code, 0);
    assert!(result.completed, "{result:?}");
}

#[test]
fn oversubscribe_has_more_runnable_threads_than_cpus() {
    let usable = usable_cpus();
    let mut run = Running::start(&[
        "--scenario",
        "oversubscribe",
        "--units",
        "1000000",
        "--duration",
        "30s",
    ]);
    let procs = 2 * usable;
    let mut workers = Vec::new();
    for _ in 0..procs {
        workers.push(run.child_pid("oversubscribe-worker"));
        run.seen.retain(|line| !line.contains("child="));
    }
    let most = wait_for(
        "runnable threads > usable CPUs",
        Duration::from_secs(15),
        || {
            let runnable = workers
                .iter()
                .flat_map(|pid| threads(*pid).into_iter().map(move |(tid, _)| (*pid, tid)))
                .filter(|(pid, tid)| {
                    stat_state(&read(&format!("/proc/{pid}/task/{tid}/stat"))) == Some('R')
                })
                .count();
            (runnable > usable).then_some(runnable)
        },
    );
    assert!(most > usable);
    // Every worker's team (its main thread and the omp-team threads) is sized to all
    // CPUs, so at least to the usable ones.
    for pid in &workers {
        wait_for(
            "a full team in every worker",
            Duration::from_secs(10),
            || {
                let names: Vec<String> = threads(*pid).into_iter().map(|(_, name)| name).collect();
                let team = 1 + names.iter().filter(|n| n.starts_with("omp-team")).count();
                (team >= usable).then_some(())
            },
        );
    }
}

#[test]
fn oversubscribe_fixed_completes_its_work() {
    let mut run = Running::start(&[
        "--scenario",
        "oversubscribe",
        "--fixed",
        "--units",
        "60",
        "--duration",
        "30s",
    ]);
    let (code, result) = run.wait_exit(Duration::from_secs(30));
    assert_eq!(code, 0);
    assert!(result.completed, "{result:?}");
    assert_eq!(result.work_units, Some(60));
    assert!(result.throughput.unwrap_or(0.0) > 0.0);
}

#[test]
fn thread_explosion_climbs_past_the_bound_and_fixed_stays_capped() {
    let mut broken = Running::start(&["--scenario", "thread-explosion", "--duration", "4s"]);
    let pid = broken.pid();
    let count = wait_for("thread count above 100", Duration::from_secs(10), || {
        status_field(pid, "Threads").filter(|n| *n > 100)
    });
    assert!(count > 100);
    assert!(
        threads(pid)
            .iter()
            .any(|(_, name)| name.starts_with("task-"))
    );
    let mut fixed = Running::start(&[
        "--scenario",
        "thread-explosion",
        "--fixed",
        "--duration",
        "2s",
    ]);
    let (code, result) = fixed.wait_exit(Duration::from_secs(15));
    assert_eq!(code, 0);
    assert!(result.completed, "{result:?}");
    assert!(
        result.peak_threads.unwrap_or(999) <= usable_cpus() as u64 + 3,
        "{result:?}"
    );
    let (code, result) = broken.wait_exit(Duration::from_secs(15));
    assert_eq!(code, 0);
    assert!(result.peak_threads.unwrap_or(0) > 100, "{result:?}");
}

fn scrape(url: &str) -> Option<String> {
    let address = url.strip_prefix("http://")?.strip_suffix("/metrics")?;
    let mut stream = TcpStream::connect(address).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(stream, "GET /metrics HTTP/1.0\r\nHost: {address}\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    Some(response)
}

fn gauge(text: &str, name: &str) -> Option<f64> {
    text.lines().find_map(|line| {
        let (metric, value) = line.split_once(' ')?;
        (metric == name).then(|| value.trim().parse().ok())?
    })
}

#[test]
fn queue_overload_metrics_show_growing_depth() {
    let mut run = Running::start(&["--scenario", "queue-overload", "--duration", "30s"]);
    let url = run.wait_line(
        "the metrics URL",
        Duration::from_secs(10),
        |line| match line {
            WorkloadLine::Metrics { url } => Some(url.clone()),
            _ => None,
        },
    );
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");
    let first = wait_for("a queue depth above 100", Duration::from_secs(10), || {
        let text = scrape(&url)?;
        gauge(&text, "inference_queue_depth").filter(|d| *d > 100.0)
    });
    let text = wait_for("the queue depth to grow", Duration::from_secs(10), || {
        let text = scrape(&url)?;
        (gauge(&text, "inference_queue_depth")? > first + 500.0).then_some(text)
    });
    assert!(
        text.starts_with("HTTP/1.0 200") || text.starts_with("HTTP/1.1 200"),
        "{text}"
    );
    for needle in [
        "# TYPE inference_queue_depth gauge",
        "# TYPE inference_latency_seconds histogram",
        "inference_latency_seconds_bucket{le=\"+Inf\"}",
        "inference_latency_seconds_sum",
        "inference_latency_seconds_count",
        "# TYPE inference_requests_total counter",
        "# TYPE inference_rejected_total counter",
    ] {
        assert!(text.contains(needle), "{needle} missing in:\n{text}");
    }
}

#[test]
fn queue_overload_fixed_keeps_latency_bounded() {
    let mut run = Running::start(&[
        "--scenario",
        "queue-overload",
        "--fixed",
        "--duration",
        "2500ms",
    ]);
    let (code, result) = run.wait_exit(Duration::from_secs(15));
    assert_eq!(code, 0);
    assert!(
        result.queue_depth_max.unwrap_or(u64::MAX) <= 1000,
        "{result:?}"
    );
    assert!(result.rejected.unwrap_or(0) > 0, "{result:?}");
    assert!(
        result.latency_p99_seconds.unwrap_or(99.0) < 1.0,
        "{result:?}"
    );
}

#[test]
fn gpu_contention_ranks_deadlock_across_processes_and_fixed_completes() {
    let mut run = Running::start(&["--scenario", "gpu-contention", "--duration", "30s"]);
    let rank0 = run.child_pid("gpu-rank-0");
    let rank1 = run.child_pid("gpu-rank-1");
    wait_for(
        "both ranks blocked in futex",
        Duration::from_secs(10),
        || (blocked_in_futex(rank0, rank0) && blocked_in_futex(rank1, rank1)).then_some(()),
    );
    wait_no_cpu_progress(rank0, Duration::from_millis(500), Duration::from_secs(10));
    assert!(
        run.seen
            .iter()
            .any(|line| line.contains("simulated device")),
        "{:?}",
        run.seen
    );
    let mut fixed = Running::start(&[
        "--scenario",
        "gpu-contention",
        "--fixed",
        "--duration",
        "20s",
    ]);
    let (code, result) = fixed.wait_exit(Duration::from_secs(20));
    assert_eq!(code, 0);
    assert!(result.completed, "{result:?}");
}

#[test]
fn memory_growth_rss_climbs_and_fixed_stays_flat() {
    let broken = Running::start(&[
        "--scenario",
        "memory-growth",
        "--rate",
        "128",
        "--cap",
        "256",
        "--duration",
        "30s",
    ]);
    let pid = broken.pid();
    wait_for("RSS above 150 MiB", Duration::from_secs(10), || {
        status_field(pid, "VmRSS").filter(|kib| *kib > 150 * 1024)
    });
    drop(broken.guard);
    let mut fixed = Running::start(&[
        "--scenario",
        "memory-growth",
        "--fixed",
        "--rate",
        "128",
        "--duration",
        "2s",
    ]);
    let (code, result) = fixed.wait_exit(Duration::from_secs(15));
    assert_eq!(code, 0);
    assert!(
        result.peak_rss_bytes.unwrap_or(u64::MAX) < 128 << 20,
        "{result:?}"
    );
}

#[test]
fn healthy_completes() {
    let mut run = Running::start(&["--scenario", "healthy", "--duration", "2s"]);
    let (code, result) = run.wait_exit(Duration::from_secs(15));
    assert_eq!(code, 0);
    assert!(result.completed, "{result:?}");
    assert_eq!(result.variant, "fixed");
}

#[test]
fn first_line_names_scenario_variant_and_pid() {
    let mut run = Running::start(&["--scenario", "memory-growth", "--fixed", "--duration", "1s"]);
    let pid = run.pid();
    run.wait_line(
        "the first line",
        Duration::from_secs(10),
        |line| match line {
            WorkloadLine::Started {
                scenario,
                variant,
                pid: printed,
            } => {
                assert_eq!(
                    (scenario.as_str(), variant.as_str()),
                    ("memory-growth", "fixed")
                );
                assert_eq!(*printed, pid);
                Some(())
            }
            other => panic!("first machine line is {other:?}"),
        },
    );
}

#[test]
fn bad_scenario_name_lists_the_valid_ones() {
    let output = tfwatch_output(&["run-workload", "--scenario", "dedlock"]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("dedlock"), "{stderr}");
    for name in tfwatch::workload::scenario_names() {
        assert!(stderr.contains(name), "{name} missing in {stderr}");
    }
    let output = tfwatch_output(&["run-workload", "--scenario", "deadlock", "--cycle", "1"]);
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("--cycle 1"));
}

#[test]
fn verify_one_scenario_prints_its_rows() {
    let output = tfwatch_output(&["run-workload", "--verify", "--scenario", "gpu-contention"]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    assert!(stdout.starts_with("scenario"), "{stdout}");
    assert!(stdout.contains("gpu-contention  broken"), "{stdout}");
    assert!(stdout.contains("hung → completed"), "{stdout}");
}

#[test]
fn verify_refuses_an_interpreter_that_is_not_python() {
    for (path, says) in [
        ("/nonexistent/python3", "No such file or directory"),
        ("/bin/true", "is not a Python 3 interpreter"),
    ] {
        let out = crate::support::tfwatch_output(&["run-workload", "--verify", "--python", path]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{path}: {err}");
        assert!(
            err.contains(&format!("--python {path}: ")) && err.contains(says),
            "{path}: {err}"
        );
    }
}

#[test]
fn verify_names_the_interpreter_it_was_given_and_its_version() {
    let asked = std::process::Command::new("python3")
        .args([
            "-c",
            "import platform, sys; print(sys.executable); print(platform.python_version())",
        ])
        .output();
    let Some(asked) = asked.ok().filter(|o| o.status.success()) else {
        crate::support::skip("python3", "no python3 on this machine");
        return;
    };
    let answer = String::from_utf8_lossy(&asked.stdout).to_string();
    let mut lines = answer.lines();
    let (executable, version) = (lines.next().unwrap(), lines.next().unwrap());
    // The interpreter by its own path, as a virtualenv's would be given.
    let out = crate::support::tfwatch_output(&[
        "run-workload",
        "--verify",
        "--scenario",
        "healthy",
        "--python",
        executable,
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains(&format!(
            "--python {executable} is {executable} (Python {version})"
        )),
        "{text}"
    );
}

#[test]
fn verify_gil_measures_threads_against_processes_and_detects_the_gil() {
    if !std::process::Command::new("python3")
        .arg("--version")
        .status()
        .is_ok_and(|s| s.success())
    {
        crate::support::skip("python3", "no python3 runs here");
        return;
    }
    let output = tfwatch_output(&["run-workload", "--verify", "--scenario", "gil"]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    let broken = stdout
        .lines()
        .find(|l| l.starts_with("gil") && l.contains("broken"))
        .unwrap_or_else(|| panic!("{stdout}"));
    assert!(
        broken.contains("rounds/s on") && broken.contains("gil-contention"),
        "{stdout}"
    );
    let fixed = stdout
        .lines()
        .find(|l| l.starts_with("gil") && l.contains("fixed"))
        .unwrap_or_else(|| panic!("{stdout}"));
    assert!(
        fixed.contains("× faster") && fixed.contains("none"),
        "{stdout}"
    );
}
