//! The environment a process really uses: the C library's `environ` array, read from
//! its memory.
//!
//! `/proc/<pid>/environ` is the environment at exec. A program that sets a variable
//! later (`os.environ["OMP_NUM_THREADS"] = "1"` calls `putenv`, `setenv` in C) changes
//! only the array that `environ` points to, so that is what a runtime's `getenv` sees when
//! it starts its pool. To read it:
//!
//! 1. find the `environ` object (`__environ`, `environ`, `_environ`) in the dynamic
//!    symbol table (`.dynsym`/`.dynstr`) of the executable (a copy relocation there
//!    interposes libc's) and else of the C library mapped in `maps`, reading the files
//!    through `/proc/<pid>/root`;
//! 2. add the load base (the start of the file's mapping at offset 0, less the first
//!    `PT_LOAD`'s page) and read the `char **` there with `process_vm_readv`;
//! 3. read the pointer array and the strings, bounded ([`MAX_ENTRIES`], [`MAX_BYTES`],
//!    [`MAX_ENTRY_BYTES`] per string), never across a page that is not mapped.
//!
//! `process_vm_readv` needs ptrace access but never stops the target. ELF64 little-endian
//! only (x86_64, aarch64); anything else is `Unavailable`.

use std::fs::File;
use std::io::IoSliceMut;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::sys::uio::{RemoteIoVec, process_vm_readv};
use nix::unistd::Pid;

/// Most entries of the `environ` array read.
pub const MAX_ENTRIES: usize = 4096;
/// Most bytes of strings read in all.
pub const MAX_BYTES: usize = 256 * 1024;
/// Most bytes of one `KEY=VALUE` string; a longer one is cut (its key is kept).
pub const MAX_ENTRY_BYTES: usize = 32 * 1024;
/// Most bytes of a symbol table read from a file.
const MAX_TABLE_BYTES: u64 = 8 * 1024 * 1024;
/// Most section headers looked at.
const MAX_SECTIONS: u16 = 512;

const PAGE: u64 = 4096;

/// Names of the `environ` object, in the order tried.
const ENVIRON_SYMBOLS: &[&str] = &["__environ", "environ", "_environ"];

/// Why the live environment could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LiveEnvError {
    /// `process_vm_readv` was refused: ptrace access is needed.
    Denied(String),
    /// Anything else (no C library found, a static binary, an unreadable file).
    Other(String),
}

impl LiveEnvError {
    pub fn reason(&self) -> &str {
        match self {
            LiveEnvError::Denied(reason) | LiveEnvError::Other(reason) => reason,
        }
    }
}

/// A file mapped in the process: its path and the start of its mapping at offset 0.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MappedFile {
    pub path: String,
    pub start: u64,
}

