//! The sampler against real processes: a multi-threaded python3 with forked children.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

use tfwatch::model::Sample;
use tfwatch::source::proc::{SampleError, SampleTime, Sampler, SamplerConfig};

use crate::support::{ChildGuard, wait_for};

/// Five threads blocked on an Event and one forked child blocked reading a pipe; on a
/// "more" line from stdin, two more threads and a second forked child.
const SCENARIO: &str = r#"
import os, sys, threading
stop = threading.Event()
def start_threads(n):
    for _ in range(n):
        threading.Thread(target=stop.wait, daemon=True).start()
r, w = os.pipe()
def fork_child():
    if os.fork() == 0:
        os.read(r, 1)
        os._exit(0)
start_threads(5)
fork_child()
print("ready", flush=True)
for line in sys.stdin:
    if line.strip() == "more":
        start_threads(2)
        fork_child()
        print("more", flush=True)
stop.wait()
"#;

struct Scenario {
    guard: ChildGuard,
    lines: BufReader<std::process::ChildStdout>,
}

impl Scenario {
    fn start() -> Scenario {
        let mut command = Command::new("python3");
        command.args(["-c", SCENARIO]).stdin(Stdio::piped());
        let mut guard = ChildGuard::spawn(command);
        let stdout = guard.child.stdout.take().expect("piped stdout");
        let mut scenario = Scenario {
            guard,
            lines: BufReader::new(stdout),
        };
        scenario.expect_line("ready");
        scenario
    }

    fn expect_line(&mut self, expected: &str) {
        let mut line = String::new();
        self.lines.read_line(&mut line).expect("scenario output");
        assert_eq!(line.trim(), expected);
    }

    fn send(&mut self, command: &str) {
        let stdin = self.guard.child.stdin.as_mut().expect("piped stdin");
        writeln!(stdin, "{command}").expect("scenario reads stdin");
    }
}

fn at(elapsed_seconds: f64) -> SampleTime {
    SampleTime {
        elapsed_seconds,
        ..SampleTime::default()
    }
}

/// Samples until every thread of the tree sleeps in a wait channel and the tree has `threads` threads in
/// `processes` processes (threads finish starting after the "ready" line).
fn settled(sampler: &mut Sampler, threads: usize, processes: usize) -> Sample {
    let mut elapsed = 0.0;
    wait_for(
        "the scenario's threads and children to settle",
        Duration::from_secs(10),
        || {
            elapsed += 1.0;
            sampler.request_details();
            let sample = sampler.sample(at(elapsed)).expect("sample");
            // A thread read between two wakeups can show `S` with no wait channel.
            let asleep = sample
                .threads()
                .all(|(_, t)| t.state == 'S' && t.wchan.is_some());
            (asleep && sample.thread_count() == threads && sample.processes.len() == processes)
                .then_some(sample)
        },
    )
}

#[test]
fn sampler_reports_threads_states_and_children_of_a_live_tree() {
    let mut scenario = Scenario::start();
    let pid = scenario.guard.pid();
    let mut sampler = Sampler::new(pid, SamplerConfig::default()).expect("sampler attaches");
    // Main thread + 5 workers; the forked child has one thread.
    let sample = settled(&mut sampler, 7, 2);
    let root = &sample.processes[0];
    assert_eq!(root.pid, pid);
    assert_eq!(root.threads.len(), 6);
    assert_eq!(root.num_threads, 6);
    assert_eq!(root.cmdline[1], "-c");
    let child = &sample.processes[1];
    assert_eq!(child.ppid, pid);
    assert_eq!(child.threads.len(), 1);
    assert_eq!(child.threads[0].tid, child.pid);
    for (_, thread) in sample.threads() {
        assert_eq!(thread.state, 'S', "{thread:?}");
        assert!(thread.wchan.is_some(), "{thread:?}");
        assert!(thread.runqueue_wait_seconds.is_some(), "{thread:?}");
        assert!(thread.voluntary_ctxt_switches.is_some(), "{thread:?}");
    }
    assert!(sample.cpus.usable >= 1.0);
    assert!(sample.memory_limit.bytes > 0);

    // New threads and a new child appear in the next samples.
    scenario.send("more");
    scenario.expect_line("more");
    let sample = settled(&mut sampler, 10, 3);
    assert_eq!(sample.processes[0].threads.len(), 8);
    assert!(sample.processes[1..].iter().all(|p| p.ppid == pid));
}

