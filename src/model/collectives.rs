//! Where a rank of a distributed job waits, from its stacks: the collective it is in
//! (`torch.distributed`'s Python API, else gloo, NCCL or MPI native frames) and the call
//! site in the program's own code. Pure; the local cross-rank verdict
//! (`detect::distributed`) and the stacks the collector keeps for `tfwatch node` (so a
//! rank's series can name its collective) both read it.

use serde::{Deserialize, Serialize};

use crate::model::ranks::is_communication_thread;
use crate::model::stacks::{StackFrame, StackKind, StacksReport, ThreadStack};

/// The collectives of `torch.distributed` (and the calls that wait for peers like one),
/// by their Python names.
const TORCH_COLLECTIVES: &[&str] = &[
    "all_reduce",
    "all_reduce_coalesced",
    "all_gather",
    "all_gather_into_tensor",
    "all_gather_object",
    "all_gather_coalesced",
    "reduce_scatter",
    "reduce_scatter_tensor",
    "all_to_all",
    "all_to_all_single",
    "broadcast",
    "broadcast_object_list",
    "reduce",
    "gather",
    "gather_object",
    "scatter",
    "scatter_object_list",
    "barrier",
    "monitored_barrier",
    "send",
    "recv",
    "isend",
    "irecv",
    "batch_isend_irecv",
    "send_object_list",
    "recv_object_list",
    "new_group",
    "init_process_group",
    "destroy_process_group",
];

/// Whether a Python file is part of torch itself (its frames are not the caller's site).
fn in_torch(file: &str) -> bool {
    file.contains("/torch/") || file.starts_with("torch/")
}

/// A file as people read it: the part after `site-packages/`, else the path.
fn short_file(file: &str) -> &str {
    file.rsplit_once("site-packages/")
        .map_or(file, |(_, rest)| rest)
}

/// A frame of Python code (the merged stacks mark them; Python-only stacks name `.py`
/// files).
fn is_python(frame: &StackFrame) -> bool {
    frame.python || frame.file.as_deref().is_some_and(|f| f.ends_with(".py"))
}

/// The collective a stack waits in, and the caller's frame: from the Python frames
/// (`torch/distributed/*.py`: the API the program called, and the first frame outside
/// torch that called it), else from the native frames (gloo, NCCL, MPI) as
/// [`crate::model::waits::collective`] names them.
pub fn collective_of(frames: &[StackFrame]) -> Option<(String, Option<&StackFrame>)> {
    // Innermost first: the outermost torch.distributed frame with a collective's name
    // is the API the program called.
    let python = frames.iter().enumerate().rev().find(|(_, f)| {
        is_python(f)
            && f.file
                .as_deref()
                .is_some_and(|file| file.contains("torch/distributed"))
            && f.function
                .as_deref()
                .is_some_and(|name| TORCH_COLLECTIVES.contains(&name))
    });
    if let Some((at, frame)) = python {
        let caller = frames[at + 1..]
            .iter()
            .find(|f| is_python(f) && f.file.as_deref().is_some_and(|file| !in_torch(file)));
        return frame.function.clone().map(|name| (name, caller));
    }
    let (library, op) = crate::model::waits::collective(frames)?;
    // Native names run the words together (`ncclAllReduce`, `gloo::allreduce`): spell
    // them as torch.distributed does, so ranks compare alike.
    let spelled = |op: &str| match op {
        "allreduce" => "all_reduce".to_string(),
        "allgather" => "all_gather".to_string(),
        "reducescatter" => "reduce_scatter".to_string(),
        "alltoall" => "all_to_all".to_string(),
        other => other.to_string(),
    };
    let name = match op.as_deref().map(spelled) {
        Some(op) => format!("{op} ({library})"),
        None => format!("a {library} collective"),
    };
    let caller = frames
        .iter()
        .find(|f| is_python(f) && f.file.as_deref().is_some_and(|file| !in_torch(file)));
    Some((name, caller))
}

/// Where one rank waits, as its stacks tell.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, schemars::JsonSchema, Deserialize)]
pub struct RankPlace {
    /// The collective the rank waits in (`all_reduce`, `barrier`, `all_reduce (NCCL)`),
    /// or `None` when it is in none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub collective: Option<String>,
    /// The caller's `file:line` (the first frame outside torch), where known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub site: Option<String>,
    /// The function around that line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub function: Option<String>,
}

/// Where process `pid` waits, from its threads in `stacks`; `None` when the report holds
/// no stack of its own threads (a communication library's threads — gloo's, NCCL's —
/// sit in their library's frames whatever the rank does, so they are left aside).
pub fn rank_place(stacks: &StacksReport, pid: i32) -> Option<RankPlace> {
    let mut threads: Vec<&ThreadStack> = stacks
        .threads
        .iter()
        .filter(|t| t.pid == pid)
        .filter(|t| !t.name.as_deref().is_some_and(is_communication_thread))
        .collect();
    if threads.is_empty() {
        return None;
    }
    // The main thread first: it is the one that calls collectives in nearly every
    // training loop; any other thread in a collective next.
    threads.sort_by_key(|t| t.tid != pid);
    let found = threads.iter().find_map(|t| collective_of(&t.frames));
    let (collective, site_frame) = match found {
        Some((name, caller)) => (Some(name), caller.cloned()),
        None => {
            // Not in a collective: where its main thread is, in its own code.
            let main = threads
                .iter()
                .find(|t| t.kind == StackKind::Python || t.tid == pid);
            let frame = main.and_then(|t| {
                t.frames
                    .iter()
                    .find(|f| is_python(f) && f.file.as_deref().is_some_and(|file| !in_torch(file)))
                    .cloned()
            });
            (None, frame)
        }
    };
    let site = site_frame.as_ref().and_then(|f| {
        let file = short_file(f.file.as_deref()?);
        Some(match f.line {
            Some(line) => format!("{file}:{line}"),
            None => file.to_string(),
        })
    });
    Some(RankPlace {
        collective,
        site,
        function: site_frame.and_then(|f| f.function),
    })
}
