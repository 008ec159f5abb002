//! Findings over the runtime audits of a whole tree: duplicate runtimes in one process,
//! pools sized from the host inside a smaller quota, and processes × pools beyond the
//! usable CPUs.
//!
//! These are predictions from `/proc/<pid>/maps` and `environ`, not observations: every
//! finding here is an `info` risk, worded as what the pools *would* do. When the
//! timeline shows the oversubscription itself (runnable threads above the usable CPUs),
//! the oversubscription detector carries the same explanation ([`pool_explanation`]) as
//! evidence and remedy of its own, observed, finding.

use std::borrow::Cow;
use std::collections::BTreeMap;

use crate::model::runtimes::{observed_family_of_pool, pool_variable};
use crate::model::{
    CpuBudget, Finding, FindingKind, PoolPrediction, ProcessSample, RuntimeAudit, Sample, Severity,
};

/// Processes listed one per evidence line before the rest are counted.
const EVIDENCE_PROCESSES: usize = 10;

/// Confidence when a prediction had to assume the variables unset.
const CONFIDENCE_ENV_UNREAD: f64 = 0.6;

/// Tree-level findings from the audits in a sample: duplicate runtimes, pools sized from
/// the host, processes × pool threads beyond the usable CPUs. Processes without an audit
/// are skipped; a healthy tree gives none.
pub fn audit_findings(sample: &Sample) -> Vec<Finding> {
    let audited: Vec<(&ProcessSample, &RuntimeAudit)> = sample
        .processes
        .iter()
        .filter_map(|p| p.audit.as_ref().map(|audit| (p, audit)))
        .collect();
    let mut findings = duplicate_runtimes(&audited);
    if let Some(usable) = usable_cpus(&sample.cpus) {
        let observed: Vec<(&ProcessSample, Cow<'_, RuntimeAudit>)> = audited
            .iter()
            .map(|(process, audit)| (*process, with_observed_pools(audit)))
            .collect();
        let observed: Vec<(&ProcessSample, &RuntimeAudit)> = observed
            .iter()
            .map(|(process, audit)| (*process, audit.as_ref()))
            .collect();
        findings.extend(pools_sized_from_host(&observed, &sample.cpus, usable));
        findings.extend(pool_oversubscription(&observed, &sample.cpus, usable));
    }
    findings
}

/// Observed beats predicted: where threads of a runtime's family were seen (named
/// `tf_*`, `pt_*`, `omp_*`), the largest predicted pool of that family takes the observed
/// count and the family's other pools count nothing more (the threads seen are all of
/// them). Families not seen keep their predictions.
pub fn with_observed_pools(audit: &RuntimeAudit) -> Cow<'_, RuntimeAudit> {
    let seen = |family: &str| {
        audit
            .observed_pools
            .iter()
            .find(|o| o.runtime == family && o.threads > 0)
    };
    if !audit
        .pools
        .iter()
        .any(|p| observed_family_of_pool(&p.runtime).is_some_and(|f| seen(f).is_some()))
    {
        return Cow::Borrowed(audit);
    }
    let mut audit = audit.clone();
    let mut done: Vec<&'static str> = Vec::new();
    let predicted = audit.pools.clone();
    for index in 0..audit.pools.len() {
        let Some(family) = observed_family_of_pool(&predicted[index].runtime) else {
            continue;
        };
        let Some(observed) = seen(family).cloned() else {
            continue;
        };
        let largest = predicted
            .iter()
            .enumerate()
            .filter(|(_, p)| observed_family_of_pool(&p.runtime) == Some(family))
            .max_by_key(|(i, p)| (p.threads, std::cmp::Reverse(*i)))
            .map(|(i, _)| i);
        let pool = &mut audit.pools[index];
        if Some(index) == largest && !done.contains(&family) {
            done.push(family);
            pool.reason = format!(
                "observed {} {family} thread(s), {} ran in the last interval (predicted {}: {})",
                observed.threads, observed.running, pool.threads, pool.reason
            );
            pool.threads = observed.threads;
        } else {
            pool.reason = format!("observed with the other {family} threads");
            pool.threads = 0;
        }
    }
    Cow::Owned(audit)
}

