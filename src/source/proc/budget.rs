//! The CPUs and memory a process may really use: online CPUs, its affinity mask, and the
//! CPU quota and memory limit of its cgroup (v2 or v1), found through the TARGET's
//! `/proc/<pid>/cgroup`.

use std::path::{Path, PathBuf};

use procfs::FromRead;
use procfs::ProcessCGroup;

use crate::model::{CpuBudget, CpuThrottling, MemoryLimit};
use crate::source::proc::parsers;

/// v1 `memory.limit_in_bytes` at or above this means "no limit" (the kernel writes
/// PAGE_COUNTER_MAX × page size, just under 2^63).
const V1_UNLIMITED: u64 = 1 << 62;

/// The CPU budget of `pid`. `cpus_allowed_list` is its `Cpus_allowed_list` when the
/// caller has already read `status`; otherwise it is read here.
pub fn cpu_budget(
    proc_root: &Path,
    cgroup_root: &Path,
    pid: i32,
    cpus_allowed_list: Option<&str>,
) -> CpuBudget {
    let online = std::fs::read_to_string(proc_root.join("stat"))
        .map(|text| parsers::count_stat_cpus(&text))
        .unwrap_or(0);
    let online = if online == 0 {
        std::thread::available_parallelism().map_or(1, |n| n.get() as u32)
    } else {
        online
    };
    let affinity_list = match cpus_allowed_list {
        Some(list) => Some(list.to_string()),
        None => std::fs::read(proc_root.join(pid.to_string()).join("status"))
            .ok()
            .and_then(|bytes| parsers::parse_status(&bytes).cpus_allowed_list),
    };
    let affinity = affinity_list
        .as_deref()
        .and_then(|list| parsers::parse_cpu_list(list).ok())
        .map(|cpus| cpus.len() as u32)
        .filter(|n| *n > 0);
    let (quota, quota_source, throttling) = match cpu_quota(proc_root, cgroup_root, pid) {
        Some((quota, source, stat)) => (
            Some(quota),
            Some(source),
            cpu_throttling(cgroup_root, &stat),
        ),
        None => (None, None, None),
    };
    let mut usable = f64::from(online);
    if let Some(affinity) = affinity {
        usable = usable.min(f64::from(affinity));
    }
    if let Some(quota) = quota {
        usable = usable.min(quota);
    }
    CpuBudget {
        online,
        affinity,
        affinity_list,
        quota,
        quota_source,
        usable: usable.max(1.0),
        throttling,
    }
}

/// The throttling counters in `cpu.stat` at `path` (relative to the cgroup root): v1
/// `nr_periods`, `nr_throttled`, `throttled_time` (ns); v2 the same with
/// `throttled_usec`. `None` when the file cannot be read or lacks the counters.
pub fn cpu_throttling(cgroup_root: &Path, path: &Path) -> Option<CpuThrottling> {
    let text = std::fs::read_to_string(cgroup_root.join(path)).ok()?;
    let (mut periods, mut throttled, mut seconds) = (None, None, None);
    for line in text.lines() {
        let mut fields = line.split_whitespace();
        let (Some(key), Some(value)) = (fields.next(), fields.next()) else {
            continue;
        };
        let Ok(value) = value.parse::<u64>() else {
            continue;
        };
        match key {
            "nr_periods" => periods = Some(value),
            "nr_throttled" => throttled = Some(value),
            "throttled_time" => seconds = Some(value as f64 / 1e9),
            "throttled_usec" => seconds = Some(value as f64 / 1e6),
            _ => {}
        }
    }
    let version = if text.contains("throttled_usec") {
        "v2"
    } else {
        "v1"
    };
    Some(CpuThrottling {
        periods: periods?,
        throttled_periods: throttled?,
        throttled_seconds: seconds?,
        path: display(path),
        source: format!("cgroup {version} {}", display(path)),
    })
}

/// The effective memory limit of `pid`: the smallest cgroup limit up its hierarchy,
/// capped by MemTotal.
pub fn memory_limit(proc_root: &Path, cgroup_root: &Path, pid: i32) -> MemoryLimit {
    let mem_total_bytes = std::fs::read_to_string(proc_root.join("meminfo"))
        .ok()
        .and_then(|text| parsers::parse_mem_total(&text))
        .unwrap_or(0);
    let mut limit = MemoryLimit {
        bytes: mem_total_bytes,
        source: "MemTotal".to_string(),
        mem_total_bytes,
    };
    let mut best: Option<(u64, String)> = None;
    for group in target_cgroups(proc_root, pid) {
        if group.hierarchy == 0 && group.controllers.is_empty() {
            for dir in group_dirs(cgroup_root, v2_mounts(cgroup_root), &group.pathname) {
                let Some(bytes) = read_value(&cgroup_root.join(&dir).join("memory.max"))
                    .and_then(|text| text.parse::<u64>().ok())
                else {
                    continue;
                };
                consider(
                    &mut best,
                    bytes,
                    format!("cgroup v2 {}", display(&dir.join("memory.max"))),
                );
            }
        } else if group.controllers.iter().any(|c| c == "memory") {
            let mounts = v1_mounts(&group, "memory");
            let mounts: Vec<&str> = mounts.iter().map(String::as_str).collect();
            for dir in group_dirs(cgroup_root, &mounts, &group.pathname) {
                let path = dir.join("memory.limit_in_bytes");
                let Some(bytes) = read_value(&cgroup_root.join(&path))
                    .and_then(|text| text.parse::<u64>().ok())
                    .filter(|bytes| *bytes < V1_UNLIMITED)
                else {
                    continue;
                };
                consider(&mut best, bytes, format!("cgroup v1 {}", display(&path)));
            }
        }
    }
    if let Some((bytes, source)) = best
        && (mem_total_bytes == 0 || bytes < mem_total_bytes)
    {
        limit.bytes = bytes;
        limit.source = source;
    }
    limit
}

