//! Stacks of threads, as plain data (taken by `source::stacks`, shown by the report),
//! and the merge of a thread's native and Python stacks into one.

use serde::{Deserialize, Serialize};

use crate::model::Unavailable;

fn is_false(value: &bool) -> bool {
    !*value
}

/// A Python lock object found among a frame's locals, read from the target's memory.
#[derive(Debug, Clone, Default, Serialize, schemars::JsonSchema, Deserialize, PartialEq)]
pub struct PythonLockObject {
    /// The local's name.
    pub name: String,
    pub address: u64,
    /// "Lock" (`_thread.lock`) or "RLock" (`_thread.RLock`).
    pub kind: String,
    /// RLock: the owning thread's ident (`threading.get_ident()`), read from the lock;
    /// `None` when it is free or the lock records no owner (a plain `Lock`).
    pub owner_ident: Option<u64>,
}

/// One frame of a stack.
#[derive(Debug, Clone, Default, Serialize, schemars::JsonSchema, Deserialize, PartialEq)]
pub struct StackFrame {
    /// Symbolised function name (demangled), where a symbol covers the address.
    pub function: Option<String>,
    /// Source file, where known (Python frames; native frames with DWARF line info).
    pub file: Option<String>,
    pub line: Option<u32>,
    /// Instruction address (native frames).
    pub address: Option<u64>,
    /// A frame of Python code (read from the interpreter), not a native one.
    #[serde(default, skip_serializing_if = "is_false")]
    pub python: bool,
    /// Python frames: the text of the line, trimmed, where the source could be read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// Python frames: the headers of the blocks enclosing the line (`with lock:`,
    /// `for …:`), innermost first, up to the enclosing `def`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scope: Vec<String>,
    /// Python frames: lock objects among the frame's locals.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub locks: Vec<PythonLockObject>,
    /// Python frames: the frame is the first one run by its native evaluation call
    /// (py-spy's `is_entry`; CPython 3.11+ runs several Python frames in one call).
    #[serde(default, skip_serializing_if = "is_false")]
    pub entry: bool,
}

/// Which frames a stack has.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum StackKind {
    /// Native frames (libdw).
    #[default]
    Native,
    /// Python frames (py-spy).
    Python,
    /// Native frames with the Python frames spliced in at the interpreter's evaluation
    /// frames.
    Mixed,
}

impl StackKind {
    /// The word the JSON has.
    pub fn as_str(self) -> &'static str {
        match self {
            StackKind::Native => "native",
            StackKind::Python => "python",
            StackKind::Mixed => "mixed",
        }
    }
}

impl std::fmt::Display for StackKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The stack of one thread.
#[derive(Debug, Clone, Default, Serialize, schemars::JsonSchema, Deserialize, PartialEq)]
pub struct ThreadStack {
    pub pid: i32,
    pub tid: i32,
    /// The Python thread name where the thread runs Python, else its name in /proc.
    pub name: Option<String>,
    pub kind: StackKind,
    /// Innermost frame first.
    pub frames: Vec<StackFrame>,
    /// How long the process was stopped to take its stacks, seconds.
    pub paused_seconds: f64,
    /// Python stacks: whether the thread holds the GIL (read by py-spy from the
    /// interpreter's state — not a heuristic).
    pub owns_gil: Option<bool>,
    /// State letter and wait channel from /proc when the stack was taken.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<char>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wchan: Option<String>,
    /// Python threads: the interpreter's thread ident (what an RLock records as owner).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub python_ident: Option<u64>,
    /// What the thread waits for, named from its frames and wait channel.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait: Option<NamedWait>,
    /// Not unwound natively: why (uninterruptible sleep, running past the pause
    /// budget, …); the frames are then empty, or only the Python ones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_unwound: Option<String>,
}

/// The kinds of wait, for machines (`kind` in JSON) and for other detectors.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    schemars::JsonSchema,
    Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum WaitName {
    /// `threading.Lock` / `RLock` acquire.
    PythonLock,
    /// Waiting to take the GIL.
    Gil,
    /// Waiting for a TensorFlow op or function to finish (`absl::Notification`, `tsl`).
    TensorflowOp,
    /// A pool thread waiting for work (Eigen, OpenMP, OpenBLAS, torch): normal.
    PoolIdle,
    /// An OpenMP or `at::parallel_for` barrier: waiting for the other workers.
    Barrier,
    /// A collective of a distributed job (gloo, NCCL, MPI, `torch.distributed`).
    Collective,
    /// Waiting on a socket, pipe or poll set.
    Socket,
    /// Waiting on a queue (`queue.Queue.get`, multiprocessing queues).
    Queue,
    /// Waiting for another thread or process to end (`join`).
    Join,
    /// Waiting for the result of a future (`concurrent.futures`, a multiprocessing
    /// `AsyncResult`).
    Future,
    /// Asleep on a timer.
    Sleep,
    /// A pthread mutex (C/C++ `std::mutex`).
    Mutex,
    /// A condition variable or event.
    Condvar,
    /// Uninterruptible sleep in the kernel (state D): not unwound.
    Uninterruptible,
    /// On a CPU.
    Running,
    /// Something else (the wait channel says where).
    Other,
}

