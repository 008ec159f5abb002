//! Which thread runtimes a process loaded, from the text of `/proc/<pid>/maps`.
//!
//! Runtimes are recognised by file name, as packagers name them: system libraries
//! (`libgomp.so.1.0.0`), copies bundled into wheels with a hash in the name
//! (`torch/lib/libgomp-a34b3233.so.1`, `numpy.libs/libopenblas64_p-r0-0cf96a72.3.23.dev.so`),
//! and interpreters (`python3.11`, `libpython3.11.so.1.0`).

use crate::model::LoadedRuntime;

/// A thread runtime tfwatch knows how to recognise and size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Runtime {
    GnuOpenMp,
    LlvmOpenMp,
    IntelOpenMp,
    OpenBlas,
    Mkl,
    Blis,
    TensorFlow,
    PyTorch,
    Cuda,
    Nccl,
    CPython,
}

impl Runtime {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Runtime::GnuOpenMp => "GNU OpenMP",
            Runtime::LlvmOpenMp => "LLVM OpenMP",
            Runtime::IntelOpenMp => "Intel OpenMP",
            Runtime::OpenBlas => "OpenBLAS",
            Runtime::Mkl => "MKL",
            Runtime::Blis => "BLIS",
            Runtime::TensorFlow => "TensorFlow",
            Runtime::PyTorch => "PyTorch",
            Runtime::Cuda => "CUDA runtime",
            Runtime::Nccl => "NCCL",
            Runtime::CPython => "CPython",
        }
    }

    pub(crate) fn family(self) -> &'static str {
        match self {
            Runtime::GnuOpenMp | Runtime::LlvmOpenMp | Runtime::IntelOpenMp => "openmp",
            Runtime::OpenBlas | Runtime::Mkl | Runtime::Blis => "blas",
            Runtime::TensorFlow | Runtime::PyTorch => "framework",
            Runtime::Cuda | Runtime::Nccl => "gpu",
            Runtime::CPython => "interpreter",
        }
    }

    /// Runtimes whose copies each start their own pool: two copies at different paths
    /// are two runtimes. Frameworks and interpreters spread over several directories
    /// (`tensorflow/` and `tensorflow/python/`) and count once.
    fn copies_are_distinct(self) -> bool {
        matches!(self.family(), "openmp" | "blas")
    }
}

/// How MKL runs its threads, from the threading library it loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MklThreading {
    /// `libmkl_intel_thread`: Intel OpenMP's pool.
    Intel,
    /// `libmkl_gnu_thread`: GNU OpenMP's pool.
    Gnu,
    /// `libmkl_tbb_thread`: oneTBB's pool.
    Tbb,
    /// `libmkl_sequential`: the calling thread only.
    Sequential,
}

/// One loaded copy of a runtime, with the facts the pool rules need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FoundRuntime {
    pub runtime: Runtime,
    /// Path of the library that names the runtime best (e.g. `libtorch_cpu.so`).
    pub library: String,
    pub version: Option<String>,
    /// For MKL: the threading layer library loaded beside it.
    pub mkl_threading: Option<MklThreading>,
    /// How well `library` names the runtime; a better file replaces a worse one.
    rank: u8,
    /// Directory of the copy, for telling copies apart.
    directory: String,
}

impl FoundRuntime {
    pub(crate) fn to_loaded(&self) -> LoadedRuntime {
        LoadedRuntime {
            name: self.runtime.name().to_string(),
            family: self.runtime.family().to_string(),
            library: self.library.clone(),
            version: self.version.clone(),
        }
    }

    /// The file name of the library (`libgomp-a34b3233.so.1`).
    pub(crate) fn file_name(&self) -> &str {
        file_name(&self.library)
    }
}

/// What a file name says about the runtime it belongs to.
struct Recognised {
    runtime: Runtime,
    version: Option<String>,
    /// Lower is a better name for the runtime (the main library of a framework).
    rank: u8,
    mkl_threading: Option<MklThreading>,
}

