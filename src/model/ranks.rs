//! Ranks of distributed jobs, recognised from the variables their launchers set.
//!
//! torchrun (the elastic agent), `torch.distributed.launch`, mpirun (Open MPI, MPICH,
//! Intel MPI through PMI), Slurm's `srun`, TensorFlow's `TF_CONFIG` and JAX each tell a
//! process its rank through the environment. Nothing here reads the system: the sampler
//! keeps the variables named in [`DISTRIBUTED_VARIABLES`] from the live environment and
//! [`RankInfo::from_env`] turns them into a rank.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Variables that say a process is one rank of a distributed job: kept from `environ`
/// when set.
pub const DISTRIBUTED_VARIABLES: &[&str] = &[
    "RANK",
    "LOCAL_RANK",
    "WORLD_SIZE",
    "LOCAL_WORLD_SIZE",
    "GROUP_RANK",
    "MASTER_ADDR",
    "MASTER_PORT",
    "TORCHELASTIC_RUN_ID",
    "TORCHELASTIC_RESTART_COUNT",
    "TORCHELASTIC_MAX_RESTARTS",
    "TORCH_FR_BUFFER_SIZE",
    "TORCH_NCCL_TRACE_BUFFER_SIZE",
    "TORCH_FR_DUMP_TEMP_FILE",
    "TORCH_NCCL_DEBUG_INFO_TEMP_FILE",
    "TORCH_FR_DUMP_ON_TIMEOUT",
    "TORCH_NCCL_DUMP_ON_TIMEOUT",
    // Where the Flight Recorder's default dump goes (`$XDG_CACHE_HOME/torch`, else
    // `$HOME/.cache/torch`): read for that only.
    "XDG_CACHE_HOME",
    "HOME",
    "NCCL_DEBUG",
    "OMPI_COMM_WORLD_RANK",
    "OMPI_COMM_WORLD_SIZE",
    "OMPI_COMM_WORLD_LOCAL_RANK",
    "PMI_RANK",
    "PMI_SIZE",
    "MPI_LOCALRANKID",
    "PMIX_RANK",
    "MV2_COMM_WORLD_RANK",
    "MV2_COMM_WORLD_SIZE",
    "SLURM_PROCID",
    "SLURM_NTASKS",
    "SLURM_LOCALID",
    "TF_CONFIG",
    "JAX_PROCESS_ID",
    "JAX_NUM_PROCESSES",
    "JAX_COORDINATOR_ADDRESS",
];

/// Name prefixes of the threads a communication library starts for itself (gloo, the
/// TCP store, NCCL, the elastic agent, MPI progress threads).
const COMMUNICATION_THREADS: &[&str] = &[
    "gloo_",
    "pt_gloo",
    "pt_tcpstore",
    "pt_nccl",
    "pt_elastic",
    "NCCL",
    "ncclProxy",
    "cuda-EvtHandlr",
    "ucp-",
    "async_mpi",
];

/// Whether a thread belongs to a communication library: its polling of sockets is no
/// progress of the process's own work.
pub fn is_communication_thread(name: &str) -> bool {
    COMMUNICATION_THREADS
        .iter()
        .any(|prefix| name.starts_with(prefix))
}

/// Which launcher a process is, from its name and command line: torchrun's elastic
/// agent (`torchrun`, `python -m torch.distributed.run`, `torch.distributed.launch`; its
/// thread is named `pt_elastic`), Open MPI's `mpirun`/`orted`, MPICH's Hydra, Slurm's
/// `srun`, DeepSpeed's launcher.
pub fn launcher_of(comm: &str, cmdline: &[String]) -> Option<&'static str> {
    let program = |arg: &String| arg.rsplit('/').next().unwrap_or(arg).to_string();
    let args: Vec<String> = cmdline.iter().take(4).map(program).collect();
    let has = |name: &str| args.iter().any(|a| a == name);
    if comm == "pt_elastic"
        || has("torchrun")
        || cmdline
            .iter()
            .any(|a| a == "torch.distributed.run" || a == "torch.distributed.launch")
    {
        Some("torchrun")
    } else if has("mpirun") || has("mpiexec") || has("orterun") || has("prterun") {
        Some("mpirun")
    } else if has("orted") || has("prted") || has("hydra_pmi_proxy") {
        Some("MPI daemon")
    } else if has("srun") || has("slurmstepd") || comm == "slurmstepd" {
        Some("srun")
    } else if has("deepspeed") || cmdline.iter().any(|a| a == "deepspeed.launcher.launch") {
        Some("deepspeed")
    } else {
        None
    }
}

