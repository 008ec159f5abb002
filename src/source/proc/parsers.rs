//! Parsers of /proc files. They take bytes or `&str`, never a path, and their edge
//! cases are tested next to them.
//!
//! The per-thread parsers (`stat`, `schedstat`, `status`, `wchan`, `syscall`) run on the
//! sampler's hot path: they work on the bytes of a reused buffer and allocate only for
//! the strings they return.

use crate::model::{IoCounters, Syscall};

/// Why a /proc file could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("empty {file}")]
    Empty { file: &'static str },
    #[error("{file} is truncated: field {field} missing")]
    Truncated {
        file: &'static str,
        field: &'static str,
    },
    #[error("{file}: field {field} is not a number: {value:?}")]
    BadNumber {
        file: &'static str,
        field: &'static str,
        value: String,
    },
    #[error("{file}: no closing ')' after the command name")]
    NoCommEnd { file: &'static str },
    #[error("bad CPU list {0:?} (expected e.g. \"0-3,8,10-11\")")]
    BadCpuList(String),
}

/// The fields of `/proc/<pid>/stat` or `/proc/<pid>/task/<tid>/stat` that tfwatch uses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stat {
    pub pid: i32,
    /// The command name, which may hold spaces and parentheses.
    pub comm: String,
    pub state: char,
    pub ppid: i32,
    /// User and system time, clock ticks.
    pub utime: u64,
    pub stime: u64,
    pub num_threads: u32,
    /// Start time after boot, clock ticks.
    pub starttime: u64,
    /// Resident set, pages.
    pub rss_pages: u64,
    /// CPU last run on.
    pub processor: i32,
    /// Address of the start of the stack (0 where the kernel hides it): a new value for
    /// the same pid and start time means the process called exec.
    pub startstack: u64,
}

/// A decimal number from ASCII bytes, without going through `str`.
trait FromDecimal: Sized {
    fn from_decimal(bytes: &[u8]) -> Option<Self>;
}

fn parse_unsigned(bytes: &[u8]) -> Option<u64> {
    if bytes.is_empty() || bytes.len() > 20 {
        return None;
    }
    let mut value: u64 = 0;
    for &b in bytes {
        let digit = b.wrapping_sub(b'0');
        if digit > 9 {
            return None;
        }
        value = value.checked_mul(10)?.checked_add(u64::from(digit))?;
    }
    Some(value)
}

impl FromDecimal for u64 {
    fn from_decimal(bytes: &[u8]) -> Option<u64> {
        parse_unsigned(bytes)
    }
}

impl FromDecimal for u32 {
    fn from_decimal(bytes: &[u8]) -> Option<u32> {
        parse_unsigned(bytes)?.try_into().ok()
    }
}

impl FromDecimal for i64 {
    fn from_decimal(bytes: &[u8]) -> Option<i64> {
        match bytes.split_first() {
            Some((b'-', digits)) => i64::try_from(parse_unsigned(digits)?).ok().map(|v| -v),
            _ => parse_unsigned(bytes)?.try_into().ok(),
        }
    }
}

impl FromDecimal for i32 {
    fn from_decimal(bytes: &[u8]) -> Option<i32> {
        i64::from_decimal(bytes)?.try_into().ok()
    }
}

fn number<T: FromDecimal>(
    file: &'static str,
    field: &'static str,
    text: Option<&[u8]>,
) -> Result<T, ParseError> {
    let bytes = text.ok_or(ParseError::Truncated { file, field })?;
    T::from_decimal(bytes).ok_or_else(|| ParseError::BadNumber {
        file,
        field,
        value: String::from_utf8_lossy(bytes).into_owned(),
    })
}

fn trim_end(bytes: &[u8]) -> &[u8] {
    let end = bytes
        .iter()
        .rposition(|b| !b.is_ascii_whitespace() && *b != 0)
        .map_or(0, |i| i + 1);
    &bytes[..end]
}

/// Parses a `stat` line. The command name sits between the first `(` and the LAST `)`,
/// since the name itself may contain `)`. A line cut before `processor` is an error.
pub fn parse_stat(bytes: &[u8]) -> Result<Stat, ParseError> {
    let (comm, mut stat) = parse_stat_borrowed(bytes)?;
    stat.comm = comm_string(comm);
    Ok(stat)
}

/// A command name as text; bytes that are not UTF-8 are replaced.
pub fn comm_string(comm: &[u8]) -> String {
    match std::str::from_utf8(comm) {
        Ok(comm) => comm.to_string(),
        Err(_) => String::from_utf8_lossy(comm).into_owned(),
    }
}