/// Finds the thread runtimes in the text of `/proc/<pid>/maps`, in the order they
/// first appear. Several files or mappings of one copy collapse into one entry; a
/// second copy of an OpenMP or BLAS runtime at another path is a second entry (each
/// copy starts its own pool).
pub(crate) fn find_runtimes(maps: &str) -> Vec<FoundRuntime> {
    let mut found: Vec<FoundRuntime> = Vec::new();
    let mut seen_paths: Vec<&str> = Vec::new();
    for path in maps.lines().filter_map(mapped_path) {
        if seen_paths.contains(&path) {
            continue;
        }
        seen_paths.push(path);
        let Some(recognised) = recognise(file_name(path)) else {
            continue;
        };
        let directory = directory(path).to_string();
        let existing = found.iter_mut().find(|entry| {
            entry.runtime == recognised.runtime
                && (!recognised.runtime.copies_are_distinct() || entry.directory == directory)
        });
        match existing {
            Some(entry) => {
                if recognised.rank < entry.rank {
                    entry.library = path.to_string();
                    entry.rank = recognised.rank;
                    if recognised.version.is_some() {
                        entry.version = recognised.version;
                    }
                } else if entry.version.is_none() {
                    entry.version = recognised.version;
                }
                if entry.mkl_threading.is_none() {
                    entry.mkl_threading = recognised.mkl_threading;
                }
            }
            None => found.push(FoundRuntime {
                runtime: recognised.runtime,
                library: path.to_string(),
                version: recognised.version,
                mkl_threading: recognised.mkl_threading,
                rank: recognised.rank,
                directory,
            }),
        }
    }
    found
}

/// The path of a file-backed mapping line, without a ` (deleted)` mark; `None` for
/// anonymous mappings, `[heap]`, `[stack]` and malformed lines.
///
/// A line is `address perms offset dev inode [path]`, the path padded with spaces and
/// possibly containing spaces itself.
fn mapped_path(line: &str) -> Option<&str> {
    let mut rest = line.trim_start();
    for _ in 0..5 {
        let end = rest.find(char::is_whitespace)?;
        rest = rest[end..].trim_start();
    }
    let path = rest.trim_end();
    let path = path.strip_suffix(" (deleted)").unwrap_or(path);
    path.starts_with('/').then_some(path)
}

fn file_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

fn directory(path: &str) -> &str {
    path.rsplit_once('/').map_or("", |(dir, _)| dir)
}

/// True when `name` is `stem` followed by `.so…` or by `-hash…` (a bundled copy).
fn is_library(name: &str, stem: &str) -> bool {
    name.strip_prefix(stem)
        .is_some_and(|rest| rest.starts_with(".so") || rest.starts_with('-'))
}

/// The version after `.so.` (`libcudart.so.12.1.105` → `12.1.105`).
fn so_version(name: &str) -> Option<String> {
    let (_, version) = name.split_once(".so.")?;
    (!version.is_empty() && version.chars().all(|c| c.is_ascii_digit() || c == '.'))
        .then(|| version.to_string())
}

/// OpenBLAS names carry the release: `libopenblasp-r0.3.21.so` → `0.3.21`; auditwheel
/// puts a hash inside it: `libopenblas64_p-r0-0cf96a72.3.23.dev.so` → `0.3.23.dev`.
fn openblas_version(name: &str) -> Option<String> {
    let stem = name.split(".so").next().unwrap_or(name);
    let (_, after) = stem.split_once("-r")?;
    let version = match after.split_once('-') {
        // "0-0cf96a72.3.23.dev": major, hash, then the rest of the release.
        Some((major, hashed)) => {
            let (_, minor) = hashed.split_once('.')?;
            format!("{major}.{minor}")
        }
        None => after.to_string(),
    };
    version
        .starts_with(|c: char| c.is_ascii_digit())
        .then_some(version)
}

/// `libpython3.11.so.1.0`, `libpython3.7m.so.1.0`, `python3.11` → `3.11`.
fn python_version(name: &str) -> Option<Option<String>> {
    let rest = if let Some(rest) = name.strip_prefix("libpython") {
        rest.split(".so").next().unwrap_or(rest)
    } else if let Some(rest) = name.strip_prefix("python") {
        // An executable: `python3`, `python3.11`, not `python3.11-config` or a module.
        if rest.contains(".so") || rest.contains('-') {
            return None;
        }
        rest
    } else {
        return None;
    };
    if !rest.starts_with('3') {
        return None;
    }
    let version: String = rest
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    let version = version.trim_end_matches('.');
    Some((version.contains('.')).then(|| version.to_string()))
}

