//! Tests of the tree-level audit findings on recorded and hand-written maps.

use super::*;
use crate::source::proc::audit::audit_process;

const TORCH_NUMPY: &str = include_str!("../../../fixtures/audit/torch-numpy.maps");
const PYTHON_LIBGOMP: &str = include_str!("../../../fixtures/audit/python-libgomp.maps");

fn budget(online: u32, affinity: Option<u32>, quota: Option<f64>) -> CpuBudget {
    let mut usable = f64::from(affinity.unwrap_or(online).min(online));
    if let Some(q) = quota {
        usable = usable.min(q);
    }
    CpuBudget {
        online,
        affinity,
        affinity_list: affinity.map(|n| format!("0-{}", n - 1)),
        quota,
        quota_source: quota.map(|q| {
            format!(
                "cgroup v1 cpu.cfs_quota_us={} cpu.cfs_period_us=100000",
                q * 100_000.0
            )
        }),
        usable: usable.max(1.0),
        throttling: None,
    }
}

fn process(pid: i32, maps: &str, environ: Option<&[u8]>, cpus: &CpuBudget) -> ProcessSample {
    ProcessSample {
        pid,
        ppid: 1,
        comm: "python3".to_string(),
        audit: Some(audit_process(maps, environ, None, cpus)),
        ..ProcessSample::default()
    }
}

fn sample(cpus: CpuBudget, processes: Vec<ProcessSample>) -> Sample {
    Sample {
        root_pid: processes.first().map_or(0, |p| p.pid),
        processes,
        cpus,
        ..Sample::default()
    }
}

fn kinds(findings: &[Finding]) -> Vec<FindingKind> {
    findings.iter().map(|f| f.kind).collect()
}

#[test]
fn one_process_sized_to_the_budget_is_fine() {
    let cpus = budget(8, Some(8), Some(4.0));
    let maps = format!(
        "{PYTHON_LIBGOMP}\n7f00-7f01 r-xp 00000000 08:01 9 /venv/numpy.libs/libopenblas64_p-r0-0cf96a72.3.23.dev.so\n"
    );
    let s = sample(
        cpus.clone(),
        vec![process(100, &maps, Some(b"OMP_NUM_THREADS=4\0"), &cpus)],
    );
    assert_eq!(audit_findings(&s), Vec::new());
}

#[test]
fn processes_without_audit_are_skipped() {
    let cpus = budget(4, None, None);
    let mut p = process(1, PYTHON_LIBGOMP, Some(b""), &cpus);
    p.audit = None;
    assert!(audit_findings(&sample(cpus, vec![p])).is_empty());
}

#[test]
fn pools_from_host_inside_quota() {
    let cpus = budget(252, Some(252), Some(4.0));
    let s = sample(
        cpus.clone(),
        vec![process(100, PYTHON_LIBGOMP, Some(b"PATH=/bin\0"), &cpus)],
    );
    let findings = audit_findings(&s);
    assert_eq!(kinds(&findings), [FindingKind::PoolSizedFromHost]);
    let f = &findings[0];
    assert_eq!(
        f.summary,
        "pools would size from 252 host CPUs inside a 4-CPU quota"
    );
    assert_eq!(f.severity, Severity::Info);
    assert_eq!(
        f.evidence[0],
        "usable CPUs: 4 (online 252, affinity 252 (0-251), quota 4 \
         (cgroup v1 cpu.cfs_quota_us=400000 cpu.cfs_period_us=100000))"
    );
    assert!(
        f.evidence[1]
            .starts_with("GNU OpenMP pool of 252 threads in pid 100: OMP_NUM_THREADS unset"),
        "{}",
        f.evidence[1]
    );
    assert!(
        f.remedy
            .starts_with("set OMP_NUM_THREADS=4 (the usable CPUs)"),
        "{}",
        f.remedy
    );
    assert_eq!(f.metrics["usable_cpus"], 4.0);
    assert_eq!(f.metrics["host_cpus"], 252.0);
    assert_eq!(f.metrics["pool_threads_max"], 252.0);
    assert_eq!(f.pids, [100]);
}

