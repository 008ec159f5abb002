//! The GIL of a CPython process, read from the interpreter's own state in the target's
//! memory with `process_vm_readv` only: the process is never stopped or traced.
//!
//! The runtime is found from `/proc/PID/maps` and the ELF symbols of the mapped
//! CPython executable or libpython: `Py_Version` (the exact version, 3.11 and later)
//! and `_PyRuntime`. Where the GIL state lives differs by version:
//!
//! | version | GIL state (`struct _gil_runtime_state`) | `native_thread_id` in a thread state |
//! |---|---|---|
//! | 3.11 | `_PyRuntime.ceval.gil` (offset 360) | 160 |
//! | 3.12 | `*_PyRuntime.interpreters.main->ceval.gil` (48, then 384) | 144 |
//! | 3.13 | `*_PyRuntime.interpreters.main->ceval.gil` (640, then 16) | 160 |
//!
//! (x86-64 and aarch64 Linux, offsets of the default, GIL-enabled build; checked with
//! `offsetof` against the installed headers and cross-checked with py-spy's bindings.)
//! The GIL state begins `interval` (the switch interval, µs), `last_holder` (the
//! thread state that took it last), `locked`, `switch_number` (how many times it
//! changed hands) in every one of these versions.
//!
//! Each read is checked for sense (a switch interval in range, `locked` 0 or 1) so a
//! wrong layout is said, never reported as readings.

use std::collections::HashMap;
use std::io::IoSliceMut;
use std::path::Path;
use std::time::{Duration, Instant};

use goblin::elf::Elf;
use nix::sys::uio::{RemoteIoVec, process_vm_readv};
use nix::unistd::Pid;

use crate::model::gil::{GilHolder, GilReading};

/// ELF files larger than this are not read for their symbols.
const ELF_LIMIT: u64 = 512 * 1024 * 1024;

/// Where one process's GIL state and thread ids are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Runtime {
    pub pid: i32,
    /// (major, minor, micro).
    pub version: (u8, u8, u8),
    /// Address of the `_gil_runtime_state`.
    pub gil: u64,
    /// Offset of `native_thread_id` in a `PyThreadState`.
    pub native_tid_offset: u64,
}

impl Runtime {
    pub fn version_text(&self) -> String {
        let (major, minor, micro) = self.version;
        format!("{major}.{minor}.{micro}")
    }
}

/// One read of the GIL state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GilState {
    pub interval_us: u64,
    pub last_holder: u64,
    pub locked: bool,
    pub switch_number: u64,
}

/// Reads `buffer.len()` bytes at `address` of `pid` (never stops it).
fn read(pid: i32, address: u64, buffer: &mut [u8]) -> Result<(), String> {
    let len = buffer.len();
    let base = usize::try_from(address).map_err(|_| format!("address {address:#x}"))?;
    let mut local = [IoSliceMut::new(buffer)];
    let remote = [RemoteIoVec { base, len }];
    match process_vm_readv(Pid::from_raw(pid), &mut local, &remote) {
        Ok(n) if n == len => Ok(()),
        Ok(n) => Err(format!(
            "read {n} of {len} bytes at {address:#x} of pid {pid}"
        )),
        Err(nix::errno::Errno::EPERM) => Err(format!(
            "not allowed to read the memory of pid {pid} (another user's process?)"
        )),
        Err(error) => Err(format!("cannot read the memory of pid {pid}: {error}")),
    }
}

fn read_u64(pid: i32, address: u64) -> Result<u64, String> {
    let mut bytes = [0_u8; 8];
    read(pid, address, &mut bytes)?;
    Ok(u64::from_ne_bytes(bytes))
}

/// Reads the GIL state of `runtime` once, checked for sense.
pub fn read_state(runtime: &Runtime) -> Result<GilState, String> {
    let mut bytes = [0_u8; 32];
    read(runtime.pid, runtime.gil, &mut bytes)?;
    let word = |i: usize| {
        let mut w = [0_u8; 8];
        w.copy_from_slice(&bytes[i * 8..i * 8 + 8]);
        u64::from_ne_bytes(w)
    };
    // `locked` is an int followed by padding.
    let locked = word(2) & 0xffff_ffff;
    let state = GilState {
        interval_us: word(0),
        last_holder: word(1),
        locked: locked == 1,
        switch_number: word(3),
    };
    if !(1..=10_000_000).contains(&state.interval_us) || locked > 1 {
        return Err(format!(
            "the GIL state read at {:#x} of pid {} does not look like CPython {}'s (switch interval {} µs, locked {locked}): unsupported build",
            runtime.gil,
            runtime.pid,
            runtime.version_text(),
            state.interval_us
        ));
    }
    Ok(state)
}