/// The mapping at file offset 0 of each file in `maps` whose file name passes `keep`,
/// in the order of `maps`. Where a file is mapped more than once from offset 0 (a loaded
/// library, and the same file mapped whole by a reader of its symbols, such as libdw),
/// the run of mappings that holds an executable segment — the loaded image — wins.
pub fn mapped_files(maps: &str, keep: impl Fn(&str) -> bool) -> Vec<MappedFile> {
    // Runs of mappings: each starts at a file's offset 0 and takes the later segments
    // of the same file on the lines right after it. (file, whether the run holds code)
    let mut runs: Vec<(MappedFile, bool)> = Vec::new();
    let mut open_run = false;
    for line in maps.lines() {
        // `start-end perms offset dev inode`, padding, then the path (which may hold
        // spaces): most lines of a process with many threads are anonymous stacks,
        // passed over without an allocation.
        let mut fields = line.splitn(6, ' ');
        let (Some(range), Some(perms), Some(offset), Some(_dev), Some(_inode), Some(rest)) = (
            fields.next(),
            fields.next(),
            fields.next(),
            fields.next(),
            fields.next(),
            fields.next(),
        ) else {
            open_run = false;
            continue;
        };
        let path = rest.trim();
        let executable = perms.contains('x');
        if u64::from_str_radix(offset, 16).ok() != Some(0) {
            match runs.last_mut() {
                Some((file, code)) if open_run && file.path == path => *code |= executable,
                _ => open_run = false,
            }
            continue;
        }
        let name = path.rsplit('/').next().unwrap_or(path);
        let start = range
            .split('-')
            .next()
            .and_then(|s| u64::from_str_radix(s, 16).ok());
        open_run = false;
        if let Some(start) = start
            && path.starts_with('/')
            && !path.ends_with(" (deleted)")
            && keep(name)
        {
            runs.push((
                MappedFile {
                    path: path.to_string(),
                    start,
                },
                executable,
            ));
            open_run = true;
        }
    }
    // Per file, in the order of `maps`: its first run with code, else its first run.
    let mut files: Vec<MappedFile> = Vec::new();
    for (file, _) in &runs {
        if files.iter().any(|f| f.path == file.path) {
            continue;
        }
        let same = || runs.iter().filter(|(f, _)| f.path == file.path);
        let chosen = same().find(|(_, code)| *code).or_else(|| same().next());
        files.extend(chosen.map(|(f, _)| f.clone()));
    }
    files
}

/// A C library's file name: glibc's `libc.so.6`, `libc-2.31.so`, musl's `libc.musl-*.so.1`
/// or `ld-musl-*.so.1` (musl's libc is its dynamic loader).
pub fn is_libc(name: &str) -> bool {
    name == "libc.so.6"
        || name == "libc.so"
        || (name.starts_with("libc-") && name.ends_with(".so"))
        || name.starts_with("libc.musl")
        || name.starts_with("ld-musl")
}

fn u16_at(bytes: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(bytes.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
}

fn u64_at(bytes: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(bytes.get(at..at + 8)?.try_into().ok()?))
}

fn read_exact_at(file: &File, offset: u64, len: u64) -> Result<Vec<u8>, String> {
    if len > MAX_TABLE_BYTES {
        return Err(format!("a table of {len} bytes is larger than the cap"));
    }
    let mut buf = vec![0u8; len as usize];
    file.read_exact_at(&mut buf, offset)
        .map_err(|error| format!("read at {offset}: {error}"))?;
    Ok(buf)
}

/// Where the `environ` object lies in an ELF file: its value relative to the load base
/// (its address for a non-PIE executable) and whether the file is position-independent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ElfSymbol {
    pub value: u64,
    /// `ET_DYN`: the value is relative to the load base.
    pub relocatable: bool,
    /// The page of the first `PT_LOAD`'s virtual address (0 for most shared objects).
    pub first_load_page: u64,
}

