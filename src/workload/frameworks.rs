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

/// The Python interpreter the framework cases run under (`run-workload --verify
/// --python PATH`, else `python3` from `PATH`), as it says itself.
#[derive(Debug, Clone, PartialEq)]
pub struct Python {
    /// What was asked for: the path given, or `python3`.
    pub command: std::path::PathBuf,
    /// `sys.executable`: the interpreter that really runs (a virtualenv's, a pyenv
    /// version's behind its shim).
    pub executable: String,
    /// `platform.python_version()`: "3.11.7".
    pub version: String,
}

impl Python {
    /// "/usr/bin/python3 (Python 3.11.2)".
    pub fn describe(&self) -> String {
        format!("{} (Python {})", self.executable, self.version)
    }
}

/// How long an interpreter may take to answer a question.
const PYTHON_ANSWER: std::time::Duration = std::time::Duration::from_secs(30);

/// Runs `python -c code` with a deadline; returns its stdout when it exits 0, else
/// its exit code (`Ok(Err(code))`); `Err` when it cannot run or does not answer.
fn ask(python: &std::path::Path, code: &str) -> Result<Result<String, i32>, String> {
    use std::io::Read;
    let shown = python.display();
    let mut child = std::process::Command::new(python)
        .args(["-c", code])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot run {shown}: {e}"))?;
    let deadline = std::time::Instant::now() + PYTHON_ANSWER;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "{shown} did not answer within {} s",
                    PYTHON_ANSWER.as_secs()
                ));
            }
            Err(e) => return Err(format!("cannot wait for {shown}: {e}")),
        }
    };
    if !status.success() {
        return Ok(Err(status.code().unwrap_or(-1)));
    }
    let mut out = String::new();
    if let Some(mut stdout) = child.stdout.take() {
        stdout
            .read_to_string(&mut out)
            .map_err(|e| format!("cannot read the answer of {shown}: {e}"))?;
    }
    Ok(Ok(out))
}

/// Asks `command` which interpreter and version it is; `Err` says why it is not a
/// Python interpreter that can run the cases.
pub fn probe(command: &std::path::Path) -> Result<Python, String> {
    let answer = ask(
        command,
        "import platform, sys; print(platform.python_version()); print(sys.executable)",
    )?
    .map_err(|code| {
        format!(
            "{} -c exited {code}: not a Python interpreter",
            command.display()
        )
    })?;
    let mut lines = answer.lines();
    match (lines.next(), lines.next()) {
        (Some(version), Some(executable))
            if version.starts_with('3') && !executable.trim().is_empty() =>
        {
            Ok(Python {
                command: command.to_path_buf(),
                executable: executable.trim().to_string(),
                version: version.trim().to_string(),
            })
        }
        _ => Err(format!(
            "{} is not a Python 3 interpreter (it answered {:?})",
            command.display(),
            answer.trim()
        )),
    }
}

/// Whether `python` finds `framework`'s module, without importing it (an import of
/// TensorFlow takes seconds); `Err` says why not, and how to install it there.
pub fn available(framework: Framework, python: &Python) -> Result<(), String> {
    let check = format!(
        "import importlib.util, sys; sys.exit(0 if importlib.util.find_spec({:?}) else 3)",
        framework.module()
    );
    match ask(&python.command, &check)? {
        Ok(_) => Ok(()),
        Err(_) => Err(format!(
            "{} has no module {:?} ({} -m pip install {}, or choose an interpreter that has it with --python)",
            python.describe(),
            framework.module(),
            python.executable,
            match framework {
                Framework::TensorFlow => "tensorflow-cpu",
                Framework::Torch => "torch",
            }
        )),
    }
}
