//! Node-level judgement (`tfwatch node`): jobs that together oversubscribe the node,
//! each one's share, the pools behind it, and which jobs take the CPUs the others wait
//! for. Each job's own findings come from its own watch; this judges them side by side.

use crate::model::jobs::JobLabels;
use crate::model::{Finding, FindingKind, Severity};
use crate::timeline::Timeline;

/// Consecutive intervals the node must be oversubscribed before it is a finding.
pub const NODE_WINDOW_INTERVALS: usize = 3;

/// Runnable threads over the node's CPUs by more than this many are oversubscription.
pub const NODE_MARGIN_THREADS: f64 = 0.5;

/// One job over the last interval, from its timeline.
#[derive(Debug, Clone, PartialEq)]
pub struct JobLoad {
    pub labels: JobLabels,
    /// Threads wanting a CPU on average: (run + run-queue wait) / interval.
    pub runnable: f64,
    /// CPUs used: run time / interval.
    pub cpus_used: f64,
    /// CPUs' worth of run-queue wait: wait time / interval.
    pub waiting: f64,
    /// The job's own CPU quota, where its cgroup sets one.
    pub quota: Option<f64>,
    /// Pools seen in its threads: "OpenMP × 63".
    pub pools: Vec<String>,
    pub pids: Vec<i32>,
}

/// The load of a job over the newest interval of its timeline; `None` before it has
/// two samples.
pub fn job_load(labels: &JobLabels, timeline: &Timeline) -> Option<JobLoad> {
    let summary = timeline.latest_summary()?;
    if summary.interval_seconds <= 0.0 {
        return None;
    }
    let interval = summary.interval_seconds;
    let run: f64 = summary.processes.iter().map(|p| p.delta_run_seconds).sum();
    let wait: f64 = summary.processes.iter().map(|p| p.delta_wait_seconds).sum();
    let latest = timeline.latest();
    let mut pools: Vec<String> = Vec::new();
    for process in latest.iter().flat_map(|s| &s.processes) {
        for pool in process.audit.iter().flat_map(|a| &a.observed_pools) {
            let line = format!(
                "{} × {} threads (pid {})",
                pool.runtime, pool.threads, process.pid
            );
            if pools.len() < 8 {
                pools.push(line);
            }
        }
    }
    Some(JobLoad {
        labels: labels.clone(),
        runnable: (run + wait) / interval,
        cpus_used: run / interval,
        waiting: wait / interval,
        quota: latest.and_then(|s| s.cpus.quota),
        pools,
        pids: summary.processes.iter().map(|p| p.pid).collect(),
    })
}

/// Node oversubscription: the jobs' runnable threads together above the node's CPUs
/// (by [`NODE_MARGIN_THREADS`]) in each of the last [`NODE_WINDOW_INTERVALS`]
/// intervals (`history`, oldest first, one list of job loads per interval). A warning:
/// the waits were observed. The evidence gives each job's share, its quota and pools,
/// and names the jobs that wait and the jobs that take the CPUs.
pub fn node_oversubscription(history: &[Vec<JobLoad>], node_cpus: f64) -> Option<Finding> {
    if history.len() < NODE_WINDOW_INTERVALS || node_cpus <= 0.0 {
        return None;
    }
    let recent = &history[history.len() - NODE_WINDOW_INTERVALS..];
    let total = |loads: &[JobLoad]| loads.iter().map(|l| l.runnable).sum::<f64>();
    if !recent
        .iter()
        .all(|loads| total(loads) > node_cpus + NODE_MARGIN_THREADS)
    {
        return None;
    }
    let newest = recent.last()?;
    let runnable = total(newest);
    let mut jobs: Vec<&JobLoad> = newest.iter().filter(|l| l.runnable > 0.05).collect();
    jobs.sort_by(|a, b| b.runnable.total_cmp(&a.runnable));
    let mut finding = Finding::new(
        FindingKind::NodeOversubscription,
        Severity::Warning,
        format!(
            "{} jobs want {runnable:.1} CPUs of the node's {node_cpus:.0} (for {} intervals)",
            jobs.len(),
            NODE_WINDOW_INTERVALS
        ),
    );
    for job in &jobs {
        let share = 100.0 * job.runnable / runnable.max(f64::MIN_POSITIVE);
        let quota = job
            .quota
            .map_or_else(|| "no quota".to_string(), |q| format!("quota {q:.1} CPUs"));
        let pools = if job.pools.is_empty() {
            String::new()
        } else {
            format!("; pools: {}", job.pools.join(", "))
        };
        finding.evidence.push(format!(
            "job {}: {:.1} runnable ({share:.0} % of the demand), {:.2} CPUs used, {:.2} CPUs of run-queue wait, {quota}{pools}",
            job.labels.job, job.runnable, job.cpus_used, job.waiting
        ));
        finding.pids.extend(job.pids.iter().copied());
    }
    let waiters: Vec<&str> = jobs
        .iter()
        .filter(|j| j.waiting > j.cpus_used.max(0.05))
        .map(|j| j.labels.job.as_str())
        .collect();
    let takers: Vec<&str> = jobs
        .iter()
        .filter(|j| j.cpus_used >= node_cpus * 0.25)
        .map(|j| j.labels.job.as_str())
        .collect();
    if !waiters.is_empty() && !takers.is_empty() {
        finding.evidence.push(format!(
            "{} wait for CPUs that {} take",
            waiters.join(", "),
            takers.join(", ")
        ));
    }
    finding.metrics.insert("runnable_threads".into(), runnable);
    finding.metrics.insert("node_cpus".into(), node_cpus);
    finding.metrics.insert("jobs".into(), jobs.len() as f64);
    finding.remedy = "size each job's pools to its share of the node (OMP_NUM_THREADS, torch.set_num_threads, intra/inter-op threads), give each pod a CPU limit that matches, or run fewer jobs per node".into();
    finding.pids.sort_unstable();
    Some(finding)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(job: &str, runnable: f64, used: f64) -> JobLoad {
        JobLoad {
            labels: JobLabels {
                job: job.to_string(),
                ..JobLabels::default()
            },
            runnable,
            cpus_used: used,
            waiting: runnable - used,
            quota: None,
            pools: vec![],
            pids: vec![1],
        }
    }

    #[test]
    fn jobs_that_together_want_more_than_the_node_are_a_warning() {
        let interval = vec![load("tree/10-a", 6.0, 1.5), load("tree/20-b", 1.0, 0.4)];
        let history = vec![interval.clone(), interval.clone(), interval];
        let finding = node_oversubscription(&history, 2.0).expect("oversubscribed");
        assert_eq!(finding.severity, Severity::Warning);
        assert_eq!(finding.metrics["runnable_threads"], 7.0);
        assert!(
            finding.evidence[0].starts_with("job tree/10-a: 6.0 runnable (86 %"),
            "{:?}",
            finding.evidence
        );
        assert!(
            finding
                .evidence
                .iter()
                .any(|e| e == "tree/10-a, tree/20-b wait for CPUs that tree/10-a take"),
            "{:?}",
            finding.evidence
        );
    }

    #[test]
    fn a_short_burst_or_a_node_with_room_is_no_finding() {
        let over = vec![load("a", 6.0, 1.5)];
        let fits = vec![load("a", 1.0, 1.0)];
        assert!(node_oversubscription(&[over.clone(), over.clone()], 2.0).is_none());
        assert!(node_oversubscription(&[over.clone(), fits, over.clone()], 2.0).is_none());
        assert!(node_oversubscription(&vec![vec![load("a", 2.4, 2.0)]; 3], 2.0).is_none());
    }
}
