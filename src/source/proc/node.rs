//! The node scan: every process of the proc root, cheaply. Each scan lists the proc
//! root (when a pid was handed out since the last listing: listing walks every task of
//! the machine) and reads each process's main thread's `stat` (`<pid>/task/<pid>/stat`, kept
//! open, re-read with `pread`: the process's own `stat` sums every thread, five times
//! the cost for a process of 63 threads, and the scan needs none of the sums); a process's
//! `cgroup`, `status` (owner), `cmdline` and `environ` (`POD_NAMESPACE`, a rank's
//! variables) are read when it is first seen and again when it execs (its `comm`
//! changes); its `cgroup` and owner again every [`REFRESH_SCANS`] scans (staggered by
//! pid), so a process moved into another cgroup or that changed its uid is regrouped.
//! Those first reads of one scan stop at its detail budget: under a fork burst the
//! processes left are read over the next scans (counted in
//! [`NodeScanner::deferred`]), so the scan keeps its interval. What a job's processes
//! do thread by thread is the job's own [`super::Sampler`]'s work.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::PidMap;
use super::fds::{self, FdBudget};
use super::parsers;
use crate::model::jobs::NodeProcess;

/// Descriptors the scan may keep (one `stat` per process); past it, files are opened
/// and closed. The samplers of the jobs share the rest of the open-files limit.
pub const SCAN_KEPT_DESCRIPTORS: usize = 4_096;

/// A known process's `cgroup` and owner are read again every this many scans.
pub const REFRESH_SCANS: u64 = 5;

struct Known {
    starttime: u64,
    stat: Option<std::fs::File>,
    process: NodeProcess,
    uid: Option<u32>,
    cmdline: String,
    generation: u64,
}

/// One process as the latest scan saw it.
#[derive(Debug, Clone)]
pub struct Scanned {
    pub process: NodeProcess,
    pub uid: Option<u32>,
    /// The command line, arguments joined by spaces (for `--match`).
    pub cmdline: String,
    /// When it started, seconds after boot (`stat`'s `starttime`).
    pub started_seconds: f64,
}

/// Scans a proc root again and again, remembering what does not change.
pub struct NodeScanner {
    proc_root: PathBuf,
    known: PidMap<Known>,
    budget: FdBudget,
    buf: Vec<u8>,
    generation: u64,
    ticks: f64,
    /// Time the first reads of new processes may take in one scan.
    detail_budget: Duration,
    deferred: usize,
    /// The newest pid handed out (`loadavg`'s last field) when the proc root was last
    /// listed: while it stays the same no process has started since, and the known
    /// processes are the list (those that ended fail their read).
    listed_at_pid: Option<i32>,
    /// Scans that listed the proc root.
    pub listings: u64,
    /// The proc root shows tfwatch's own pid namespace (its `self` is tfwatch's pid), the
    /// one `loadavg` counts pids in; else it is listed every scan.
    own_namespace: bool,
}

impl NodeScanner {
    pub fn new(proc_root: &Path) -> NodeScanner {
        // SAFETY: sysconf has no preconditions.
        let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        let mut budget = FdBudget::from_rlimit(None);
        budget.limit = budget.limit.min(SCAN_KEPT_DESCRIPTORS);
        NodeScanner {
            proc_root: proc_root.to_path_buf(),
            known: PidMap::default(),
            budget,
            buf: vec![0; 4096],
            generation: 0,
            ticks: if ticks > 0 { ticks as f64 } else { 100.0 },
            detail_budget: Duration::MAX,
            deferred: 0,
            listed_at_pid: None,
            listings: 0,
            own_namespace: std::fs::read_link(proc_root.join("self"))
                .is_ok_and(|link| link.as_os_str() == std::process::id().to_string().as_str()),
        }
    }

    /// Limits the time the first reads of new processes take in one scan; those not
    /// read by then are left out of this scan and read in the next.
    pub fn with_detail_budget(mut self, budget: Duration) -> NodeScanner {
        self.detail_budget = budget;
        self
    }

    /// New processes the last scan left out, their first reads past its detail budget.
    pub fn deferred(&self) -> usize {
        self.deferred
    }

    /// Seconds since boot, from the proc root's `uptime`.
    pub fn uptime_seconds(&self) -> Option<f64> {
        let text = std::fs::read_to_string(self.proc_root.join("uptime")).ok()?;
        text.split_whitespace().next()?.parse().ok()
    }

