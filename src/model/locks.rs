//! What the wait-for graph of a sample shows, as plain data: proofs (findings) and
//! notes, and what a one-shot look cannot decide.

use serde::{Deserialize, Serialize};

use crate::model::{Finding, FindingKind};

/// An observation about locks that is not a finding of its own.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema, Deserialize, PartialEq)]
pub struct LockNote {
    pub pid: i32,
    pub kind: LockNoteKind,
    pub text: String,
    pub tids: Vec<i32>,
}

/// What a lock note says.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum LockNoteKind {
    /// Threads wait on a chain of held locks that ends in a running thread.
    LockChain,
    /// Threads wait on a lock that records no owner.
    #[default]
    UnknownOwner,
    /// Python threads that may wait for the GIL (a guess from their waits).
    GilHeuristic,
    /// The recorded owner of a held lock no longer exists.
    OwnerGone,
}

impl LockNoteKind {
    /// The word the JSON has.
    pub fn as_str(self) -> &'static str {
        match self {
            LockNoteKind::LockChain => "lock-chain",
            LockNoteKind::UnknownOwner => "unknown-owner",
            LockNoteKind::GilHeuristic => "gil-heuristic",
            LockNoteKind::OwnerGone => "owner-gone",
        }
    }
}

impl std::fmt::Display for LockNoteKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the wait-for graph of one sample shows.
#[derive(Debug, Clone, Default)]
pub struct LockAnalysis {
    /// One `deadlock` finding per cycle.
    pub deadlocks: Vec<Finding>,
    /// Proven `fork-inherited-lock` findings, one per child.
    pub fork_inherited: Vec<Finding>,
    pub notes: Vec<LockNote>,
}

impl LockAnalysis {
    /// Processes with a proven deadlock or inherited lock.
    pub fn proven_pids(&self) -> Vec<i32> {
        self.deadlocks
            .iter()
            .chain(&self.fork_inherited)
            .flat_map(|f| f.pids.iter().copied())
            .collect()
    }

    /// Notes about one process.
    pub fn notes_for(&self, pid: i32) -> impl Iterator<Item = &LockNote> {
        self.notes.iter().filter(move |n| n.pid == pid)
    }
}

/// A problem a one-shot window cannot decide: what was seen, and how to decide it.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct LongerWatch {
    pub kind: FindingKind,
    pub observed: String,
    pub how: String,
}
