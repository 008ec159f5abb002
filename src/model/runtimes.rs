//! What is known of thread runtimes without reading anything: the variables that size
//! their pools.

pub const POOL_TF_INTRAOP: &str = "TensorFlow intra-op";
pub const POOL_TF_INTEROP: &str = "TensorFlow inter-op";
pub const POOL_PYTORCH_INTRAOP: &str = "PyTorch intra-op";

/// Variables that size thread pools, pin them or choose devices: kept from `environ`
/// when set.
pub const THREAD_VARIABLES: &[&str] = &[
    "OMP_NUM_THREADS",
    "OMP_THREAD_LIMIT",
    "OMP_DYNAMIC",
    "OMP_PROC_BIND",
    "OMP_PLACES",
    "OMP_WAIT_POLICY",
    "OMP_MAX_ACTIVE_LEVELS",
    "MKL_NUM_THREADS",
    "MKL_DYNAMIC",
    "MKL_THREADING_LAYER",
    "MKL_DOMAIN_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "GOTO_NUM_THREADS",
    "BLIS_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "NUMEXPR_NUM_THREADS",
    "NUMEXPR_MAX_THREADS",
    "NUMBA_NUM_THREADS",
    "TF_NUM_INTRAOP_THREADS",
    "TF_NUM_INTEROP_THREADS",
    "TORCH_NUM_THREADS",
    "RAYON_NUM_THREADS",
    "TOKENIZERS_PARALLELISM",
    "CUDA_VISIBLE_DEVICES",
    "NVIDIA_VISIBLE_DEVICES",
    "KMP_BLOCKTIME",
    "KMP_AFFINITY",
    "KMP_HW_SUBSET",
    "KMP_DUPLICATE_LIB_OK",
    "KMP_INIT_AT_FORK",
    "GOMP_SPINCOUNT",
    "GOMP_CPU_AFFINITY",
];

/// The variable that sizes a pool, by the pool's runtime name (as in
/// [`crate::model::PoolPrediction::runtime`], a copy's file name in parentheses allowed).
pub fn pool_variable(pool_runtime: &str) -> Option<&'static str> {
    let name = pool_runtime
        .split(" (")
        .next()
        .unwrap_or(pool_runtime)
        .trim();
    Some(match name {
        "GNU OpenMP" | "LLVM OpenMP" | "Intel OpenMP" | POOL_PYTORCH_INTRAOP => "OMP_NUM_THREADS",
        "OpenBLAS" => "OPENBLAS_NUM_THREADS",
        "MKL" => "MKL_NUM_THREADS",
        "BLIS" => "BLIS_NUM_THREADS",
        POOL_TF_INTRAOP => "TF_NUM_INTRAOP_THREADS",
        POOL_TF_INTEROP => "TF_NUM_INTEROP_THREADS",
        _ => return None,
    })
}

/// The runtime a thread's name tells, for the families whose threads are named:
/// TensorFlow's `tf_*`, PyTorch's `pt_*` (and names with `torch`), and OpenMP's `omp_*`
/// (libgomp's workers carry the process's name and are not counted).
pub fn pool_family(thread_name: &str) -> Option<&'static str> {
    let lower = thread_name.to_ascii_lowercase();
    if lower == "pt_data_worker" {
        // A DataLoader worker *process*'s name, which every thread of it inherits (its
        // MainThread, QueueFeederThread, `_serve`): not a pool of PyTorch's.
        None
    } else if lower.starts_with("tf_") {
        Some(OBSERVED_TENSORFLOW)
    } else if lower.starts_with("pt_") || lower.contains("torch") {
        Some(OBSERVED_PYTORCH)
    } else if lower.starts_with("omp_") {
        Some(OBSERVED_OPENMP)
    } else {
        None
    }
}

pub const OBSERVED_TENSORFLOW: &str = "TensorFlow";
pub const OBSERVED_PYTORCH: &str = "PyTorch";
pub const OBSERVED_OPENMP: &str = "OpenMP";

/// The observed family a predicted pool belongs to (by its runtime name, as in
/// [`crate::model::PoolPrediction::runtime`]).
pub fn observed_family_of_pool(pool_runtime: &str) -> Option<&'static str> {
    let name = pool_runtime
        .split(" (")
        .next()
        .unwrap_or(pool_runtime)
        .trim();
    match name {
        POOL_TF_INTRAOP | POOL_TF_INTEROP => Some(OBSERVED_TENSORFLOW),
        POOL_PYTORCH_INTRAOP => Some(OBSERVED_PYTORCH),
        "GNU OpenMP" | "LLVM OpenMP" | "Intel OpenMP" => Some(OBSERVED_OPENMP),
        _ => None,
    }
}

/// The smallest default bound of the thread-explosion detector.
pub const MIN_THREAD_BOUND: u32 = 64;

/// Threads per usable CPU the default bound allows.
pub const THREADS_PER_CPU_BOUND: u32 = 4;

/// The default bound: max(64, 4 × usable CPUs). The default rule `too-many-threads`
/// (`threads > 50`) is a separate, user-configurable alert that fires earlier.
pub fn default_thread_bound(usable_cpus: f64) -> u32 {
    (f64::from(THREADS_PER_CPU_BOUND) * usable_cpus).max(f64::from(MIN_THREAD_BOUND)) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_variables() {
        assert_eq!(pool_variable("GNU OpenMP"), Some("OMP_NUM_THREADS"));
        assert_eq!(
            pool_variable("GNU OpenMP (libgomp-a34b3233.so.1)"),
            Some("OMP_NUM_THREADS")
        );
        assert_eq!(
            pool_variable(POOL_TF_INTEROP),
            Some("TF_NUM_INTEROP_THREADS")
        );
        assert_eq!(pool_variable("CPython"), None);
    }

    #[test]
    fn pool_families_by_thread_name() {
        assert_eq!(pool_family("tf_inter_op_pa"), Some(OBSERVED_TENSORFLOW));
        assert_eq!(pool_family("pt_thread_pool"), Some(OBSERVED_PYTORCH));
        assert_eq!(pool_family("omp_worker_3"), Some(OBSERVED_OPENMP));
        assert_eq!(pool_family("python3"), None);
        // Every thread of a DataLoader worker process (its MainThread,
        // QueueFeederThread, `_serve`) inherits the process's name: not a pool.
        assert_eq!(pool_family("pt_data_worker"), None);
        assert_eq!(
            observed_family_of_pool(POOL_TF_INTEROP),
            Some(OBSERVED_TENSORFLOW)
        );
        assert_eq!(
            observed_family_of_pool("GNU OpenMP (libgomp-a34b3233.so.1)"),
            Some(OBSERVED_OPENMP)
        );
        assert_eq!(observed_family_of_pool("OpenBLAS"), None);
    }
}