/// A mapped file of the target and where its first byte is mapped.
struct Mapped {
    path: String,
    start: u64,
}

/// The CPython image of `pid`: its libpython when one is mapped, else its executable.
fn cpython_image(proc_root: &Path, pid: i32) -> Result<Mapped, String> {
    let maps = std::fs::read_to_string(proc_root.join(format!("{pid}/maps")))
        .map_err(|e| format!("cannot read /proc/{pid}/maps: {e}"))?;
    let exe = std::fs::read_link(proc_root.join(format!("{pid}/exe")))
        .ok()
        .map(|p| p.to_string_lossy().into_owned());
    let mut images: Vec<Mapped> = Vec::new();
    for line in maps.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [range, _, offset, _, _, path, ..] = fields.as_slice() else {
            continue;
        };
        if u64::from_str_radix(offset, 16) != Ok(0) || images.iter().any(|m| m.path == *path) {
            continue;
        }
        let Some(start) = range
            .split_once('-')
            .and_then(|(s, _)| u64::from_str_radix(s, 16).ok())
        else {
            continue;
        };
        images.push(Mapped {
            path: (*path).to_string(),
            start,
        });
    }
    let name = |m: &Mapped| m.path.rsplit('/').next().unwrap_or("").to_string();
    let libpython = images
        .iter()
        .position(|m| name(m).starts_with("libpython3"));
    let executable = images
        .iter()
        .position(|m| exe.as_deref() == Some(m.path.as_str()));
    match libpython.or(executable) {
        Some(i) => Ok(images.swap_remove(i)),
        None => Err(format!(
            "pid {pid} maps no libpython and its executable is not mapped as a file"
        )),
    }
}

/// The load bias of `elf` mapped at `start` and the addresses of `names` in it.
fn symbols(
    proc_root: &Path,
    pid: i32,
    image: &Mapped,
    names: &[&str],
) -> Result<HashMap<String, u64>, String> {
    // Through the target's root, so a process in a container finds its own file.
    let path = proc_root.join(format!("{pid}/root{}", image.path));
    let size = std::fs::metadata(&path)
        .map_err(|e| format!("cannot read {}: {e}", image.path))?
        .len();
    if size > ELF_LIMIT {
        return Err(format!("{} is larger than {ELF_LIMIT} bytes", image.path));
    }
    let bytes = std::fs::read(&path).map_err(|e| format!("cannot read {}: {e}", image.path))?;
    let elf = Elf::parse(&bytes).map_err(|e| format!("{} is no ELF file: {e}", image.path))?;
    let first_load = elf
        .program_headers
        .iter()
        .filter(|h| h.p_type == goblin::elf::program_header::PT_LOAD)
        .map(|h| h.p_vaddr & !0xfff)
        .min()
        .unwrap_or(0);
    let bias = image.start.wrapping_sub(first_load);
    let mut found = HashMap::new();
    let tables = [(&elf.dynsyms, &elf.dynstrtab), (&elf.syms, &elf.strtab)];
    for (syms, strings) in tables {
        for sym in syms.iter() {
            let Some(name) = strings.get_at(sym.st_name) else {
                continue;
            };
            if names.contains(&name) && sym.st_value != 0 && !found.contains_key(name) {
                found.insert(name.to_string(), bias.wrapping_add(sym.st_value));
            }
        }
    }
    Ok(found)
}