/// Whether a wait can end by itself: what a hang verdict rests on. A hang needs an
/// owed wait; idle waits (for work, for time, for input) are how healthy programs wait.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Default,
    Serialize,
    Deserialize,
    schemars::JsonSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum WaitClass {
    /// On a CPU, or about to be (waiting for the GIL).
    Running,
    /// Owed: a lock, a join, a future's result, a collective, a barrier — it ends only
    /// when another thread gives what it waits for.
    Owed,
    /// Idle, waiting for work: a pool worker in its loop, a consumer on a queue, a
    /// thread waiting for an event (a service's stop signal).
    IdleWork,
    /// Idle on a timer: a sleep or a timed wait; it ends by itself.
    IdleTimer,
    /// Idle, waiting for input from outside: a socket, pipe, terminal, poll set.
    IdleInput,
    /// A wait on another process: a multiprocessing lock or semaphore, a futex word in
    /// shared memory; judged by the processes at the other end.
    CrossProcess,
    /// Uninterruptible sleep in the kernel (disk, a frozen cgroup).
    Kernel,
    /// Not known from the frames.
    #[default]
    Unknown,
}

impl WaitClass {
    pub fn as_str(self) -> &'static str {
        match self {
            WaitClass::Running => "running",
            WaitClass::Owed => "owed",
            WaitClass::IdleWork => "idle-work",
            WaitClass::IdleTimer => "idle-timer",
            WaitClass::IdleInput => "idle-input",
            WaitClass::CrossProcess => "cross-process",
            WaitClass::Kernel => "kernel",
            WaitClass::Unknown => "unknown",
        }
    }

    /// Waiting for work, time or input: how a healthy program waits.
    pub fn is_idle(self) -> bool {
        matches!(
            self,
            WaitClass::IdleWork | WaitClass::IdleTimer | WaitClass::IdleInput
        )
    }

    /// Whether a thread in this wait can go on by itself (run, wake on its timer, get
    /// input, be woken from another process) and so end another thread's owed wait.
    /// What is not known is counted as able to: a hang is claimed only on what is seen.
    pub fn can_act(self) -> bool {
        !matches!(self, WaitClass::Owed | WaitClass::IdleWork)
    }
}

/// A named wait of one thread.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema, Deserialize)]
pub struct NamedWait {
    pub kind: WaitName,
    /// Whether the wait can end by itself.
    #[serde(default)]
    pub class: WaitClass,
    /// The wait in words, for one line: "waits on Python lock `state_lock`".
    pub text: String,
    /// The object waited on, where frames tell it: a lock's expression, a pool's name,
    /// a collective's operation (`all_reduce`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object: Option<String>,
    /// "Lock" or "RLock" for Python locks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lock_kind: Option<String>,
    /// Where in Python code: "train.py:19 in `<module>`".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<String>,
    /// What the wait runs inside: "a `tf.py_function` callback".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inside: Option<String>,
    /// Idle by design (a pool thread waiting for work): not part of the problem.
    #[serde(default)]
    pub idle: bool,
}

impl NamedWait {
    /// A wait of `kind` said as `text`, nothing else known.
    pub fn new(kind: WaitName, text: impl Into<String>) -> NamedWait {
        NamedWait {
            kind,
            class: WaitClass::Unknown,
            text: text.into(),
            object: None,
            lock_kind: None,
            at: None,
            inside: None,
            idle: false,
        }
    }
}

/// How sure a holder is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, schemars::JsonSchema, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Confidence {
    /// Read from memory (an RLock's owner).
    Proven,
    /// Inferred from the source: the other thread's frame is inside a `with` of the
    /// same lock expression.
    Likely,
}