/// One process's place in a distributed job.
#[derive(Debug, Clone, Default, Serialize, schemars::JsonSchema, Deserialize, PartialEq, Eq)]
pub struct RankInfo {
    /// The global rank (for TF_CONFIG: the task's index within its type).
    pub rank: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_rank: Option<u32>,
    /// How many ranks the job has, where the environment says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub world_size: Option<u32>,
    /// Where the ranks meet (`MASTER_ADDR:MASTER_PORT`, the JAX coordinator); ranks of one
    /// job share it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rendezvous: Option<String>,
    /// torchrun's run id, where set: ranks of one job share it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
    /// TF_CONFIG's task type (`worker`, `chief`, `ps`), where that is the source.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_type: Option<String>,
    /// The variable the rank was read from (`RANK`, `OMPI_COMM_WORLD_RANK`, …).
    pub source: String,
    /// The launcher the variables point to: torchrun, mpirun, slurm, tensorflow, jax, or
    /// "manual" when only RANK/WORLD_SIZE are set.
    pub launcher: String,
    /// The job set `TORCH_NCCL_TRACE_BUFFER_SIZE` (or `TORCH_FR_BUFFER_SIZE`) above 0:
    /// PyTorch's Flight Recorder keeps the last collectives, and where it dumps them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flight_recorder: Option<FlightRecorder>,
}

/// PyTorch's Flight Recorder of one rank, as its environment sets it (torch's
/// `FlightRecorder.hpp` and `DebugInfoWriter::getWriter`): the ring of the last
/// `buffer` collectives, dumped to `<prefix><rank>` on a collective's timeout
/// (`TORCH_NCCL_DUMP_ON_TIMEOUT`, on by default) or on demand. The prefix is
/// `TORCH_FR_DUMP_TEMP_FILE`, else `TORCH_NCCL_DEBUG_INFO_TEMP_FILE`, else
/// `$XDG_CACHE_HOME/torch/comm_lib_trace_rank_` or `$HOME/.cache/torch/comm_lib_trace_rank_`
/// (torch before 2.7: `/tmp/nccl_trace_rank_`).
#[derive(Debug, Clone, Default, Serialize, schemars::JsonSchema, Deserialize, PartialEq, Eq)]
pub struct FlightRecorder {
    /// The setting that turned it on: `TORCH_NCCL_TRACE_BUFFER_SIZE=2000`.
    pub setting: String,
    /// The file this rank dumps to (a relative prefix is taken from the rank's working
    /// directory once [`FlightRecorder::locate`] knew it).
    pub dump_file: String,
    /// Whether the dump prefix is torch's default (then older torch's default is looked
    /// for too).
    #[serde(default)]
    pub default_prefix: bool,
    /// The dump file's size where the source found it; `None` while there is none (or
    /// it was not looked for: see `looked`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dump_bytes: Option<u64>,
    /// Whether the source looked for the dump file (a recorded or replayed sample did
    /// not).
    #[serde(default)]
    pub looked: bool,
    /// `TORCH_NCCL_DUMP_ON_TIMEOUT=0` (or `TORCH_FR_DUMP_ON_TIMEOUT=0`): no dump on a
    /// timeout.
    #[serde(default)]
    pub no_dump_on_timeout: bool,
}

/// Torch's default dump prefix before 2.7.
const LEGACY_DUMP_PREFIX: &str = "/tmp/nccl_trace_rank_";