#[test]
fn sampler_says_when_the_target_is_gone() {
    let mut scenario = Scenario::start();
    let pid = scenario.guard.pid();
    let mut sampler = Sampler::new(pid, SamplerConfig::default()).expect("sampler attaches");
    sampler.sample(at(0.0)).expect("first sample");
    // End the scenario's process group (ours) and reap its leader.
    unsafe {
        libc::kill(-pid, libc::SIGKILL);
    }
    scenario.guard.child.wait().expect("reaped");
    match sampler.sample(at(1.0)) {
        Err(SampleError::TargetGone { pid: gone }) => assert_eq!(gone, pid),
        other => panic!("unexpected {other:?}"),
    }
    match Sampler::new(pid, SamplerConfig::default()) {
        Err(SampleError::NoSuchProcess { .. }) => {}
        other => panic!("unexpected {:?}", other.err()),
    }
}

/// One worker thread that sleeps, spins on "spin" and sleeps again on "rest".
const SPINNER: &str = r#"
import sys, threading
go, stop = threading.Event(), threading.Event()
def worker():
    go.wait()
    while not stop.is_set():
        pass
    threading.Event().wait()
threading.Thread(target=worker, daemon=True).start()
print("ready", flush=True)
for line in sys.stdin:
    if line.strip() == "spin":
        go.set()
    if line.strip() == "rest":
        stop.set()
"#;

#[test]
fn steady_samples_follow_a_thread_that_starts_and_stops_running() {
    let mut command = Command::new("python3");
    command.args(["-c", SPINNER]).stdin(Stdio::piped());
    let mut guard = ChildGuard::spawn(command);
    let mut lines = BufReader::new(guard.child.stdout.take().expect("piped stdout"));
    let mut line = String::new();
    lines.read_line(&mut line).expect("scenario output");
    assert_eq!(line.trim(), "ready");
    let pid = guard.pid();
    let config = SamplerConfig {
        details_every: u32::MAX,
        ..SamplerConfig::default()
    };
    let mut sampler = Sampler::new(pid, config).expect("sampler attaches");
    let mut elapsed = 0.0;
    // Steady samples only (the first is a detail sample): `worker` is the one that is
    // not the main thread.
    let mut steady = |what: &str, check: &dyn Fn(&tfwatch::model::ThreadSample) -> bool| {
        wait_for(what, Duration::from_secs(10), || {
            elapsed += 0.1;
            let sample = sampler.sample(at(elapsed)).expect("sample");
            let worker = sample.threads().map(|(_, t)| t).find(|t| t.tid != pid)?;
            check(worker).then(|| (worker.clone(), sample.cost.unchanged_threads))
        })
    };
    let (asleep, _) = steady("the worker to sleep", &|t| t.state == 'S');
    // Two samples in a row of a sleeping tree: nothing ran, nothing is read again but
    // `schedstat`.
    let (_, unchanged) = steady("an idle sample", &|t| t.state == 'S');
    assert!(unchanged >= 1, "no thread was carried");

    let stdin = guard.child.stdin.as_mut().expect("piped stdin");
    writeln!(stdin, "spin").expect("scenario reads stdin");
    let before = asleep.cpu_seconds;
    let (spinning, _) = steady("the worker to run and use CPU", &|t| {
        t.state == 'R' && t.cpu_seconds >= before + 0.05
    });
    assert!(spinning.run_seconds > asleep.run_seconds);

    let stdin = guard.child.stdin.as_mut().expect("piped stdin");
    writeln!(stdin, "rest").expect("scenario reads stdin");
    let (resting, _) = steady("the worker to sleep again", &|t| t.state == 'S');
    assert!(resting.cpu_seconds >= spinning.cpu_seconds);
}