    /// The pids to read: the proc root listed, unless no pid was handed out since the
    /// last listing (then the processes known, those that ended failing their read).
    /// Listing `/proc` walks every task of the machine, threads included.
    fn pids(&mut self) -> Vec<i32> {
        let last = std::fs::read_to_string(self.proc_root.join("loadavg"))
            .ok()
            .and_then(|text| text.split_whitespace().nth(4)?.parse::<i32>().ok());
        if last.is_some() && last == self.listed_at_pid && self.own_namespace {
            return self.known.keys().copied().collect();
        }
        // Read before listing: a process started meanwhile changes it for the next scan.
        self.listed_at_pid = last;
        self.listings += 1;
        super::process::proc_pids(&self.proc_root)
    }

    /// Every process now, by ascending pid; those that vanish while read are left out,
    /// and new ones whose first reads fall past the detail budget.
    pub fn scan(&mut self) -> Vec<Scanned> {
        self.generation += 1;
        self.deferred = 0;
        let started = Instant::now();
        let mut pids = self.pids();
        pids.sort_unstable();
        let mut out = Vec::with_capacity(pids.len());
        for pid in pids {
            let dir = self.proc_root.join(pid.to_string());
            let entry = self.known.entry(pid).or_insert_with(|| Known {
                starttime: u64::MAX,
                stat: None,
                process: NodeProcess::default(),
                uid: None,
                cmdline: String::new(),
                generation: 0,
            });
            // Kept while deferred, so its descriptor is not lost to `retain`.
            entry.generation = self.generation;
            // An empty `stat` is a process that is gone (fixtures simulate exits so).
            let Some(n) = read_main_stat(entry, &dir, pid, &mut self.budget, &mut self.buf)
                .filter(|&n| n > 0)
            else {
                // Gone: forgotten, whether the next scan lists the proc root or not.
                entry.generation = 0;
                continue;
            };
            let Ok(stat) = parsers::parse_stat(&self.buf[..n]) else {
                continue;
            };
            let new = entry.starttime != stat.starttime;
            let execed = !new && entry.process.comm != stat.comm;
            let mut comm_read = true;
            if new || execed {
                if started.elapsed() > self.detail_budget {
                    self.deferred += 1;
                    if new {
                        continue;
                    }
                    // Its old name stays until its new program is read.
                    comm_read = false;
                } else {
                    // New, the pid reused, or a new program: read what it runs as.
                    entry.starttime = stat.starttime;
                    read_details(entry, &dir, &mut self.buf);
                }
            } else if (self.generation + pid.unsigned_abs() as u64).is_multiple_of(REFRESH_SCANS) {
                read_placement(entry, &dir, &mut self.buf);
            }
            entry.process.pid = pid;
            entry.process.ppid = stat.ppid;
            entry.process.num_threads = stat.num_threads;
            if comm_read {
                entry.process.comm.clone_from(&stat.comm);
            }
            out.push(Scanned {
                process: entry.process.clone(),
                uid: entry.uid,
                cmdline: if entry.cmdline.is_empty() {
                    format!("[{}]", stat.comm)
                } else {
                    entry.cmdline.clone()
                },
                started_seconds: stat.starttime as f64 / self.ticks,
            });
        }
        let generation = self.generation;
        let budget = &mut self.budget;
        self.known.retain(|_, known| {
            let alive = known.generation == generation;
            if !alive && known.stat.take().is_some() {
                budget.release(1);
            }
            alive
        });
        out
    }
}

/// The main thread's `stat` of the process in `dir` ([`super::process::main_thread_stat`]),
/// or the process's own `stat` where the proc root has no `task/` (a recorded tree);
/// `None` when it is gone.
fn read_main_stat(
    entry: &mut Known,
    dir: &Path,
    pid: i32,
    budget: &mut FdBudget,
    buf: &mut Vec<u8>,
) -> Option<usize> {
    let main = super::process::main_thread_stat(dir, pid);
    match fds::read_through(&mut entry.stat, &main, true, budget, buf) {
        Ok(n) => Some(n),
        Err(fds::ReadFailure::Gone) if !dir.join("task").exists() => {
            fds::read_through(&mut entry.stat, &dir.join("stat"), true, budget, buf).ok()
        }
        Err(_) => None,
    }
}

