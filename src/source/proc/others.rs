//! The busiest processes outside the watched tree: one `stat` read per process of the
//! machine, at most every [`MIN_SCAN_SECONDS`], so that a wait caused by other
//! processes can name them.

use std::collections::HashSet;
use std::path::Path;
use std::time::Instant;

use super::PidMap;
use super::{fds, parsers};
use crate::model::OtherProcess;

/// Scans closer together than this keep the last list (CPU shares over a shorter
/// interval are noise, and a scan reads every process's `stat`).
pub const MIN_SCAN_SECONDS: f64 = 1.0;

/// A scan this share of [`MIN_SCAN_SECONDS`] after the last one is not too early.
const SCAN_EARLY_FACTOR: f64 = 0.9;

/// How many other processes are named.
pub const NAMED: usize = 5;

/// A process must use at least this share of a CPU to be named.
pub const MIN_CPU_SHARE: f64 = 0.05;

/// CPU time of every process at the last scan.
#[derive(Debug, Default)]
pub struct OtherCpu {
    /// pid → (start time, utime + stime), in clock ticks.
    last: PidMap<(u64, u64)>,
    last_at: Option<Instant>,
    /// The list from the last scan that had an earlier one to compare with.
    busiest: Vec<OtherProcess>,
}

impl OtherCpu {
    /// The list of the last scan.
    pub fn last(&self) -> &[OtherProcess] {
        &self.busiest
    }

    /// The busiest processes not in `tree`, by CPU share since the last scan; scans
    /// `proc_root` when the last scan is at least [`MIN_SCAN_SECONDS`] old, else returns
    /// the last list. Empty until two scans were made. `now` is the time of the scan.
    pub fn busiest(
        &mut self,
        now: Instant,
        proc_root: &Path,
        tree: &HashSet<i32>,
        buf: &mut Vec<u8>,
        ticks_per_second: f64,
    ) -> Vec<OtherProcess> {
        let seconds = self
            .last_at
            .map(|at| now.saturating_duration_since(at).as_secs_f64());
        // A sampling tick a little early (timer jitter) still scans: a second's samples
        // must not skip a scan and leave the list a whole detail period behind.
        if seconds.is_some_and(|s| s < MIN_SCAN_SECONDS * SCAN_EARLY_FACTOR) {
            return self.busiest.clone();
        }
        let mut seen: PidMap<(u64, u64)> = PidMap::default();
        seen.reserve(self.last.len());
        let mut busy: Vec<OtherProcess> = Vec::new();
        for pid in super::process::proc_pids(proc_root) {
            let Ok(n) = fds::read_once(&proc_root.join(pid.to_string()).join("stat"), buf) else {
                continue;
            };
            let Ok((comm, stat)) = parsers::parse_stat_borrowed(&buf[..n]) else {
                continue;
            };
            let ticks = stat.utime + stat.stime;
            seen.insert(pid, (stat.starttime, ticks));
            let (Some(seconds), false) = (seconds, tree.contains(&pid)) else {
                continue;
            };
            let Some(&(start, before)) = self.last.get(&pid) else {
                continue;
            };
            if start != stat.starttime || ticks <= before || seconds <= 0.0 {
                continue;
            }
            let share = (ticks - before) as f64 / ticks_per_second / seconds;
            if share >= MIN_CPU_SHARE {
                busy.push(OtherProcess {
                    pid,
                    comm: parsers::comm_string(comm),
                    cpu_share: share,
                });
            }
        }
        busy.sort_by(|a, b| b.cpu_share.total_cmp(&a.cpu_share).then(a.pid.cmp(&b.pid)));
        busy.truncate(NAMED);
        self.last = seen;
        self.last_at = Some(now);
        self.busiest = busy;
        self.busiest.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_stat(root: &Path, pid: i32, comm: &str, ticks: u64) {
        let dir = root.join(pid.to_string());
        std::fs::create_dir_all(&dir).unwrap();
        // utime is field 14, stime 15, starttime 22.
        let line = format!(
            "{pid} ({comm}) R 1 {pid} {pid} 0 -1 0 0 0 0 0 {ticks} 0 0 0 20 0 1 0 500 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0"
        );
        std::fs::write(dir.join("stat"), line).unwrap();
    }

    #[test]
    fn names_the_busiest_others_by_cpu_share_and_leaves_out_the_tree() {
        let root = std::env::temp_dir().join(format!("tfwatch-others-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        for (pid, comm) in [(10, "job"), (20, "cc1plus"), (30, "idle"), (40, "make x")] {
            write_stat(&root, pid, comm, 100);
        }
        let tree: HashSet<i32> = [10].into_iter().collect();
        let mut others = OtherCpu::default();
        let mut buf = Vec::new();
        let start = Instant::now();
        assert!(
            others
                .busiest(start, &root, &tree, &mut buf, 100.0)
                .is_empty()
        );
        // One second later: cc1plus used 0.4 CPU, "make x" 0.2, idle nothing.
        let later = start + std::time::Duration::from_secs(1);
        write_stat(&root, 10, "job", 100_000);
        write_stat(&root, 20, "cc1plus", 100 + 40);
        write_stat(&root, 40, "make x", 100 + 20);
        let busiest = others.busiest(later, &root, &tree, &mut buf, 100.0);
        let names: Vec<&str> = busiest.iter().map(|p| p.comm.as_str()).collect();
        assert_eq!(names, ["cc1plus", "make x"], "{busiest:?}");
        assert!((busiest[0].cpu_share - 0.4).abs() < 1e-9, "{busiest:?}");
        assert!((busiest[1].cpu_share - 0.2).abs() < 1e-9, "{busiest:?}");
        assert!(busiest.iter().all(|p| p.pid != 10 && p.pid != 30));
        // A scan too soon after keeps the list instead of reading again.
        write_stat(&root, 30, "idle", 100_000);
        let soon = later + std::time::Duration::from_millis(100);
        assert_eq!(others.busiest(soon, &root, &tree, &mut buf, 100.0), busiest);
        let _ = std::fs::remove_dir_all(&root);
    }
}