#[test]
fn processes_times_pools_beyond_usable() {
    // Four workers with OMP_NUM_THREADS=4 on 4 CPUs: 16 runnable threads.
    let cpus = budget(4, Some(4), None);
    let environ: &[u8] = b"OMP_NUM_THREADS=4\0";
    let s = sample(
        cpus.clone(),
        (100..104)
            .map(|pid| process(pid, PYTHON_LIBGOMP, Some(environ), &cpus))
            .collect(),
    );
    let findings = audit_findings(&s);
    assert_eq!(kinds(&findings), [FindingKind::PoolOversubscription]);
    let f = &findings[0];
    assert_eq!(
        f.summary,
        "4 processes × 4 pool threads would start up to 16 threads on 4 usable CPUs"
    );
    assert_eq!(
        f.remedy,
        "give each process 4 usable CPUs / 4 processes = 1 thread: set OMP_NUM_THREADS=1 \
         in every process's environment before the libraries load"
    );
    assert_eq!(f.metrics["pool_threads_total"], 16.0);
    assert_eq!(f.metrics["pool_threads_per_usable_cpu"], 4.0);
    assert_eq!(f.pids, [100, 101, 102, 103]);
    assert_eq!(f.evidence.len(), 5);
    assert!(
        f.evidence[1].starts_with(
            "pid 100 (python3): largest pool GNU OpenMP, 4 threads: OMP_NUM_THREADS=4"
        )
    );
}

#[test]
fn torch_and_numpy_tree_in_a_quota() {
    // A torch job with three data-loader workers, 64-CPU host, 8-CPU quota.
    let cpus = budget(64, Some(64), Some(8.0));
    let s = sample(
        cpus.clone(),
        (200..204)
            .map(|pid| process(pid, TORCH_NUMPY, Some(b"LANG=C\0"), &cpus))
            .collect(),
    );
    let findings = audit_findings(&s);
    assert_eq!(
        kinds(&findings),
        [
            FindingKind::DuplicateRuntimes,
            FindingKind::PoolSizedFromHost,
            FindingKind::PoolOversubscription
        ]
    );
    let dup = &findings[0];
    assert_eq!(
        dup.summary,
        "2 OpenMP runtimes: GNU OpenMP (libgomp.so.1.0.0) and GNU OpenMP \
         (libgomp-a34b3233.so.1) loaded in each of 4 processes"
    );
    assert_eq!(dup.pids, [200, 201, 202, 203]);
    assert!(
        dup.evidence
            .iter()
            .any(|e| e.contains("torch/lib/libgomp-a34b3233.so.1"))
    );
    assert!(dup.remedy.contains("same channel"), "{}", dup.remedy);
    assert_eq!(dup.metrics["openmp_runtimes"], 2.0);
    assert_eq!(dup.metrics["duplicate_pool_threads"], 128.0);

    let host = &findings[1];
    assert_eq!(
        host.summary,
        "pools would size from 64 host CPUs inside an 8-CPU quota"
    );
    assert!(
        host.remedy
            .starts_with("set OMP_NUM_THREADS=8 and OPENBLAS_NUM_THREADS=8 (the usable CPUs)"),
        "{}",
        host.remedy
    );

    let over = &findings[2];
    assert_eq!(
        over.summary,
        "4 processes × 64 pool threads would start up to 256 threads on 8 usable CPUs"
    );
    assert!(
        over.remedy
            .contains("= 2 threads: set OMP_NUM_THREADS=2 and OPENBLAS_NUM_THREADS=2"),
        "{}",
        over.remedy
    );
}

#[test]
fn intel_and_gnu_openmp_suggest_threading_layer() {
    let cpus = budget(8, Some(8), None);
    let maps = "7f00-7f01 r-xp 00000000 08:01 5 /opt/conda/lib/libmkl_rt.so.2\n\
                7f02-7f03 r-xp 00000000 08:01 6 /opt/conda/lib/libiomp5.so\n\
                7f04-7f05 r-xp 00000000 08:01 7 /usr/lib/x86_64-linux-gnu/libgomp.so.1.0.0\n";
    let s = sample(
        cpus.clone(),
        vec![process(
            7,
            maps,
            Some(b"OMP_NUM_THREADS=8\0KMP_DUPLICATE_LIB_OK=TRUE\0"),
            &cpus,
        )],
    );
    let findings = audit_findings(&s);
    assert_eq!(kinds(&findings), [FindingKind::DuplicateRuntimes]);
    let f = &findings[0];
    assert_eq!(
        f.summary,
        "2 OpenMP runtimes: Intel OpenMP (libiomp5.so) and GNU OpenMP (libgomp.so.1.0.0) loaded in one process"
    );
    assert!(f.remedy.contains("MKL_THREADING_LAYER=GNU"), "{}", f.remedy);
    assert!(
        f.evidence
            .iter()
            .any(|e| e.starts_with("KMP_DUPLICATE_LIB_OK=TRUE"))
    );
}

