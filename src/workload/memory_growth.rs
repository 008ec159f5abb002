//! `memory-growth`: resident memory climbs toward a limit.
//!
//! A "response cache" takes 1 MiB entries at `--rate` MiB/s, every page written so it
//! is resident. Broken: the cache never evicts; it grows to `--cap` (default 512 MiB —
//! never unbounded) and holds there until the end. Fixed: the cache is bounded
//! (`--cache`, default 64 MiB) and evicts its oldest entries; RSS stays flat.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};

use super::common;
use super::{Ctx, WorkloadOptions};

const MIB: usize = 1024 * 1024;
const TICK: Duration = Duration::from_millis(100);

/// A FIFO cache of 1 MiB entries holding at most `max_entries` (None: unbounded).
pub struct EntryCache {
    entries: VecDeque<Vec<u8>>,
    max_entries: Option<usize>,
    pub evicted: u64,
}

impl EntryCache {
    pub fn new(max_entries: Option<usize>) -> EntryCache {
        EntryCache {
            entries: VecDeque::new(),
            max_entries,
            evicted: 0,
        }
    }

    /// Inserts one entry of `bytes` bytes, every page written (resident).
    pub fn insert(&mut self, bytes: usize, fill: u8) {
        if let Some(max) = self.max_entries {
            while self.entries.len() >= max.max(1) {
                self.entries.pop_front();
                self.evicted += 1;
            }
        }
        // A non-zero fill is written byte by byte, so every page becomes resident.
        self.entries.push_back(vec![fill | 1; bytes]);
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// Memory the kernel says is available, in MiB (`MemAvailable` of `/proc/meminfo`).
fn mem_available_mib() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    common::status_field(&text, "MemAvailable").map(|kib| kib / 1024)
}

pub fn run(ctx: &Ctx, args: &WorkloadOptions) -> Result<i32> {
    if args.rate == 0 || args.rate > 4096 {
        bail!("--rate {} MiB/s is out of range: 1 to 4096", args.rate);
    }
    if args.cap == 0 || args.cache == 0 {
        bail!("--cap and --cache must be at least 1 MiB");
    }
    let limit_mib = if ctx.fixed() {
        args.cache.min(args.cap)
    } else {
        args.cap
    };
    if let Some(available) = mem_available_mib()
        && limit_mib > available / 2
    {
        bail!(
            "{limit_mib} MiB is more than half of the {available} MiB this machine has available; choose a smaller --cap/--cache"
        );
    }
    let max_entries = usize::try_from(limit_mib).unwrap_or(usize::MAX);
    let mut cache = EntryCache::new(ctx.fixed().then_some(max_entries));
    ctx.say(if ctx.fixed() {
        format!(
            "cache bounded at {limit_mib} MiB, {} MiB/s of inserts",
            args.rate
        )
    } else {
        format!(
            "cache never evicts: {} MiB/s up to {limit_mib} MiB (the --cap), then holds",
            args.rate
        )
    });
    if !ctx.fixed() {
        common::emit_onset("memory-growth");
    }
    let start = Instant::now();
    let mut inserted = 0u64;
    let mut peak_rss = 0u64;
    let mut holding = false;
    let mut last_report = start;
    let mut tick = 0u32;
    while Instant::now() < ctx.deadline {
        tick += 1;
        // Inserts due by now at the configured rate.
        let due = (start.elapsed().as_secs_f64() * args.rate as f64) as u64;
        while inserted < due {
            if !ctx.fixed() && cache.len() >= max_entries {
                if !holding {
                    ctx.say(format!("reached the cap of {limit_mib} MiB; holding"));
                    holding = true;
                }
                break;
            }
            cache.insert(MIB, inserted as u8);
            inserted += 1;
        }
        if holding {
            inserted = due;
        }
        let rss = common::self_rss_bytes().unwrap_or(0);
        peak_rss = peak_rss.max(rss);
        if last_report.elapsed() >= Duration::from_secs(1) {
            last_report = Instant::now();
            ctx.say(format!(
                "RSS {}, cache {} MiB, evicted {}",
                crate::units::format_bytes(rss),
                cache.len(),
                cache.evicted
            ));
        }
        common::sleep_until((start + TICK * tick).min(ctx.deadline));
    }
    peak_rss = peak_rss.max(
        common::self_status_field(std::path::Path::new(common::PROC_ROOT), "VmHWM")
            .map_or(0, |kib| kib * 1024),
    );
    ctx.say(format!(
        "peak RSS {}, cache {} MiB at the end",
        crate::units::format_bytes(peak_rss),
        cache.len()
    ));
    let mut result = ctx.result(true);
    result.peak_rss_bytes = Some(peak_rss);
    result.detail = if ctx.fixed() {
        format!(
            "bounded cache of {limit_mib} MiB, {} evicted",
            cache.evicted
        )
    } else {
        format!("unbounded cache, cap {limit_mib} MiB")
    };
    Ok(ctx.finish(&result))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_cache_evicts_oldest() {
        let mut cache = EntryCache::new(Some(3));
        for i in 0..5 {
            cache.insert(16, i);
        }
        assert_eq!(cache.len(), 3);
        assert_eq!(cache.evicted, 2);
        assert_eq!(cache.entries.front().unwrap()[0], 2 | 1);
        let mut unbounded = EntryCache::new(None);
        for i in 0..5 {
            unbounded.insert(16, i);
        }
        assert_eq!(unbounded.len(), 5);
        assert!(!unbounded.is_empty());
    }
}