/// The usable CPUs; `None` when the budget was not read.
fn usable_cpus(cpus: &CpuBudget) -> Option<f64> {
    if cpus.usable > 0.0 {
        Some(cpus.usable)
    } else if cpus.online > 0 {
        Some(f64::from(cpus.online))
    } else {
        None
    }
}

/// `4.0` → `4`, `2.5` → `2.5`.
fn format_cpus(cpus: f64) -> String {
    if cpus.fract() == 0.0 {
        format!("{cpus:.0}")
    } else {
        format!("{cpus:.2}")
            .trim_end_matches('0')
            .trim_end_matches('.')
            .to_string()
    }
}

/// Threads each of `processes` may start to fit in `usable` CPUs, at least 1.
fn threads_per_process(usable: f64, processes: usize) -> u32 {
    let per = (usable / processes.max(1) as f64).floor();
    if per < 1.0 { 1 } else { per as u32 }
}

fn budget_line(cpus: &CpuBudget, usable: f64) -> String {
    let mut parts = vec![format!("online {}", cpus.online)];
    if let Some(affinity) = cpus.affinity {
        match &cpus.affinity_list {
            Some(list) => parts.push(format!("affinity {affinity} ({list})")),
            None => parts.push(format!("affinity {affinity}")),
        }
    }
    if let Some(quota) = cpus.quota {
        match &cpus.quota_source {
            Some(source) => parts.push(format!("quota {} ({source})", format_cpus(quota))),
            None => parts.push(format!("quota {}", format_cpus(quota))),
        }
    }
    format!(
        "usable CPUs: {} ({})",
        format_cpus(usable),
        parts.join(", ")
    )
}

/// "A", "A and B", "A, B and C".
fn join_and(items: &[String]) -> String {
    match items {
        [] => String::new(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} and {last}", init.join(", ")),
    }
}

fn pid_list(pids: &[i32]) -> String {
    pids.iter()
        .map(i32::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// `set OMP_NUM_THREADS=4 and OPENBLAS_NUM_THREADS=4`.
fn set_variables(variables: &[&str], threads: u32) -> String {
    let assignments: Vec<String> = variables.iter().map(|v| format!("{v}={threads}")).collect();
    format!("set {}", join_and(&assignments))
}

/// The variables sizing `pools`, each once, in order.
fn variables_of<'a>(pools: impl Iterator<Item = &'a PoolPrediction>) -> Vec<&'static str> {
    let mut variables = Vec::new();
    for variable in pools.filter_map(|p| pool_variable(&p.runtime)) {
        if !variables.contains(&variable) {
            variables.push(variable);
        }
    }
    variables
}

fn file_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// Two OpenMP runtimes (or two copies of one), or two copies of one BLAS, in a process.
/// Processes with the same libraries share one finding.
fn duplicate_runtimes(audited: &[(&ProcessSample, &RuntimeAudit)]) -> Vec<Finding> {
    // Key: the conflicting libraries; value: the processes and one of their audits.
    let mut groups: Vec<(Vec<String>, Vec<i32>, &RuntimeAudit)> = Vec::new();
    for (process, audit) in audited {
        let openmp: Vec<String> = audit
            .runtimes
            .iter()
            .filter(|r| r.family == "openmp")
            .map(|r| r.library.clone())
            .collect();
        let mut conflicting = if openmp.len() > 1 { openmp } else { Vec::new() };
        for runtime in audit.runtimes.iter().filter(|r| r.family == "blas") {
            let copies = audit
                .runtimes
                .iter()
                .filter(|other| other.name == runtime.name)
                .count();
            if copies > 1 {
                conflicting.push(runtime.library.clone());
            }
        }
        if conflicting.is_empty() {
            continue;
        }
        match groups.iter_mut().find(|(key, _, _)| *key == conflicting) {
            Some((_, pids, _)) => pids.push(process.pid),
            None => groups.push((conflicting, vec![process.pid], audit)),
        }
    }
    groups
        .into_iter()
        .map(|(libraries, pids, audit)| duplicate_finding(&libraries, pids, audit))
        .collect()
}