/// [`parse_stat`] without making the name a `String`: the name's bytes, and the fields
/// with an empty `comm`. The per-thread hot path compares the bytes with the name it
/// has and allocates only when they differ.
pub fn parse_stat_borrowed(bytes: &[u8]) -> Result<(&[u8], Stat), ParseError> {
    const FILE: &str = "stat";
    let bytes = trim_end(bytes);
    if bytes.is_empty() {
        return Err(ParseError::Empty { file: FILE });
    }
    let open = bytes
        .iter()
        .position(|&b| b == b'(')
        .ok_or(ParseError::Truncated {
            file: FILE,
            field: "comm",
        })?;
    // The name is at most 64 bytes (TASK_COMM_LEN is 16; kernel workers show up to 64)
    // and no `)` follows it, so the last `)` is found within that window.
    let window = bytes.len().min(open + 1 + 64 + 1);
    let close = bytes[..window]
        .iter()
        .rposition(|&b| b == b')')
        .filter(|&close| close > open)
        .ok_or(ParseError::NoCommEnd { file: FILE })?;
    let pid = number(FILE, "pid", Some(trim_end(&bytes[..open])))?;
    let comm = &bytes[open + 1..close];
    let mut stat = Stat {
        pid,
        ..Stat::default()
    };
    // Fields after the name, numbered as in proc(5): state is field 3. One pass over
    // the bytes finds where each wanted field lies; only those are decoded.
    const WANTED: [usize; 9] = [3, 4, 14, 15, 20, 22, 24, 28, 39];
    let rest = &bytes[close + 1..];
    let mut found: [&[u8]; 9] = [&[]; 9];
    let mut field = 2;
    let mut slot = 0;
    let mut from = 0;
    // Each field ends at a space; the last one at the end of the line.
    for end in 0..=rest.len() {
        if end < rest.len() && rest[end] != b' ' {
            continue;
        }
        if end > from {
            field += 1;
            if field == WANTED[slot] {
                found[slot] = &rest[from..end];
                slot += 1;
                if slot == WANTED.len() {
                    break;
                }
            }
        }
        from = end + 1;
    }
    if slot == WANTED.len() {
        stat.state = found[0][0] as char;
        stat.ppid = number(FILE, "ppid", Some(found[1]))?;
        stat.utime = number(FILE, "utime", Some(found[2]))?;
        stat.stime = number(FILE, "stime", Some(found[3]))?;
        stat.num_threads = number(FILE, "num_threads", Some(found[4]))?;
        stat.starttime = number(FILE, "starttime", Some(found[5]))?;
        stat.rss_pages = number(FILE, "rss", Some(found[6]))?;
        stat.startstack = number(FILE, "startstack", Some(found[7]))?;
        stat.processor = number(FILE, "processor", Some(found[8]))?;
        return Ok((comm, stat));
    }
    let missing = match field {
        ..=2 => "state",
        3 => "ppid",
        4..=13 => "utime",
        14 => "stime",
        15..=19 => "num_threads",
        20..=21 => "starttime",
        22..=23 => "rss",
        24..=27 => "startstack",
        _ => "processor",
    };
    Err(ParseError::Truncated {
        file: FILE,
        field: missing,
    })
}

/// `/proc/<pid>/task/<tid>/schedstat`: time on CPU, time waiting on a run queue (ns),
/// and timeslices run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SchedStat {
    pub run_ns: u64,
    pub wait_ns: u64,
    pub timeslices: u64,
}

pub fn parse_schedstat(bytes: &[u8]) -> Result<SchedStat, ParseError> {
    const FILE: &str = "schedstat";
    let bytes = trim_end(bytes);
    if bytes.is_empty() {
        return Err(ParseError::Empty { file: FILE });
    }
    let mut fields = bytes.split(|b| *b == b' ').filter(|f| !f.is_empty());
    Ok(SchedStat {
        run_ns: number(FILE, "run_ns", fields.next())?,
        wait_ns: number(FILE, "wait_ns", fields.next())?,
        timeslices: number(FILE, "timeslices", fields.next())?,
    })
}

/// The fields of `status` that tfwatch uses; each is `None` when its line is absent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Status {
    /// Real uid (first number of the `Uid:` line).
    pub uid: Option<u32>,
    pub voluntary_ctxt_switches: Option<u64>,
    pub nonvoluntary_ctxt_switches: Option<u64>,
    pub cpus_allowed_list: Option<String>,
}

/// Parses `status` by line prefix; unknown and malformed lines are ignored. Only the
/// values of the wanted lines are decoded (this runs for every thread on detail samples).
pub fn parse_status(bytes: &[u8]) -> Status {
    fn value(line: &[u8], key_len: usize) -> &[u8] {
        let value = &line[key_len + 1..];
        let start = value
            .iter()
            .position(|b| !b.is_ascii_whitespace())
            .unwrap_or(value.len());
        trim_end(&value[start..])
    }
    let mut status = Status::default();
    for line in bytes.split(|b| *b == b'\n') {
        let Some(colon) = line.iter().position(|b| *b == b':') else {
            continue;
        };
        match &line[..colon] {
            b"Uid" => {
                let value = value(line, colon);
                let first = value.split(|b| b.is_ascii_whitespace()).next();
                status.uid = first.and_then(u32::from_decimal);
            }
            b"voluntary_ctxt_switches" => {
                status.voluntary_ctxt_switches = u64::from_decimal(value(line, colon));
            }
            b"nonvoluntary_ctxt_switches" => {
                status.nonvoluntary_ctxt_switches = u64::from_decimal(value(line, colon));
            }
            b"Cpus_allowed_list" => {
                status.cpus_allowed_list =
                    Some(String::from_utf8_lossy(value(line, colon)).into_owned());
            }
            _ => {}
        }
    }
    status
}

