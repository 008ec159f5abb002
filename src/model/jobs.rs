//! Jobs of a node: which processes belong together. A job is named by its cgroup when
//! the cgroup says what it is (a Kubernetes pod and container, a Docker, containerd or
//! Podman container, a systemd unit), else by its process tree: everything under the
//! first ancestor that is not init, a shell, a container shim or a session manager.
//!
//! These are pure functions of what the node scan read (cgroup paths, parents, names),
//! so recorded cgroup files test them anywhere.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Most jobs a node watch tells apart; the processes of the others (the smallest by
/// threads) are counted under one job named [`OTHER_JOB`]. It bounds the label values of
/// every exported series, finding and line.
pub const MAX_JOBS: usize = 64;

/// The job that holds the processes past [`MAX_JOBS`].
pub const OTHER_JOB: &str = "other";

/// What a job is known by. `job` is always set; the rest when the cgroup says.
#[derive(
    Debug,
    Clone,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    schemars::JsonSchema,
    Deserialize,
)]
pub struct JobLabels {
    /// A stable name: `pod/<uid>/<container>`, `docker/<id>`, `unit/<name>`,
    /// `tree/<pid>-<comm>`, or [`OTHER_JOB`].
    pub job: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    /// Kubernetes namespace; cgroup paths do not carry it, so it is set only where the
    /// process's environment names it (`POD_NAMESPACE`, the downward API's usual name).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

impl JobLabels {
    /// The job of processes past the bound.
    pub fn other() -> JobLabels {
        JobLabels {
            job: OTHER_JOB.to_string(),
            ..JobLabels::default()
        }
    }
}

/// A container id shortened as `docker ps` shows it.
fn short_id(id: &str) -> String {
    id.chars().take(12).collect()
}

/// Strips a systemd scope's prefix and suffix: `cri-containerd-<id>.scope` → `<id>`.
fn scope_id<'a>(name: &'a str, prefixes: &[&str]) -> Option<&'a str> {
    let stem = name.strip_suffix(".scope").unwrap_or(name);
    prefixes
        .iter()
        .find_map(|prefix| stem.strip_prefix(prefix))
        .filter(|id| !id.is_empty() && id.chars().all(|c| c.is_ascii_hexdigit()))
}

/// A container id in a path component: a bare 64-hex id (cgroupfs driver) or a scope of
/// a known runtime (systemd driver).
fn container_id(name: &str) -> Option<&str> {
    const PREFIXES: [&str; 5] = [
        "cri-containerd-",
        "docker-",
        "crio-",
        "libpod-",
        "containerd-",
    ];
    if name.len() >= 32 && name.chars().all(|c| c.is_ascii_hexdigit()) {
        return Some(name);
    }
    scope_id(name, &PREFIXES)
}

/// The pod uid in a component: `pod<uid>` (cgroupfs) or
/// `kubepods-<qos>-pod<uid_with_underscores>.slice` (systemd), with dashes.
fn pod_uid(name: &str) -> Option<String> {
    let stem = name.strip_suffix(".slice").unwrap_or(name);
    let at = stem.rfind("pod")?;
    let uid = &stem[at + 3..];
    let plausible = uid.len() >= 8
        && uid
            .chars()
            .all(|c| c.is_ascii_hexdigit() || c == '-' || c == '_');
    plausible.then(|| uid.replace('_', "-"))
}

/// The job a cgroup path names, or `None` when it names none (the root, a user session,
/// an unknown layout): the process tree decides then. `path` is the v2 path or the v1
/// path of one hierarchy, as in `/proc/<pid>/cgroup`.
pub fn job_from_cgroup(path: &str) -> Option<JobLabels> {
    // A kind node nests `<slice>:cri-containerd:<id>` in one component.
    let parts: Vec<&str> = path.split(['/', ':']).filter(|p| !p.is_empty()).collect();
    if parts.iter().any(|p| p.starts_with("kubepods")) {
        let pod_at = parts
            .iter()
            .position(|p| pod_uid(p).is_some() && p.contains("pod"))?;
        let pod = pod_uid(parts[pod_at])?;
        let container = parts[pod_at + 1..]
            .iter()
            .find_map(|p| container_id(p))
            .map(short_id);
        let job = match &container {
            Some(container) => format!("pod/{pod}/{container}"),
            None => format!("pod/{pod}"),
        };
        return Some(JobLabels {
            job,
            pod: Some(pod),
            container,
            namespace: None,
        });
    }
    // Docker's cgroupfs driver: /docker/<id>; systemd driver: docker-<id>.scope; and the
    // same shapes of containerd, CRI-O and Podman.
    for (index, part) in parts.iter().enumerate() {
        let id = if *part == "docker" || *part == "lxc" {
            parts
                .get(index + 1)
                .copied()
                .filter(|id| container_id(id).is_some())
        } else {
            container_id(part).filter(|_| part.contains('-'))
        };
        if let Some(id) = id {
            let container = short_id(id);
            return Some(JobLabels {
                job: format!("container/{container}"),
                container: Some(container),
                ..JobLabels::default()
            });
        }
    }
    // A systemd unit: the innermost `.service`, or a scope that is not a login session.
    let unit = parts.iter().rev().find(|p| {
        p.ends_with(".service") && !p.starts_with("user@") && !p.starts_with("session-")
            || (p.ends_with(".scope") && !p.starts_with("session-") && !p.starts_with("init"))
    })?;
    Some(JobLabels {
        job: format!("unit/{unit}"),
        ..JobLabels::default()
    })
}