impl FlightRecorder {
    /// The recorder the variables set for `rank`, or `None` when the job set no buffer
    /// (or set it to 0).
    fn from_env(env: &BTreeMap<String, String>, rank: u32) -> Option<FlightRecorder> {
        let text = |key: &str| {
            env.get(key)
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };
        // As torch's getCvarInt: the first name that is set wins.
        let (name, value) = ["TORCH_FR_BUFFER_SIZE", "TORCH_NCCL_TRACE_BUFFER_SIZE"]
            .iter()
            .find_map(|name| text(name).map(|v| (*name, v)))?;
        if value.parse::<i64>().ok()? <= 0 {
            return None;
        }
        let configured =
            text("TORCH_FR_DUMP_TEMP_FILE").or_else(|| text("TORCH_NCCL_DEBUG_INFO_TEMP_FILE"));
        let default_prefix = configured.is_none();
        let prefix = configured.unwrap_or_else(|| {
            let cache = text("XDG_CACHE_HOME").unwrap_or_else(|| {
                format!(
                    "{}/.cache",
                    text("HOME").unwrap_or_else(|| "/tmp".to_string())
                )
            });
            format!("{}/torch/comm_lib_trace_rank_", cache.trim_end_matches('/'))
        });
        let off = |key: &str| {
            text(key).is_some_and(|v| {
                matches!(
                    v.to_ascii_lowercase().as_str(),
                    "0" | "false" | "off" | "no"
                )
            })
        };
        Some(FlightRecorder {
            setting: format!("{name}={value}"),
            dump_file: format!("{prefix}{rank}"),
            default_prefix,
            dump_bytes: None,
            looked: false,
            no_dump_on_timeout: off("TORCH_FR_DUMP_ON_TIMEOUT")
                || (text("TORCH_FR_DUMP_ON_TIMEOUT").is_none()
                    && off("TORCH_NCCL_DUMP_ON_TIMEOUT")),
        })
    }

    /// Looks for the dump file: `cwd` is the rank's working directory (a relative
    /// prefix is relative to it; `None` when unknown), `size` the size of a file at a
    /// path, `None` when there is none. With torch's default prefix, older torch's
    /// default (`/tmp/nccl_trace_rank_<rank>`) is looked for too; the file found is the
    /// one named.
    pub fn locate(&mut self, rank: u32, cwd: Option<&str>, size: impl Fn(&str) -> Option<u64>) {
        if !self.dump_file.starts_with('/')
            && let Some(cwd) = cwd
        {
            self.dump_file = format!("{}/{}", cwd.trim_end_matches('/'), self.dump_file);
        }
        self.looked = true;
        self.dump_bytes = size(&self.dump_file);
        if self.dump_bytes.is_none() && self.default_prefix {
            let legacy = format!("{LEGACY_DUMP_PREFIX}{rank}");
            if let Some(bytes) = size(&legacy) {
                self.dump_file = legacy;
                self.dump_bytes = Some(bytes);
            }
        }
    }

    /// What a finding says of it, after `who` (`rank 0/2 pid 100`).
    pub fn evidence(&self, who: &str) -> String {
        match self.dump_bytes {
            Some(bytes) => format!(
                "{who}: its Flight Recorder dump is {} ({bytes} bytes; {}): read it with \
                 `python -m torch.distributed.flight_recorder.fr_trace` (torchfrtrace)",
                self.dump_file, self.setting
            ),
            None => {
                let when = if self.no_dump_on_timeout {
                    "on demand only (dump on timeout is off)"
                } else {
                    "when a collective times out"
                };
                let state = if self.looked {
                    "no dump yet"
                } else {
                    "not looked for"
                };
                format!(
                    "{who}: the job records a Flight Recorder trace ({}); {state}: it will be \
                     {} once dumped ({when})",
                    self.setting, self.dump_file
                )
            }
        }
    }
}