fn duplicate_finding(libraries: &[String], pids: Vec<i32>, audit: &RuntimeAudit) -> Finding {
    let runtimes: Vec<_> = audit
        .runtimes
        .iter()
        .filter(|r| libraries.contains(&r.library))
        .collect();
    let openmp: Vec<_> = runtimes.iter().filter(|r| r.family == "openmp").collect();
    let blas: Vec<_> = runtimes.iter().filter(|r| r.family == "blas").collect();
    let names = |list: &[&&crate::model::LoadedRuntime]| {
        join_and(
            &list
                .iter()
                .map(|r| format!("{} ({})", r.name, file_name(&r.library)))
                .collect::<Vec<_>>(),
        )
    };
    let mut clauses = Vec::new();
    if openmp.len() > 1 {
        clauses.push(format!(
            "{} OpenMP runtimes: {}",
            openmp.len(),
            names(&openmp)
        ));
    }
    if !blas.is_empty() {
        clauses.push(format!(
            "{} copies of {}: {}",
            blas.len(),
            blas[0].name,
            names(&blas)
        ));
    }
    let place = if pids.len() == 1 {
        "one process".to_string()
    } else {
        format!("each of {} processes", pids.len())
    };
    let mut finding = Finding::new(
        FindingKind::DuplicateRuntimes,
        Severity::Info,
        format!("{} loaded in {place}", clauses.join("; ")),
    );
    finding.confidence = 0.9;
    finding
        .evidence
        .push(format!("processes: {}", pid_list(&pids)));
    for runtime in &runtimes {
        let version = runtime
            .version
            .as_deref()
            .map(|v| format!(" {v}"))
            .unwrap_or_default();
        finding.evidence.push(format!(
            "{}{version} from {}",
            runtime.name, runtime.library
        ));
    }
    let copy_pools: Vec<&PoolPrediction> = audit
        .pools
        .iter()
        .filter(|p| {
            runtimes.iter().any(|r| {
                p.runtime == r.name || p.runtime.ends_with(&format!("({})", file_name(&r.library)))
            })
        })
        .collect();
    if !copy_pools.is_empty() {
        let sizes: Vec<String> = copy_pools
            .iter()
            .map(|p| format!("{} {} threads", p.runtime, p.threads))
            .collect();
        finding.evidence.push(format!(
            "each copy starts its own pool and spins on its own: {}",
            join_and(&sizes)
        ));
    }
    if let Some(value) = audit.env.get("KMP_DUPLICATE_LIB_OK") {
        finding.evidence.push(format!(
            "KMP_DUPLICATE_LIB_OK={value} is set: Intel and LLVM OpenMP's check for a second copy is silenced"
        ));
    }
    finding
        .metrics
        .insert("openmp_runtimes".to_string(), openmp.len() as f64);
    finding
        .metrics
        .insert("blas_copies".to_string(), blas.len() as f64);
    finding
        .metrics
        .insert("processes".to_string(), pids.len() as f64);
    finding.metrics.insert(
        "duplicate_pool_threads".to_string(),
        copy_pools.iter().map(|p| f64::from(p.threads)).sum(),
    );
    // Pip wheels each bundle their own copy (`numpy.libs/`, `scipy.libs/`, `torch/lib/`):
    // installing from pip again cannot make them share one.
    let all_from_wheels = runtimes
        .iter()
        .all(|r| r.library.contains("/site-packages/") || r.library.contains("/dist-packages/"));
    let mut remedy = String::from(if all_from_wheels {
        "every copy comes from a pip wheel that bundles its own (numpy.libs, scipy.libs, \
         torch/lib), so reinstalling from pip cannot merge them: cap each copy's pool so \
         together they fit the usable CPUs, or take the packages from one channel that \
         shares one runtime (conda-forge)"
    } else {
        "make every package use one OpenMP runtime and one BLAS: install numpy, scipy and \
         torch from the same channel (all pip wheels or all conda packages) so they share one \
         copy"
    });
    let has_mkl_or_intel = audit
        .runtimes
        .iter()
        .any(|r| r.name == "MKL" || r.name == "Intel OpenMP");
    let has_gnu = audit.runtimes.iter().any(|r| r.name == "GNU OpenMP");
    if has_mkl_or_intel && has_gnu {
        remedy.push_str("; or set MKL_THREADING_LAYER=GNU so MKL runs on GNU OpenMP's pool");
    }
    if !copy_pools.is_empty() {
        let variables = variables_of(copy_pools.iter().copied());
        remedy.push_str(&format!(
            "; until then cap the pools with {} so the copies together fit the usable CPUs",
            join_and(
                &variables
                    .iter()
                    .map(|v| (*v).to_string())
                    .collect::<Vec<_>>()
            )
        ));
    }
    finding.remedy = remedy;
    finding.pids = pids;
    finding
}