/// A process's cgroup and owner: where it belongs, which can change while it runs.
fn read_placement(entry: &mut Known, dir: &Path, buf: &mut Vec<u8>) {
    entry.process.cgroup = read_text(&dir.join("cgroup"), buf)
        .map(|text| job_cgroup_path(&text))
        .unwrap_or_default();
    entry.uid = fds::read_once(&dir.join("status"), buf)
        .ok()
        .and_then(|n| parsers::parse_status(&buf[..n]).uid);
}

/// What a process runs as: its placement, command line and start-up environment.
fn read_details(entry: &mut Known, dir: &Path, buf: &mut Vec<u8>) {
    read_placement(entry, dir, buf);
    entry.cmdline = fds::read_once(&dir.join("cmdline"), buf)
        .map(|n| parsers::parse_cmdline(&buf[..n]).join(" "))
        .unwrap_or_default();
    let environ = std::fs::read(dir.join("environ")).ok();
    entry.process.namespace = environ.as_deref().and_then(pod_namespace);
    entry.process.rank = environ.as_deref().and_then(|bytes| {
        let vars = super::audit::pools::distributed_variables(bytes);
        crate::model::ranks::RankInfo::from_env(&vars).map(|r| r.label())
    });
}

fn read_text(path: &Path, buf: &mut Vec<u8>) -> Option<String> {
    let n = fds::read_once(path, buf).ok()?;
    Some(String::from_utf8_lossy(&buf[..n]).into_owned())
}