/// The context-switch counts of a thread's `status` (voluntary, nonvoluntary). They are
/// its last lines, so the lines are scanned from the end: this runs for every thread on
/// detail samples, where a full `status` parse would double the parsing cost.
pub fn parse_ctxt_switches(bytes: &[u8]) -> (Option<u64>, Option<u64>) {
    let (mut voluntary, mut nonvoluntary) = (None, None);
    for line in trim_end(bytes).rsplit(|b| *b == b'\n') {
        if let Some(value) = line.strip_prefix(b"nonvoluntary_ctxt_switches:") {
            nonvoluntary = u64::from_decimal(value.trim_ascii());
        } else if let Some(value) = line.strip_prefix(b"voluntary_ctxt_switches:") {
            voluntary = u64::from_decimal(value.trim_ascii());
        } else if line.starts_with(b"Cpus_allowed") || line.starts_with(b"Name:") {
            break;
        }
        if voluntary.is_some() && nonvoluntary.is_some() {
            break;
        }
    }
    (voluntary, nonvoluntary)
}

/// `wchan`: the kernel function a thread sleeps in. "0" (running, or hidden from us) and
/// an empty file mean none.
pub fn trim_wchan(bytes: &[u8]) -> Option<&str> {
    let text = std::str::from_utf8(trim_end(bytes)).ok()?.trim();
    (!text.is_empty() && text != "0").then_some(text)
}

/// `syscall`: "running"; "-1 sp pc" when blocked outside a system call; or
/// "nr a1 a2 a3 a4 a5 a6 sp pc" (arguments in hex).
pub fn parse_syscall(bytes: &[u8]) -> Result<Syscall, ParseError> {
    const FILE: &str = "syscall";
    let mut fields = trim_end(bytes)
        .split(u8::is_ascii_whitespace)
        .filter(|field| !field.is_empty());
    let first = fields.next().ok_or(ParseError::Empty { file: FILE })?;
    if first == b"running" {
        return Ok(Syscall::Running);
    }
    let number: i64 = number(FILE, "nr", Some(first))?;
    if number < 0 {
        return Ok(Syscall::NotInSyscall);
    }
    let mut args = [0u64; 6];
    for (slot, field) in args.iter_mut().zip(["a1", "a2", "a3", "a4", "a5", "a6"]) {
        let value = fields
            .next()
            .ok_or(ParseError::Truncated { file: FILE, field })?;
        let arg = parse_hex(value).ok_or_else(|| ParseError::BadNumber {
            file: FILE,
            field,
            value: String::from_utf8_lossy(value).into_owned(),
        })?;
        *slot = arg;
    }
    Ok(Syscall::InSyscall {
        number,
        name: syscall_name(number).map(std::borrow::Cow::Borrowed),
        args,
    })
}

/// A hexadecimal number, with or without `0x`, of at most 16 digits.
fn parse_hex(bytes: &[u8]) -> Option<u64> {
    let digits = bytes.strip_prefix(b"0x").unwrap_or(bytes);
    if digits.is_empty() || digits.len() > 16 {
        return None;
    }
    digits.iter().try_fold(0u64, |value, &b| {
        let digit = (b as char).to_digit(16)?;
        Some(value << 4 | u64::from(digit))
    })
}

/// Names of the system calls a blocked ML process is usually found in.
#[cfg(target_arch = "x86_64")]
pub fn syscall_name(number: i64) -> Option<&'static str> {
    Some(match number {
        0 => "read",
        1 => "write",
        7 => "poll",
        16 => "ioctl",
        23 => "select",
        34 => "pause",
        35 => "nanosleep",
        43 => "accept",
        45 => "recvfrom",
        47 => "recvmsg",
        61 => "wait4",
        65 => "semop",
        73 => "flock",
        128 => "rt_sigtimedwait",
        130 => "rt_sigsuspend",
        202 => "futex",
        208 => "io_getevents",
        220 => "semtimedop",
        230 => "clock_nanosleep",
        232 => "epoll_wait",
        247 => "waitid",
        270 => "pselect6",
        271 => "ppoll",
        281 => "epoll_pwait",
        288 => "accept4",
        441 => "epoll_pwait2",
        426 => "io_uring_enter",
        449 => "futex_waitv",
        _ => return None,
    })
}

/// Names of the system calls a blocked ML process is usually found in (the generic
/// syscall table of arm64).
#[cfg(target_arch = "aarch64")]
pub fn syscall_name(number: i64) -> Option<&'static str> {
    Some(match number {
        4 => "io_getevents",
        22 => "epoll_pwait",
        29 => "ioctl",
        32 => "flock",
        63 => "read",
        64 => "write",
        72 => "pselect6",
        73 => "ppoll",
        98 => "futex",
        101 => "nanosleep",
        115 => "clock_nanosleep",
        133 => "rt_sigsuspend",
        137 => "rt_sigtimedwait",
        192 => "semtimedop",
        193 => "semop",
        202 => "accept",
        207 => "recvfrom",
        212 => "recvmsg",
        242 => "accept4",
        260 => "wait4",
        95 => "waitid",
        426 => "io_uring_enter",
        441 => "epoll_pwait2",
        449 => "futex_waitv",
        _ => return None,
    })
}

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
pub fn syscall_name(_number: i64) -> Option<&'static str> {
    None
}

