//! A process frozen by its cgroup, said in one wording by every report (`snapshot`, and
//! `run`'s diagnosis): its threads show state D, which alone reads as uninterruptible
//! sleep; only its cgroup's freezer tells.

use crate::sink::report::{self, SnapshotReport};

/// Says each process of `report` whose cgroup is frozen so, in the one wording of a
/// frozen process: its threads show state D, which alone reads as uninterruptible sleep.
pub fn note_frozen_processes(report: &mut SnapshotReport, proc_root: &std::path::Path) {
    let pids: Vec<i32> = report.processes.iter().map(|p| p.pid).collect();
    for pid in pids {
        if let Some(how) = crate::source::stacks::frozen_cgroup(proc_root, pid) {
            report::note_frozen(report, pid, &how);
        }
    }
}