/// Processes that end a walk up the tree: whatever they start is a job of its own.
/// Init and kernel threads, shells, container shims and runtimes, session managers.
pub fn is_job_boundary(pid: i32, comm: &str) -> bool {
    const NAMES: [&str; 24] = [
        "systemd",
        "init",
        "kthreadd",
        "sh",
        "bash",
        "dash",
        "zsh",
        "fish",
        "ksh",
        "tcsh",
        "sshd",
        "login",
        "su",
        "sudo",
        "tmux: server",
        "screen",
        "SCREEN",
        "containerd",
        "dockerd",
        "conmon",
        "tini",
        "dumb-init",
        "runc",
        "supervisord",
    ];
    pid <= 1
        || comm.starts_with("containerd-shim")
        || comm.starts_with("tmux")
        || NAMES.contains(&comm)
}

/// One process as the node scan saw it, for grouping.
#[derive(Debug, Clone, Default, PartialEq, Serialize, schemars::JsonSchema, Deserialize)]
pub struct NodeProcess {
    pub pid: i32,
    pub ppid: i32,
    pub comm: String,
    pub num_threads: u32,
    /// The process's cgroup path (v2, or the v1 `cpu` hierarchy's); empty if unknown.
    pub cgroup: String,
    /// `POD_NAMESPACE` from its start-up environment, where set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Its rank in a distributed job (`rank 1/2`), where its start-up environment names
    /// one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rank: Option<String>,
}

/// Groups processes into jobs ([`group_all_jobs`]); past [`MAX_JOBS`], the jobs with
/// the fewest threads are merged into [`OTHER_JOB`].
pub fn group_jobs(processes: &[NodeProcess]) -> BTreeMap<JobLabels, Vec<i32>> {
    let by_pid: BTreeMap<i32, &NodeProcess> = processes.iter().map(|p| (p.pid, p)).collect();
    bound_jobs(group_all_jobs(processes), &by_pid)
}

/// Groups processes into jobs: by cgroup where it names a job, else under the highest
/// ancestor that is not a boundary ([`is_job_boundary`]). Every job, unbounded (`node`
/// admits at most [`MAX_JOBS`] of them, and keeps those it admitted). Each job's pids
/// ascend.
pub fn group_all_jobs(processes: &[NodeProcess]) -> BTreeMap<JobLabels, Vec<i32>> {
    let by_pid: BTreeMap<i32, &NodeProcess> = processes.iter().map(|p| (p.pid, p)).collect();
    let mut jobs: BTreeMap<JobLabels, Vec<i32>> = BTreeMap::new();
    let mut namespaces: BTreeMap<String, String> = BTreeMap::new();
    for process in processes {
        if process.pid <= 2 || process.ppid == 2 || is_job_boundary(process.pid, &process.comm) {
            // Init, kernel threads and the boundaries themselves belong to no job.
            continue;
        }
        let mut labels = match job_from_cgroup(&process.cgroup) {
            Some(labels) => labels,
            None => {
                let root = tree_root(process, &by_pid);
                JobLabels {
                    job: format!("tree/{}-{}", root.pid, root.comm),
                    ..JobLabels::default()
                }
            }
        };
        if labels.pod.is_some()
            && let Some(namespace) = &process.namespace
        {
            namespaces
                .entry(labels.job.clone())
                .or_insert_with(|| namespace.clone());
        }
        labels.namespace = None;
        jobs.entry(labels).or_default().push(process.pid);
    }
    // A pod's namespace is the one any of its processes names.
    jobs.into_iter()
        .map(|(mut labels, mut pids)| {
            labels.namespace = namespaces.get(&labels.job).cloned();
            pids.sort_unstable();
            (labels, pids)
        })
        .collect()
}

/// The highest ancestor of `process` (itself included) whose parent is a boundary or
/// unknown.
fn tree_root<'a>(
    process: &'a NodeProcess,
    by_pid: &BTreeMap<i32, &'a NodeProcess>,
) -> &'a NodeProcess {
    let mut current = process;
    // A cycle cannot occur in a real tree; the bound keeps a torn scan from looping.
    for _ in 0..by_pid.len() {
        match by_pid.get(&current.ppid) {
            Some(parent) if !is_job_boundary(parent.pid, &parent.comm) && parent.ppid != 2 => {
                current = parent;
            }
            _ => break,
        }
    }
    current
}

fn bound_jobs(
    jobs: BTreeMap<JobLabels, Vec<i32>>,
    by_pid: &BTreeMap<i32, &NodeProcess>,
) -> BTreeMap<JobLabels, Vec<i32>> {
    if jobs.len() <= MAX_JOBS {
        return jobs;
    }
    let threads = |pids: &[i32]| -> u64 {
        pids.iter()
            .filter_map(|pid| by_pid.get(pid))
            .map(|p| u64::from(p.num_threads))
            .sum()
    };
    let mut ranked: Vec<(JobLabels, Vec<i32>)> = jobs.into_iter().collect();
    // Most threads first; ties by name, so the choice is stable from sample to sample.
    ranked.sort_by(|a, b| {
        threads(&b.1)
            .cmp(&threads(&a.1))
            .then_with(|| a.0.cmp(&b.0))
    });
    let rest = ranked.split_off(MAX_JOBS - 1);
    let mut bounded: BTreeMap<JobLabels, Vec<i32>> = ranked.into_iter().collect();
    let mut other: Vec<i32> = rest.into_iter().flat_map(|(_, pids)| pids).collect();
    other.sort_unstable();
    bounded.insert(JobLabels::other(), other);
    bounded
}

#[cfg(test)]
mod tests;