/// A thread waiting on a Python lock and the thread that holds it.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema, Deserialize)]
pub struct PythonLockEdge {
    pub waiter_tid: i32,
    pub holder_tid: i32,
    pub lock: String,
    pub confidence: Confidence,
    /// Why the holder is believed to hold it.
    pub because: String,
}

/// Who waits for what in one process, for one screen.
#[derive(Debug, Clone, Default, PartialEq, Serialize, schemars::JsonSchema, Deserialize)]
pub struct StackExplanation {
    pub pid: i32,
    /// One line per thread that matters.
    pub lines: Vec<String>,
    /// Idle pool threads, collapsed: (pool, count).
    pub idle_pools: Vec<(String, usize)>,
    /// Python lock holders, where they can be known.
    pub python_locks: Vec<PythonLockEdge>,
    /// What a known pattern means, where one is recognised.
    pub meaning: Option<String>,
    /// Milliseconds the process was paused for its stacks.
    pub paused_ms: Option<f64>,
}

impl StackExplanation {
    /// "6 idle pool threads (4 Eigen (TensorFlow), 2 OpenBLAS)".
    pub fn idle_line(&self) -> Option<String> {
        let total: usize = self.idle_pools.iter().map(|(_, n)| n).sum();
        (total > 0).then(|| {
            let parts: Vec<String> = self
                .idle_pools
                .iter()
                .map(|(pool, n)| format!("{n} {pool}"))
                .collect();
            format!(
                "{total} idle pool thread(s) waiting for work, as pools do ({})",
                parts.join(", ")
            )
        })
    }
}

/// How long one process was stopped for its stacks.
#[derive(Debug, Clone, Default, Serialize, schemars::JsonSchema, Deserialize, PartialEq)]
pub struct Pause {
    pub pid: i32,
    /// Native or Python stacks.
    pub kind: StackKind,
    pub seconds: f64,
    /// Threads unwound in that pause.
    pub threads: usize,
    /// The unwind stopped at its time limit: some threads are missing.
    #[serde(default, skip_serializing_if = "is_false")]
    pub partial: bool,
    /// Threads this unwinder left out (over the budget, or not stopped in time); each
    /// says why on its own stack.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub not_unwound: usize,
    /// The pause budget of this unwind, milliseconds, where it had one (native).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget_ms: Option<f64>,
    /// Read without stopping the process (Python stacks of a process whose GIL holder
    /// was not running: its frames cannot change while they are read); `seconds` is 0.
    #[serde(default, skip_serializing_if = "is_false")]
    pub in_place: bool,
    /// Python stacks read in place although this thread, the GIL's holder, was running:
    /// the read in place took longer than the pause budget left, so stopping the process
    /// for a second read would have passed it. That thread's frames may mix moments.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_while_running: Option<i32>,
}

fn is_zero(value: &usize) -> bool {
    *value == 0
}

/// The evidence line that says how long `pid` was paused for its stacks (every output
/// that explains a hang carries one per process); `partial` tells what was left out.
pub fn paused_line(pid: i32, ms: f64, partial: Option<&str>) -> String {
    match partial {
        Some(why) => format!("pid {pid} paused {ms:.0} ms for its stacks ({why})"),
        None => format!("pid {pid} paused {ms:.0} ms for its stacks"),
    }
}

/// Whether `line` is a [`paused_line`] (a dashboard keeps it when it shortens evidence).
pub fn is_paused_line(line: &str) -> bool {
    line.starts_with("pid ") && line.contains(" ms for its stacks")
}

/// Stacks of a tree and what could not be taken.
#[derive(Debug, Clone, Default, Serialize, schemars::JsonSchema, Deserialize, PartialEq)]
pub struct StacksReport {
    /// One stack per thread (native and Python merged where both were taken).
    pub threads: Vec<ThreadStack>,
    /// Per process and kind: why stacks are missing, and how to get them.
    pub unavailable: Vec<Unavailable>,
    /// How long each process was paused, per unwinder.
    #[serde(default)]
    pub pauses: Vec<Pause>,
    /// Per process: who waits for what, one line per thread that matters.
    #[serde(default)]
    pub explained: Vec<StackExplanation>,
}

impl StacksReport {
    /// Milliseconds `pid` was paused in all, where stacks were taken.
    pub fn paused_ms(&self, pid: i32) -> Option<f64> {
        let pauses: Vec<&Pause> = self.pauses.iter().filter(|p| p.pid == pid).collect();
        (!pauses.is_empty()).then(|| pauses.iter().map(|p| p.seconds).sum::<f64>() * 1000.0)
    }

