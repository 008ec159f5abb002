//! The sources a sample could not read, one entry per source and process.

use std::collections::BTreeMap;

use crate::model::Unavailable;

/// The fix for files that need ptrace access to the target.
pub const PTRACE_FIX: &str = crate::source::PTRACE_ADVICE;

/// Unavailable sources, deduplicated by source and pid (first reason wins).
#[derive(Debug, Default)]
pub struct Notes {
    entries: BTreeMap<(String, Option<i32>), Unavailable>,
}

impl Notes {
    pub fn add(&mut self, source: &str, pid: Option<i32>, reason: &str, fix: Option<&str>) {
        self.entries
            .entry((source.to_string(), pid))
            .or_insert_with(|| Unavailable {
                source: source.to_string(),
                pid,
                reason: reason.to_string(),
                fix: fix.map(str::to_string),
            });
    }

    /// The kernel has no `schedstat` files.
    pub fn schedstat_missing(&mut self) {
        self.add(
            "schedstat",
            None,
            "the kernel has no per-task schedstat: run-queue wait and timeslices are unknown",
            Some("use a kernel built with CONFIG_SCHED_INFO (CONFIG_SCHEDSTATS)"),
        );
    }

    /// The notes about one process.
    pub fn for_pid(&self, pid: i32) -> Vec<Unavailable> {
        self.entries
            .values()
            .filter(|u| u.pid == Some(pid))
            .cloned()
            .collect()
    }

    pub fn into_vec(self) -> Vec<Unavailable> {
        self.entries.into_values().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_entry_per_source_and_pid() {
        let mut notes = Notes::default();
        for _ in 0..3 {
            notes.add("syscall", Some(7), "denied", Some(PTRACE_FIX));
        }
        notes.add("syscall", Some(8), "denied", None);
        notes.add("environ", Some(7), "denied", None);
        let entries = notes.into_vec();
        assert_eq!(entries.len(), 3);
        assert_eq!(entries[0].source, "environ");
        assert_eq!(entries[1].pid, Some(7));
    }
}