/// A pool left to its default and sized from more CPUs than the budget allows.
fn sized_from_host(pool: &PoolPrediction, usable: f64) -> bool {
    pool.variable.is_none() && f64::from(pool.threads) > usable
}

fn pools_sized_from_host(
    audited: &[(&ProcessSample, &RuntimeAudit)],
    cpus: &CpuBudget,
    usable: f64,
) -> Vec<Finding> {
    // (pool runtime, threads) → pids and the reason of the first.
    let mut groups: BTreeMap<(String, u32), (Vec<i32>, String)> = BTreeMap::new();
    let mut env_unread = false;
    for (process, audit) in audited {
        for pool in audit.pools.iter().filter(|p| sized_from_host(p, usable)) {
            env_unread |= audit.env_unavailable.is_some();
            groups
                .entry((pool.runtime.clone(), pool.threads))
                .or_insert_with(|| (Vec::new(), pool.reason.clone()))
                .0
                .push(process.pid);
        }
    }
    if groups.is_empty() {
        return Vec::new();
    }
    let largest = groups
        .keys()
        .map(|(_, threads)| *threads)
        .max()
        .unwrap_or(0);
    let host = match cpus.affinity {
        Some(affinity) if affinity < cpus.online => format!("{affinity} CPUs of the affinity mask"),
        _ => format!("{} host CPUs", cpus.online.max(largest)),
    };
    let limit = match cpus.quota {
        Some(quota) if quota <= usable => {
            let quota = format_cpus(quota);
            let article = if quota.starts_with('8') || quota == "11" || quota == "18" {
                "an"
            } else {
                "a"
            };
            format!("{article} {quota}-CPU quota")
        }
        _ => format!("{} usable CPUs", format_cpus(usable)),
    };
    let mut finding = Finding::new(
        FindingKind::PoolSizedFromHost,
        Severity::Info,
        format!("pools would size from {host} inside {limit}"),
    );
    finding.confidence = if env_unread {
        CONFIDENCE_ENV_UNREAD
    } else {
        0.9
    };
    finding.evidence.push(budget_line(cpus, usable));
    let mut pids: Vec<i32> = Vec::new();
    for ((runtime, threads), (group_pids, reason)) in &groups {
        finding.evidence.push(format!(
            "{runtime} pool of {threads} threads in {} {}: {reason}",
            if group_pids.len() == 1 { "pid" } else { "pids" },
            pid_list(group_pids)
        ));
        for pid in group_pids {
            if !pids.contains(pid) {
                pids.push(*pid);
            }
        }
    }
    if env_unread {
        finding.evidence.push(
            "some environments could not be read: their pools assume the variables unset"
                .to_string(),
        );
    }
    let per_process = threads_per_process(usable, 1);
    let variables: Vec<&str> = {
        let mut variables = Vec::new();
        for (runtime, _) in groups.keys() {
            if let Some(variable) = pool_variable(runtime)
                && !variables.contains(&variable)
            {
                variables.push(variable);
            }
        }
        variables
    };
    finding.remedy = format!(
        "{} (the usable CPUs) in the job's environment before the libraries load, \
         and divide them between processes that compute at the same time",
        set_variables(&variables, per_process)
    );
    finding.metrics.insert("usable_cpus".to_string(), usable);
    finding.metrics.insert(
        "host_cpus".to_string(),
        f64::from(cpus.affinity.unwrap_or(cpus.online)),
    );
    if let Some(quota) = cpus.quota {
        finding.metrics.insert("quota_cpus".to_string(), quota);
    }
    finding
        .metrics
        .insert("pool_threads_max".to_string(), f64::from(largest));
    finding.metrics.insert(
        "pools".to_string(),
        groups.values().map(|(p, _)| p.len()).sum::<usize>() as f64,
    );
    finding
        .metrics
        .insert("processes".to_string(), pids.len() as f64);
    finding.pids = pids;
    vec![finding]
}

