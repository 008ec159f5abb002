//! Symbols, files and lines of native frames, from the symbol tables and DWARF debug
//! information of the mapped files (addr2line). A module is loaded once per file and
//! kept for later stacks of this thread (across threads, processes and samples): the
//! symbol tables of a framework's libraries are large, and loading them is most of the
//! cost of a stack.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

/// One executable mapping of the target.
struct Mapping {
    start: u64,
    end: u64,
    path: String,
}

/// A loaded file: its symbols and debug information, and the file address of file
/// offset 0.
struct Module {
    loader: addr2line::Loader,
    /// The separate debug file (`/usr/lib/debug/.build-id/…`, from a `-dbg` or
    /// `-dbgsym` package), whose full symbol table names the file's local functions.
    debug: Option<addr2line::Loader>,
    first_load: u64,
}

/// A file by identity: the same path in two containers is two files.
#[derive(Clone, PartialEq, Eq, Hash)]
struct FileKey {
    device: u64,
    inode: u64,
    modified: i64,
}

/// How many files the cache keeps before it starts again.
const CACHED_MODULES: usize = 256;

thread_local! {
    static MODULES: RefCell<HashMap<FileKey, Option<Rc<Module>>>> = RefCell::new(HashMap::new());
}

/// What is known of one address.
#[derive(Debug, Default)]
pub struct Located {
    pub function: Option<String>,
    pub file: Option<String>,
    pub line: Option<u32>,
}

/// Resolves instruction addresses of one process to symbol, file and line.
pub struct SourceLines {
    pid: i32,
    mappings: Vec<Mapping>,
    /// Lowest start of each file's mappings (the one at file offset 0).
    bases: HashMap<String, u64>,
    modules: HashMap<String, Option<Rc<Module>>>,
}

impl SourceLines {
    pub fn new(pid: i32) -> SourceLines {
        let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap_or_default();
        let mut mappings = Vec::new();
        let mut bases: HashMap<String, u64> = HashMap::new();
        for line in maps.lines() {
            let mut fields = line.split_whitespace();
            let (Some(range), Some(perms), Some(offset)) =
                (fields.next(), fields.next(), fields.next())
            else {
                continue;
            };
            let path = fields.nth(2).unwrap_or_default();
            if !path.starts_with('/') || line.ends_with("(deleted)") {
                continue;
            }
            let Some((start, end)) = range.split_once('-') else {
                continue;
            };
            let (Ok(start), Ok(end), Ok(offset)) = (
                u64::from_str_radix(start, 16),
                u64::from_str_radix(end, 16),
                u64::from_str_radix(offset, 16),
            ) else {
                continue;
            };
            if offset == 0 {
                let base = bases.entry(path.to_string()).or_insert(start);
                *base = (*base).min(start);
            }
            if perms.contains('x') {
                mappings.push(Mapping {
                    start,
                    end,
                    path: path.to_string(),
                });
            }
        }
        SourceLines {
            pid,
            mappings,
            bases,
            modules: HashMap::new(),
        }
    }

    /// Symbol, file and line of `ip`, where the module has them.
    pub fn locate(&mut self, ip: u64) -> Located {
        self.try_locate(ip).unwrap_or_default()
    }

    fn try_locate(&mut self, ip: u64) -> Option<Located> {
        let mapping = self.mappings.iter().find(|m| m.start <= ip && ip < m.end)?;
        let path = mapping.path.clone();
        let base = *self.bases.get(&path)?;
        let pid = self.pid;
        let module = self
            .modules
            .entry(path.clone())
            .or_insert_with(|| cached(pid, &path))
            .clone()?;
        // A return address points after the call: look up the call instruction.
        let probe = ip
            .checked_sub(base.wrapping_sub(module.first_load))?
            .saturating_sub(1);
        let loaders = module.debug.iter().chain(std::iter::once(&module.loader));
        let function = loaders
            .clone()
            .find_map(|l| l.find_symbol(probe))
            .map(str::to_string);
        let (file, line) = loaders
            .filter_map(|l| l.find_location(probe).ok().flatten())
            .find(|l| l.file.is_some())
            .map_or((None, None), |l| (l.file.map(str::to_string), l.line));
        Some(Located {
            function,
            file,
            line,
        })
    }
}

/// The module of `path` as `pid` sees it, from the cache or loaded now.
fn cached(pid: i32, path: &str) -> Option<Rc<Module>> {
    use std::os::unix::fs::MetadataExt;
    // Through the target's root, so a process in a container finds its own files.
    let file = format!("/proc/{pid}/root{path}");
    let metadata = std::fs::metadata(&file).ok()?;
    let key = FileKey {
        device: metadata.dev(),
        inode: metadata.ino(),
        modified: metadata.mtime(),
    };
    MODULES.with(|modules| {
        if let Some(module) = modules.borrow().get(&key) {
            return module.clone();
        }
        let module = load(&file).map(Rc::new);
        let mut modules = modules.borrow_mut();
        if modules.len() >= CACHED_MODULES {
            modules.clear();
        }
        modules.insert(key, module.clone());
        module
    })
}