/// The cgroup path that tells a process's job, from its `/proc/<pid>/cgroup`: the v2
/// path, else the v1 `cpu` hierarchy's, else `name=systemd`'s, else any other that is
/// not the root; empty when all are the root.
pub fn job_cgroup_path(text: &str) -> String {
    let mut v2 = None;
    let mut cpu = None;
    let mut systemd = None;
    let mut other = None;
    for line in text.lines() {
        let mut fields = line.splitn(3, ':');
        let (Some(_), Some(controllers), Some(path)) =
            (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        if path == "/" || path.is_empty() {
            continue;
        }
        let slot = if controllers.is_empty() {
            &mut v2
        } else if controllers.split(',').any(|c| c == "cpu") {
            &mut cpu
        } else if controllers == "name=systemd" {
            &mut systemd
        } else {
            &mut other
        };
        slot.get_or_insert_with(|| path.to_string());
    }
    v2.or(cpu).or(systemd).or(other).unwrap_or_default()
}

/// `POD_NAMESPACE` in a NUL-separated environment, where set and not empty.
fn pod_namespace(environ: &[u8]) -> Option<String> {
    environ
        .split(|&b| b == 0)
        .find_map(|var| var.strip_prefix(b"POD_NAMESPACE="))
        .filter(|value| !value.is_empty())
        .map(|value| String::from_utf8_lossy(value).into_owned())
}

/// The uid of a user name, from `<etc>/passwd`; `None` when there is no such user.
pub fn uid_of_user(passwd: &str, name: &str) -> Option<u32> {
    passwd.lines().find_map(|line| {
        let mut fields = line.split(':');
        (fields.next()? == name).then_some(())?;
        fields.nth(1)?.parse().ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::jobs::job_from_cgroup;

    fn job_of_fixture(name: &str) -> Option<crate::model::jobs::JobLabels> {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fixtures/jobs")
            .join(name);
        let text = std::fs::read_to_string(&path).unwrap();
        job_from_cgroup(&job_cgroup_path(&text))
    }

    #[test]
    fn recorded_cgroup_files_name_their_jobs() {
        let cases = [
            (
                "k8s-systemd-v2.cgroup",
                "pod/5f1c2a3e-8b9d-4c7e-a1f2-0123456789ab/3b2f8e7d6c5a",
            ),
            (
                "k8s-cgroupfs-v1.cgroup",
                "pod/0a1b2c3d-1111-2222-3333-444455556666/9f8e7d6c5b4a",
            ),
            (
                "k8s-kind-v2.cgroup",
                "pod/11112222-3333-4444-5555-666677778888/aabbccddeeff",
            ),
            ("docker-systemd-v2.cgroup", "container/4c3b2a1f0e9d"),
            ("docker-cgroupfs-v1.cgroup", "container/7a6b5c4d3e2f"),
            ("podman-v2.cgroup", "container/0123456789ab"),
            ("systemd-unit-v2.cgroup", "unit/trainer.service"),
        ];
        for (file, job) in cases {
            let labels = job_of_fixture(file).unwrap_or_else(|| panic!("{file} names no job"));
            assert_eq!(labels.job, job, "{file}");
            if job.starts_with("pod/") {
                assert!(
                    labels.pod.is_some() && labels.container.is_some(),
                    "{file}: {labels:?}"
                );
            }
        }
        for file in [
            "user-session-v2.cgroup",
            "root-v2.cgroup",
            "unknown-v1.cgroup",
        ] {
            assert_eq!(
                job_of_fixture(file),
                None,
                "{file}: the process tree decides"
            );
        }
    }

    #[test]
    fn the_pod_namespace_comes_from_the_environment() {
        assert_eq!(
            pod_namespace(b"A=1\0POD_NAMESPACE=training\0B=2\0").as_deref(),
            Some("training")
        );
        assert_eq!(pod_namespace(b"POD_NAMESPACE=\0"), None);
        assert_eq!(pod_namespace(b""), None);
    }

    #[test]
    fn a_ranks_rank_comes_from_its_environment_once() {
        // A proc root of one process: this test's own stat, a rank's environ.
        let root = std::env::temp_dir().join(format!("tfwatch-node-rank-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let own = std::process::id();
        let dir = root.join(own.to_string());
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("stat"),
            std::fs::read(format!("/proc/{own}/stat")).unwrap(),
        )
        .unwrap();
        std::fs::write(
            dir.join("environ"),
            b"PATH=/usr/bin\0RANK=1\0WORLD_SIZE=2\0MASTER_ADDR=127.0.0.1\0MASTER_PORT=29500\0",
        )
        .unwrap();
        let mut scanner = NodeScanner::new(&root);
        let scanned = scanner.scan();
        let _ = std::fs::remove_dir_all(&root);
        assert_eq!(scanned.len(), 1, "{scanned:?}");
        assert_eq!(scanned[0].process.rank.as_deref(), Some("rank 1/2"));
    }

    #[test]
    fn the_proc_root_is_listed_again_only_when_a_pid_was_handed_out() {
        let root = std::env::temp_dir().join(format!("tfwatch-node-list-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let own = std::process::id();
        let stat = std::fs::read(format!("/proc/{own}/stat")).unwrap();
        let add = |pid: u32| {
            let dir = root.join(pid.to_string());
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("stat"), &stat).unwrap();
        };
        add(own);
        std::fs::write(root.join("loadavg"), "0.1 0.2 0.3 1/100 500\n").unwrap();
        let mut scanner = NodeScanner::new(&root);
        // A recorded root has no `self`: it is listed every scan.
        assert!(!scanner.own_namespace);
        scanner.own_namespace = true;
        let pids =
            |scanned: Vec<Scanned>| -> Vec<i32> { scanned.iter().map(|s| s.process.pid).collect() };
        assert_eq!(pids(scanner.scan()), [own as i32]);
        assert_eq!(scanner.listings, 1);
        // A process that appears without a new pid handed out is not looked for; the
        // known one that ended is gone at once.
        add(own + 1);
        std::fs::write(root.join(format!("{own}/stat")), "").unwrap();
        assert_eq!(pids(scanner.scan()), Vec::<i32>::new());
        assert_eq!(scanner.listings, 1);
        // A pid handed out: listed again.
        std::fs::write(root.join("loadavg"), "0.1 0.2 0.3 1/100 501\n").unwrap();
        assert_eq!(pids(scanner.scan()), [own as i32 + 1]);
        assert_eq!(scanner.listings, 2);
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn users_are_found_in_passwd() {
        let passwd = "root:x:0:0:root:/root:/bin/bash\nalice:x:1000:1000::/home/alice:/bin/sh\n";
        assert_eq!(uid_of_user(passwd, "alice"), Some(1000));
        assert_eq!(uid_of_user(passwd, "root"), Some(0));
        assert_eq!(uid_of_user(passwd, "bob"), None);
    }

    #[test]
    fn the_live_scan_sees_this_process() {
        let mut scanner = NodeScanner::new(Path::new("/proc"));
        assert!(scanner.own_namespace);
        let own = std::process::id() as i32;
        let first = scanner.scan();
        assert!(first.iter().any(|s| s.process.pid == own));
        let again = scanner.scan();
        let me = again.iter().find(|s| s.process.pid == own).unwrap();
        assert!(me.process.num_threads >= 1);
    }
}