impl RankInfo {
    /// The rank the variables give, or `None` when the process is no rank of a
    /// distributed job. A variable that does not parse is ignored, as the frameworks
    /// would refuse it themselves.
    pub fn from_env(env: &BTreeMap<String, String>) -> Option<RankInfo> {
        let number = |key: &str| env.get(key).and_then(|v| v.trim().parse::<u32>().ok());
        let text = |key: &str| {
            env.get(key)
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };
        let rendezvous = match (text("MASTER_ADDR"), text("MASTER_PORT")) {
            (Some(addr), Some(port)) => Some(format!("{addr}:{port}")),
            (Some(addr), None) => Some(addr),
            _ => text("JAX_COORDINATOR_ADDRESS"),
        };
        let mut info = RankInfo {
            rendezvous,
            run_id: text("TORCHELASTIC_RUN_ID"),
            ..RankInfo::default()
        };
        // In order of precedence: torch's own variables first (torchrun and mpirun both
        // may be present; torch reads RANK), then MPI, Slurm, JAX and TensorFlow.
        let candidates: &[(&str, &str, &str, &str)] = &[
            ("RANK", "WORLD_SIZE", "LOCAL_RANK", ""),
            (
                "OMPI_COMM_WORLD_RANK",
                "OMPI_COMM_WORLD_SIZE",
                "OMPI_COMM_WORLD_LOCAL_RANK",
                "mpirun",
            ),
            ("PMI_RANK", "PMI_SIZE", "MPI_LOCALRANKID", "mpirun"),
            ("PMIX_RANK", "PMI_SIZE", "", "mpirun"),
            ("MV2_COMM_WORLD_RANK", "MV2_COMM_WORLD_SIZE", "", "mpirun"),
            ("SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID", "slurm"),
            ("JAX_PROCESS_ID", "JAX_NUM_PROCESSES", "", "jax"),
        ];
        for &(rank_key, size_key, local_key, launcher) in candidates {
            let Some(rank) = number(rank_key) else {
                continue;
            };
            info.rank = rank;
            info.world_size = number(size_key);
            info.local_rank = if local_key.is_empty() {
                None
            } else {
                number(local_key)
            };
            info.source = rank_key.to_string();
            info.launcher = if !launcher.is_empty() {
                launcher.to_string()
            } else if info.run_id.is_some() || env.contains_key("TORCHELASTIC_RESTART_COUNT") {
                "torchrun".to_string()
            } else if env.contains_key("OMPI_COMM_WORLD_RANK") || env.contains_key("PMI_RANK") {
                "mpirun".to_string()
            } else {
                "manual".to_string()
            };
            // SLURM_PROCID is set for every step of a job, distributed or not: a job of
            // one task is no distributed job.
            if launcher == "slurm" && info.world_size.is_none_or(|n| n < 2) {
                continue;
            }
            info.flight_recorder = FlightRecorder::from_env(env, rank);
            return Some(info);
        }
        let config = env.get("TF_CONFIG")?;
        let task = tf_config_task(config)?;
        info.rank = task.1;
        info.task_type = Some(task.0);
        info.world_size = tf_config_size(config);
        info.source = "TF_CONFIG".to_string();
        info.launcher = "tensorflow".to_string();
        info.flight_recorder = FlightRecorder::from_env(env, info.rank);
        Some(info)
    }

    /// How the rank reads next to a pid: `rank 1/4`, `rank 0`, `worker 2`.
    pub fn label(&self) -> String {
        match (&self.task_type, self.world_size) {
            (Some(kind), _) => format!("{kind} {}", self.rank),
            (None, Some(size)) => format!("rank {}/{size}", self.rank),
            (None, None) => format!("rank {}", self.rank),
        }
    }

    /// The key ranks of one job share: the rendezvous, else the run id, else the
    /// launcher with the world size.
    pub fn job_key(&self) -> String {
        if let Some(run) = &self.run_id {
            return format!("run {run}");
        }
        if let Some(rendezvous) = &self.rendezvous {
            return rendezvous.clone();
        }
        match self.world_size {
            Some(size) => format!("{} job of {size}", self.launcher),
            None => format!("{} job", self.launcher),
        }
    }
}

/// TF_CONFIG's `task`: its type and index.
fn tf_config_task(config: &str) -> Option<(String, u32)> {
    let value: serde_json::Value = serde_json::from_str(config).ok()?;
    let task = value.get("task")?;
    let kind = task.get("type")?.as_str()?.to_string();
    let index = u32::try_from(task.get("index")?.as_u64()?).ok()?;
    Some((kind, index))
}