/// Looks up the first of `names` defined as an object in the `.dynsym` of the ELF file
/// `file`. `Ok(None)` when the file defines none of them (it only refers to them).
pub fn find_dynamic_symbol(file: &File, names: &[&str]) -> Result<Option<ElfSymbol>, String> {
    let header = read_exact_at(file, 0, 64)?;
    if header.get(0..4) != Some(b"\x7fELF".as_slice()) {
        return Err("not an ELF file".to_string());
    }
    if header[4] != 2 || header[5] != 1 {
        return Err("not a 64-bit little-endian ELF file".to_string());
    }
    let bad = || "truncated ELF header".to_string();
    let e_type = u16_at(&header, 16).ok_or_else(bad)?;
    let e_phoff = u64_at(&header, 32).ok_or_else(bad)?;
    let e_shoff = u64_at(&header, 40).ok_or_else(bad)?;
    let e_phentsize = u16_at(&header, 54).ok_or_else(bad)?;
    let e_phnum = u16_at(&header, 56).ok_or_else(bad)?;
    let e_shentsize = u16_at(&header, 58).ok_or_else(bad)?;
    let e_shnum = u16_at(&header, 60).ok_or_else(bad)?;
    if e_shentsize < 64 || e_shnum == 0 || e_shnum > MAX_SECTIONS {
        return Err("no usable section headers".to_string());
    }
    if e_phentsize < 56 || e_phnum > MAX_SECTIONS {
        return Err("no usable program headers".to_string());
    }
    // The first PT_LOAD's page: the load base is the offset-0 mapping less this.
    let program = read_exact_at(file, e_phoff, u64::from(e_phentsize) * u64::from(e_phnum))?;
    let mut first_load_page = 0;
    for i in 0..usize::from(e_phnum) {
        let at = i * usize::from(e_phentsize);
        if u32_at(&program, at) == Some(1) {
            first_load_page = u64_at(&program, at + 16).ok_or_else(bad)? & !(PAGE - 1);
            break;
        }
    }
    let sections = read_exact_at(file, e_shoff, u64::from(e_shentsize) * u64::from(e_shnum))?;
    let section = |index: usize| -> Option<(u32, u64, u64, u32, u64)> {
        let at = index * usize::from(e_shentsize);
        Some((
            u32_at(&sections, at + 4)?,  // sh_type
            u64_at(&sections, at + 24)?, // sh_offset
            u64_at(&sections, at + 32)?, // sh_size
            u32_at(&sections, at + 40)?, // sh_link
            u64_at(&sections, at + 56)?, // sh_entsize
        ))
    };
    const SHT_DYNSYM: u32 = 11;
    let Some((_, sym_offset, sym_size, link, entsize)) = (0..usize::from(e_shnum))
        .filter_map(section)
        .find(|(kind, ..)| *kind == SHT_DYNSYM)
    else {
        return Err("no .dynsym section (a static binary?)".to_string());
    };
    let entsize = if entsize == 0 { 24 } else { entsize };
    if entsize < 24 {
        return Err("bad .dynsym entry size".to_string());
    }
    let Some((_, str_offset, str_size, ..)) = section(link as usize) else {
        return Err("no .dynstr section".to_string());
    };
    let symbols = read_exact_at(file, sym_offset, sym_size)?;
    let strings = read_exact_at(file, str_offset, str_size)?;
    let mut found: Option<(usize, u64)> = None;
    for at in (0..symbols.len()).step_by(entsize as usize) {
        let (Some(name), Some(&info), Some(shndx), Some(value)) = (
            u32_at(&symbols, at),
            symbols.get(at + 4),
            u16_at(&symbols, at + 6),
            u64_at(&symbols, at + 8),
        ) else {
            break;
        };
        const STT_OBJECT: u8 = 1;
        if shndx == 0 || info & 0xf != STT_OBJECT || value == 0 {
            continue;
        }
        let Some(tail) = strings.get(name as usize..) else {
            continue;
        };
        let end = tail.iter().position(|&b| b == 0).unwrap_or(tail.len());
        let symbol = &tail[..end];
        if let Some(rank) = names.iter().position(|n| n.as_bytes() == symbol)
            && found.is_none_or(|(best, _)| rank < best)
        {
            found = Some((rank, value));
        }
    }
    const ET_DYN: u16 = 3;
    Ok(found.map(|(_, value)| ElfSymbol {
        value,
        relocatable: e_type == ET_DYN,
        first_load_page,
    }))
}

/// Reads `buf.len()` bytes at `address` of `pid`; the bytes read (fewer at the end of a
/// mapping).
fn read_memory(pid: i32, address: u64, buf: &mut [u8]) -> Result<usize, Errno> {
    let remote = [RemoteIoVec {
        base: address as usize,
        len: buf.len(),
    }];
    let mut local = [IoSliceMut::new(buf)];
    process_vm_readv(Pid::from_raw(pid), &mut local, &remote)
}

