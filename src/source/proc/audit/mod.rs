//! Thread-runtime audit: which thread runtimes a process loaded (from `maps`), the
//! thread-count variables in effect (from `environ`), and the pool each runtime will
//! start by its own rules. Pure functions of file contents and the CPU budget.
//!
//! - [`libraries`]: runtimes and versions from the file names in `maps`;
//! - [`pools`]: the variables kept from `environ` and the predicted pools;
//!
//! The findings over the audits of a sample are a detector: `crate::detect::audit`.

pub mod libraries;
pub mod live_env;
pub mod pools;

use std::collections::BTreeSet;

use crate::model::{CpuBudget, EnvChange, EnvSource, RuntimeAudit};

/// The environments an audit can read: the live one from memory, and the start-up one
/// of `/proc/<pid>/environ`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Environment<'a> {
    /// `/proc/<pid>/environ`; `None` when it could not be read.
    pub startup: Option<&'a [u8]>,
    /// Why `startup` could not be read.
    pub startup_unreadable: Option<&'a str>,
    /// The live `environ` array read from memory; `None` when it could not be read.
    pub live: Option<&'a [u8]>,
    /// Why `live` could not be read.
    pub live_unavailable: Option<&'a str>,
}

/// The lines of `maps` that may name a file (a path after a space): what the audit's
/// passes over `maps` look at. Most lines of a process with many threads are its
/// threads' anonymous stacks and guard pages (4,000 of 4,088 for 1,000 Rust threads), which
/// every pass would split into fields only to pass over; they are dropped here in one
/// scan. A file's segments stay in their order, so the runs of one file's mappings are
/// kept; an anonymous mapping between two segments of one file no longer parts them.
pub fn file_backed_lines(maps: &str) -> String {
    let mut kept = String::with_capacity(maps.len() / 8);
    for line in maps.lines() {
        if line.contains(" /") {
            kept.push_str(line);
            kept.push('\n');
        }
    }
    kept
}

/// Audits one process from the text of its `maps` and the bytes of its `environ`
/// (`None` when `environ` could not be read; `env_unreadable` says why).
pub fn audit_process(
    maps: &str,
    environ: Option<&[u8]>,
    env_unreadable: Option<&str>,
    cpus: &CpuBudget,
) -> RuntimeAudit {
    audit_with_environment(
        maps,
        &Environment {
            startup: environ,
            startup_unreadable: env_unreadable,
            ..Environment::default()
        },
        cpus,
    )
}

/// Thread variables whose live value differs from the one at start-up.
fn env_changes(
    startup: &std::collections::BTreeMap<String, String>,
    live: &std::collections::BTreeMap<String, String>,
) -> Vec<EnvChange> {
    let names: BTreeSet<&String> = startup.keys().chain(live.keys()).collect();
    names
        .into_iter()
        .filter(|name| startup.get(*name) != live.get(*name))
        .map(|name| EnvChange {
            variable: name.clone(),
            at_start: startup.get(name).cloned(),
            now: live.get(name).cloned(),
        })
        .collect()
}

