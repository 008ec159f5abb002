//! Stacks of threads, as plain data (taken by `source::stacks`, shown by the report).

use serde::{Deserialize, Serialize};

use crate::model::Unavailable;

/// One frame of a stack.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct StackFrame {
    /// Symbolised function name (demangled), where a symbol covers the address.
    pub function: Option<String>,
    /// Source file, where known (Python frames; native frames with DWARF line info).
    pub file: Option<String>,
    pub line: Option<u32>,
    /// Instruction address (native frames).
    pub address: Option<u64>,
}

/// The stack of one thread.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ThreadStack {
    pub pid: i32,
    pub tid: i32,
    pub name: Option<String>,
    /// "native" or "python".
    pub kind: String,
    /// Innermost frame first.
    pub frames: Vec<StackFrame>,
    /// How long the process was stopped to take its stacks, seconds.
    pub paused_seconds: f64,
    /// Python stacks: whether the thread holds the GIL (read by py-spy from the
    /// interpreter's state — not a heuristic).
    pub owns_gil: Option<bool>,
}

/// Stacks of a tree and what could not be taken.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct StacksReport {
    pub threads: Vec<ThreadStack>,
    /// Per process and kind: why stacks are missing, and how to get them.
    pub unavailable: Vec<Unavailable>,
}