fn load(file: &str) -> Option<Module> {
    let headers = read_headers(file)?;
    let first_load = first_load_vaddr(&headers)?;
    let loader = addr2line::Loader::new(file).ok()?;
    let debug = build_id(&headers).and_then(|id| {
        let hex: String = id.iter().map(|b| format!("{b:02x}")).collect();
        let (dir, rest) = hex.split_at(2.min(hex.len()));
        let path = format!("/usr/lib/debug/.build-id/{dir}/{rest}.debug");
        std::path::Path::new(&path)
            .exists()
            .then(|| addr2line::Loader::new(&path).ok())
            .flatten()
    });
    Some(Module {
        loader,
        debug,
        first_load,
    })
}

/// The GNU build id of a 64-bit little-endian ELF file, from its `PT_NOTE` segments
/// (within the headers read).
fn build_id(elf: &[u8]) -> Option<Vec<u8>> {
    let u16_at = |at: usize| Some(u16::from_le_bytes(elf.get(at..at + 2)?.try_into().ok()?));
    let u32_at = |at: usize| Some(u32::from_le_bytes(elf.get(at..at + 4)?.try_into().ok()?));
    let u64_at = |at: usize| Some(u64::from_le_bytes(elf.get(at..at + 8)?.try_into().ok()?));
    let phoff = usize::try_from(u64_at(0x20)?).ok()?;
    let phentsize = usize::from(u16_at(0x36)?);
    let phnum = usize::from(u16_at(0x38)?);
    let align4 = |n: usize| (n + 3) & !3;
    (0..phnum).find_map(|i| {
        let header = phoff + i * phentsize;
        (u32_at(header)? == 4).then_some(())?;
        let start = usize::try_from(u64_at(header + 8)?).ok()?;
        let size = usize::try_from(u64_at(header + 32)?).ok()?;
        let mut at = start;
        while at + 12 <= start + size {
            let namesz = usize::try_from(u32_at(at)?).ok()?;
            let descsz = usize::try_from(u32_at(at + 4)?).ok()?;
            let kind = u32_at(at + 8)?;
            let name = at + 12;
            let desc = name + align4(namesz);
            if kind == 3 && elf.get(name..name + namesz)? == b"GNU\0" {
                return Some(elf.get(desc..desc + descsz)?.to_vec());
            }
            at = desc + align4(descsz);
        }
        None
    })
}

/// The first 64 KiB of a file: enough for the ELF and program headers.
fn read_headers(file: &str) -> Option<Vec<u8>> {
    use std::io::Read;
    let mut head = Vec::new();
    std::fs::File::open(file)
        .ok()?
        .take(64 * 1024)
        .read_to_end(&mut head)
        .ok()?;
    Some(head)
}

/// `p_vaddr - p_offset` of the first `PT_LOAD` segment of a 64-bit little-endian ELF
/// file: the file address that file offset 0 is mapped at.
fn first_load_vaddr(elf: &[u8]) -> Option<u64> {
    let u16_at = |at: usize| Some(u16::from_le_bytes(elf.get(at..at + 2)?.try_into().ok()?));
    let u32_at = |at: usize| Some(u32::from_le_bytes(elf.get(at..at + 4)?.try_into().ok()?));
    let u64_at = |at: usize| Some(u64::from_le_bytes(elf.get(at..at + 8)?.try_into().ok()?));
    if elf.get(..4)? != b"\x7fELF" || elf.get(4)? != &2 || elf.get(5)? != &1 {
        return None;
    }
    let phoff = usize::try_from(u64_at(0x20)?).ok()?;
    let phentsize = usize::from(u16_at(0x36)?);
    let phnum = usize::from(u16_at(0x38)?);
    (0..phnum).find_map(|i| {
        let header = phoff + i * phentsize;
        (u32_at(header)? == 1).then_some(())?;
        let offset = u64_at(header + 8)?;
        let vaddr = u64_at(header + 16)?;
        Some(vaddr.wrapping_sub(offset))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_function_resolves_to_this_file_and_its_symbol() {
        let mut lines = SourceLines::new(std::process::id() as i32);
        let ip = own_function_resolves_to_this_file_and_its_symbol as *const () as usize as u64;
        // The entry of the function; `locate` looks one byte back, so step in.
        let found = lines.locate(ip + 8);
        let file = found.file.expect("debug info of the test binary");
        assert!(file.ends_with("lines.rs"), "{file}");
        assert!(found.line.is_some_and(|l| l > 0));
        let symbol = super::super::native::demangle(&found.function.expect("a symbol"));
        assert!(
            symbol.contains("own_function_resolves_to_this_file_and_its_symbol"),
            "{symbol}"
        );
    }

    #[test]
    fn elf_header_gives_the_first_load_segment_and_the_build_id() {
        let exe = std::fs::read("/proc/self/exe").unwrap();
        assert!(first_load_vaddr(&exe).is_some());
        // rustc links with a build id on Linux (ld's --build-id): 20 bytes of SHA-1.
        assert_eq!(build_id(&exe).map(|id| id.len()), Some(20));
        assert_eq!(build_id(b"not an elf file"), None);
        assert_eq!(first_load_vaddr(b"not an elf file"), None);
    }
}