/// CPU numbers a CPU list may name: 0 to this, exclusive. Linux allows at most 8,192
/// CPUs (`CONFIG_NR_CPUS` under `MAXSMP`); the bound keeps a list such as
/// "0-4294967295" from asking for billions of entries.
pub const MAX_CPUS: u32 = 1 << 16;

/// Parses a CPU list such as "0-3,8,10-11" into CPU numbers, ascending. A number at or
/// past [`MAX_CPUS`] is an error; so the result holds at most `MAX_CPUS` entries.
pub fn parse_cpu_list(text: &str) -> Result<Vec<u32>, ParseError> {
    let bad = || ParseError::BadCpuList(truncated(text).to_string());
    let cpu = |number: &str| {
        number
            .parse::<u32>()
            .ok()
            .filter(|cpu| *cpu < MAX_CPUS)
            .ok_or_else(bad)
    };
    let mut cpus = Vec::new();
    for part in text.trim().split(',').filter(|p| !p.trim().is_empty()) {
        let part = part.trim();
        match part.split_once('-') {
            Some((low, high)) => {
                let low = cpu(low)?;
                let high = cpu(high)?;
                if high < low {
                    return Err(bad());
                }
                cpus.extend(low..=high);
            }
            None => cpus.push(cpu(part)?),
        }
        // Overlapping ranges could repeat numbers without end; keep the list bounded.
        if cpus.len() > MAX_CPUS as usize {
            cpus.sort_unstable();
            cpus.dedup();
        }
    }
    cpus.sort_unstable();
    cpus.dedup();
    Ok(cpus)
}

/// At most the first 80 characters of `text`, for an error message.
fn truncated(text: &str) -> &str {
    match text.char_indices().nth(80) {
        Some((cut, _)) => &text[..cut],
        None => text,
    }
}

/// Online CPUs: the `cpuN` lines of `/proc/stat` (the `cpu` total line excluded).
pub fn count_stat_cpus(text: &str) -> u32 {
    text.lines()
        .filter(|line| {
            line.strip_prefix("cpu")
                .is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_digit()))
        })
        .count() as u32
}

/// `/proc/loadavg` ("1.18 2.15 1.85 1/86 13917"): the one-minute load average, and the
/// runnable and total tasks.
pub fn parse_loadavg(text: &str) -> (Option<f64>, Option<u32>, Option<u32>) {
    let mut fields = text.split_whitespace();
    let load = fields.next().and_then(|f| f.parse().ok());
    let tasks = fields
        .nth(2)
        .and_then(|f| f.split_once('/'))
        .map(|(r, t)| (r.parse().ok(), t.parse().ok()));
    let (runnable, total) = tasks.unwrap_or((None, None));
    (load, runnable, total)
}

/// `some avg10` of `/proc/pressure/cpu` as a ratio (the file gives a percentage).
pub fn parse_cpu_pressure_avg10(text: &str) -> Option<f64> {
    let line = text.lines().find(|l| l.starts_with("some "))?;
    let value = line
        .split_whitespace()
        .find_map(|field| field.strip_prefix("avg10="))?;
    value
        .parse::<f64>()
        .ok()
        .filter(|v| v.is_finite())
        .map(|v| v / 100.0)
}

/// `MemTotal` of `/proc/meminfo`, bytes.
pub fn parse_mem_total(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let mut fields = line["MemTotal:".len()..].split_whitespace();
    let value: u64 = fields.next()?.parse().ok()?;
    match fields.next() {
        Some("kB") => value.checked_mul(1024),
        None => Some(value),
        Some(_) => None,
    }
}

/// `/proc/<pid>/io`.
pub fn parse_io(text: &str) -> IoCounters {
    let mut io = IoCounters::default();
    for line in text.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim().parse().unwrap_or(0);
        match key {
            "rchar" => io.rchar = value,
            "wchar" => io.wchar = value,
            "read_bytes" => io.read_bytes = value,
            "write_bytes" => io.write_bytes = value,
            _ => {}
        }
    }
    io
}

/// `task/<tid>/children`: space-separated pids.
pub fn parse_children(bytes: &[u8], into: &mut Vec<i32>) {
    into.extend(
        bytes
            .split(|b| b.is_ascii_whitespace())
            .filter_map(|f| std::str::from_utf8(f).ok()?.parse::<i32>().ok()),
    );
}

/// `cmdline`: NUL-separated arguments (a trailing NUL is dropped).
pub fn parse_cmdline(bytes: &[u8]) -> Vec<String> {
    let bytes = bytes.strip_suffix(b"\0").unwrap_or(bytes);
    if bytes.is_empty() {
        return Vec::new();
    }
    bytes
        .split(|b| *b == 0)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect()
}

#[cfg(test)]
mod machine_load_tests {
    use super::*;