fn memory_error(pid: i32, what: &str, errno: Errno) -> LiveEnvError {
    match errno {
        Errno::EPERM | Errno::EACCES => LiveEnvError::Denied(format!(
            "permission denied reading the memory of process {pid} (process_vm_readv needs ptrace access)"
        )),
        Errno::ESRCH => LiveEnvError::Other(format!("process {pid} is gone")),
        _ => LiveEnvError::Other(format!("cannot read {what} of process {pid}: {errno}")),
    }
}

fn read_u64(pid: i32, address: u64, what: &str) -> Result<u64, LiveEnvError> {
    let mut word = [0u8; 8];
    match read_memory(pid, address, &mut word) {
        Ok(8) => Ok(u64::from_le_bytes(word)),
        Ok(_) => Err(LiveEnvError::Other(format!(
            "short read of {what} of process {pid}"
        ))),
        Err(errno) => Err(memory_error(pid, what, errno)),
    }
}

/// One NUL-terminated string at `address`, read page by page, at most `cap` bytes
/// (without its NUL).
fn read_c_string(pid: i32, address: u64, cap: usize) -> Result<Vec<u8>, LiveEnvError> {
    let mut out = Vec::new();
    let mut at = address;
    let mut chunk = vec![0u8; PAGE as usize];
    while out.len() < cap {
        let to_page_end = (PAGE - at % PAGE) as usize;
        let len = to_page_end.min(cap - out.len());
        let n = read_memory(pid, at, &mut chunk[..len])
            .map_err(|errno| memory_error(pid, "an environment string", errno))?;
        if n == 0 {
            break;
        }
        if let Some(end) = chunk[..n].iter().position(|&b| b == 0) {
            out.extend_from_slice(&chunk[..end]);
            return Ok(out);
        }
        out.extend_from_slice(&chunk[..n]);
        at += n as u64;
    }
    Ok(out)
}

/// Reads the `char **` array at `array` of `pid`: the entries joined NUL-separated, as
/// `/proc/<pid>/environ` holds them. Bounded by [`MAX_ENTRIES`] and [`MAX_BYTES`].
pub fn read_environ_array(pid: i32, array: u64) -> Result<Vec<u8>, LiveEnvError> {
    if array == 0 {
        return Err(LiveEnvError::Other(
            "the environ pointer is null".to_string(),
        ));
    }
    let mut joined = Vec::new();
    // The pointers, read 64 at a time (never across a page).
    let mut pointers = vec![0u8; 8 * 64];
    let mut at = array;
    let mut entries = 0;
    'array: while entries < MAX_ENTRIES {
        let to_page_end = (PAGE - at % PAGE) as usize;
        let len = to_page_end.min(pointers.len()) & !7;
        let len = if len == 0 { 8 } else { len };
        let n = read_memory(pid, at, &mut pointers[..len])
            .map_err(|errno| memory_error(pid, "the environ array", errno))?;
        if n < 8 {
            return Err(LiveEnvError::Other(format!(
                "short read of the environ array of process {pid}"
            )));
        }
        for word in pointers[..n - n % 8].chunks_exact(8) {
            let mut bytes = [0u8; 8];
            bytes.copy_from_slice(word);
            let pointer = u64::from_le_bytes(bytes);
            if pointer == 0 || entries >= MAX_ENTRIES || joined.len() >= MAX_BYTES {
                break 'array;
            }
            let cap = MAX_ENTRY_BYTES.min(MAX_BYTES - joined.len());
            let entry = read_c_string(pid, pointer, cap)?;
            joined.extend_from_slice(&entry);
            joined.push(0);
            entries += 1;
        }
        at += (n - n % 8) as u64;
    }
    Ok(joined)
}

/// The path of a file of the process as tfwatch can open it: through its root.
fn through_root(proc_dir: &Path, path: &str) -> PathBuf {
    proc_dir.join("root").join(path.trim_start_matches('/'))
}