#[test]
fn two_openblas_copies_are_duplicates() {
    // numpy 1.x and scipy each bundle their own OpenBLAS; each starts its own pool.
    let cpus = budget(4, Some(4), None);
    let maps = "7f00-7f01 r-xp 00000000 08:01 5 /venv/site-packages/numpy.libs/libopenblas64_p-r0-0cf96a72.3.23.dev.so\n\
                7f02-7f03 r-xp 00000000 08:01 6 /venv/site-packages/scipy.libs/libscipy_openblas-c128ec02.so\n";
    let s = sample(
        cpus.clone(),
        vec![process(3, maps, Some(b"OPENBLAS_NUM_THREADS=2\0"), &cpus)],
    );
    let findings = audit_findings(&s);
    assert_eq!(kinds(&findings), [FindingKind::DuplicateRuntimes]);
    let f = &findings[0];
    assert_eq!(
        f.summary,
        "2 copies of OpenBLAS: OpenBLAS (libopenblas64_p-r0-0cf96a72.3.23.dev.so) and \
         OpenBLAS (libscipy_openblas-c128ec02.so) loaded in one process"
    );
    assert_eq!(f.metrics["blas_copies"], 2.0);
    assert_eq!(f.metrics["duplicate_pool_threads"], 4.0);
    assert!(
        f.remedy.contains("cap the pools with OPENBLAS_NUM_THREADS"),
        "{}",
        f.remedy
    );
    // Both copies come from pip wheels: installing from pip again cannot merge them.
    assert!(
        f.remedy.contains("reinstalling from pip cannot merge them")
            && !f.remedy.contains("same channel"),
        "{}",
        f.remedy
    );
}

#[test]
fn explicit_oversized_pool_in_one_process() {
    let cpus = budget(16, Some(16), Some(2.5));
    let s = sample(
        cpus.clone(),
        vec![process(
            9,
            PYTHON_LIBGOMP,
            Some(b"OMP_NUM_THREADS=16\0"),
            &cpus,
        )],
    );
    let findings = audit_findings(&s);
    assert_eq!(kinds(&findings), [FindingKind::PoolOversubscription]);
    assert_eq!(
        findings[0].summary,
        "1 process × 16 pool threads would start up to 16 threads on 2.5 usable CPUs"
    );
    assert!(
        findings[0]
            .remedy
            .contains("= 2 threads: set OMP_NUM_THREADS=2")
    );
}

#[test]
fn unreadable_environ_lowers_confidence() {
    let cpus = budget(32, Some(32), Some(4.0));
    let mut p = process(5, PYTHON_LIBGOMP, None, &cpus);
    p.audit = Some(audit_process(
        PYTHON_LIBGOMP,
        None,
        Some("permission denied"),
        &cpus,
    ));
    let findings = audit_findings(&sample(cpus, vec![p]));
    assert_eq!(kinds(&findings), [FindingKind::PoolSizedFromHost]);
    assert_eq!(findings[0].confidence, CONFIDENCE_ENV_UNREAD);
    assert!(
        findings[0]
            .evidence
            .iter()
            .any(|e| e.contains("could not be read"))
    );
}

#[test]
fn many_processes_evidence_is_bounded() {
    let cpus = budget(2, Some(2), None);
    let s = sample(
        cpus.clone(),
        (1..=14)
            .map(|pid| process(pid, PYTHON_LIBGOMP, Some(b""), &cpus))
            .collect(),
    );
    let findings = audit_findings(&s);
    assert_eq!(kinds(&findings), [FindingKind::PoolOversubscription]);
    let f = &findings[0];
    assert_eq!(
        f.evidence.last().map(String::as_str),
        Some("… and 4 more processes")
    );
    assert!(
        f.remedy.contains("more processes than usable CPUs"),
        "{}",
        f.remedy
    );
}

#[test]
fn formatting_helpers() {
    assert_eq!(format_cpus(4.0), "4");
    assert_eq!(format_cpus(2.5), "2.5");
    assert_eq!(format_cpus(0.333), "0.33");
    assert_eq!(threads_per_process(4.0, 3), 1);
    assert_eq!(threads_per_process(2.0, 5), 1);
    assert_eq!(threads_per_process(16.0, 3), 5);
}

/// numpy's and scipy's pip wheels each bundle an OpenBLAS: the maps of every
/// `import tensorflow` process (TensorFlow imports numpy, and often scipy).
const NUMPY_SCIPY_OPENBLAS: &str = "\
7f10-7f11 r-xp 00000000 08:01 11 /venv/site-packages/numpy.libs/libscipy_openblas64_-32a4b2a6.so
7f20-7f21 r-xp 00000000 08:01 12 /venv/site-packages/scipy.libs/libscipy_openblas-6cdc3b4a.so
";