    #[test]
    fn loadavg_and_pressure() {
        assert_eq!(
            parse_loadavg("1.18 2.15 1.85 3/86 13917\n"),
            (Some(1.18), Some(3), Some(86))
        );
        assert_eq!(parse_loadavg("garbage"), (None, None, None));
        let psi = "some avg10=4.00 avg60=7.84 avg300=28.62 total=462241309\n\
                   full avg10=0.00 avg60=0.00 avg300=0.00 total=0\n";
        assert_eq!(parse_cpu_pressure_avg10(psi), Some(0.04));
        assert_eq!(parse_cpu_pressure_avg10("full avg10=1.00"), None);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STAT: &[u8] = b"4242 (a (b) c) S 1 4242 4242 0 -1 4194560 1200 0 3 0 150 25 0 0 20 0 7 0 123456 200000000 512 18446744073709551615 1 1 0 0 0 0 0 4096 0 0 0 0 17 1 0 0 0 0 0 0 0 0 0 0 0 0 0\n";

    #[test]
    fn stat_name_with_spaces_and_parens() {
        let stat = parse_stat(STAT).unwrap();
        assert_eq!(stat.pid, 4242);
        assert_eq!(stat.comm, "a (b) c");
        assert_eq!(stat.state, 'S');
        assert_eq!(stat.ppid, 1);
        assert_eq!(stat.utime, 150);
        assert_eq!(stat.stime, 25);
        assert_eq!(stat.num_threads, 7);
        assert_eq!(stat.starttime, 123456);
        assert_eq!(stat.rss_pages, 512);
        assert_eq!(stat.processor, 1);
    }

    #[test]
    fn stat_name_ending_in_paren_and_digits() {
        let line = b"7 ()) 1 2) R 3 7 7 0 -1 0 0 0 0 0 5 6 0 0 20 0 1 0 99 0 10 0 0 0 0 0 0 0 0 0 0 0 0 0 17 0 0 0";
        let stat = parse_stat(line).unwrap();
        assert_eq!(stat.comm, ")) 1 2");
        assert_eq!(stat.state, 'R');
        assert_eq!(stat.ppid, 3);
        assert_eq!(stat.processor, 0);
    }

    #[test]
    fn stat_long_kernel_worker_name() {
        let name = format!("kworker/u8:{}-ev)ents", "x".repeat(40));
        let line = format!(
            "9 ({name}) I 2 0 0 0 -1 0 0 0 0 0 1 2 0 0 20 0 1 0 5 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 1"
        );
        let stat = parse_stat(line.as_bytes()).unwrap();
        assert_eq!(stat.comm, name);
        assert_eq!(stat.state, 'I');
        assert_eq!(stat.processor, 1);
    }

    #[test]
    fn stat_truncated_is_an_error() {
        for cut in [5, 14, 20, 40, 60, 100, 120] {
            let err = parse_stat(&STAT[..cut]).unwrap_err();
            assert!(
                matches!(
                    err,
                    ParseError::Truncated { .. } | ParseError::NoCommEnd { .. }
                ),
                "cut {cut}: {err:?}"
            );
        }
        assert!(parse_stat(b"12 (name").is_err());
    }

    #[test]
    fn stat_empty_and_garbage() {
        assert_eq!(
            parse_stat(b"").unwrap_err(),
            ParseError::Empty { file: "stat" }
        );
        assert_eq!(
            parse_stat(b"\n\0").unwrap_err(),
            ParseError::Empty { file: "stat" }
        );
        assert!(matches!(
            parse_stat(b"x (a) S y").unwrap_err(),
            ParseError::BadNumber { field: "pid", .. }
        ));
    }

    #[test]
    fn schedstat_full_and_short() {
        assert_eq!(
            parse_schedstat(b"123456 7890 12\n").unwrap(),
            SchedStat {
                run_ns: 123456,
                wait_ns: 7890,
                timeslices: 12
            }
        );
        assert_eq!(
            parse_schedstat(b"123 456\n").unwrap_err(),
            ParseError::Truncated {
                file: "schedstat",
                field: "timeslices"
            }
        );
        assert!(parse_schedstat(b"").is_err());
        assert!(parse_schedstat(b"a b c").is_err());
    }

    #[test]
    fn status_ctxt_switches_uid_and_cpus() {
        let text = b"Name:\ta (b) c\nState:\tS (sleeping)\nUid:\t1000\t1000\t1000\t1000\nCpus_allowed:\tf\nCpus_allowed_list:\t0-3\nvoluntary_ctxt_switches:\t42\nnonvoluntary_ctxt_switches:\t7\n";
        assert_eq!(
            parse_status(text),
            Status {
                uid: Some(1000),
                voluntary_ctxt_switches: Some(42),
                nonvoluntary_ctxt_switches: Some(7),
                cpus_allowed_list: Some("0-3".to_string()),
            }
        );
        assert_eq!(parse_status(b""), Status::default());
        // A line cut in the middle gives no value rather than a wrong one.
        assert_eq!(
            parse_status(b"voluntary_ctxt_switches:\t4x").voluntary_ctxt_switches,
            None
        );
    }

    #[test]
    fn ctxt_switches_from_the_end_of_status() {
        let text = b"Name:\tpython3\nCpus_allowed_list:\t0-1\nvoluntary_ctxt_switches:\t42\nnonvoluntary_ctxt_switches:\t7\n";
        assert_eq!(parse_ctxt_switches(text), (Some(42), Some(7)));
        assert_eq!(parse_ctxt_switches(b""), (None, None));
        assert_eq!(
            parse_ctxt_switches(b"Name:\tx\nvoluntary_ctxt_switches:\t3\n"),
            (Some(3), None)
        );
        assert_eq!(
            parse_ctxt_switches(b"voluntary_ctxt_switches:\t3\nnonvoluntary_ctxt_switches:\t"),
            (Some(3), None)
        );
    }

    #[test]
    fn decimal_numbers() {
        assert_eq!(i64::from_decimal(b"-1"), Some(-1));
        assert_eq!(u64::from_decimal(b"18446744073709551615"), Some(u64::MAX));
        assert_eq!(u64::from_decimal(b"18446744073709551616"), None);
        assert_eq!(u32::from_decimal(b"4294967296"), None);
        assert_eq!(i32::from_decimal(b"-2147483648"), Some(i32::MIN));
        assert_eq!(u64::from_decimal(b""), None);
        assert_eq!(u64::from_decimal(b"1a"), None);
        assert_eq!(u64::from_decimal(b"-1"), None);
    }

    #[test]
    fn wchan_zero_and_empty_are_none() {
        assert_eq!(trim_wchan(b"0\n"), None);
        assert_eq!(trim_wchan(b""), None);
        assert_eq!(trim_wchan(b"futex_wait_queue\n"), Some("futex_wait_queue"));
    }

    #[test]
    fn syscall_forms() {
        assert_eq!(parse_syscall(b"running\n").unwrap(), Syscall::Running);
        assert_eq!(
            parse_syscall(b"-1 0x7ffd1 0x7f01\n").unwrap(),
            Syscall::NotInSyscall
        );
        let futex_nr = if cfg!(target_arch = "aarch64") {
            98
        } else {
            202
        };
        let line = format!("{futex_nr} 0x7f3c 0x80 0x0 0x0 0x0 0xffffffff 0x7ffc 0x7f3d\n");
        match parse_syscall(line.as_bytes()).unwrap() {
            Syscall::InSyscall { number, name, args } => {
                assert_eq!(number, futex_nr);
                if cfg!(any(target_arch = "x86_64", target_arch = "aarch64")) {
                    assert_eq!(name.as_deref(), Some("futex"));
                }
                assert_eq!(args, [0x7f3c, 0x80, 0, 0, 0, 0xffff_ffff]);
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(parse_syscall(b"").is_err());
        assert!(matches!(
            parse_syscall(b"202 0x1 0x2").unwrap_err(),
            ParseError::Truncated { field: "a3", .. }
        ));
        for bad in ["0x", "0xg1", "0x1ffffffffffffffff"] {
            let line = format!("202 {bad} 0x0 0x0 0x0 0x0 0x0 0x1 0x2");
            assert!(
                matches!(
                    parse_syscall(line.as_bytes()).unwrap_err(),
                    ParseError::BadNumber { field: "a1", .. }
                ),
                "{bad}"
            );
        }
        assert_eq!(parse_hex(b"ffffffffffffffff"), Some(u64::MAX));
        assert_eq!(parse_hex(b"0xABc"), Some(0xabc));
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn syscall_names_x86_64() {
        assert_eq!(syscall_name(0), Some("read"));
        assert_eq!(syscall_name(281), Some("epoll_pwait"));
        assert_eq!(syscall_name(61), Some("wait4"));
        assert_eq!(syscall_name(100_000), None);
    }

    #[test]
    fn cpu_lists() {
        assert_eq!(
            parse_cpu_list("0-3,8,10-11").unwrap(),
            [0, 1, 2, 3, 8, 10, 11]
        );
        assert_eq!(parse_cpu_list("5\n").unwrap(), [5]);
        assert_eq!(parse_cpu_list("").unwrap(), Vec::<u32>::new());
        assert!(parse_cpu_list("3-1").is_err());
        assert!(parse_cpu_list("a-b").is_err());
    }

    /// Found by the property tests: "0-4294967295" asked for four billion entries.
    #[test]
    fn cpu_list_numbers_are_bounded() {
        assert!(parse_cpu_list("0-4294967295").is_err());
        assert!(parse_cpu_list(&MAX_CPUS.to_string()).is_err());
        let last = MAX_CPUS - 1;
        assert_eq!(
            parse_cpu_list(&format!("0-{last}")).unwrap().len(),
            MAX_CPUS as usize
        );
        let repeated = vec![format!("0-{last}"); 4].join(",");
        assert_eq!(parse_cpu_list(&repeated).unwrap().len(), MAX_CPUS as usize);
        let long = "9".repeat(500);
        match parse_cpu_list(&long) {
            Err(ParseError::BadCpuList(quoted)) => assert_eq!(quoted.len(), 80),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn online_cpus_from_proc_stat() {
        let text = "cpu  1 2 3\ncpu0 1 2 3\ncpu1 4 5 6\nintr 1\nctxt 5\ncpufreq 1\n";
        assert_eq!(count_stat_cpus(text), 2);
    }

    #[test]
    fn mem_total_and_io() {
        assert_eq!(
            parse_mem_total("MemFree: 1 kB\nMemTotal:       8048576 kB\n"),
            Some(8048576 * 1024)
        );
        assert_eq!(parse_mem_total(""), None);
        let io = parse_io("rchar: 10\nwchar: 20\nsyscr: 3\nread_bytes: 4096\nwrite_bytes: 0\n");
        assert_eq!(
            io,
            IoCounters {
                rchar: 10,
                wchar: 20,
                read_bytes: 4096,
                write_bytes: 0
            }
        );
    }

    #[test]
    fn children_and_cmdline() {
        let mut pids = Vec::new();
        parse_children(b"12 13 \n", &mut pids);
        parse_children(b"", &mut pids);
        assert_eq!(pids, [12, 13]);
        assert_eq!(
            parse_cmdline(b"python3\0-c\0a b\0"),
            ["python3", "-c", "a b"]
        );
        assert!(parse_cmdline(b"").is_empty());
    }
}

/// Properties of the parsers over generated input: no panic on any bytes (nor on valid
/// files cut, spliced or with bytes changed), output bounded by the input, and
/// rendering the fields tfwatch reads then parsing them gives them back.
#[cfg(test)]
mod proptests {
    use proptest::prelude::*;

    use super::*;

    const CASES: u32 = 256;

    /// A valid file with one edit: a byte changed, a cut, or bytes spliced in.
    fn mutated(valid: &'static [u8]) -> impl Strategy<Value = Vec<u8>> {
        let len = valid.len();
        (
            0..3u8,
            0..=len,
            any::<u8>(),
            proptest::collection::vec(any::<u8>(), 0..16),
        )
            .prop_map(move |(edit, at, byte, splice)| {
                let mut bytes = valid.to_vec();
                match edit {
                    0 if at < len => bytes[at] = byte,
                    1 => bytes.truncate(at),
                    _ => {
                        let at = at.min(bytes.len());
                        bytes.splice(at..at, splice);
                    }
                }
                bytes
            })
    }

    const STAT: &[u8] = b"4242 (a (b) c) S 1 4242 4242 0 -1 4194560 1200 0 3 0 150 25 0 0 20 0 7 0 123456 200000000 512 18446744073709551615 1 1 0 0 0 0 0 4096 0 0 0 0 17 1 0 0 0 0 0 0 0 0 0 0 0 0 0\n";
    const STATUS: &[u8] = b"Name:\tpython3\nUid:\t1000\t1000\t1000\t1000\nCpus_allowed_list:\t0-3,8\nvoluntary_ctxt_switches:\t150\nnonvoluntary_ctxt_switches:\t7\n";
    const SYSCALL: &[u8] = b"202 0x7f3c 0x80 0x0 0x0 0x0 0xffffffff 0x7ffc 0x7f3d\n";
    const IO: &[u8] = b"rchar: 1\nwchar: 2\nsyscr: 3\nsyscw: 4\nread_bytes: 5\nwrite_bytes: 6\ncancelled_write_bytes: 0\n";

    /// Every parser of this module over the same bytes (as text where it takes text).
    fn parse_all(bytes: &[u8]) {
        let text = String::from_utf8_lossy(bytes);
        if let Ok(stat) = parse_stat(bytes) {
            assert!(stat.comm.len() <= 3 * 64, "comm within the window");
        }
        let _ = parse_stat_borrowed(bytes);
        let _ = parse_schedstat(bytes);
        let status = parse_status(bytes);
        if let Some(list) = status.cpus_allowed_list {
            assert!(list.len() <= 3 * bytes.len());
        }
        let _ = parse_ctxt_switches(bytes);
        if let Some(wchan) = trim_wchan(bytes) {
            assert!(wchan.len() <= bytes.len());
        }
        if let Ok(Syscall::InSyscall { args, .. }) = parse_syscall(bytes) {
            assert_eq!(args.len(), 6);
        }
        if let Ok(cpus) = parse_cpu_list(&text) {
            assert!(cpus.len() <= MAX_CPUS as usize);
            assert!(
                cpus.windows(2).all(|w| w[0] < w[1]),
                "ascending, no repeats"
            );
        }
        assert!(count_stat_cpus(&text) as usize <= text.len());
        let _ = parse_loadavg(&text);
        let _ = parse_cpu_pressure_avg10(&text);
        let _ = parse_mem_total(&text);
        let _ = parse_io(&text);
        let mut children = Vec::new();
        parse_children(bytes, &mut children);
        assert!(children.len() <= bytes.len() / 2 + 1);
        let args = parse_cmdline(bytes);
        assert!(args.len() <= bytes.len());
    }

    fn render_cpu_list(cpus: &std::collections::BTreeSet<u32>) -> String {
        // Runs of consecutive numbers as "a-b", others alone.
        let mut parts = Vec::new();
        let mut iter = cpus.iter().copied().peekable();
        while let Some(start) = iter.next() {
            let mut end = start;
            while iter.peek() == Some(&(end + 1)) {
                end += 1;
                iter.next();
            }
            parts.push(if end == start {
                start.to_string()
            } else {
                format!("{start}-{end}")
            });
        }
        parts.join(",")
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(CASES))]

        #[test]
        fn no_parser_panics_on_any_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            parse_all(&bytes);
        }

        #[test]
        fn no_parser_panics_on_printable_text(text in "[ -~\t\n]{0,300}") {
            parse_all(text.as_bytes());
        }

        #[test]
        fn no_parser_panics_on_edited_files(
            stat in mutated(STAT),
            status in mutated(STATUS),
            syscall in mutated(SYSCALL),
            io in mutated(IO),
        ) {
            for bytes in [stat, status, syscall, io] {
                parse_all(&bytes);
            }
        }

        #[test]
        fn stat_fields_round_trip(
            pid in 1..i32::MAX,
            comm in "[^\n\0]{0,15}",
            state in proptest::sample::select(b"RSDZTtXIKWP".to_vec()),
            ppid in 0..i32::MAX,
            utime: u64,
            stime: u64,
            num_threads: u32,
            starttime: u64,
            rss_pages: u64,
            processor in 0..i32::MAX,
        ) {
            // Fields 3.. of proc(5); the ones tfwatch ignores hold arbitrary numbers.
            let mut fields: Vec<String> = (3..=52).map(|n| (n * 7).to_string()).collect();
            let mut set = |field: usize, value: String| fields[field - 3] = value;
            set(3, (state as char).to_string());
            set(4, ppid.to_string());
            set(14, utime.to_string());
            set(15, stime.to_string());
            set(20, num_threads.to_string());
            set(22, starttime.to_string());
            set(24, rss_pages.to_string());
            set(39, processor.to_string());
            let line = format!("{pid} ({comm}) {}\n", fields.join(" "));
            let stat = parse_stat(line.as_bytes()).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(stat, Stat {
                pid,
                comm,
                state: state as char,
                ppid,
                utime,
                stime,
                num_threads,
                starttime,
                rss_pages,
                // Field 28, left at its arbitrary number.
                startstack: 28 * 7,
                processor,
            });
        }

        #[test]
        fn schedstat_round_trips(run_ns: u64, wait_ns: u64, timeslices: u64) {
            let line = format!("{run_ns} {wait_ns} {timeslices}\n");
            prop_assert_eq!(
                parse_schedstat(line.as_bytes()),
                Ok(SchedStat { run_ns, wait_ns, timeslices })
            );
        }

        #[test]
        fn status_fields_round_trip(
            uid: u32,
            voluntary: u64,
            nonvoluntary: u64,
            cpus in "[0-9,-]{1,20}",
            other in proptest::collection::vec("X[A-Za-z_]{0,12}:\t[ -~]{0,20}", 0..6),
        ) {
            let mut text = String::from("Name:\tworker\n");
            for line in &other {
                text.push_str(line);
                text.push('\n');
            }
            text.push_str(&format!(
                "Uid:\t{uid}\t{uid}\t{uid}\t{uid}\nCpus_allowed_list:\t{cpus}\n\
                 voluntary_ctxt_switches:\t{voluntary}\nnonvoluntary_ctxt_switches:\t{nonvoluntary}\n"
            ));
            let status = parse_status(text.as_bytes());
            prop_assert_eq!(status, Status {
                uid: Some(uid),
                voluntary_ctxt_switches: Some(voluntary),
                nonvoluntary_ctxt_switches: Some(nonvoluntary),
                cpus_allowed_list: Some(cpus),
            });
            prop_assert_eq!(
                parse_ctxt_switches(text.as_bytes()),
                (Some(voluntary), Some(nonvoluntary))
            );
        }

        #[test]
        fn syscall_round_trips(number in 0..i64::MAX, args: [u64; 6], sp: u64, pc: u64) {
            let hex: Vec<String> = args.iter().map(|a| format!("{a:#x}")).collect();
            let line = format!("{number} {} {sp:#x} {pc:#x}\n", hex.join(" "));
            prop_assert_eq!(
                parse_syscall(line.as_bytes()),
                Ok(Syscall::InSyscall {
                    number,
                    name: syscall_name(number).map(std::borrow::Cow::Borrowed),
                    args,
                })
            );
        }

        #[test]
        fn cpu_lists_round_trip(cpus in proptest::collection::btree_set(0..MAX_CPUS, 0..64)) {
            let text = render_cpu_list(&cpus);
            let parsed = parse_cpu_list(&text).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(parsed, cpus.into_iter().collect::<Vec<_>>());
        }

        #[test]
        fn cpu_lists_of_any_range_stay_bounded(low: u32, high: u32, repeats in 1..8usize) {
            let text = vec![format!("{low}-{high}"); repeats].join(",");
            match parse_cpu_list(&text) {
                Ok(cpus) => {
                    prop_assert!(low <= high && high < MAX_CPUS);
                    prop_assert_eq!(cpus.len() as u64, u64::from(high - low) + 1);
                }
                Err(_) => prop_assert!(high < low || high >= MAX_CPUS),
            }
        }

        #[test]
        fn io_round_trips(rchar: u64, wchar: u64, read_bytes: u64, write_bytes: u64) {
            let text = format!(
                "rchar: {rchar}\nwchar: {wchar}\nsyscr: 1\nsyscw: 2\nread_bytes: {read_bytes}\n\
                 write_bytes: {write_bytes}\ncancelled_write_bytes: 0\n"
            );
            prop_assert_eq!(
                parse_io(&text),
                IoCounters { rchar, wchar, read_bytes, write_bytes }
            );
        }

        #[test]
        fn cmdline_round_trips(args in proptest::collection::vec("[^\0]{0,12}", 1..8)) {
            // A single empty argument reads as none: "\0" and "" are the same file.
            prop_assume!(!(args.len() == 1 && args[0].is_empty()));
            let mut bytes = Vec::new();
            for arg in &args {
                bytes.extend_from_slice(arg.as_bytes());
                bytes.push(0);
            }
            prop_assert_eq!(parse_cmdline(&bytes), args);
        }
    }
}