/// Audits one process from the text of its `maps` and its environments: the live one
/// when it was read (the variables set after start are then `env_changes`), else the
/// start-up one.
///
/// `runtimes` holds one entry per loaded copy of a runtime: the several files and
/// mappings of one copy collapse into one entry (named by its main library), while a
/// second copy of an OpenMP or BLAS runtime at another path (numpy's and torch's bundled
/// libraries) is a second entry with the same name, because each copy starts its own
/// pool. `pools` then holds one prediction per pool; a copy's pool is told apart by its
/// file name in parentheses ("GNU OpenMP (libgomp-a34b3233.so.1)").
pub fn audit_with_environment(
    maps: &str,
    environment: &Environment<'_>,
    cpus: &CpuBudget,
) -> RuntimeAudit {
    let found = libraries::find_runtimes(maps);
    let startup_env = environment.startup.map(pools::thread_variables);
    let (env, env_source, env_changes) = match environment.live {
        Some(live) => {
            let live_env = pools::thread_variables(live);
            let changes = startup_env
                .as_ref()
                .map(|startup| env_changes(startup, &live_env))
                .unwrap_or_default();
            (live_env, EnvSource::Memory, changes)
        }
        None => (
            startup_env.clone().unwrap_or_default(),
            EnvSource::StartupEnviron,
            Vec::new(),
        ),
    };
    let env_unavailable = match (environment.live, environment.startup) {
        (Some(_), _) | (None, Some(_)) => None,
        (None, None) => Some(
            environment
                .startup_unreadable
                .unwrap_or("environ was not read")
                .to_string(),
        ),
    };
    let env_memory_unavailable = match environment.live {
        Some(_) => None,
        None => environment.live_unavailable.map(str::to_string),
    };
    let visible_cpus = cpus.affinity.unwrap_or(cpus.online).max(1);
    let cpus_phrase = match cpus.affinity {
        Some(n) => format!("the {n} CPUs of the affinity mask"),
        None => format!("the {visible_cpus} online CPUs"),
    };
    let context = pools::PoolContext {
        env: &env,
        env_unavailable: env_unavailable.as_deref(),
        cpus: visible_cpus,
        cpus_phrase,
    };
    let pools = pools::predict_pools(&found, &context);
    let rank = environment
        .live
        .or(environment.startup)
        .map(pools::distributed_variables)
        .and_then(|vars| crate::model::ranks::RankInfo::from_env(&vars));
    RuntimeAudit {
        runtimes: found
            .iter()
            .map(libraries::FoundRuntime::to_loaded)
            .collect(),
        env,
        env_unavailable,
        pools,
        env_source,
        env_memory_unavailable,
        env_changes,
        observed_pools: Vec::new(),
        rank,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::PoolPrediction;

    fn budget(online: u32, affinity: Option<u32>, quota: Option<f64>) -> CpuBudget {
        let mut usable = f64::from(online);
        if let Some(a) = affinity {
            usable = usable.min(f64::from(a));
        }
        if let Some(q) = quota {
            usable = usable.min(q);
        }
        CpuBudget {
            online,
            affinity,
            affinity_list: affinity.map(|n| format!("0-{}", n - 1)),
            quota,
            quota_source: quota.map(|q| format!("cgroup v1 cpu.cfs_quota_us={}", q * 100000.0)),
            usable: usable.max(1.0),
            throttling: None,
        }
    }

    fn pool<'a>(pools: &'a [PoolPrediction], runtime: &str) -> &'a PoolPrediction {
        pools
            .iter()
            .find(|p| p.runtime == runtime)
            .unwrap_or_else(|| panic!("no pool {runtime} in {pools:#?}"))
    }

    const TORCH_NUMPY: &str = include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/fixtures/audit/torch-numpy.maps"
    ));
    const PYTHON_LIBGOMP: &str = include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/fixtures/audit/python-libgomp.maps"
    ));

    #[test]
    fn the_file_backed_lines_audit_as_the_whole_maps() {
        // As a process with many threads has them: stacks and guard pages between the
        // files (a loaded file's segments lie together).
        let with_stacks = |maps: &str| {
            let mut out = String::new();
            for line in maps.lines() {
                if line.split_whitespace().nth(2) == Some("00000000") {
                    for _ in 0..50 {
                        out.push_str("7f01-7f02 ---p 00000000 00:00 0 \n");
                        out.push_str("7f02-7f03 rw-p 00000000 00:00 0 \n");
                    }
                }
                out.push_str(line);
                out.push('\n');
            }
            out
        };
        for maps in [
            TORCH_NUMPY.to_string(),
            PYTHON_LIBGOMP.to_string(),
            with_stacks(TORCH_NUMPY),
            with_stacks(PYTHON_LIBGOMP),
        ] {
            let maps = maps.as_str();
            let kept = file_backed_lines(maps);
            assert!(kept.lines().count() < maps.lines().count());
            assert!(kept.lines().all(|line| line.contains(" /")));
            assert!(!kept.contains("[stack]"));
            let cpus = budget(64, Some(64), None);
            assert_eq!(
                audit_process(&kept, Some(b""), None, &cpus),
                audit_process(maps, Some(b""), None, &cpus)
            );
            assert_eq!(
                live_env::mapped_files(&kept, live_env::is_libc),
                live_env::mapped_files(maps, live_env::is_libc)
            );
        }
    }

    #[test]
    fn live_environment_wins_and_changes_are_marked() {
        let audit = audit_with_environment(
            PYTHON_LIBGOMP,
            &Environment {
                startup: Some(b"PATH=/usr/bin\0MKL_NUM_THREADS=8\0OPENBLAS_NUM_THREADS=4\0"),
                startup_unreadable: None,
                live: Some(b"PATH=/usr/bin\0OMP_NUM_THREADS=1\0MKL_NUM_THREADS=2\0"),
                live_unavailable: None,
            },
            &budget(252, Some(252), Some(4.0)),
        );
        assert_eq!(audit.env_source, EnvSource::Memory);
        assert_eq!(
            audit.env.get("OMP_NUM_THREADS").map(String::as_str),
            Some("1")
        );
        assert_eq!(audit.pools[0].threads, 1);
        let change = |variable: &str, at_start: Option<&str>, now: Option<&str>| EnvChange {
            variable: variable.to_string(),
            at_start: at_start.map(str::to_string),
            now: now.map(str::to_string),
        };
        assert_eq!(
            audit.env_changes,
            [
                change("MKL_NUM_THREADS", Some("8"), Some("2")),
                change("OMP_NUM_THREADS", None, Some("1")),
                change("OPENBLAS_NUM_THREADS", Some("4"), None),
            ]
        );

        // Without the live one, the start-up environment decides and says why.
        let fallback = audit_with_environment(
            PYTHON_LIBGOMP,
            &Environment {
                startup: Some(b"OMP_NUM_THREADS=3\0"),
                startup_unreadable: None,
                live: None,
                live_unavailable: Some("permission denied"),
            },
            &budget(252, Some(252), Some(4.0)),
        );
        assert_eq!(fallback.env_source, EnvSource::StartupEnviron);
        assert_eq!(
            fallback.env_memory_unavailable.as_deref(),
            Some("permission denied")
        );
        assert!(fallback.env_changes.is_empty());
        assert_eq!(fallback.pools[0].threads, 3);
    }

    #[test]
    fn libgomp_sizes_from_affinity_and_ignores_quota() {
        let audit = audit_process(
            PYTHON_LIBGOMP,
            Some(b"PATH=/usr/bin\0HOME=/root\0"),
            None,
            &budget(252, Some(252), Some(4.0)),
        );
        assert!(audit.env.is_empty());
        assert_eq!(audit.env_unavailable, None);
        assert_eq!(audit.pools.len(), 1);
        let gomp = &audit.pools[0];
        assert_eq!(gomp.runtime, "GNU OpenMP");
        assert_eq!(gomp.threads, 252);
        assert_eq!(gomp.variable, None);
        assert_eq!(
            gomp.reason,
            "OMP_NUM_THREADS unset: libgomp uses the 252 CPUs of the affinity mask \
             and ignores cgroup CPU quotas"
        );
    }

    #[test]
    fn variables_set_and_invalid() {
        let environ = b"OMP_NUM_THREADS=abc\0OPENBLAS_NUM_THREADS=2\0KMP_BLOCKTIME=0\0\
                        CUDA_VISIBLE_DEVICES=0,1\0LANG=C.UTF-8\0";
        let audit = audit_process(TORCH_NUMPY, Some(environ), None, &budget(64, Some(8), None));
        assert_eq!(
            audit.env.keys().collect::<Vec<_>>(),
            [
                "CUDA_VISIBLE_DEVICES",
                "KMP_BLOCKTIME",
                "OMP_NUM_THREADS",
                "OPENBLAS_NUM_THREADS"
            ]
        );
        let gomp = pool(&audit.pools, "GNU OpenMP (libgomp.so.1.0.0)");
        assert_eq!(gomp.threads, 8);
        assert_eq!(gomp.variable, None);
        assert!(
            gomp.reason.starts_with(
                "OMP_NUM_THREADS=\"abc\" is not a positive whole number and is ignored; \
                 OMP_NUM_THREADS unset: libgomp uses the 8 CPUs of the affinity mask"
            ),
            "{}",
            gomp.reason
        );
        assert_eq!(
            pool(&audit.pools, "GNU OpenMP (libgomp-a34b3233.so.1)").threads,
            8
        );
        let blas = pool(&audit.pools, "OpenBLAS");
        assert_eq!(
            (blas.threads, blas.variable.as_deref()),
            (2, Some("OPENBLAS_NUM_THREADS"))
        );
        let torch = pool(&audit.pools, "PyTorch intra-op");
        assert_eq!(torch.threads, 8);
        assert!(torch.reason.contains("physical cores"), "{}", torch.reason);
        // CUDA runtime, NCCL and CPython start no pools of their own.
        assert_eq!(audit.pools.len(), 4);
        assert_eq!(audit.runtimes.len(), 7);
    }

    #[test]
    fn unreadable_environ_assumes_unset_and_says_so() {
        let audit = audit_process(
            PYTHON_LIBGOMP,
            None,
            Some("permission denied: another user's process needs root or CAP_SYS_PTRACE"),
            &budget(16, None, None),
        );
        assert_eq!(
            audit.env_unavailable.as_deref(),
            Some("permission denied: another user's process needs root or CAP_SYS_PTRACE")
        );
        let gomp = &audit.pools[0];
        assert_eq!(gomp.threads, 16);
        assert!(
            gomp.reason
                .starts_with("environ unreadable (permission denied"),
            "{}",
            gomp.reason
        );
        assert!(
            gomp.reason.contains("the 16 online CPUs"),
            "{}",
            gomp.reason
        );
        let unread = audit_process("", None, None, &budget(4, None, None));
        assert_eq!(
            unread.env_unavailable.as_deref(),
            Some("environ was not read")
        );
    }

    #[test]
    fn tensorflow_pools_and_zero_means_default() {
        let maps = "7f00-7f01 r-xp 00000000 08:01 5 /venv/lib/python3.11/site-packages/tensorflow/libtensorflow_framework.so.2\n\
                    7f02-7f03 r-xp 00000000 08:01 6 /venv/lib/python3.11/site-packages/tensorflow/python/_pywrap_tensorflow_internal.so\n";
        let audit = audit_process(
            maps,
            Some(b"TF_NUM_INTRAOP_THREADS=4\0TF_NUM_INTEROP_THREADS=0\0"),
            None,
            &budget(32, Some(32), None),
        );
        assert_eq!(audit.runtimes.len(), 1);
        assert_eq!(audit.runtimes[0].version.as_deref(), Some("2"));
        let intra = pool(&audit.pools, "TensorFlow intra-op");
        assert_eq!(
            (intra.threads, intra.variable.as_deref()),
            (4, Some("TF_NUM_INTRAOP_THREADS"))
        );
        let inter = pool(&audit.pools, "TensorFlow inter-op");
        assert_eq!((inter.threads, inter.variable.as_deref()), (32, None));
        assert!(
            inter.reason.contains("schedulable CPUs"),
            "{}",
            inter.reason
        );
    }

    #[test]
    fn blas_rules() {
        let maps = "7f00-7f01 r-xp 00000000 08:01 5 /usr/lib/x86_64-linux-gnu/libblis.so.4\n\
                    7f02-7f03 r-xp 00000000 08:01 6 /opt/conda/lib/libmkl_core.so.2\n\
                    7f04-7f05 r-xp 00000000 08:01 7 /opt/conda/lib/libmkl_sequential.so.2\n";
        let audit = audit_process(maps, Some(b""), None, &budget(8, Some(8), None));
        let blis = pool(&audit.pools, "BLIS");
        assert_eq!(blis.threads, 1);
        assert!(blis.reason.contains("calling thread"), "{}", blis.reason);
        let mkl = pool(&audit.pools, "MKL");
        assert_eq!(mkl.threads, 1);
        assert!(mkl.reason.contains("libmkl_sequential"), "{}", mkl.reason);

        let maps = "7f02-7f03 r-xp 00000000 08:01 6 /opt/conda/lib/libmkl_rt.so.2\n";
        let audit = audit_process(
            maps,
            Some(b"OMP_NUM_THREADS=6\0"),
            None,
            &budget(8, Some(8), None),
        );
        let mkl = pool(&audit.pools, "MKL");
        assert_eq!(
            (mkl.threads, mkl.variable.as_deref()),
            (6, Some("OMP_NUM_THREADS"))
        );
        let audit = audit_process(maps, Some(b""), None, &budget(8, Some(8), None));
        assert!(pool(&audit.pools, "MKL").reason.contains("approximated"));
    }

    #[test]
    fn openmp_thread_limit_caps() {
        let audit = audit_process(
            PYTHON_LIBGOMP,
            Some(b"OMP_THREAD_LIMIT=2\0OMP_DYNAMIC=true\0"),
            None,
            &budget(8, Some(8), None),
        );
        let gomp = &audit.pools[0];
        assert_eq!(gomp.threads, 2);
        assert_eq!(gomp.variable.as_deref(), Some("OMP_THREAD_LIMIT"));
        assert!(gomp.reason.contains("capped at 2 by OMP_THREAD_LIMIT"));
        assert!(gomp.reason.contains("OMP_DYNAMIC=true"));
    }

    #[test]
    fn nothing_loaded() {
        let audit = audit_process("", Some(b""), None, &budget(4, None, None));
        assert_eq!(audit, RuntimeAudit::default());
    }
}