    /// What the pause of `pid` left out, in words, when its unwind was partial: "partial:
    /// 3 thread(s) not unwound within the 200 ms budget".
    pub fn partial(&self, pid: i32) -> Option<String> {
        let partial: Vec<&Pause> = self
            .pauses
            .iter()
            .filter(|p| p.pid == pid && p.partial)
            .collect();
        if partial.is_empty() {
            return None;
        }
        let left: usize = partial.iter().map(|p| p.not_unwound).sum();
        Some(match partial.iter().find_map(|p| p.budget_ms) {
            Some(ms) => {
                format!("partial: {left} thread(s) not unwound within the {ms:.0} ms budget")
            }
            None => format!("partial: {left} thread(s) not unwound within the time limit"),
        })
    }
}

/// Whether a native frame is the interpreter's evaluation of Python code, where the
/// Python frames it runs belong (as py-spy splits on `_` and `.`:
/// `_PyEval_EvalFrameDefault.cold.12` included).
pub fn is_eval_frame(function: &str) -> bool {
    let mut tokens = function.split(['_', '.']).filter(|t| !t.is_empty());
    tokens.next() == Some("PyEval")
        && matches!(tokens.next(), Some("EvalFrameDefault" | "EvalFrameEx"))
}

/// Interpreter plumbing between Python frames (calls, vectorcalls, frame set-up):
/// dropped from a merged stack, as py-spy's `--native` does.
fn is_interpreter_plumbing(function: &str) -> bool {
    const KEEP: &[&str] = &[
        "PyThread_",
        "PyGILState_",
        "PyEval_RestoreThread",
        "PyEval_AcquireThread",
        "take_gil",
        "drop_gil",
    ];
    if KEEP.iter().any(|k| function.starts_with(k)) {
        return false;
    }
    const PLUMBING: &[&str] = &[
        "_Py",
        "Py",
        "method_vectorcall",
        "cfunction_call",
        "cfunction_vectorcall",
        "slot_tp_",
        "vectorcall_",
        "_PyFunction_Vectorcall",
        "run_mod",
        "run_eval_code_obj",
        "pymain_",
        "builtin_exec",
        "object_vacall",
        "partial_call",
        "partial_vectorcall",
        "thread_run",
        "t_bootstrap",
        "bounded_lru_cache_wrapper",
        "lru_cache_call",
        "property_descr_get",
        "wrapper_call",
        "wrap_",
    ];
    PLUMBING.iter().any(|p| function.starts_with(p))
}

/// One stack of a thread from its native stack and its Python stack: the Python
/// frames replace the interpreter's evaluation frames (each evaluation frame runs the
/// Python frames up to and including the next entry frame), interpreter plumbing is
/// dropped, and the name is the Python thread's where it has one. A stack that does not
/// line up keeps all its Python frames above the native ones, as py-spy does.
pub fn merge(native: &ThreadStack, python: &ThreadStack) -> ThreadStack {
    let entries_known = python.frames.iter().any(|f| f.entry);
    let mut frames = Vec::new();
    let mut next = 0;
    for frame in &native.frames {
        let function = frame.function.as_deref().unwrap_or("");
        if is_eval_frame(function) {
            while next < python.frames.len() {
                let py = &python.frames[next];
                frames.push(py.clone());
                next += 1;
                if !entries_known || py.entry {
                    break;
                }
            }
        } else if !is_interpreter_plumbing(function) {
            frames.push(frame.clone());
        }
    }
    if next == 0 && !python.frames.is_empty() {
        // No evaluation frame among the native ones (a stack the unwinder cut short).
        frames = python.frames.clone();
        frames.extend(native.frames.iter().cloned());
    } else if next < python.frames.len() {
        frames.extend(python.frames[next..].iter().cloned());
    }
    ThreadStack {
        pid: native.pid,
        tid: native.tid,
        name: python.name.clone().or_else(|| native.name.clone()),
        kind: crate::model::stacks::StackKind::Mixed,
        frames,
        paused_seconds: native.paused_seconds + python.paused_seconds,
        owns_gil: python.owns_gil,
        state: native.state.or(python.state),
        wchan: native.wchan.clone().or_else(|| python.wchan.clone()),
        python_ident: python.python_ident,
        wait: None,
        // A thread left out by the native unwinder keeps its Python frames, and says so.
        not_unwound: native.not_unwound.clone(),
    }
}

