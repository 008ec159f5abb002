//! Records the /proc files of a live process tree into a directory that the sampler can
//! read as its proc root (`SamplerConfig::proc_root`), for tests under `fixtures/proc/`.
//!
//! Usage: `cargo run --example record_proc_fixture -- <pid> <out-dir>`
//!
//! It copies `stat`, `status`, `cmdline`, `comm`, `cgroup`, `io`, `maps` (runtime
//! libraries only), `environ` (thread and device variables only), `schedstat` and the
//! `exe` link of the process and each descendant, the per-task files, and `stat`
//! (CPU lines) and `meminfo` at the root. Nothing else of the machine is kept.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

const PROCESS_FILES: &[&str] = &[
    "stat",
    "status",
    "cmdline",
    "comm",
    "cgroup",
    "io",
    "schedstat",
];
const TASK_FILES: &[&str] = &[
    "stat",
    "status",
    "comm",
    "schedstat",
    "wchan",
    "syscall",
    "children",
];
/// Environment variables worth keeping in a fixture; everything else is dropped.
const ENV_PREFIXES: &[&str] = &[
    "OMP_",
    "MKL_",
    "OPENBLAS_",
    "BLIS_",
    "TF_NUM_",
    "TF_ENABLE_",
    "TF_CPP_",
    "CUDA_",
    "KMP_",
    "NCCL_",
    "PYTORCH_",
    "PYTHONUNBUFFERED",
];

fn main() -> io::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let (Some(pid), Some(out)) = (args.get(1), args.get(2)) else {
        eprintln!("usage: record_proc_fixture <pid> <out-dir>");
        std::process::exit(2);
    };
    let pid: i32 = pid
        .parse()
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, format!("bad pid {pid:?}")))?;
    let proc_root = Path::new("/proc");
    let out = PathBuf::from(out);
    fs::create_dir_all(&out)?;
    let cpu_lines: String = fs::read_to_string(proc_root.join("stat"))?
        .lines()
        .filter(|line| line.starts_with("cpu"))
        .map(|line| format!("{line}\n"))
        .collect();
    fs::write(out.join("stat"), cpu_lines)?;
    fs::copy(proc_root.join("meminfo"), out.join("meminfo"))?;

    let mut pending = vec![pid];
    while let Some(pid) = pending.pop() {
        let tids = record_process(proc_root, &out, pid)?;
        for tid in tids {
            let children = fs::read_to_string(proc_root.join(format!("{pid}/task/{tid}/children")))
                .unwrap_or_default();
            pending.extend(
                children
                    .split_whitespace()
                    .filter_map(|c| c.parse::<i32>().ok()),
            );
        }
    }
    println!("recorded into {}", out.display());
    Ok(())
}

/// Copies one process; returns its thread ids.
fn record_process(proc_root: &Path, out: &Path, pid: i32) -> io::Result<Vec<i32>> {
    let from = proc_root.join(pid.to_string());
    let to = out.join(pid.to_string());
    fs::create_dir_all(&to)?;
    for name in PROCESS_FILES {
        copy_if_readable(&from.join(name), &to.join(name))?;
    }
    if let Ok(maps) = fs::read_to_string(from.join("maps")) {
        fs::write(to.join("maps"), trim_maps(&maps))?;
    }
    if let Ok(environ) = fs::read(from.join("environ")) {
        fs::write(to.join("environ"), trim_environ(&environ))?;
    }
    if let Ok(target) = fs::read_link(from.join("exe")) {
        let link = to.join("exe");
        let _ = fs::remove_file(&link);
        std::os::unix::fs::symlink(target, link)?;
    }
    let mut tids: Vec<i32> = fs::read_dir(from.join("task"))?
        .filter_map(Result::ok)
        .filter_map(|entry| entry.file_name().to_str()?.parse().ok())
        .collect();
    tids.sort_unstable();
    for tid in &tids {
        let task_from = from.join(format!("task/{tid}"));
        let task_to = to.join(format!("task/{tid}"));
        fs::create_dir_all(&task_to)?;
        for name in TASK_FILES {
            copy_if_readable(&task_from.join(name), &task_to.join(name))?;
        }
    }
    Ok(tids)
}

fn copy_if_readable(from: &Path, to: &Path) -> io::Result<()> {
    match fs::read(from) {
        Ok(bytes) => fs::write(to, bytes),
        Err(_) => Ok(()),
    }
}

/// Keeps one line per mapped shared library (what the runtime audit looks at).
fn trim_maps(maps: &str) -> String {
    let mut seen = std::collections::HashSet::new();
    maps.lines()
        .filter(|line| {
            let path = line.split_whitespace().nth(5).unwrap_or("");
            path.contains(".so") && seen.insert(path.to_string())
        })
        .map(|line| format!("{line}\n"))
        .collect()
}

/// Keeps the thread-count and device variables only.
fn trim_environ(environ: &[u8]) -> Vec<u8> {
    environ
        .split(|b| *b == 0)
        .filter(|entry| ENV_PREFIXES.iter().any(|p| entry.starts_with(p.as_bytes())))
        .flat_map(|entry| entry.iter().copied().chain([0]))
        .collect()
}