/// The address of the `environ` variable of the process: the executable's copy if it
/// defines one, else the C library's.
pub fn environ_address(proc_dir: &Path, maps: &str, exe: Option<&str>) -> Result<u64, String> {
    let mut candidates: Vec<MappedFile> = Vec::new();
    if let Some(exe) = exe {
        candidates.extend(
            mapped_files(maps, |_| true)
                .into_iter()
                .filter(|f| f.path == exe),
        );
    }
    let libcs = mapped_files(maps, is_libc);
    if libcs.is_empty() {
        return Err("no C library in maps (a static binary?)".to_string());
    }
    candidates.extend(libcs);
    let mut last_error = String::new();
    for mapped in candidates {
        let file = match File::open(through_root(proc_dir, &mapped.path)) {
            Ok(file) => file,
            Err(error) => {
                last_error = format!("cannot open {}: {error}", mapped.path);
                continue;
            }
        };
        match environ_symbol(&file) {
            Ok(Some(symbol)) => {
                let base = if symbol.relocatable {
                    mapped.start.wrapping_sub(symbol.first_load_page)
                } else {
                    0
                };
                return Ok(base.wrapping_add(symbol.value));
            }
            Ok(None) => last_error = format!("{} does not define environ", mapped.path),
            Err(error) => last_error = format!("{}: {error}", mapped.path),
        }
    }
    Err(last_error)
}

/// A file by identity (device, inode, size, modification time): the same program or C
/// library mapped by many processes, or seen through many processes' roots.
type FileIdentity = (u64, u64, u64, i64, i64);

/// Where each file read so far defines `environ`: the processes of a node run a few
/// programs, and reading a program's dynamic symbol table (a statically linked
/// CPython's is large) for each of them was most of the audit's cost.
static ENVIRON_SYMBOLS_BY_FILE: std::sync::Mutex<
    Option<std::collections::HashMap<FileIdentity, Option<ElfSymbol>>>,
> = std::sync::Mutex::new(None);

/// Files whose `environ` is kept before the cache starts again.
const CACHED_FILES: usize = 1024;

/// [`find_dynamic_symbol`] of [`ENVIRON_SYMBOLS`], once per file (a failed read is not
/// kept).
fn environ_symbol(file: &File) -> Result<Option<ElfSymbol>, String> {
    use std::os::unix::fs::MetadataExt;
    let identity = file
        .metadata()
        .ok()
        .map(|m| (m.dev(), m.ino(), m.size(), m.mtime(), m.mtime_nsec()));
    let lock = || {
        ENVIRON_SYMBOLS_BY_FILE
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    };
    if let Some(key) = identity
        && let Some(known) = lock().as_ref().and_then(|cache| cache.get(&key))
    {
        return Ok(*known);
    }
    let found = find_dynamic_symbol(file, ENVIRON_SYMBOLS)?;
    if let Some(key) = identity {
        let mut cache = lock();
        let cache = cache.get_or_insert_with(Default::default);
        if cache.len() >= CACHED_FILES {
            cache.clear();
        }
        cache.insert(key, found);
    }
    Ok(found)
}