fn recognise(name: &str) -> Option<Recognised> {
    let plain = |runtime, version| {
        Some(Recognised {
            runtime,
            version,
            rank: 0,
            mkl_threading: None,
        })
    };
    if is_library(name, "libgomp") {
        return plain(Runtime::GnuOpenMp, so_version(name));
    }
    if is_library(name, "libomp") {
        return plain(Runtime::LlvmOpenMp, so_version(name));
    }
    if is_library(name, "libiomp5") {
        return plain(Runtime::IntelOpenMp, so_version(name));
    }
    if name.starts_with("libopenblas") || name.starts_with("libscipy_openblas") {
        let version = openblas_version(name).or_else(|| so_version(name));
        return plain(Runtime::OpenBlas, version);
    }
    if let Some(rest) = name.strip_prefix("libmkl_") {
        let layer = rest.split(".so").next().unwrap_or(rest);
        let mkl_threading = match layer {
            "intel_thread" => Some(MklThreading::Intel),
            "gnu_thread" => Some(MklThreading::Gnu),
            "tbb_thread" => Some(MklThreading::Tbb),
            "sequential" => Some(MklThreading::Sequential),
            _ => None,
        };
        let rank = match layer {
            "rt" => 0,
            "core" => 1,
            _ => 2,
        };
        return Some(Recognised {
            runtime: Runtime::Mkl,
            version: so_version(name),
            rank,
            mkl_threading,
        });
    }
    if name.starts_with("libblis") && name.contains(".so") {
        return plain(Runtime::Blis, so_version(name));
    }
    for (stem, rank) in [
        ("libtensorflow_framework", 0),
        ("libtensorflow_cc", 1),
        ("libtensorflow", 1),
        ("_pywrap_tensorflow_internal", 2),
    ] {
        if name
            .strip_prefix(stem)
            .is_some_and(|rest| rest.starts_with(".so"))
        {
            return Some(Recognised {
                runtime: Runtime::TensorFlow,
                version: so_version(name),
                rank,
                mkl_threading: None,
            });
        }
    }
    for (stem, rank) in [
        ("libtorch_cpu", 0),
        ("libtorch", 1),
        ("libc10", 2),
        ("libtorch_cuda", 3),
        ("libtorch_python", 3),
        ("libc10_cuda", 3),
    ] {
        if name
            .strip_prefix(stem)
            .is_some_and(|rest| rest.starts_with(".so"))
        {
            return Some(Recognised {
                runtime: Runtime::PyTorch,
                version: so_version(name),
                rank,
                mkl_threading: None,
            });
        }
    }
    if is_library(name, "libcudart") {
        return plain(Runtime::Cuda, so_version(name));
    }
    if name.starts_with("libnccl.so") {
        return plain(Runtime::Nccl, so_version(name));
    }
    if let Some(version) = python_version(name) {
        return Some(Recognised {
            runtime: Runtime::CPython,
            version,
            rank: if name.starts_with("libpython") { 0 } else { 1 },
            mkl_threading: None,
        });
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(path: &str) -> String {
        format!("7f1c2a000000-7f1c2a100000 r-xp 00000000 08:01 1234                       {path}")
    }

    fn names(found: &[FoundRuntime]) -> Vec<(&str, Option<&str>)> {
        found
            .iter()
            .map(|f| (f.runtime.name(), f.version.as_deref()))
            .collect()
    }

    #[test]
    fn mapped_paths() {
        assert_eq!(
            mapped_path(&line("/usr/lib/libgomp.so.1.0.0")),
            Some("/usr/lib/libgomp.so.1.0.0")
        );
        assert_eq!(
            mapped_path("7ffd-7ffe rw-p 00000000 00:00 0                          [stack]"),
            None
        );
        assert_eq!(mapped_path("7f00-7f01 rw-p 00000000 00:00 0"), None);
        assert_eq!(mapped_path("7f00-7f01 rw-p"), None);
        assert_eq!(mapped_path(""), None);
        assert_eq!(
            mapped_path(&line("/opt/my env/lib/libomp.so (deleted)")),
            Some("/opt/my env/lib/libomp.so")
        );
    }

    #[test]
    fn recognises_runtimes_and_versions() {
        type Expected<'a> = Option<(&'a str, Option<&'a str>)>;
        let cases: &[(&str, Expected)] = &[
            ("libgomp.so.1.0.0", Some(("GNU OpenMP", Some("1.0.0")))),
            ("libgomp-a34b3233.so.1", Some(("GNU OpenMP", Some("1")))),
            ("libomp.so.5", Some(("LLVM OpenMP", Some("5")))),
            ("libomp-7f8e5b3c.so", Some(("LLVM OpenMP", None))),
            ("libompitrace.so", None),
            ("libiomp5.so", Some(("Intel OpenMP", None))),
            (
                "libopenblasp-r0.3.21.so",
                Some(("OpenBLAS", Some("0.3.21"))),
            ),
            (
                "libopenblas64_p-r0-0cf96a72.3.23.dev.so",
                Some(("OpenBLAS", Some("0.3.23.dev"))),
            ),
            ("libscipy_openblas64_-ff651d7f.so", Some(("OpenBLAS", None))),
            ("libopenblas.so.0", Some(("OpenBLAS", Some("0")))),
            ("libmkl_core.so.2", Some(("MKL", Some("2")))),
            ("libblis.so.4", Some(("BLIS", Some("4")))),
            (
                "libtensorflow_framework.so.2",
                Some(("TensorFlow", Some("2"))),
            ),
            ("_pywrap_tensorflow_internal.so", Some(("TensorFlow", None))),
            ("libtorch_cpu.so", Some(("PyTorch", None))),
            ("libc10.so", Some(("PyTorch", None))),
            ("libtorchaudio.so", None),
            (
                "libcudart.so.12.1.105",
                Some(("CUDA runtime", Some("12.1.105"))),
            ),
            (
                "libcudart-d0da41ae.so.11.0",
                Some(("CUDA runtime", Some("11.0"))),
            ),
            ("libnccl.so.2.18.3", Some(("NCCL", Some("2.18.3")))),
            ("libnccl-net.so", None),
            ("libpython3.11.so.1.0", Some(("CPython", Some("3.11")))),
            ("libpython3.7m.so.1.0", Some(("CPython", Some("3.7")))),
            ("python3.12", Some(("CPython", Some("3.12")))),
            ("python3", Some(("CPython", None))),
            ("python3.11-config", None),
            ("_ctypes.cpython-311-x86_64-linux-gnu.so", None),
            ("libc.so.6", None),
        ];
        for (name, expected) in cases {
            let got = recognise(name).map(|r| (r.runtime.name(), r.version));
            let got = got.as_ref().map(|(n, v)| (*n, v.as_deref()));
            assert_eq!(got, *expected, "{name}");
        }
    }

    #[test]
    fn recorded_python_with_libgomp() {
        let maps = include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/fixtures/audit/python-libgomp.maps"
        ));
        let found = find_runtimes(maps);
        assert_eq!(
            names(&found),
            vec![("CPython", Some("3.11")), ("GNU OpenMP", Some("1.0.0"))]
        );
        // The interpreter is named by libpython, the better of its two files.
        assert_eq!(
            found[0].library,
            "/root/.pyenv/versions/3.11.7/lib/libpython3.11.so.1.0"
        );
        assert_eq!(
            found[1].library,
            "/usr/lib/x86_64-linux-gnu/libgomp.so.1.0.0"
        );
    }

    #[test]
    fn bundled_copies_are_separate_entries_and_framework_files_collapse() {
        let maps = include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/fixtures/audit/torch-numpy.maps"
        ));
        let found = find_runtimes(maps);
        assert_eq!(
            names(&found),
            vec![
                ("CPython", Some("3.10")),
                ("GNU OpenMP", Some("1.0.0")),
                ("OpenBLAS", Some("0.3.23.dev")),
                ("GNU OpenMP", Some("1")),
                ("PyTorch", None),
                ("CUDA runtime", Some("12")),
                ("NCCL", Some("2")),
            ]
        );
        assert!(found[4].library.ends_with("/torch/lib/libtorch_cpu.so"));
        assert!(found[3].file_name().starts_with("libgomp-a34b3233"));
    }

    #[test]
    fn mkl_threading_layer() {
        let maps = [
            line("/opt/conda/lib/libmkl_intel_lp64.so.2"),
            line("/opt/conda/lib/libmkl_intel_thread.so.2"),
            line("/opt/conda/lib/libmkl_core.so.2"),
            line("/opt/conda/lib/libiomp5.so"),
        ]
        .join("\n");
        let found = find_runtimes(&maps);
        assert_eq!(
            names(&found),
            vec![("MKL", Some("2")), ("Intel OpenMP", None)]
        );
        assert_eq!(found[0].library, "/opt/conda/lib/libmkl_core.so.2");
        assert_eq!(found[0].mkl_threading, Some(MklThreading::Intel));
    }
}