fn pool_oversubscription(
    audited: &[(&ProcessSample, &RuntimeAudit)],
    cpus: &CpuBudget,
    usable: f64,
) -> Vec<Finding> {
    // Each process's largest pool: pools of one process mostly share its threads
    // (PyTorch's intra-op pool is its OpenMP pool), so the largest stands for them.
    let largest: Vec<(&ProcessSample, &RuntimeAudit, &PoolPrediction)> = audited
        .iter()
        .filter_map(|(process, audit)| {
            let mut best: Option<&PoolPrediction> = None;
            for pool in &audit.pools {
                if best.is_none_or(|b| pool.threads > b.threads) {
                    best = Some(pool);
                }
            }
            best.map(|pool| (*process, *audit, pool))
        })
        .collect();
    let processes = largest.len();
    let total: u64 = largest.iter().map(|(_, _, p)| u64::from(p.threads)).sum();
    if processes == 0 || total as f64 <= usable {
        return Vec::new();
    }
    // One process whose pool is too big only because it sized itself from the host is
    // the pool-sized-from-host finding already.
    if let [(_, _, pool)] = largest.as_slice()
        && sized_from_host(pool, usable)
    {
        return Vec::new();
    }
    let max = largest.iter().map(|(_, _, p)| p.threads).max().unwrap_or(0);
    let min = largest.iter().map(|(_, _, p)| p.threads).min().unwrap_or(0);
    let per_pool = if min == max {
        format!("{max} pool threads")
    } else {
        format!("up to {max} pool threads")
    };
    let noun = if processes == 1 {
        "process"
    } else {
        "processes"
    };
    let usable_text = format_cpus(usable);
    let mut finding = Finding::new(
        FindingKind::PoolOversubscription,
        Severity::Info,
        format!(
            "{processes} {noun} × {per_pool} would start up to {total} threads on {usable_text} usable CPUs"
        ),
    );
    let env_unread = largest.iter().any(|(_, a, _)| a.env_unavailable.is_some());
    finding.confidence = if env_unread {
        CONFIDENCE_ENV_UNREAD
    } else {
        0.8
    };
    finding.evidence.push(budget_line(cpus, usable));
    for (process, audit, pool) in largest.iter().take(EVIDENCE_PROCESSES) {
        let unread = if audit.env_unavailable.is_some() {
            " (environ unreadable: variables assumed unset)"
        } else {
            ""
        };
        finding.evidence.push(format!(
            "pid {} ({}): largest pool {}, {} threads{unread}: {}",
            process.pid, process.comm, pool.runtime, pool.threads, pool.reason
        ));
    }
    if processes > EVIDENCE_PROCESSES {
        finding.evidence.push(format!(
            "… and {} more processes",
            processes - EVIDENCE_PROCESSES
        ));
    }
    let per_process = threads_per_process(usable, processes);
    let variables = variables_of(largest.iter().flat_map(|(_, audit, _)| audit.pools.iter()));
    let mut remedy = format!(
        "give each process {usable_text} usable CPUs / {processes} {noun} = {per_process} \
         thread{}: {} in every process's environment before the libraries load",
        if per_process == 1 { "" } else { "s" },
        set_variables(&variables, per_process)
    );
    if processes as f64 > usable {
        remedy.push_str(&format!(
            "; there are more processes than usable CPUs, so also run fewer at once \
             (e.g. at most {} data-loader or pool workers)",
            threads_per_process(usable, 1)
        ));
    }
    finding.remedy = remedy;
    finding
        .metrics
        .insert("processes".to_string(), processes as f64);
    finding
        .metrics
        .insert("pool_threads_max".to_string(), f64::from(max));
    finding
        .metrics
        .insert("pool_threads_total".to_string(), total as f64);
    finding.metrics.insert("usable_cpus".to_string(), usable);
    finding.metrics.insert(
        "pool_threads_per_usable_cpu".to_string(),
        total as f64 / usable,
    );
    finding.pids = largest.iter().map(|(p, _, _)| p.pid).collect();
    vec![finding]
}

