//! CPU throttling read from a real cgroup v1 `cpu` hierarchy: a spinning child in a
//! cgroup with a 0.2-CPU quota. Needs root and a v1 `cpu` mount; skipped (with the reason
//! printed) otherwise, unless `TFWATCH_REQUIRE` names `root` or `cgroup`. The cgroup is
//! removed at the end, also on failure.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::support::{ChildGuard, snapshot_json, wait_for};

/// The spinning child and its cgroup; killed and removed on drop.
struct Throttled {
    child: Option<ChildGuard>,
    dir: PathBuf,
}

impl Drop for Throttled {
    fn drop(&mut self) {
        drop(self.child.take());
        for _ in 0..50 {
            if std::fs::remove_dir(&self.dir).is_ok() || !self.dir.exists() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn v1_cpu_mount() -> Option<PathBuf> {
    ["/sys/fs/cgroup/cpu,cpuacct", "/sys/fs/cgroup/cpu"]
        .iter()
        .map(PathBuf::from)
        .find(|dir| dir.join("cpu.cfs_quota_us").is_file())
}

#[test]
fn quota_throttling_of_a_spinning_child_is_sampled() {
    if unsafe { libc::geteuid() } != 0 {
        crate::support::skip("root", "making a cgroup needs root");
        return;
    }
    let Some(mount) = v1_cpu_mount() else {
        crate::support::skip("cgroup", "no cgroup v1 cpu hierarchy under /sys/fs/cgroup");
        return;
    };
    let dir = mount.join(format!("tfwatch-test-{}", std::process::id()));
    if let Err(err) = std::fs::create_dir(&dir) {
        crate::support::skip("cgroup", format!("cannot make {}: {err}", dir.display()));
        return;
    }
    let mut throttled = Throttled { child: None, dir };
    std::fs::write(throttled.dir.join("cpu.cfs_quota_us"), "20000").unwrap();
    let mut spin = Command::new("sh");
    spin.args(["-c", "while :; do :; done"]);
    let child = ChildGuard::spawn(spin);
    let pid = child.pid();
    throttled.child = Some(child);
    std::fs::write(throttled.dir.join("cgroup.procs"), pid.to_string()).unwrap();
    // Wait until the kernel has throttled the child a few periods (its own counter).
    let stat = throttled.dir.join("cpu.stat");
    wait_for("throttled periods", Duration::from_secs(10), || {
        let text = std::fs::read_to_string(&stat).ok()?;
        let throttled: u64 = text
            .lines()
            .find_map(|l| l.strip_prefix("nr_throttled "))?
            .trim()
            .parse()
            .ok()?;
        (throttled >= 3).then_some(())
    });
    let report: Value = snapshot_json(pid, "300ms", &["--no-gpu"]);
    let cpus = &report["cpus"];
    assert_eq!(cpus["quota"].as_f64(), Some(0.2), "{cpus:#}");
    let throttling = &cpus["throttling"];
    let periods = throttling["periods"].as_u64().unwrap_or(0);
    let throttled_periods = throttling["throttled_periods"].as_u64().unwrap_or(0);
    // A spinner wants a whole CPU and gets a fifth: nearly every period is throttled.
    assert!(periods >= 3, "{throttling:#}");
    assert!(throttled_periods * 2 >= periods, "{throttling:#}");
    assert!(throttling["throttled_seconds"].as_f64().unwrap_or(0.0) > 0.0);
}

/// The first CPU this test may run on.
fn first_allowed_cpu() -> Option<usize> {
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    let ok =
        unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
    if ok != 0 {
        return None;
    }
    (0..libc::CPU_SETSIZE as usize).find(|&cpu| unsafe { libc::CPU_ISSET(cpu, &set) })
}

/// A busy loop pinned to `cpu`.
fn spinner_on(cpu: usize) -> ChildGuard {
    let mut spin = Command::new("taskset");
    spin.args(["-c", &cpu.to_string(), "sh", "-c", "while :; do :; done"]);
    ChildGuard::spawn(spin)
}

/// One busy thread on its one usable CPU, with three busy loops outside the tree on the
/// same CPU: the tree's thread waits three times as long as it runs, but its pools fit.
/// That is the machine's load (`cpu-contention`, info, naming the busiest others), not
/// an oversubscription of the tree, and nothing of warning or above.
#[test]
fn a_busy_tree_beside_busy_others_on_its_cpu_is_contention_not_oversubscription() {
    if Command::new("taskset").arg("-V").output().is_err() {
        crate::support::skip("taskset", "no taskset (util-linux) to pin the processes");
        return;
    }
    let Some(cpu) = first_allowed_cpu() else {
        crate::support::skip("taskset", "sched_getaffinity failed");
        return;
    };
    let _others: Vec<ChildGuard> = (0..3).map(|_| spinner_on(cpu)).collect();
    let tree = spinner_on(cpu);
    let pid = tree.pid();
    let mut attach = crate::support::tfwatch(&[
        "attach",
        &pid.to_string(),
        "--json",
        "--duration",
        "40s",
        "--no-gpu",
    ]);
    attach.stdin(std::process::Stdio::null());
    let mut watch = ChildGuard::spawn(attach);
    let lines = crate::support::Lines::new(watch.child.stdout.take().unwrap());
    let seen = lines.until(
        "a cpu-contention finding",
        Duration::from_secs(40),
        |line| line.contains(r#""type":"finding""#) && line.contains(r#""kind":"cpu-contention""#),
    );
    let findings: Vec<Value> = seen
        .iter()
        .filter(|l| l.contains(r#""type":"finding""#))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let contention = findings
        .iter()
        .find(|f| f["kind"] == "cpu-contention")
        .unwrap_or_else(|| panic!("no cpu-contention finding in:\n{}", seen.join("\n")));
    assert_eq!(contention["severity"], "info", "{contention:#}");
    let evidence = contention["evidence"].to_string();
    // Which others are busiest depends on the machine (on a quiet one, the three loops);
    // the line is there, and the tree is not among them.
    let named = contention["evidence"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e.as_str())
        .find(|e| e.starts_with("busiest processes outside the tree: "))
        .unwrap_or_else(|| panic!("the busiest others are not named in {evidence}"));
    assert!(!named.contains(&format!("pid {pid} ")), "{named}");
    for f in &findings {
        assert!(
            f["severity"] == "info",
            "only info findings for a tree whose pools fit, got {f:#}"
        );
    }
}
