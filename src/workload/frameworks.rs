//! Real-framework scenarios: Python scripts (under `src/workload/frameworks/`, built
//! into the binary) that hang or run the way TensorFlow and PyTorch jobs do, with the
//! seeds' fixes. `run-workload --verify` runs them where the framework is importable;
//! `tests/frameworks.rs` runs the same files under `tfwatch run`. Each script prints
//! `skip: ...` and exits [`SKIP_EXIT`] when its framework cannot be imported.

/// A script's exit code when its framework cannot be imported.
pub const SKIP_EXIT: i32 = 77;

/// The Python module a case needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framework {
    TensorFlow,
    Torch,
}

impl Framework {
    pub const ALL: [Framework; 2] = [Framework::TensorFlow, Framework::Torch];

    /// The module `import` names.
    pub fn module(self) -> &'static str {
        match self {
            Framework::TensorFlow => "tensorflow",
            Framework::Torch => "torch",
        }
    }
}

/// What a case should show.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// It hangs: the finding must be a hang (fork-inherited lock, no progress, deadlock).
    Hang,
    /// It completes with exit 0, with nothing of severity warning or above.
    Healthy,
}

/// One framework case.
#[derive(Debug, Clone, Copy)]
pub struct FrameworkCase {
    /// The verify row's name (`tf-fork-lock`).
    pub name: &'static str,
    pub framework: Framework,
    pub expect: Expect,
    /// The script's file name and text.
    pub file: &'static str,
    pub script: &'static str,
    /// Arguments of the script.
    pub args: &'static [&'static str],
}

const TF_FORK_LOCK: &str = include_str!("frameworks/tf_fork_lock.py");
const TF_PY_FUNCTION_LOCK: &str = include_str!("frameworks/tf_py_function_lock.py");
const TF_HEALTHY: &str = include_str!("frameworks/tf_healthy.py");
const TORCH_FORK_LOCK: &str = include_str!("frameworks/torch_fork_lock.py");
const TORCH_DATALOADER_FORK_LOCK: &str = include_str!("frameworks/torch_dataloader_fork_lock.py");
const TORCH_DATALOADER_HEALTHY: &str = include_str!("frameworks/torch_dataloader_healthy.py");
const OVERSUBSCRIBE: &str = include_str!("frameworks/oversubscribe.py");
const TORCH_GLOO: &str = include_str!("frameworks/torch_gloo.py");

/// The cases `--verify` runs, broken before fixed for each framework.
pub const CASES: &[FrameworkCase] = &[
    FrameworkCase {
        name: "tf-fork-lock",
        framework: Framework::TensorFlow,
        expect: Expect::Hang,
        file: "tf_fork_lock.py",
        script: TF_FORK_LOCK,
        args: &[],
    },
    FrameworkCase {
        name: "tf-py-function-lock",
        framework: Framework::TensorFlow,
        expect: Expect::Hang,
        file: "tf_py_function_lock.py",
        script: TF_PY_FUNCTION_LOCK,
        args: &[],
    },
    FrameworkCase {
        name: "tf-healthy",
        framework: Framework::TensorFlow,
        expect: Expect::Healthy,
        file: "tf_healthy.py",
        script: TF_HEALTHY,
        args: &[],
    },
    FrameworkCase {
        name: "torch-fork-lock",
        framework: Framework::Torch,
        expect: Expect::Hang,
        file: "torch_fork_lock.py",
        script: TORCH_FORK_LOCK,
        args: &[],
    },
    FrameworkCase {
        name: "torch-dataloader-fork-lock",
        framework: Framework::Torch,
        expect: Expect::Hang,
        file: "torch_dataloader_fork_lock.py",
        script: TORCH_DATALOADER_FORK_LOCK,
        args: &[],
    },
    FrameworkCase {
        name: "torch-dataloader",
        framework: Framework::Torch,
        expect: Expect::Healthy,
        file: "torch_dataloader_healthy.py",
        script: TORCH_DATALOADER_HEALTHY,
        args: &[],
    },
    FrameworkCase {
        name: "torch-set-num-threads",
        framework: Framework::Torch,
        expect: Expect::Healthy,
        file: "oversubscribe.py",
        script: OVERSUBSCRIBE,
        args: &["torch", "fixed-api", "4"],
    },
    FrameworkCase {
        name: "torch-gloo-mismatch",
        framework: Framework::Torch,
        expect: Expect::Hang,
        file: "torch_gloo.py",
        script: TORCH_GLOO,
        args: &["mismatch", "2"],
    },
    FrameworkCase {
        name: "torch-gloo-fixed",
        framework: Framework::Torch,
        expect: Expect::Healthy,
        file: "torch_gloo.py",
        script: TORCH_GLOO,
        args: &["fixed", "2"],
    },
];

/// Whether `python3` finds `framework`'s module, without importing it (an import of
/// TensorFlow takes seconds); `Err` says why not.
pub fn available(framework: Framework) -> Result<(), String> {
    let check = format!(
        "import importlib.util, sys; sys.exit(0 if importlib.util.find_spec({:?}) else 3)",
        framework.module()
    );
    let mut child = std::process::Command::new("python3")
        .args(["-c", &check])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot run python3: {e}"))?;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        match child.try_wait() {
            Ok(Some(status)) if status.success() => return Ok(()),
            Ok(Some(_)) => {
                return Err(format!(
                    "python3 has no module {:?} (pip install {})",
                    framework.module(),
                    match framework {
                        Framework::TensorFlow => "tensorflow-cpu",
                        Framework::Torch => "torch",
                    }
                ));
            }
            Ok(None) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err("python3 did not answer within 30 s".to_string());
            }
            Err(e) => return Err(format!("cannot wait for python3: {e}")),
        }
    }
}
