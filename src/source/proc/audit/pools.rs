//! The thread variables in a process's environment and the pool each loaded runtime
//! will start by its own rules.

use std::collections::BTreeMap;

use super::libraries::{FoundRuntime, MklThreading, Runtime};
use crate::model::PoolPrediction;
use crate::model::ranks::DISTRIBUTED_VARIABLES;
use crate::model::runtimes::{
    POOL_PYTORCH_INTRAOP, POOL_TF_INTEROP, POOL_TF_INTRAOP, THREAD_VARIABLES,
};

/// The thread variables set in `environ` (NUL-separated `KEY=VALUE`). The first
/// definition of a name wins, as `getenv` sees it.
pub(crate) fn thread_variables(environ: &[u8]) -> BTreeMap<String, String> {
    variables(environ, THREAD_VARIABLES)
}

/// The distributed-job variables set in `environ` (first definition wins).
pub(crate) fn distributed_variables(environ: &[u8]) -> BTreeMap<String, String> {
    variables(environ, DISTRIBUTED_VARIABLES)
}

fn variables(environ: &[u8], names: &[&str]) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    for entry in environ.split(|&b| b == 0) {
        let entry = String::from_utf8_lossy(entry);
        let Some((key, value)) = entry.split_once('=') else {
            continue;
        };
        if names.contains(&key) && !env.contains_key(key) {
            env.insert(key.to_string(), value.to_string());
        }
    }
    env
}

/// What the predictions know about the environment and the CPUs.
pub(crate) struct PoolContext<'a> {
    pub env: &'a BTreeMap<String, String>,
    /// Why `environ` could not be read; the predictions then assume every variable unset.
    pub env_unavailable: Option<&'a str>,
    /// CPUs a runtime sees: the affinity mask, else the online CPUs.
    pub cpus: u32,
    /// Names that CPU count for people ("the 252 CPUs of the affinity mask").
    pub cpus_phrase: String,
}

/// The outcome of reading a list of variables in order of precedence.
struct Choice {
    /// The variable that decides and its value.
    chosen: Option<(&'static str, u32)>,
    /// Variables set to something the runtime cannot use.
    ignored: Vec<String>,
}

/// A whole positive number of threads; for OpenMP's list form (`4,2`) the first level.
fn parse_count(value: &str) -> Option<u32> {
    let first = value.split(',').next().unwrap_or(value).trim();
    first.parse::<u32>().ok().filter(|&n| n > 0)
}

impl PoolContext<'_> {
    fn get(&self, variable: &str) -> Option<&str> {
        self.env.get(variable).map(String::as_str)
    }

