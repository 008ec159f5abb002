//! CPU throttling read from a real cgroup v1 `cpu` hierarchy: a spinning child in a
//! cgroup with a 0.2-CPU quota. Needs root and a v1 `cpu` mount; skipped (with the reason
//! printed) otherwise. The cgroup is removed at the end, also on failure.

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
        println!("skipped: making a cgroup needs root");
        return;
    }
    let Some(mount) = v1_cpu_mount() else {
        println!("skipped: no cgroup v1 cpu hierarchy under /sys/fs/cgroup");
        return;
    };
    let dir = mount.join(format!("tfwatch-test-{}", std::process::id()));
    if let Err(err) = std::fs::create_dir(&dir) {
        println!("skipped: cannot make {}: {err}", dir.display());
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