/// The audit's explanation of an observed oversubscription: the largest pool of each of
/// `pids` (every audited process when none of them has an audit) and the variables to
/// set, sized to the usable CPUs divided by those processes. `None` without audits.
#[derive(Debug, Clone, PartialEq)]
pub struct PoolExplanation {
    /// One line per process (at most `EVIDENCE_PROCESSES`).
    pub evidence: Vec<String>,
    pub remedy: String,
}

pub fn pool_explanation(sample: &Sample, pids: &[i32]) -> Option<PoolExplanation> {
    let with_pools = |p: &&ProcessSample| p.audit.as_ref().is_some_and(|a| !a.pools.is_empty());
    let mut chosen: Vec<&ProcessSample> = sample
        .processes
        .iter()
        .filter(|p| pids.contains(&p.pid))
        .filter(with_pools)
        .collect();
    if chosen.is_empty() {
        chosen = sample.processes.iter().filter(with_pools).collect();
    }
    if chosen.is_empty() {
        return None;
    }
    let usable = usable_cpus(&sample.cpus)?;
    let mut evidence = Vec::new();
    let mut variables = Vec::new();
    for process in &chosen {
        let Some(audit) = process.audit.as_ref() else {
            continue;
        };
        let audit = with_observed_pools(audit);
        for variable in variables_of(audit.pools.iter()) {
            if !variables.contains(&variable) {
                variables.push(variable);
            }
        }
        let Some(pool) = audit.pools.iter().max_by_key(|pool| pool.threads) else {
            continue;
        };
        if evidence.len() < EVIDENCE_PROCESSES {
            evidence.push(format!(
                "audit: pid {} ({}): largest pool {}, {} threads: {}",
                process.pid, process.comm, pool.runtime, pool.threads, pool.reason
            ));
        }
    }
    if chosen.len() > EVIDENCE_PROCESSES {
        evidence.push(format!(
            "audit: … and {} more processes",
            chosen.len() - EVIDENCE_PROCESSES
        ));
    }
    if variables.is_empty() {
        variables.push("OMP_NUM_THREADS");
    }
    let processes = chosen.len();
    let per_process = threads_per_process(usable, processes);
    let noun = if processes == 1 {
        "process"
    } else {
        "processes"
    };
    let remedy = format!(
        "give each busy process {} usable CPUs / {processes} {noun} = {per_process} \
         thread{}: {} in every process's environment before the libraries load \
         (torch.set_num_threads / TF_NUM_INTRAOP_THREADS likewise), or run fewer processes",
        format_cpus(usable),
        if per_process == 1 { "" } else { "s" },
        set_variables(&variables, per_process)
    );
    Some(PoolExplanation { evidence, remedy })
}

#[cfg(test)]
mod tests;