/// Finds the GIL state of CPython process `pid`. Supported: CPython 3.11 to 3.13 with
/// the GIL (see the module's table); an earlier version (no `Py_Version`), a later one
/// or a free-threaded build is an error that says so.
pub fn locate(proc_root: &Path, pid: i32) -> Result<Runtime, String> {
    let image = cpython_image(proc_root, pid)?;
    let found = symbols(proc_root, pid, &image, &["_PyRuntime", "Py_Version"])?;
    let runtime = *found.get("_PyRuntime").ok_or_else(|| {
        format!(
            "{} has no _PyRuntime symbol (stripped, or not CPython 3.7+)",
            image.path
        )
    })?;
    let hex = match found.get("Py_Version") {
        Some(&at) => read_u64(pid, at)? & 0xffff_ffff,
        None => {
            return Err(format!(
                "unsupported CPython version in {} (before 3.11: no Py_Version); the GIL state is read for CPython 3.11 to 3.13",
                image.path
            ));
        }
    };
    let byte = |shift: u32| u8::try_from((hex >> shift) & 0xff).unwrap_or(0);
    let version = (byte(24), byte(16), byte(8));
    let (gil, native_tid_offset) = match version {
        (3, 11, _) => (runtime + 360, 160),
        (3, 12, _) => {
            let interp = read_u64(pid, runtime + 48)?;
            (read_u64(pid, interp + 384)?, 144)
        }
        (3, 13, _) => {
            let interp = read_u64(pid, runtime + 640)?;
            (read_u64(pid, interp + 16)?, 160)
        }
        (major, minor, micro) => {
            return Err(format!(
                "unsupported CPython version {major}.{minor}.{micro}: the GIL state is read for CPython 3.11 to 3.13"
            ));
        }
    };
    if gil == 0 {
        return Err(format!(
            "CPython {}.{} of pid {pid} has no GIL state yet (the interpreter is starting or ending)",
            version.0, version.1
        ));
    }
    let located = Runtime {
        pid,
        version,
        gil,
        native_tid_offset,
    };
    read_state(&located)?;
    Ok(located)
}

/// How many reads a burst makes and over how long.
#[derive(Debug, Clone, Copy)]
pub struct Burst {
    pub reads: u32,
    pub over: Duration,
}

impl Default for Burst {
    /// 100 reads over 1 s.
    fn default() -> Self {
        Burst {
            reads: 100,
            over: Duration::from_secs(1),
        }
    }
}

/// Reads the GIL state of `runtime` `burst.reads` times spread over `burst.over`, then
/// names each holder's thread by the `native_thread_id` of its thread state. A
/// process that ends meanwhile ends the burst with the reads made so far.
pub fn sample(proc_root: &Path, runtime: &Runtime, burst: Burst) -> Result<GilReading, String> {
    let reads = burst.reads.max(2);
    let every = burst.over / (reads - 1);
    let started = Instant::now();
    let first = read_state(runtime)?;
    let mut last = first;
    let mut made = 1_u32;
    let mut locked_reads = u32::from(first.locked);
    let mut holders: HashMap<u64, u32> = HashMap::new();
    if first.locked {
        *holders.entry(first.last_holder).or_default() += 1;
    }
    let mut seconds = 0.0;
    for i in 1..reads {
        let due = started + every * i;
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let Ok(state) = read_state(runtime) else {
            break;
        };
        made += 1;
        seconds = started.elapsed().as_secs_f64();
        if state.locked {
            locked_reads += 1;
            *holders.entry(state.last_holder).or_default() += 1;
        }
        last = state;
    }
    let mut named: HashMap<i32, u32> = HashMap::new();
    for (state, count) in holders {
        *named
            .entry(thread_of(proc_root, runtime, state).unwrap_or(0))
            .or_default() += count;
    }
    let mut holders: Vec<GilHolder> = named
        .into_iter()
        .map(|(tid, reads)| GilHolder { tid, reads })
        .collect();
    holders.sort_by(|a, b| b.reads.cmp(&a.reads).then(a.tid.cmp(&b.tid)));
    Ok(GilReading {
        pid: runtime.pid,
        version: runtime.version_text(),
        reads: made,
        seconds,
        locked_reads,
        switches: last.switch_number.wrapping_sub(first.switch_number),
        holders,
        lines: Vec::new(),
        unavailable: None,
    })
}

/// The live thread of the process whose thread state is at `state`.
fn thread_of(proc_root: &Path, runtime: &Runtime, state: u64) -> Option<i32> {
    let tid = read_u64(runtime.pid, state.checked_add(runtime.native_tid_offset)?).ok()?;
    let tid = i32::try_from(tid).ok().filter(|&t| t > 0)?;
    proc_root
        .join(format!("{}/task/{tid}", runtime.pid))
        .exists()
        .then_some(tid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_process_without_python_is_said_so() {
        // This test binary is no CPython: its executable has no CPython runtime.
        let pid = i32::try_from(std::process::id()).unwrap_or(0);
        let error = locate(Path::new("/proc"), pid).unwrap_err();
        assert!(error.contains("no _PyRuntime"), "{error}");
    }

    #[test]
    fn a_missing_process_is_an_error() {
        let error = locate(Path::new("/proc"), i32::MAX).unwrap_err();
        assert!(error.contains("maps"), "{error}");
    }
}