    /// Reads `variables` in order of precedence; TensorFlow reads `0` as "choose for me",
    /// so with `zero_is_default` a `0` counts as unset.
    fn choose(&self, variables: &[&'static str], zero_is_default: bool) -> Choice {
        let mut ignored = Vec::new();
        for &variable in variables {
            let Some(value) = self.get(variable) else {
                continue;
            };
            if zero_is_default && value.trim() == "0" {
                continue;
            }
            match parse_count(value) {
                Some(n) => {
                    return Choice {
                        chosen: Some((variable, n)),
                        ignored,
                    };
                }
                None => ignored.push(format!(
                    "{variable}={value:?} is not a positive whole number and is ignored"
                )),
            }
        }
        Choice {
            chosen: None,
            ignored,
        }
    }

    /// Builds a prediction: the chosen variable's value, else `default` threads, with
    /// a reason naming what decided. `who` is the runtime in the reason ("libgomp"),
    /// `default_why` how it reaches the default ("uses the 4 CPUs of the affinity mask").
    fn predict(
        &self,
        pool: String,
        who: &str,
        variables: &[&'static str],
        zero_is_default: bool,
        default: u32,
        default_why: &str,
    ) -> PoolPrediction {
        let choice = self.choose(variables, zero_is_default);
        let mut parts: Vec<String> = Vec::new();
        if let Some(why) = self.env_unavailable {
            parts.push(format!(
                "environ unreadable ({why}): assuming the thread variables unset"
            ));
        }
        parts.extend(choice.ignored);
        let (threads, variable) = match choice.chosen {
            Some((variable, n)) => {
                parts.push(format!("{variable}={n}: {who} starts {n} threads"));
                (n, Some(variable.to_string()))
            }
            None => {
                let unset = unset_list(variables);
                if self.env_unavailable.is_some() {
                    parts.push(format!("{who} {default_why}"));
                } else {
                    parts.push(format!("{unset} unset: {who} {default_why}"));
                }
                (default, None)
            }
        };
        PoolPrediction {
            runtime: pool,
            threads,
            variable,
            reason: parts.join("; "),
        }
    }
}

/// "A", "A or B", "A, B or C".
fn unset_list(variables: &[&str]) -> String {
    match variables {
        [] => String::new(),
        [one] => (*one).to_string(),
        [init @ .., last] => format!("{} and {last}", init.join(", ")),
    }
}

/// The pools the loaded runtimes will start, one per pool. When a runtime is loaded
/// twice, each copy's pool carries the copy's file name in parentheses.
pub(crate) fn predict_pools(found: &[FoundRuntime], context: &PoolContext) -> Vec<PoolPrediction> {
    let cpus = context.cpus;
    let cpus_phrase = &context.cpus_phrase;
    let mut pools = Vec::new();
    for runtime in found {
        let copies = found
            .iter()
            .filter(|other| other.runtime == runtime.runtime)
            .count();
        let label = |name: &str| {
            if copies > 1 {
                format!("{name} ({})", runtime.file_name())
            } else {
                name.to_string()
            }
        };
        match runtime.runtime {
            Runtime::GnuOpenMp | Runtime::LlvmOpenMp | Runtime::IntelOpenMp => {
                let who = match runtime.runtime {
                    Runtime::GnuOpenMp => "libgomp",
                    Runtime::LlvmOpenMp => "libomp",
                    _ => "libiomp5",
                };
                let default_why = if runtime.runtime == Runtime::GnuOpenMp {
                    format!("uses {cpus_phrase} and ignores cgroup CPU quotas")
                } else {
                    format!("uses {cpus_phrase}")
                };
                let mut pool = context.predict(
                    label(runtime.runtime.name()),
                    who,
                    &["OMP_NUM_THREADS"],
                    false,
                    cpus,
                    &default_why,
                );
                apply_openmp_limits(&mut pool, context);
                pools.push(pool);
            }
            Runtime::OpenBlas => pools.push(context.predict(
                label("OpenBLAS"),
                "OpenBLAS",
                &[
                    "OPENBLAS_NUM_THREADS",
                    "GOTO_NUM_THREADS",
                    "OMP_NUM_THREADS",
                ],
                false,
                cpus,
                &format!("uses {cpus_phrase}, up to the thread limit it was built with"),
            )),
            Runtime::Mkl => pools.push(predict_mkl(runtime, label("MKL"), context)),
            Runtime::Blis => pools.push(context.predict(
                label("BLIS"),
                "BLIS",
                &["BLIS_NUM_THREADS", "OMP_NUM_THREADS"],
                false,
                1,
                "runs on the calling thread only",
            )),
            Runtime::TensorFlow => {
                for (pool, variable) in [
                    (POOL_TF_INTRAOP, "TF_NUM_INTRAOP_THREADS"),
                    (POOL_TF_INTEROP, "TF_NUM_INTEROP_THREADS"),
                ] {
                    pools.push(context.predict(
                        pool.to_string(),
                        "TensorFlow",
                        &[variable],
                        true,
                        cpus,
                        &format!("uses the schedulable CPUs: {cpus_phrase}"),
                    ));
                }
            }
            Runtime::PyTorch => pools.push(context.predict(
                POOL_PYTORCH_INTRAOP.to_string(),
                "PyTorch",
                &["OMP_NUM_THREADS", "MKL_NUM_THREADS"],
                false,
                cpus,
                &format!(
                    "uses the physical cores, approximated here by {cpus_phrase} \
                     (half that with two hardware threads per core)"
                ),
            )),
            Runtime::Cuda | Runtime::Nccl | Runtime::CPython => {}
        }
    }
    pools
}

/// `OMP_THREAD_LIMIT` caps every OpenMP pool; `OMP_DYNAMIC=true` lets it shrink.
fn apply_openmp_limits(pool: &mut PoolPrediction, context: &PoolContext) {
    if context.env_unavailable.is_some() {
        return;
    }
    if let Some(value) = context.get("OMP_THREAD_LIMIT") {
        match parse_count(value) {
            Some(limit) if limit < pool.threads => {
                pool.threads = limit;
                pool.reason
                    .push_str(&format!("; capped at {limit} by OMP_THREAD_LIMIT"));
                pool.variable = Some("OMP_THREAD_LIMIT".to_string());
            }
            Some(_) => {}
            None => pool.reason.push_str(&format!(
                "; OMP_THREAD_LIMIT={value:?} is not a positive whole number and is ignored"
            )),
        }
    }
    if context
        .get("OMP_DYNAMIC")
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
    {
        pool.reason
            .push_str("; OMP_DYNAMIC=true lets the runtime start fewer under load");
    }
}

fn predict_mkl(runtime: &FoundRuntime, pool: String, context: &PoolContext) -> PoolPrediction {
    let layer_env = if context.env_unavailable.is_none() {
        context.get("MKL_THREADING_LAYER")
    } else {
        None
    };
    let sequential = match layer_env {
        Some(layer) => layer.trim().eq_ignore_ascii_case("sequential"),
        None => runtime.mkl_threading == Some(MklThreading::Sequential),
    };
    if sequential {
        let why = match layer_env {
            Some(layer) => format!("MKL_THREADING_LAYER={layer}"),
            None => "libmkl_sequential is loaded".to_string(),
        };
        return PoolPrediction {
            runtime: pool,
            threads: 1,
            variable: layer_env.map(|_| "MKL_THREADING_LAYER".to_string()),
            reason: format!("{why}: MKL runs on the calling thread only"),
        };
    }
    let layer = match runtime.mkl_threading {
        Some(MklThreading::Intel) => " through Intel OpenMP's pool",
        Some(MklThreading::Gnu) => " through GNU OpenMP's pool",
        Some(MklThreading::Tbb) => " through oneTBB's pool",
        _ => "",
    };
    context.predict(
        pool,
        "MKL",
        &["MKL_NUM_THREADS", "OMP_NUM_THREADS"],
        false,
        context.cpus,
        &format!(
            "uses the physical cores{layer}, approximated here by {} \
             (half that with two hardware threads per core)",
            context.cpus_phrase
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn keeps_thread_variables_first_definition_wins() {
        let environ =
            b"PATH=/usr/bin\0OMP_NUM_THREADS=4\0HOME=/root\0OMP_NUM_THREADS=8\0CUDA_VISIBLE_DEVICES=\0EQ=a=b\0junk\0";
        let vars = thread_variables(environ);
        assert_eq!(
            vars,
            env(&[("CUDA_VISIBLE_DEVICES", ""), ("OMP_NUM_THREADS", "4")])
        );
        assert!(thread_variables(b"").is_empty());
    }

    #[test]
    fn keeps_the_distributed_variables_apart() {
        let environ = b"RANK=1\0OMP_NUM_THREADS=2\0WORLD_SIZE=2\0RANK=7\0";
        assert_eq!(
            distributed_variables(environ),
            env(&[("RANK", "1"), ("WORLD_SIZE", "2")])
        );
        assert_eq!(thread_variables(environ), env(&[("OMP_NUM_THREADS", "2")]));
    }

    #[test]
    fn counts() {
        assert_eq!(parse_count("4"), Some(4));
        assert_eq!(parse_count(" 8 "), Some(8));
        assert_eq!(parse_count("4,2"), Some(4));
        assert_eq!(parse_count("0"), None);
        assert_eq!(parse_count("abc"), None);
        assert_eq!(parse_count("-1"), None);
        assert_eq!(parse_count(""), None);
    }

    #[test]
    fn precedence_and_invalid_values() {
        let vars = env(&[
            ("OPENBLAS_NUM_THREADS", "lots"),
            ("GOTO_NUM_THREADS", "3"),
            ("OMP_NUM_THREADS", "2"),
        ]);
        let context = PoolContext {
            env: &vars,
            env_unavailable: None,
            cpus: 16,
            cpus_phrase: "the 16 CPUs of the affinity mask".to_string(),
        };
        let pool = context.predict(
            "OpenBLAS".to_string(),
            "OpenBLAS",
            &[
                "OPENBLAS_NUM_THREADS",
                "GOTO_NUM_THREADS",
                "OMP_NUM_THREADS",
            ],
            false,
            16,
            "uses the CPUs",
        );
        assert_eq!(pool.threads, 3);
        assert_eq!(pool.variable.as_deref(), Some("GOTO_NUM_THREADS"));
        assert_eq!(
            pool.reason,
            "OPENBLAS_NUM_THREADS=\"lots\" is not a positive whole number and is ignored; \
             GOTO_NUM_THREADS=3: OpenBLAS starts 3 threads"
        );
        assert_eq!(unset_list(&["A", "B", "C"]), "A, B and C");
    }
}