/// TF_CONFIG's cluster size: every address of every task type.
fn tf_config_size(config: &str) -> Option<u32> {
    let value: serde_json::Value = serde_json::from_str(config).ok()?;
    let cluster = value.get("cluster")?.as_object()?;
    let total: usize = cluster
        .values()
        .filter_map(|tasks| tasks.as_array().map(Vec::len))
        .sum();
    u32::try_from(total).ok().filter(|&n| n > 0)
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
    fn torchrun_ranks_carry_the_run_and_the_rendezvous() {
        let info = RankInfo::from_env(&env(&[
            ("RANK", "3"),
            ("LOCAL_RANK", "1"),
            ("WORLD_SIZE", "4"),
            ("MASTER_ADDR", "127.0.0.1"),
            ("MASTER_PORT", "29500"),
            ("TORCHELASTIC_RUN_ID", "none"),
        ]))
        .expect("a rank");
        assert_eq!(info.rank, 3);
        assert_eq!(info.local_rank, Some(1));
        assert_eq!(info.world_size, Some(4));
        assert_eq!(info.launcher, "torchrun");
        assert_eq!(info.rendezvous.as_deref(), Some("127.0.0.1:29500"));
        assert_eq!(info.label(), "rank 3/4");
        assert_eq!(info.job_key(), "run none");
    }

    #[test]
    fn ranks_set_by_hand_are_manual() {
        let info = RankInfo::from_env(&env(&[
            ("RANK", "0"),
            ("WORLD_SIZE", "2"),
            ("MASTER_ADDR", "10.0.0.1"),
            ("MASTER_PORT", "1234"),
        ]))
        .expect("a rank");
        assert_eq!(info.launcher, "manual");
        assert_eq!(info.source, "RANK");
        assert_eq!(info.job_key(), "10.0.0.1:1234");
    }

    #[test]
    fn mpi_slurm_and_jax_ranks_are_recognised() {
        let mpi = RankInfo::from_env(&env(&[
            ("OMPI_COMM_WORLD_RANK", "5"),
            ("OMPI_COMM_WORLD_SIZE", "8"),
            ("OMPI_COMM_WORLD_LOCAL_RANK", "1"),
        ]))
        .expect("an MPI rank");
        assert_eq!(
            (mpi.rank, mpi.world_size, mpi.local_rank),
            (5, Some(8), Some(1))
        );
        assert_eq!(mpi.launcher, "mpirun");
        let pmi =
            RankInfo::from_env(&env(&[("PMI_RANK", "2"), ("PMI_SIZE", "4")])).expect("a PMI rank");
        assert_eq!((pmi.rank, pmi.source.as_str()), (2, "PMI_RANK"));
        let slurm = RankInfo::from_env(&env(&[("SLURM_PROCID", "1"), ("SLURM_NTASKS", "2")]))
            .expect("a Slurm rank");
        assert_eq!(slurm.launcher, "slurm");
        let jax = RankInfo::from_env(&env(&[
            ("JAX_PROCESS_ID", "1"),
            ("JAX_NUM_PROCESSES", "2"),
            ("JAX_COORDINATOR_ADDRESS", "host:1234"),
        ]))
        .expect("a JAX process");
        assert_eq!((jax.rank, jax.launcher.as_str()), (1, "jax"));
        assert_eq!(jax.rendezvous.as_deref(), Some("host:1234"));
    }

    #[test]
    fn a_single_slurm_task_is_no_distributed_job() {
        assert_eq!(
            RankInfo::from_env(&env(&[("SLURM_PROCID", "0"), ("SLURM_NTASKS", "1")])),
            None
        );
        assert_eq!(RankInfo::from_env(&env(&[("OMP_NUM_THREADS", "4")])), None);
    }

    #[test]
    fn tf_config_gives_the_task_and_the_cluster_size() {
        let config = r#"{"cluster": {"chief": ["a:1"], "worker": ["b:1", "c:1"]}, "task": {"type": "worker", "index": 1}}"#;
        let info = RankInfo::from_env(&env(&[("TF_CONFIG", config)])).expect("a TF task");
        assert_eq!(info.rank, 1);
        assert_eq!(info.task_type.as_deref(), Some("worker"));
        assert_eq!(info.world_size, Some(3));
        assert_eq!(info.label(), "worker 1");
        assert_eq!(
            RankInfo::from_env(&env(&[("TF_CONFIG", "not json")])),
            None,
            "a TF_CONFIG that does not parse names no rank"
        );
    }

    #[test]
    fn launchers_are_told_by_name_and_command_line() {
        let args = |s: &str| s.split(' ').map(str::to_string).collect::<Vec<_>>();
        assert_eq!(
            launcher_of(
                "python3",
                &args("/usr/bin/python3 -m torch.distributed.run --nproc-per-node 2 train.py")
            ),
            Some("torchrun")
        );
        assert_eq!(launcher_of("pt_elastic", &[]), Some("torchrun"));
        assert_eq!(
            launcher_of("torchrun", &args("/usr/local/bin/torchrun train.py")),
            Some("torchrun")
        );
        assert_eq!(
            launcher_of("mpirun", &args("mpirun -np 4 python train.py")),
            Some("mpirun")
        );
        assert_eq!(launcher_of("python3", &args("python3 train.py")), None);
    }

    #[test]
    fn a_rank_that_does_not_parse_is_ignored() {
        assert_eq!(
            RankInfo::from_env(&env(&[("RANK", "zero"), ("WORLD_SIZE", "2")])),
            None
        );
    }

    #[test]
    fn the_flight_recorder_is_noted_when_its_buffer_is_on() {
        let on = RankInfo::from_env(&env(&[
            ("RANK", "3"),
            ("TORCH_NCCL_TRACE_BUFFER_SIZE", "2000"),
            (
                "TORCH_NCCL_DEBUG_INFO_TEMP_FILE",
                "/scratch/nccl_trace_rank_",
            ),
        ]))
        .expect("a rank");
        let recorder = on.flight_recorder.expect("a recorder");
        assert_eq!(recorder.dump_file, "/scratch/nccl_trace_rank_3");
        assert_eq!(recorder.setting, "TORCH_NCCL_TRACE_BUFFER_SIZE=2000");
        assert!(!recorder.default_prefix);
        for off in [
            &[("RANK", "0"), ("TORCH_NCCL_TRACE_BUFFER_SIZE", "0")][..],
            &[("RANK", "0"), ("TORCH_NCCL_TRACE_BUFFER_SIZE", "many")][..],
            &[("RANK", "0")][..],
            // TORCH_FR_BUFFER_SIZE is read first, as torch does.
            &[
                ("RANK", "0"),
                ("TORCH_FR_BUFFER_SIZE", "0"),
                ("TORCH_NCCL_TRACE_BUFFER_SIZE", "2000"),
            ][..],
        ] {
            assert_eq!(
                RankInfo::from_env(&env(off))
                    .expect("a rank")
                    .flight_recorder,
                None,
                "{off:?}"
            );
        }
    }

    #[test]
    fn the_default_dump_goes_to_the_ranks_cache_directory() {
        let at = |pairs: &[(&str, &str)]| {
            RankInfo::from_env(&env(pairs))
                .and_then(|r| r.flight_recorder)
                .map(|f| (f.dump_file, f.default_prefix))
        };
        assert_eq!(
            at(&[
                ("RANK", "1"),
                ("TORCH_NCCL_TRACE_BUFFER_SIZE", "100"),
                ("HOME", "/home/ml"),
            ]),
            Some((
                "/home/ml/.cache/torch/comm_lib_trace_rank_1".to_string(),
                true
            ))
        );
        assert_eq!(
            at(&[
                ("RANK", "1"),
                ("TORCH_FR_BUFFER_SIZE", "100"),
                ("HOME", "/home/ml"),
                ("XDG_CACHE_HOME", "/cache/"),
            ]),
            Some(("/cache/torch/comm_lib_trace_rank_1".to_string(), true))
        );
        assert_eq!(
            at(&[("RANK", "0"), ("TORCH_NCCL_TRACE_BUFFER_SIZE", "100")]),
            Some(("/tmp/.cache/torch/comm_lib_trace_rank_0".to_string(), true))
        );
        assert_eq!(
            at(&[
                ("RANK", "0"),
                ("TORCH_NCCL_TRACE_BUFFER_SIZE", "100"),
                ("TORCH_NCCL_DEBUG_INFO_TEMP_FILE", "/a/nccl_"),
                ("TORCH_FR_DUMP_TEMP_FILE", "/b/fr_"),
            ]),
            Some(("/b/fr_0".to_string(), false))
        );
    }

    /// A fresh directory under the system's temporary one, removed when dropped.
    struct TempDir(std::path::PathBuf);

    impl TempDir {
        fn new(name: &str) -> TempDir {
            let dir =
                std::env::temp_dir().join(format!("tfwatch-ranks-{name}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).expect("a temporary directory");
            TempDir(dir)
        }

        fn path(&self) -> &str {
            self.0.to_str().expect("a UTF-8 temporary path")
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn size(path: &str) -> Option<u64> {
        std::fs::metadata(path).ok().map(|m| m.len())
    }

    #[test]
    fn a_dump_file_that_exists_is_named_with_its_size() {
        let dir = TempDir::new("dump");
        let prefix = format!("{}/trace_", dir.path());
        std::fs::write(format!("{prefix}1"), b"pickled trace").unwrap();
        let mut rank = RankInfo::from_env(&env(&[
            ("RANK", "1"),
            ("WORLD_SIZE", "2"),
            ("TORCH_NCCL_TRACE_BUFFER_SIZE", "2000"),
            ("TORCH_NCCL_DEBUG_INFO_TEMP_FILE", &prefix),
        ]))
        .expect("a rank");
        let recorder = rank.flight_recorder.as_mut().expect("a recorder");
        recorder.locate(1, None, size);
        assert_eq!(recorder.dump_bytes, Some(13));
        let evidence = recorder.evidence("rank 1/2 pid 7");
        assert!(
            evidence.starts_with(&format!(
                "rank 1/2 pid 7: its Flight Recorder dump is {prefix}1 (13 bytes; TORCH_NCCL_TRACE_BUFFER_SIZE=2000)"
            )),
            "{evidence}"
        );
    }

    #[test]
    fn a_relative_prefix_is_the_ranks_working_directory_and_a_missing_dump_says_where_it_will_be() {
        let dir = TempDir::new("relative");
        let mut recorder = RankInfo::from_env(&env(&[
            ("RANK", "0"),
            ("TORCH_NCCL_TRACE_BUFFER_SIZE", "2000"),
            ("TORCH_NCCL_DEBUG_INFO_TEMP_FILE", "traces/fr_"),
        ]))
        .and_then(|r| r.flight_recorder)
        .expect("a recorder");
        let unlooked = recorder.evidence("rank 0 pid 5");
        assert!(unlooked.contains("not looked for"), "{unlooked}");
        recorder.locate(0, Some(dir.path()), size);
        let expected = format!("{}/traces/fr_0", dir.path());
        assert_eq!(recorder.dump_file, expected);
        assert_eq!(recorder.dump_bytes, None);
        let evidence = recorder.evidence("rank 0 pid 5");
        assert!(
            evidence.contains(&format!(
                "no dump yet: it will be {expected} once dumped (when a collective times out)"
            )),
            "{evidence}"
        );
        std::fs::create_dir_all(format!("{}/traces", dir.path())).unwrap();
        std::fs::write(&expected, b"x").unwrap();
        recorder.locate(0, Some(dir.path()), size);
        assert_eq!(
            (recorder.dump_file.as_str(), recorder.dump_bytes),
            (expected.as_str(), Some(1)),
            "located twice, the path stays the rank's"
        );
    }

    #[test]
    fn with_the_default_prefix_older_torchs_dump_is_found_too() {
        let mut recorder = RankInfo::from_env(&env(&[
            ("RANK", "2"),
            ("TORCH_NCCL_TRACE_BUFFER_SIZE", "10"),
            ("TORCH_NCCL_DUMP_ON_TIMEOUT", "0"),
            ("HOME", "/nonexistent-home"),
        ]))
        .and_then(|r| r.flight_recorder)
        .expect("a recorder");
        assert!(recorder.no_dump_on_timeout);
        recorder.locate(2, None, |path| {
            (path == "/tmp/nccl_trace_rank_2").then_some(42)
        });
        assert_eq!(
            (recorder.dump_file.as_str(), recorder.dump_bytes),
            ("/tmp/nccl_trace_rank_2", Some(42))
        );
        recorder.dump_bytes = None;
        assert!(
            recorder.evidence("r").contains("on demand only"),
            "{}",
            recorder.evidence("r")
        );
    }
}
