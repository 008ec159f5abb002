//! File and line of native frames, from the DWARF debug information of the mapped
//! files (addr2line), where they have any.

use std::collections::HashMap;

/// One executable mapping of the target.
struct Mapping {
    start: u64,
    end: u64,
    path: String,
}

/// A loaded module: its debug information and the offset from run-time addresses to
/// the addresses of the file.
struct Module {
    loader: addr2line::Loader,
    /// svma = ip - bias.
    bias: u64,
}

/// Resolves instruction addresses of one process to file and line.
pub struct SourceLines {
    pid: i32,
    mappings: Vec<Mapping>,
    /// Lowest start of each file's mappings (the one at file offset 0).
    bases: HashMap<String, u64>,
    modules: HashMap<String, Option<Module>>,
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

    /// File and line of `ip`, where the module has line information.
    pub fn locate(&mut self, ip: u64) -> Option<(String, u32)> {
        let mapping = self.mappings.iter().find(|m| m.start <= ip && ip < m.end)?;
        let path = mapping.path.clone();
        let base = *self.bases.get(&path)?;
        let pid = self.pid;
        let module = self
            .modules
            .entry(path.clone())
            .or_insert_with(|| load(pid, &path, base))
            .as_ref()?;
        // A return address points after the call: look up the call instruction.
        let probe = ip.checked_sub(module.bias)?.saturating_sub(1);
        let location = module.loader.find_location(probe).ok()??;
        Some((location.file?.to_string(), location.line?))
    }
}

fn load(pid: i32, path: &str, base: u64) -> Option<Module> {
    // Through the target's root, so a process in a container finds its own files.
    let file = format!("/proc/{pid}/root{path}");
    let first_load = first_load_vaddr(&std::fs::read(&file).ok()?)?;
    let loader = addr2line::Loader::new(&file).ok()?;
    Some(Module {
        loader,
        bias: base.wrapping_sub(first_load),
    })
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
    fn own_function_resolves_to_this_file() {
        let mut lines = SourceLines::new(std::process::id() as i32);
        let ip = own_function_resolves_to_this_file as *const () as usize as u64;
        // The entry of the function; `locate` looks one byte back, so step in.
        let (file, line) = lines.locate(ip + 8).expect("debug info of the test binary");
        assert!(file.ends_with("lines.rs"), "{file}");
        assert!(line > 0);
    }

    #[test]
    fn elf_header_gives_the_first_load_segment() {
        let exe = std::fs::read("/proc/self/exe").unwrap();
        assert!(first_load_vaddr(&exe).is_some());
        assert_eq!(first_load_vaddr(b"not an elf file"), None);
    }
}