fn consider(best: &mut Option<(u64, String)>, value: u64, source: String) {
    if best.as_ref().is_none_or(|(current, _)| value < *current) {
        *best = Some((value, source));
    }
}

/// The smallest CPU quota up the target's cgroup hierarchy, in CPUs, with its source
/// and the `cpu.stat` of the group that sets it (where it is throttled).
fn cpu_quota(proc_root: &Path, cgroup_root: &Path, pid: i32) -> Option<(f64, String, PathBuf)> {
    let mut best: Option<(f64, String, PathBuf)> = None;
    let mut keep = |cpus: f64, source: String, dir: &Path| {
        if cpus > 0.0 && best.as_ref().is_none_or(|(current, _, _)| cpus < *current) {
            best = Some((cpus, source, dir.join("cpu.stat")));
        }
    };
    for group in target_cgroups(proc_root, pid) {
        if group.hierarchy == 0 && group.controllers.is_empty() {
            for dir in group_dirs(cgroup_root, v2_mounts(cgroup_root), &group.pathname) {
                let path = dir.join("cpu.max");
                let Some(text) = read_value(&cgroup_root.join(&path)) else {
                    continue;
                };
                let mut fields = text.split_whitespace();
                let (Some(quota), period) = (fields.next(), fields.next()) else {
                    continue;
                };
                let period: f64 = period.and_then(|p| p.parse().ok()).unwrap_or(100_000.0);
                if let Ok(quota) = quota.parse::<f64>()
                    && period > 0.0
                {
                    keep(
                        quota / period,
                        format!("cgroup v2 {}={}", display(&path), text),
                        &dir,
                    );
                }
            }
        } else if group.controllers.iter().any(|c| c == "cpu") {
            let mounts = v1_mounts(&group, "cpu");
            let mounts: Vec<&str> = mounts.iter().map(String::as_str).collect();
            for dir in group_dirs(cgroup_root, &mounts, &group.pathname) {
                let quota_path = dir.join("cpu.cfs_quota_us");
                let Some(quota) = read_value(&cgroup_root.join(&quota_path))
                    .and_then(|text| text.parse::<i64>().ok())
                    .filter(|quota| *quota > 0)
                else {
                    continue;
                };
                let Some(period) = read_value(&cgroup_root.join(dir.join("cpu.cfs_period_us")))
                    .and_then(|text| text.parse::<i64>().ok())
                    .filter(|period| *period > 0)
                else {
                    continue;
                };
                keep(
                    quota as f64 / period as f64,
                    format!(
                        "cgroup v1 {}={quota} cpu.cfs_period_us={period}",
                        display(&quota_path)
                    ),
                    &dir,
                );
            }
        }
    }
    best
}

/// The target's cgroup memberships; none when the file cannot be read.
fn target_cgroups(proc_root: &Path, pid: i32) -> Vec<ProcessCGroup> {
    std::fs::read(proc_root.join(pid.to_string()).join("cgroup"))
        .ok()
        .and_then(|bytes| procfs::ProcessCGroups::from_read(bytes.as_slice()).ok())
        .map(|groups| groups.0)
        .unwrap_or_default()
}

/// Where the v2 hierarchy is mounted: the cgroup root itself on a pure v2 system,
/// `unified` on a hybrid one.
fn v2_mounts(cgroup_root: &Path) -> &'static [&'static str] {
    if cgroup_root.join("cgroup.controllers").is_file() {
        &[""]
    } else {
        &["unified"]
    }
}

/// Mount directory names a v1 hierarchy may have under the cgroup root: its own
/// controller list ("cpu,cpuacct"), the usual spellings, and the controller alone.
fn v1_mounts(group: &ProcessCGroup, controller: &str) -> Vec<String> {
    let mut mounts = vec![group.controllers.join(",")];
    if controller == "cpu" {
        mounts.extend(["cpu,cpuacct", "cpuacct,cpu"].map(String::from));
    }
    mounts.push(controller.to_string());
    mounts.dedup();
    let mut unique = Vec::new();
    for mount in mounts {
        if !unique.contains(&mount) {
            unique.push(mount);
        }
    }
    unique
}

/// The directories (relative to the cgroup root) of the group and each of its
/// ancestors up to the mount, under the first mount that exists. A group path missing
/// under the mount (a cgroup namespace shows paths relative to its own root) gives the
/// mount root alone.
fn group_dirs(cgroup_root: &Path, mounts: &[&str], group_path: &str) -> Vec<PathBuf> {
    let relative = group_path.trim_start_matches('/');
    for mount in mounts {
        let mount_dir = PathBuf::from(mount);
        if !cgroup_root.join(&mount_dir).is_dir() {
            continue;
        }
        let full = mount_dir.join(relative);
        if relative.is_empty() || !cgroup_root.join(&full).is_dir() {
            return vec![mount_dir];
        }
        let mut dirs = Vec::new();
        let mut current = Some(full.as_path());
        while let Some(dir) = current {
            dirs.push(dir.to_path_buf());
            if dir == mount_dir {
                break;
            }
            current = dir.parent();
        }
        return dirs;
    }
    Vec::new()
}

fn read_value(path: &Path) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|text| text.trim().to_string())
        .filter(|text| !text.is_empty())
}

fn display(path: &Path) -> String {
    path.display().to_string()
}