#[test]
fn audit_findings_are_predictions_never_warnings() {
    // The worst tree the fixtures allow: duplicate runtimes, pools from the host inside a
    // quota, processes × pools beyond the CPUs. Every one of them is a risk (info).
    let cpus = budget(64, Some(64), Some(8.0));
    let mut processes: Vec<ProcessSample> = (200..204)
        .map(|pid| process(pid, TORCH_NUMPY, Some(b"LANG=C\0"), &cpus))
        .collect();
    let maps = format!("{PYTHON_LIBGOMP}\n{NUMPY_SCIPY_OPENBLAS}");
    processes.push(process(300, &maps, Some(b""), &cpus));
    let findings = audit_findings(&sample(cpus, processes));
    assert!(findings.len() >= 3, "{findings:#?}");
    for f in &findings {
        assert_eq!(f.severity, Severity::Info, "{}: {}", f.kind, f.summary);
        assert!(!f.summary.contains("runnable"), "{}", f.summary);
    }
}

#[test]
fn numpy_and_scipy_openblas_copies_are_an_info_risk() {
    let cpus = budget(2, Some(2), None);
    let maps = format!("{PYTHON_LIBGOMP}\n{NUMPY_SCIPY_OPENBLAS}");
    let s = sample(cpus.clone(), vec![process(7, &maps, Some(b""), &cpus)]);
    let findings = audit_findings(&s);
    let dup = findings
        .iter()
        .find(|f| f.kind == FindingKind::DuplicateRuntimes);
    let Some(dup) = dup else {
        panic!("no duplicate-runtimes finding in {findings:#?}");
    };
    assert_eq!(dup.severity, Severity::Info);
    assert!(
        dup.summary.starts_with("2 copies of OpenBLAS"),
        "{}",
        dup.summary
    );
}

#[test]
fn pool_explanation_names_the_busy_processes_pools_and_variables() {
    let cpus = budget(4, Some(4), None);
    let environ: &[u8] = b"OMP_NUM_THREADS=4\0";
    let s = sample(
        cpus.clone(),
        (100..104)
            .map(|pid| process(pid, PYTHON_LIBGOMP, Some(environ), &cpus))
            .collect(),
    );
    let Some(explanation) = pool_explanation(&s, &[100, 101]) else {
        panic!("no explanation");
    };
    assert_eq!(explanation.evidence.len(), 2, "{:?}", explanation.evidence);
    assert!(
        explanation.evidence[0]
            .starts_with("audit: pid 100 (python3): largest pool GNU OpenMP, 4 threads"),
        "{}",
        explanation.evidence[0]
    );
    // Two busy processes on 4 CPUs: two threads each.
    assert!(
        explanation
            .remedy
            .contains("= 2 threads: set OMP_NUM_THREADS=2"),
        "{}",
        explanation.remedy
    );
    // No audit at all: nothing to explain.
    let bare = sample(cpus, vec![ProcessSample::default()]);
    assert_eq!(pool_explanation(&bare, &[0]), None);
}

fn tensorflow_process(pid: i32, observed: Option<u32>) -> ProcessSample {
    let pool = |runtime: &str| PoolPrediction {
        runtime: runtime.to_string(),
        threads: 64,
        variable: None,
        reason: "unset: TensorFlow uses the 64 CPUs".to_string(),
    };
    ProcessSample {
        pid,
        ppid: 1,
        comm: "python3".to_string(),
        audit: Some(RuntimeAudit {
            pools: vec![
                pool(crate::model::runtimes::POOL_TF_INTRAOP),
                pool(crate::model::runtimes::POOL_TF_INTEROP),
            ],
            observed_pools: observed
                .map(|threads| crate::model::ObservedPool {
                    runtime: "TensorFlow".to_string(),
                    threads,
                    running: 1,
                })
                .into_iter()
                .collect(),
            ..RuntimeAudit::default()
        }),
        ..ProcessSample::default()
    }
}

#[test]
fn observed_pool_threads_beat_the_prediction() {
    let cpus = budget(64, Some(64), Some(4.0));
    // Predicted only: 64-thread pools inside a 4-CPU quota.
    let predicted = audit_findings(&sample(cpus.clone(), vec![tensorflow_process(7, None)]));
    assert_eq!(kinds(&predicted), [FindingKind::PoolSizedFromHost]);

    // Seen: 2 tf_* threads fit the quota, so nothing is predicted to oversubscribe.
    let fits = audit_findings(&sample(cpus.clone(), vec![tensorflow_process(7, Some(2))]));
    assert!(fits.is_empty(), "{fits:#?}");

    // Seen: 12 threads in one process is still sized from the host, by the count seen.
    let many = audit_findings(&sample(cpus, vec![tensorflow_process(7, Some(12))]));
    assert_eq!(kinds(&many), [FindingKind::PoolSizedFromHost]);
    assert!(
        many[0]
            .evidence
            .iter()
            .any(|e| e.contains("pool of 12 threads") && e.contains("observed 12 TensorFlow")),
        "{:#?}",
        many[0].evidence
    );
    assert_eq!(many[0].metrics["pool_threads_max"], 12.0);
}
