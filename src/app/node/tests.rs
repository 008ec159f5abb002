//! The node watch on a [`FakeClock`] over a proc root of two recorded jobs, one of which
//! blocks: a FIFO stands in for one of its threads' `stat`, so its sample's read waits
//! until the test writes to it.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser;
use serde_json::Value;

use super::watch::{COLLECTION_THREADS, NodeWatch};
use super::{NodeSettings, Output};
use crate::cli::{Cli, Command};
use crate::source::clock::{Clock, FakeClock};

/// Lines written so far, readable while the watch holds the writer.
#[derive(Clone, Default)]
struct Shared(Arc<Mutex<Vec<u8>>>);

impl Write for Shared {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Shared {
    fn lines(&self) -> Vec<Value> {
        let bytes = self.0.lock().unwrap().clone();
        String::from_utf8(bytes)
            .unwrap()
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect()
    }
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// A proc root of two jobs (11416 with its child 11470, and 11523), whose thread 11570
/// of 11523 has a FIFO for its `stat`; returns the root and that FIFO.
fn node_root() -> (PathBuf, PathBuf) {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/proc");
    let root = std::env::temp_dir().join(format!("tfwatch-node-fifo-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    copy_tree(&fixtures.join("threads_child"), &root);
    copy_tree(&fixtures.join("in_cgroup/11523"), &root.join("11523"));
    // Long up: both jobs have lived more than an interval.
    std::fs::write(root.join("uptime"), "100000.00 1000.00\n").unwrap();
    let fifo = root.join("11523/task/11570/stat");
    std::fs::remove_file(&fifo).unwrap();
    let path = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: mkfifo takes a NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(path.as_ptr(), 0o600) }, 0);
    (root, fifo)
}

fn settings(root: &Path) -> NodeSettings {
    let cli = Cli::try_parse_from(["tfwatch", "node", "--json", "--interval", "1s"]).unwrap();
    let Command::Node(args) = cli.command else {
        panic!("not node");
    };
    let mut settings = NodeSettings::from_args(&args, false).unwrap();
    settings.sampler.proc_root = root.to_path_buf();
    settings.sampler.cgroup_root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/cgroup/v1");
    settings.sampler.read_lock_owners = false;
    settings
}

fn of_job<'a>(lines: &'a [Value], kind: &str, job: &str) -> Vec<&'a Value> {
    lines
        .iter()
        .filter(|l| l["type"] == kind && l["job"] == job)
        .collect()
}

const FREE: &str = "tree/11416-python3";
const BLOCKED: &str = "tree/11523-a (b) c";

#[test]
fn a_job_whose_read_blocks_misses_its_own_ticks_and_no_other_job_waits() {
    let (root, fifo) = node_root();
    let settings = settings(&root);
    let clock = FakeClock::new(1_700_000_000.0);
    let shared = Shared::default();
    let mut output = Output {
        out: shared.clone(),
        json: true,
    };
    let mut node = NodeWatch::new(&settings, Arc::new(clock.clone()), &mut output, None, None);
    let interval = Duration::from_secs(1);
    // Four ticks on time: the free job gives each its sample, on time, while the
    // blocked one's first read waits on the FIFO.
    for tick in 0..4u32 {
        node.tick(interval * tick, 0).unwrap();
        let until = Instant::now() + Duration::from_secs(30);
        while of_job(&shared.lines(), "sample", FREE).len() <= tick as usize {
            assert!(Instant::now() < until, "no sample {tick} of {FREE}");
            node.pump(Duration::from_millis(50)).unwrap();
        }
        clock.advance(interval);
    }
    let lines = shared.lines();
    let samples = of_job(&lines, "sample", FREE);
    let elapsed: Vec<f64> = samples
        .iter()
        .map(|s| s["elapsed_seconds"].as_f64().unwrap())
        .collect();
    assert_eq!(elapsed, [0.0, 1.0, 2.0, 3.0], "every tick of the free job");
    assert!(
        samples
            .iter()
            .all(|s| s["lateness_seconds"].as_f64() == Some(0.0)),
        "{samples:?}"
    );
    assert!(of_job(&lines, "sample", BLOCKED).is_empty());
    assert!(
        of_job(&lines, "job-started", BLOCKED).is_empty(),
        "a job is said once it has a sample"
    );
    let late = of_job(&lines, "job-late", BLOCKED);
    assert_eq!(late.len(), 1, "said once while it is out: {late:?}");
    assert_eq!(late[0]["resumed"], false);
    assert_eq!(late[0]["skipped_ticks"], 1);
    assert!(of_job(&lines, "job-late", FREE).is_empty());
    assert!(
        node.collection_threads() <= COLLECTION_THREADS + 1,
        "its stuck read holds one thread, never more: {}",
        node.collection_threads()
    );

    // The read returns: the job is said, with the ticks it missed.
    let stat = std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/proc/in_cgroup/11523/task/11570/stat"),
    )
    .unwrap();
    let writer = std::thread::spawn(move || {
        // Opening the other end releases the blocked open; the reader may close its end
        // before the write (it reads with `pread`, which a FIFO refuses), so the write may
        // find no reader.
        let mut fifo = std::fs::OpenOptions::new().write(true).open(fifo).unwrap();
        let _ = fifo.write_all(&stat);
    });
    let until = Instant::now() + Duration::from_secs(30);
    while !shared
        .lines()
        .iter()
        .any(|l| l["type"] == "job-late" && l["job"] == BLOCKED && l["resumed"] == true)
    {
        assert!(Instant::now() < until, "the blocked job never came back");
        node.pump(Duration::from_millis(50)).unwrap();
    }
    writer.join().unwrap();
    let lines = shared.lines();
    let resumed = of_job(&lines, "job-late", BLOCKED);
    assert_eq!(resumed[1]["skipped_ticks"], 3, "{resumed:?}");
    assert!(resumed[1]["late_seconds"].as_f64().unwrap() >= 3.0);
    assert_eq!(of_job(&lines, "job-started", BLOCKED).len(), 1);
    assert_eq!(of_job(&lines, "sample", BLOCKED).len(), 1);
    assert_eq!(of_job(&lines, "job-started", FREE).len(), 1);
    assert!(
        clock.elapsed() == interval * 4,
        "the test moved the clock itself"
    );
    drop(node);
    let _ = std::fs::remove_dir_all(&root);
}