/// The live environment of `pid` (NUL-separated `KEY=VALUE`, like `environ`), from its
/// memory. `proc_dir` is `/proc/<pid>`; `exe` the target of its `exe` link.
pub fn read_live_environ(
    pid: i32,
    proc_dir: &Path,
    maps: &str,
    exe: Option<&str>,
) -> Result<Vec<u8>, LiveEnvError> {
    if !cfg!(all(
        target_endian = "little",
        target_pointer_width = "64",
        any(target_arch = "x86_64", target_arch = "aarch64")
    )) {
        return Err(LiveEnvError::Other(
            "reading the live environment needs a 64-bit little-endian x86_64 or aarch64 target"
                .to_string(),
        ));
    }
    let address = environ_address(proc_dir, maps, exe)
        .map_err(|why| LiveEnvError::Other(format!("environ not found: {why}")))?;
    let array = read_u64(pid, address, "the environ pointer")?;
    let joined = read_environ_array(pid, array)?;
    // Every entry of an environment is KEY=VALUE; anything else means the address was
    // wrong.
    let sane = joined
        .split(|&b| b == 0)
        .filter(|entry| !entry.is_empty())
        .all(|entry| entry.first() != Some(&b'=') && entry.contains(&b'='));
    if !sane {
        return Err(LiveEnvError::Other(
            "the environ array read from memory does not hold KEY=VALUE strings".to_string(),
        ));
    }
    Ok(joined)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn own_maps() -> String {
        std::fs::read_to_string("/proc/self/maps").unwrap()
    }

    #[test]
    fn libc_names() {
        assert!(is_libc("libc.so.6"));
        assert!(is_libc("libc-2.31.so"));
        assert!(is_libc("ld-musl-x86_64.so.1"));
        assert!(!is_libc("libcrypto.so.3"));
        assert!(!is_libc("libc++.so.1"));
    }

    #[test]
    fn mapped_files_take_the_offset_zero_mapping() {
        let maps = "\
7f0000000000-7f0000028000 r--p 00000000 08:01 100 /usr/lib/x86_64-linux-gnu/libc.so.6
7f0000028000-7f00001bd000 r-xp 00028000 08:01 100 /usr/lib/x86_64-linux-gnu/libc.so.6
7f1000000000-7f1000001000 r--p 00000000 08:01 101 /usr/lib/libfoo.so
7f2000000000-7f2000021000 rw-p 00000000 00:00 0 [heap]
";
        let libc = mapped_files(maps, is_libc);
        assert_eq!(
            libc,
            [MappedFile {
                path: "/usr/lib/x86_64-linux-gnu/libc.so.6".to_string(),
                start: 0x7f00_0000_0000
            }]
        );
        assert_eq!(mapped_files(maps, |_| true).len(), 2);
    }

    #[test]
    fn finds_environ_in_the_mapped_libc() {
        let maps = own_maps();
        let libc = mapped_files(&maps, is_libc);
        assert!(!libc.is_empty(), "no libc in /proc/self/maps");
        let file = File::open(&libc[0].path).unwrap();
        let symbol = find_dynamic_symbol(&file, ENVIRON_SYMBOLS)
            .unwrap()
            .expect("libc defines environ");
        assert!(symbol.relocatable);
        assert!(symbol.value > 0);
        // A name nobody defines is not found.
        assert_eq!(
            find_dynamic_symbol(&file, &["tfwatch_no_such_symbol"]).unwrap(),
            None
        );
    }

    #[test]
    fn the_loaded_image_wins_over_a_whole_file_mapping_of_the_same_library() {
        // libdw maps libc whole (read-only, offset 0) below the loaded image.
        let maps = "\
7f0000000000-7f0000200000 r--p 00000000 fe:01 42 /usr/lib/x86_64-linux-gnu/libc.so.6
7f1000000000-7f1000028000 r--p 00000000 fe:01 42 /usr/lib/x86_64-linux-gnu/libc.so.6
7f1000028000-7f10001bd000 r-xp 00028000 fe:01 42 /usr/lib/x86_64-linux-gnu/libc.so.6
7f10001bd000-7f1000215000 r--p 001bd000 fe:01 42 /usr/lib/x86_64-linux-gnu/libc.so.6
7f2000000000-7f2000100000 r--p 00000000 fe:01 43 /usr/lib/x86_64-linux-gnu/libdw.so.1
";
        let files = mapped_files(maps, is_libc);
        assert_eq!(files.len(), 1);
        assert_eq!(files[0].start, 0x7f10_0000_0000);
        // Above the image, a whole-file mapping does not replace it.
        let maps = "\
7f1000000000-7f1000028000 r--p 00000000 fe:01 42 /usr/lib/x86_64-linux-gnu/libc.so.6
7f1000028000-7f10001bd000 r-xp 00028000 fe:01 42 /usr/lib/x86_64-linux-gnu/libc.so.6
7f3000000000-7f3000200000 r--p 00000000 fe:01 42 /usr/lib/x86_64-linux-gnu/libc.so.6
";
        assert_eq!(mapped_files(maps, is_libc)[0].start, 0x7f10_0000_0000);
        // Only a whole-file mapping: it is what there is.
        let maps = "7f0000000000-7f0000200000 r--p 00000000 fe:01 42 /lib/libc.so.6\n";
        assert_eq!(mapped_files(maps, is_libc)[0].start, 0x7f00_0000_0000);
    }

    #[test]
    fn environ_is_looked_up_once_per_file() {
        let maps = own_maps();
        let libc = &mapped_files(&maps, is_libc)[0];
        let file = File::open(&libc.path).unwrap();
        let read = find_dynamic_symbol(&file, ENVIRON_SYMBOLS).unwrap();
        assert_eq!(environ_symbol(&file).unwrap(), read);
        // A copy of the file is another file (its own entry); what the cache holds for
        // the library is what reading it gives.
        let copy = std::env::temp_dir().join(format!("tfwatch-libc-{}", std::process::id()));
        std::fs::copy(&libc.path, &copy).unwrap();
        let copied = File::open(&copy).unwrap();
        assert_eq!(environ_symbol(&copied).unwrap(), read);
        let _ = std::fs::remove_file(&copy);
        use std::os::unix::fs::MetadataExt;
        let m = file.metadata().unwrap();
        let cached = ENVIRON_SYMBOLS_BY_FILE
            .lock()
            .unwrap()
            .as_ref()
            .and_then(|c| {
                c.get(&(m.dev(), m.ino(), m.size(), m.mtime(), m.mtime_nsec()))
                    .copied()
            });
        assert_eq!(cached, Some(read));
    }

    #[test]
    fn not_an_elf_file_is_an_error() {
        let file = File::open("/proc/self/maps").unwrap();
        assert!(find_dynamic_symbol(&file, ENVIRON_SYMBOLS).is_err());
    }

    #[test]
    fn live_environment_of_our_own_process_matches_std() {
        let maps = own_maps();
        let exe = std::fs::read_link("/proc/self/exe")
            .ok()
            .map(|p| p.display().to_string());
        let pid = std::process::id() as i32;
        let dir = PathBuf::from(format!("/proc/{pid}"));
        // The address agrees with the one this process's libc itself uses.
        unsafe extern "C" {
            static environ: *const *const std::ffi::c_char;
        }
        let address = environ_address(&dir, &maps, exe.as_deref()).unwrap();
        assert_eq!(address, &raw const environ as u64);

        let joined = read_live_environ(pid, &dir, &maps, exe.as_deref()).unwrap();
        let mut live: Vec<(String, String)> = joined
            .split(|&b| b == 0)
            .filter(|e| !e.is_empty())
            .filter_map(|e| {
                let text = String::from_utf8(e.to_vec()).ok()?;
                let (k, v) = text.split_once('=')?;
                Some((k.to_string(), v.to_string()))
            })
            .collect();
        live.sort();
        live.dedup_by(|a, b| a.0 == b.0);
        let mut expected: Vec<(String, String)> = std::env::vars().collect();
        expected.sort();
        // Other tests of this binary may set variables meanwhile; ours are stable.
        for (key, value) in &expected {
            if key.starts_with("TFWATCH_TEST_") {
                continue;
            }
            assert!(
                live.iter().any(|(k, v)| k == key && v == value),
                "{key}={value} missing from the live environment"
            );
        }
        assert!(live.len() >= expected.len().saturating_sub(8));
    }

    #[test]
    fn a_bad_address_is_an_error_not_a_panic() {
        let pid = std::process::id() as i32;
        assert!(read_environ_array(pid, 0).is_err());
        assert!(read_environ_array(pid, 8).is_err());
    }
}