/// Merges the stacks of each thread that has both a native and a Python stack; the
/// others stay as they are (a Python stack keeps its /proc name from `names`).
pub fn merge_all(stacks: Vec<ThreadStack>) -> Vec<ThreadStack> {
    let (python, native): (Vec<ThreadStack>, Vec<ThreadStack>) = stacks
        .into_iter()
        .partition(|s| s.kind == crate::model::stacks::StackKind::Python);
    let mut merged: Vec<ThreadStack> = native
        .iter()
        .map(
            |n| match python.iter().find(|p| p.pid == n.pid && p.tid == n.tid) {
                Some(p) => merge(n, p),
                None => n.clone(),
            },
        )
        .collect();
    for p in python {
        if !merged.iter().any(|m| m.pid == p.pid && m.tid == p.tid) {
            merged.push(p);
        }
    }
    merged
}

#[cfg(test)]
mod tests {
    use super::*;

    fn native(function: &str) -> StackFrame {
        StackFrame {
            function: Some(function.into()),
            address: Some(0x1000),
            ..StackFrame::default()
        }
    }

    fn python(function: &str, line: u32, entry: bool) -> StackFrame {
        StackFrame {
            function: Some(function.into()),
            file: Some("job.py".into()),
            line: Some(line),
            python: true,
            entry,
            ..StackFrame::default()
        }
    }

    fn stack(kind: StackKind, name: Option<&str>, frames: Vec<StackFrame>) -> ThreadStack {
        ThreadStack {
            pid: 1,
            tid: 2,
            name: name.map(str::to_string),
            kind,
            frames,
            ..ThreadStack::default()
        }
    }

    fn names(stack: &ThreadStack) -> Vec<&str> {
        stack
            .frames
            .iter()
            .filter_map(|f| f.function.as_deref())
            .collect()
    }

    #[test]
    fn python_frames_replace_the_evaluation_frames_that_run_them() {
        let n = stack(
            StackKind::Native,
            Some("python3"),
            vec![
                native("__futex_abstimed_wait_common"),
                native("PyThread_acquire_lock_timed"),
                native("lock_PyThread_acquire_lock"),
                native("cfunction_call"),
                native("_PyEval_EvalFrameDefault"),
                native("_PyEval_Vector"),
                native("tensorflow::PyFuncOp::Compute"),
                native("_PyEval_EvalFrameDefault.cold.3"),
                native("start_thread"),
            ],
        );
        // 3.11: the inner evaluation call ran `inner` then `callback` (its entry);
        // the outer ran `main`.
        let p = stack(
            StackKind::Python,
            Some("MainThread"),
            vec![
                python("inner", 3, false),
                python("callback", 9, true),
                python("main", 20, true),
            ],
        );
        let merged = merge(&n, &p);
        assert_eq!(merged.kind, StackKind::Mixed);
        assert_eq!(merged.name.as_deref(), Some("MainThread"));
        assert_eq!(
            names(&merged),
            vec![
                "__futex_abstimed_wait_common",
                "PyThread_acquire_lock_timed",
                "lock_PyThread_acquire_lock",
                "inner",
                "callback",
                "tensorflow::PyFuncOp::Compute",
                "main",
                "start_thread"
            ]
        );
    }

    #[test]
    fn a_stack_without_evaluation_frames_keeps_python_on_top() {
        let n = stack(
            StackKind::Native,
            Some("tf_Compute"),
            vec![native("syscall")],
        );
        let p = stack(StackKind::Python, None, vec![python("f", 1, true)]);
        let merged = merge(&n, &p);
        assert_eq!(names(&merged), vec!["f", "syscall"]);
        assert_eq!(
            merged.name.as_deref(),
            Some("tf_Compute"),
            "/proc name kept"
        );
    }

    #[test]
    fn merge_all_pairs_by_thread_and_keeps_the_unpaired() {
        let mut other = stack(StackKind::Native, Some("worker"), vec![native("poll")]);
        other.tid = 3;
        let all = merge_all(vec![
            stack(StackKind::Python, None, vec![python("f", 1, true)]),
            stack(
                StackKind::Native,
                Some("main"),
                vec![native("_PyEval_EvalFrameDefault")],
            ),
            other,
        ]);
        assert_eq!(all.len(), 2);
        assert_eq!(all[0].kind, StackKind::Mixed);
        assert_eq!(names(&all[0]), vec!["f"]);
        assert_eq!(all[1].kind, StackKind::Native);
        assert!(is_eval_frame("_PyEval_EvalFrameDefault.cold.2962"));
        assert!(!is_eval_frame("_PyEval_Vector"));
    }
}
