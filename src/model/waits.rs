//! What a thread waits for, named from its frames and its wait channel: one pure
//! function ([`name_wait`]) that the hang finding, the report, `run`'s diagnosis and
//! `attach` share, so they say the same thing in the same words (other detectors can
//! call it too: [`collective`] names a distributed wait); and the one-screen
//! explanation of a process ([`explain`]): the threads that matter, one line each, idle
//! pool threads collapsed to a count, and what a known pattern means.
//!
//! Frames are innermost first. A merged stack (native frames with the Python frames
//! spliced in) names best; a native or a Python stack alone names what it can.

pub use crate::model::stacks::{
    Confidence, NamedWait, PythonLockEdge, StackExplanation, WaitClass, WaitName,
};
use crate::model::stacks::{StackFrame, ThreadStack};

fn function(frame: &StackFrame) -> &str {
    frame.function.as_deref().unwrap_or("")
}

fn any_native(frames: &[StackFrame], pattern: impl Fn(&str) -> bool) -> bool {
    frames.iter().any(|f| !f.python && pattern(function(f)))
}

/// The name of the file, without its directories.
fn short_file(file: &str) -> &str {
    file.rsplit('/').next().unwrap_or(file)
}

/// Whether a Python frame is library code (the standard library, site-packages).
fn is_library(frame: &StackFrame) -> bool {
    let file = frame.file.as_deref().unwrap_or("");
    file.contains("/site-packages/")
        || file.contains("/dist-packages/")
        || file.contains("/lib/python3")
        || file.starts_with('<')
}

/// The innermost Python frame of the job's own code (else the innermost Python frame).
pub fn user_frame(frames: &[StackFrame]) -> Option<&StackFrame> {
    let python = || frames.iter().filter(|f| f.python);
    python()
        .find(|f| !is_library(f))
        .or_else(|| python().next())
}

/// "train.py:19 in `<module>`".
pub fn location(frame: &StackFrame) -> String {
    let file = short_file(frame.file.as_deref().unwrap_or("?"));
    match frame.line {
        Some(line) => format!("{file}:{line} in `{}`", function(frame)),
        None => format!("{file} in `{}`", function(frame)),
    }
}

/// The lock expression a line acquires: `with state_lock:` → `state_lock`,
/// `self._lock.acquire()` → `self._lock`.
pub fn acquired_lock(code: &str) -> Option<String> {
    let code = code.split('#').next().unwrap_or("").trim();
    if let Some(rest) = code
        .strip_prefix("with ")
        .or_else(|| code.strip_prefix("async with "))
    {
        let first = with_header(rest).split(',').next()?.trim();
        let expr = first.split(" as ").next()?.trim();
        return (!expr.is_empty()).then(|| expr.to_string());
    }
    let at = code.find(".acquire(")?;
    let expr = code[..at].rsplit([' ', '=', '(', ',']).next()?.trim();
    (!expr.is_empty()).then(|| expr.to_string())
}

/// The items of a `with` statement without its colon and any body on the same line
/// (`cache_lock: pass` → `cache_lock`): up to the first `:` outside brackets that is
/// not a walrus `:=`.
fn with_header(rest: &str) -> &str {
    let mut depth = 0i32;
    let bytes = rest.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        match b {
            b'(' | b'[' | b'{' => depth += 1,
            b')' | b']' | b'}' => depth -= 1,
            b':' if depth <= 0 && bytes.get(i + 1) != Some(&b'=') => return rest[..i].trim(),
            _ => {}
        }
    }
    rest.trim()
}

/// The locks a frame holds by its enclosing `with` blocks (from its scope lines).
pub fn held_by_scope(frame: &StackFrame) -> Vec<String> {
    frame
        .scope
        .iter()
        .filter_map(|line| {
            line.trim()
                .starts_with("with ")
                .then(|| acquired_lock(line))?
        })
        .collect()
}

const COLLECTIVE_OPS: &[&str] = &[
    "all_reduce",
    "allreduce",
    "all_gather",
    "allgather",
    "reduce_scatter",
    "reducescatter",
    "broadcast",
    "barrier",
    "all_to_all",
    "alltoall",
    "send",
    "recv",
    "reduce",
    "gather",
    "scatter",
];

/// The collective a thread waits in, with its operation where frames tell it:
/// `torch.distributed` Python frames, gloo, NCCL and MPI native frames.
pub fn collective(frames: &[StackFrame]) -> Option<(String, Option<String>)> {
    let op_in = |name: &str| {
        let lower = name.to_ascii_lowercase();
        let base = lower.split(['(', '<']).next().unwrap_or(&lower);
        let last = base.rsplit([':', '.']).next().unwrap_or(base).to_string();
        let last = last.trim_start_matches("mpi_").trim_start_matches("nccl");
        // NCCL's device kernels: `ncclKernel_AllReduce_RING_LL_Sum_float`,
        // `ncclDevKernel_AllReduce_Sum_f32_RING_LL`.
        let last = last
            .strip_prefix("devkernel_")
            .or_else(|| last.strip_prefix("kernel_"))
            .unwrap_or(last);
        COLLECTIVE_OPS
            .iter()
            .find(|op| last == **op || last.starts_with(&format!("{op}_")))
            .map(|op| op.to_string())
    };
    for frame in frames {
        let name = function(frame);
        let file = frame.file.as_deref().unwrap_or("");
        let library = if frame.python && file.contains("torch/distributed") {
            Some("torch.distributed")
        } else if !frame.python && name.contains("gloo::") {
            Some("gloo")
        } else if !frame.python && (name.starts_with("nccl") || name.contains("ProcessGroupNCCL")) {
            Some("NCCL")
        } else if !frame.python
            && is_cuda_sync(name)
            && frames
                .iter()
                .any(|f| !f.python && function(f).contains("c10d::"))
        {
            // The host waits on the stream a collective was queued on (a NCCL work's
            // wait or synchronize): a c10d frame further out says whose.
            Some(
                if frames
                    .iter()
                    .any(|f| !f.python && function(f).contains("NCCL"))
                {
                    "NCCL"
                } else {
                    "c10d"
                },
            )
        } else if !frame.python && (name.starts_with("MPI_") || name.starts_with("PMPI_")) {
            Some("MPI")
        } else {
            None
        };
        if let Some(library) = library {
            // The operation: this frame's, or an outer frame of the same library.
            let op = op_in(name).or_else(|| frames.iter().find_map(|f| op_in(function(f))));
            return Some((library.to_string(), op));
        }
    }
    None
}

/// A CUDA call that blocks the host until the GPU's work is done.
fn is_cuda_sync(name: &str) -> bool {
    [
        "cudaStreamSynchronize",
        "cuStreamSynchronize",
        "cudaEventSynchronize",
        "cuEventSynchronize",
        "cudaDeviceSynchronize",
        "cuCtxSynchronize",
    ]
    .iter()
    .any(|sync| name.starts_with(sync))
}

/// The pool an idle worker belongs to.
fn idle_pool(frames: &[StackFrame]) -> Option<&'static str> {
    let native = |p: &dyn Fn(&str) -> bool| any_native(frames, p);
    if native(&|f| f.contains("WaitForWork") && f.contains("Eigen")) {
        return Some("Eigen (TensorFlow)");
    }
    if native(&|f| f == "blas_thread_server") {
        return Some("OpenBLAS");
    }
    if native(&|f| f.starts_with("__kmp_fork_barrier") || f.starts_with("__kmp_suspend"))
        && !native(&|f| f.starts_with("__kmpc_barrier"))
    {
        return Some("OpenMP");
    }
    if native(&|f| f == "gomp_thread_start")
        && !native(&|f| f.contains("._omp_fn.") || f == "GOMP_barrier")
    {
        return Some("OpenMP");
    }
    if native(&|f| f.contains("c10::ThreadPool::main_loop")) {
        return Some("torch");
    }
    if native(&|f| f.starts_with("mkl_serv_") && f.contains("wait")) {
        return Some("MKL");
    }
    None
}

/// Whether a kernel wait channel is where the cgroup freezer holds a task.
pub fn is_freezer_wait(wchan: &str) -> bool {
    matches!(wchan, "do_freezer_trap" | "__refrigerator" | "freezer_trap")
}

/// The one wording of a process frozen by its cgroup (`how`: the freezer's state, or
/// the wait channel its threads wait in), in every report, note and finding.
pub fn frozen_process(pid: i32, how: &str) -> String {
    format!(
        "pid {pid} is frozen by its cgroup ({how}): it makes no progress until the cgroup is thawed"
    )
}

/// Where a thread frozen by its cgroup is (state D in the freezer's wait channel).
pub fn frozen_wait(wchan: &str) -> String {
    format!("frozen by its cgroup in `{wchan}`")
}

/// How a thread frozen by its cgroup is named where its stack is not taken.
pub fn frozen_thread(wchan: &str) -> String {
    format!("is {}, not unwound", frozen_wait(wchan))
}

/// Names the wait of a thread from its frames (innermost first), its state letter and
/// its wait channel. Pure: the same frames always give the same words.
pub fn name_wait(frames: &[StackFrame], state: Option<char>, wchan: Option<&str>) -> NamedWait {
    let wchan = wchan.filter(|w| !w.is_empty() && *w != "0");
    let mut wait = name_kind(frames, state, wchan);
    if wait.class == WaitClass::Unknown {
        wait.class = class_of(wait.kind);
    }
    if wait.at.is_none() {
        wait.at = user_frame(frames).map(location);
    }
    if any_native(frames, |f| f.contains("tensorflow::PyFuncOp::Compute")) {
        wait.inside = Some("a `tf.py_function` callback".to_string());
    }
    wait
}

/// Whether a wait of `kind` can end by itself, where nothing more specific was said
/// when it was named (a Python `Event.wait` is idle, a native condition variable is not
/// known).
fn class_of(kind: WaitName) -> WaitClass {
    match kind {
        WaitName::PythonLock
        | WaitName::TensorflowOp
        | WaitName::Barrier
        | WaitName::Collective
        | WaitName::Join
        | WaitName::Future
        | WaitName::Mutex => WaitClass::Owed,
        WaitName::PoolIdle | WaitName::Queue => WaitClass::IdleWork,
        WaitName::Socket => WaitClass::IdleInput,
        WaitName::Sleep => WaitClass::IdleTimer,
        WaitName::Gil | WaitName::Running => WaitClass::Running,
        WaitName::Uninterruptible => WaitClass::Kernel,
        // A condition variable: a wait for a notification (work to do, a stop).
        WaitName::Condvar => WaitClass::IdleWork,
        WaitName::Other => WaitClass::Unknown,
    }
}

/// A wait named with its class given.
fn classed(kind: WaitName, class: WaitClass, text: impl Into<String>) -> NamedWait {
    let mut wait = NamedWait::new(kind, text);
    wait.class = class;
    wait
}

/// Whether `frame` is `function` of the standard library's `file` (`concurrent/futures/thread.py`).
fn is_stdlib(frame: &StackFrame, file: &str, functions: &[&str]) -> bool {
    frame.file.as_deref().is_some_and(|f| f.ends_with(file))
        && functions.contains(&bare_function(frame))
}

/// A Python function's name without its class: `Queue.get` → `get`.
fn bare_function(frame: &StackFrame) -> &str {
    let name = function(frame);
    name.rsplit('.').next().unwrap_or(name)
}

/// A thread that runs an asyncio event loop (its outer Python frames are the loop's
/// `run_forever` / `_run_once` / a handle's `_run`) and waits for a
/// `concurrent.futures` future's result under it: the loop is blocked until the future
/// is done, and when the future is a coroutine handed to this same loop
/// (`asyncio.run_coroutine_threadsafe(coro, loop).result()` called on the loop's own
/// thread) it is never done: the loop waits on itself.
fn loop_waits_on_itself(frames: &[StackFrame]) -> Option<NamedWait> {
    let python: Vec<&StackFrame> = frames.iter().filter(|f| f.python).collect();
    let result = python
        .iter()
        .position(|f| is_stdlib(f, "concurrent/futures/_base.py", &["result", "exception"]))?;
    let outer = &python[result + 1..];
    let in_loop = outer.iter().any(|f| {
        is_stdlib(
            f,
            "asyncio/base_events.py",
            &["run_forever", "_run_once", "run_until_complete"],
        ) || is_stdlib(f, "asyncio/events.py", &["_run"])
    });
    if !in_loop {
        return None;
    }
    Some(NamedWait::new(
        WaitName::Future,
        "waits for a future's result on the thread that runs its event loop: the loop waits on itself (`asyncio.run_coroutine_threadsafe(...).result()` on the loop's own thread: the coroutine can run only on the loop this wait blocks; `await` the coroutine, or `await asyncio.wrap_future(...)`)",
    ))
}

/// A wait inside `threading` itself, named by the outermost `threading` call and the
/// code that called it: `join` is owed, `Event.wait` idle, `Future.result` owed.
fn threading_wait(frames: &[StackFrame]) -> NamedWait {
    if let Some(named) = loop_waits_on_itself(frames) {
        return named;
    }
    let in_threading =
        |f: &StackFrame| short_file(f.file.as_deref().unwrap_or("")) == "threading.py";
    let python: Vec<&StackFrame> = frames.iter().filter(|f| f.python).collect();
    let chain: Vec<&str> = python
        .iter()
        .take_while(|f| in_threading(f))
        .map(|f| bare_function(f))
        .collect();
    let outer = chain.last().copied().unwrap_or("");
    let caller = python.iter().find(|f| !in_threading(f));
    if outer.ends_with("join") || outer.ends_with("_wait_for_tstate_lock") {
        return NamedWait::new(WaitName::Join, "waits for a thread to end (`join`)");
    }
    if chain.contains(&"_wait") {
        return NamedWait::new(WaitName::Barrier, "waits at a `threading.Barrier`");
    }
    if let Some(caller) = caller {
        if is_stdlib(
            caller,
            "concurrent/futures/_base.py",
            &["result", "exception", "wait", "as_completed"],
        ) {
            return NamedWait::new(WaitName::Future, "waits for a future's result");
        }
        if is_stdlib(caller, "multiprocessing/pool.py", &["get", "wait"]) {
            return NamedWait::new(
                WaitName::Future,
                "waits for a multiprocessing pool's result",
            );
        }
        if is_stdlib(caller, "queue.py", &["get"]) {
            return NamedWait::new(WaitName::Queue, "waits on a queue `get`");
        }
        if is_stdlib(caller, "queue.py", &["put"]) {
            return classed(
                WaitName::Queue,
                WaitClass::Owed,
                "waits on a full queue `put`",
            );
        }
    }
    if outer == "acquire" {
        return classed(
            WaitName::Condvar,
            WaitClass::Owed,
            "waits on a Python `Semaphore`",
        );
    }
    // `Event.wait`, `Condition.wait`: a notification — work to do, or a stop signal.
    classed(
        WaitName::Condvar,
        WaitClass::IdleWork,
        format!(
            "waits on a Python `{}`",
            python
                .iter()
                .take_while(|f| in_threading(f))
                .last()
                .map_or("wait", |f| function(f))
        ),
    )
}

/// A worker of a standard pool waiting in its loop for the next task: its innermost
/// Python frame is the pool's loop itself, not a task.
fn idle_python_worker(frames: &[StackFrame]) -> Option<&'static str> {
    let innermost = frames.iter().find(|f| f.python)?;
    [
        (
            "concurrent/futures/thread.py",
            "_worker",
            "ThreadPoolExecutor",
        ),
        (
            "concurrent/futures/process.py",
            "_process_worker",
            "ProcessPoolExecutor",
        ),
        ("multiprocessing/pool.py", "worker", "multiprocessing.Pool"),
        (
            "torch/utils/data/_utils/worker.py",
            "_worker_loop",
            "DataLoader",
        ),
        (
            "loky/process_executor.py",
            "_process_worker",
            "joblib (loky)",
        ),
        ("asyncio/base_events.py", "_run_once", "asyncio event loop"),
        ("selectors.py", "select", "selector"),
    ]
    .iter()
    .find(|(file, name, _)| is_stdlib(innermost, file, &[name]))
    .map(|(_, _, pool)| *pool)
}

fn name_kind(frames: &[StackFrame], state: Option<char>, wchan: Option<&str>) -> NamedWait {
    match state {
        Some('D') if wchan.is_some_and(is_freezer_wait) => {
            return NamedWait::new(
                WaitName::Uninterruptible,
                frozen_thread(wchan.unwrap_or("?")),
            );
        }
        Some('D') => {
            return NamedWait::new(
                WaitName::Uninterruptible,
                format!(
                    "is in uninterruptible sleep in `{}`, not unwound",
                    wchan.unwrap_or("?")
                ),
            );
        }
        Some('R') => return NamedWait::new(WaitName::Running, "is running"),
        _ => {}
    }
    let native = |p: &dyn Fn(&str) -> bool| any_native(frames, p);
    // Python locks: the acquire, with the expression from the line that calls it.
    let rlock = native(&|f| f == "rlock_acquire");
    if rlock || native(&|f| f == "lock_PyThread_acquire_lock") {
        let kind = if rlock { "RLock" } else { "Lock" };
        let caller = frames.iter().find(|f| f.python);
        // A lock inside `threading` itself: the wait is the outermost `threading` call
        // (`Event.wait`, `Thread.join`, `Barrier.wait`), not a lock of the job.
        if caller.is_some_and(|f| short_file(f.file.as_deref().unwrap_or("")) == "threading.py") {
            return threading_wait(frames);
        }
        let object = caller
            .and_then(|f| f.code.as_deref())
            .and_then(acquired_lock);
        let mut wait = NamedWait::new(
            WaitName::PythonLock,
            match &object {
                Some(name) => format!("waits on Python {kind} `{name}`"),
                None => format!("waits on a Python {kind}"),
            },
        );
        wait.object = object;
        wait.lock_kind = Some(kind.to_string());
        wait.at = caller.map(location);
        return wait;
    }
    if native(&|f| f.contains("SemLock_acquire") || f == "semlock_acquire") {
        return classed(
            WaitName::Other,
            WaitClass::CrossProcess,
            "waits on a multiprocessing lock or semaphore (shared with other processes)",
        );
    }
    if let Some(pool) = idle_python_worker(frames) {
        let mut wait = NamedWait::new(
            WaitName::PoolIdle,
            format!("is an idle {pool} worker waiting for work"),
        );
        wait.object = Some(pool.to_string());
        wait.idle = true;
        if pool.contains("loop") || pool == "selector" {
            wait.kind = WaitName::Socket;
            wait.class = WaitClass::IdleInput;
            let article = if pool.starts_with(['a', 'e', 'i', 'o', 'u']) {
                "an"
            } else {
                "a"
            };
            wait.text = format!("is {article} {pool} waiting for I/O");
            wait.idle = false;
        }
        return wait;
    }
    if let Some((library, op)) = collective(frames) {
        let mut wait = NamedWait::new(
            WaitName::Collective,
            match &op {
                Some(op) => format!("waits in the {library} collective `{op}`"),
                None => format!("waits in a {library} collective"),
            },
        );
        wait.object = op;
        return wait;
    }
    // The GIL: near the top, below the futex wait.
    if frames.iter().take(8).any(|f| {
        !f.python
            && matches!(
                function(f),
                "take_gil" | "PyEval_RestoreThread" | "PyEval_AcquireThread"
            )
            || function(f).starts_with("PyGILState_Ensure")
    }) {
        return NamedWait::new(WaitName::Gil, "waits for the GIL");
    }
    if let Some(pool) = idle_pool(frames) {
        let mut wait = NamedWait::new(WaitName::PoolIdle, format!("is an idle {pool} pool thread"));
        wait.object = Some(pool.to_string());
        wait.idle = true;
        return wait;
    }
    if native(&|f| {
        f.starts_with("__kmpc_barrier")
            || f == "GOMP_barrier"
            || f.starts_with("gomp_team_barrier_wait")
    }) || native(&|f| {
        f.contains("at::parallel_for") || f.contains("at::internal::_parallel_run")
    }) {
        return NamedWait::new(
            WaitName::Barrier,
            "waits at a parallel-region barrier (OpenMP / `at::parallel_for`) for the other workers",
        );
    }
    if native(&|f| {
        f == "pthread_join"
            || f.starts_with("__pthread_clockjoin")
            || f.contains("JoinInner") && f.contains("join")
            || f.starts_with("std::thread::JoinHandle") && f.ends_with("join")
    }) {
        return NamedWait::new(WaitName::Join, "waits for a thread to end (`join`)");
    }
    if native(&|f| {
        f.contains("lll_lock_wait")
            || f.contains("pthread_mutex_lock")
            || f.contains("std::mutex::lock")
    }) {
        return NamedWait::new(WaitName::Mutex, "waits on a pthread mutex");
    }
    if native(&|f| {
        f.contains("Notification::WaitForNotification")
            || (f.starts_with("tensorflow::") && f.contains("RunSync"))
            || f == "TFE_Execute"
            || f.starts_with("TF_SessionRun")
    }) {
        return NamedWait::new(WaitName::TensorflowOp, "waits for a TensorFlow op");
    }
    if native(&|f| f.contains("SimpleQueue_get")) {
        return NamedWait::new(WaitName::Queue, "waits on a queue `get`");
    }
    if let Some(named) = loop_waits_on_itself(frames) {
        return named;
    }
    // Python-level waits named by the library frame that waits.
    for frame in frames.iter().filter(|f| f.python) {
        let file = short_file(frame.file.as_deref().unwrap_or(""));
        let name = function(frame);
        match (file, name) {
            ("queue.py" | "queues.py", n) if n.ends_with("get") => {
                return NamedWait::new(WaitName::Queue, format!("waits on a queue `{n}`"));
            }
            ("queue.py" | "queues.py", n) if n.ends_with("put") => {
                return classed(
                    WaitName::Queue,
                    WaitClass::Owed,
                    format!("waits on a full queue `{n}`"),
                );
            }
            ("_base.py", n) if n.ends_with("result") || n.ends_with("exception") => {
                return NamedWait::new(WaitName::Future, "waits for a future's result");
            }
            ("threading.py", n) if n.ends_with("join") || n.ends_with("_wait_for_tstate_lock") => {
                return NamedWait::new(WaitName::Join, "waits for a thread to end (`join`)");
            }
            ("threading.py", n) if n.ends_with("wait") => {
                return threading_wait(frames);
            }
            _ => {}
        }
    }
    if native(&|f| {
        f.starts_with("pthread_cond_")
            || f.contains("condition_variable")
            || f.contains("Condvar") && f.contains("wait")
            || f.contains("__new_sem_wait")
    }) {
        return NamedWait::new(WaitName::Condvar, "waits on a condition variable");
    }
    let in_wchan = |words: &[&str]| wchan.is_some_and(|w| words.iter().any(|x| w.contains(x)));
    if native(&|f| {
        matches!(
            f,
            "recv"
                | "__libc_recv"
                | "recvmsg"
                | "recvfrom"
                | "accept"
                | "accept4"
                | "epoll_wait"
                | "poll"
                | "__poll"
                | "select"
                | "__select"
                | "ppoll"
        )
    }) || in_wchan(&[
        "sk_wait",
        "inet_csk",
        "epoll",
        "poll",
        "select",
        "unix_stream",
        "pipe",
    ]) {
        return NamedWait::new(WaitName::Socket, "waits on socket, pipe or poll I/O");
    }
    if native(&|f| f.contains("nanosleep") || f == "time_sleep") || in_wchan(&["nanosleep"]) {
        return NamedWait::new(WaitName::Sleep, "sleeps");
    }
    if native(&|f| f.contains("futex") || f == "syscall") || in_wchan(&["futex"]) {
        return NamedWait::new(WaitName::Other, "waits on a futex");
    }
    NamedWait::new(
        WaitName::Other,
        match wchan {
            Some(w) => format!("waits in `{w}`"),
            None => "waits".to_string(),
        },
    )
}

/// The label of a thread in one line: "MainThread", "thread 21445 (tf_Compute)".
pub fn thread_label(stack: &ThreadStack) -> String {
    match stack.name.as_deref() {
        Some("MainThread") => "MainThread".to_string(),
        Some(name) => format!("thread {} ({name})", stack.tid),
        None => format!("thread {}", stack.tid),
    }
}

/// One thread's wait in one line: "MainThread sleeps at job.py:5".
pub fn line_of(stack: &ThreadStack, wait: &NamedWait) -> String {
    let mut line = format!("{} {}", thread_label(stack), wait.text);
    if let Some(at) = &wait.at {
        line.push_str(&format!(" at {at}"));
    }
    if let Some(inside) = &wait.inside {
        line.push_str(&format!(", inside {inside}"));
    }
    line
}

/// The Python lock each waiter waits for, and its holder where it can be known: the
/// RLock's owner read from memory (proven), or a thread whose frames sit inside a
/// `with` of the same expression (likely).
pub fn python_lock_edges(threads: &[&ThreadStack]) -> Vec<PythonLockEdge> {
    let mut edges = Vec::new();
    for waiter in threads {
        let Some(wait) = &waiter.wait else { continue };
        if wait.kind != WaitName::PythonLock {
            continue;
        }
        let Some(lock) = &wait.object else { continue };
        // Proven: the RLock object among the waiting frame's locals records its owner.
        let object = waiter
            .frames
            .iter()
            .filter(|f| f.python)
            .take(1)
            .flat_map(|f| f.locks.iter())
            .find(|l| &l.name == lock);
        if let Some(owner) = object.and_then(|o| o.owner_ident)
            && let Some(holder) = threads.iter().find(|t| t.python_ident == Some(owner))
        {
            edges.push(PythonLockEdge {
                waiter_tid: waiter.tid,
                holder_tid: holder.tid,
                lock: lock.clone(),
                confidence: Confidence::Proven,
                because: format!(
                    "the RLock at {:#x} records thread ident {owner:#x} as its owner",
                    object.map_or(0, |o| o.address)
                ),
            });
            continue;
        }

        // Likely: another thread's Python frame is inside `with <lock>:` — the same
        // object where the locals give addresses, else the same expression.
        let address = object.map(|o| o.address);
        for holder in threads.iter().filter(|t| t.tid != waiter.tid) {
            let held = holder.frames.iter().filter(|f| f.python).find_map(|f| {
                let same = |h: &String| match (address, f.locks.iter().find(|l| &l.name == h)) {
                    (Some(a), Some(l)) => l.address == a,
                    (None, None) => h == lock,
                    _ => false,
                };
                held_by_scope(f).iter().any(same).then(|| location(f))
            });
            if let Some(at) = held {
                edges.push(PythonLockEdge {
                    waiter_tid: waiter.tid,
                    holder_tid: holder.tid,
                    lock: lock.clone(),
                    confidence: Confidence::Likely,
                    because: format!("its frame at {at} is inside `with {lock}:`"),
                });
                break;
            }
        }
    }
    edges
}

/// Follows waiter → holder edges from `start`; the cycle it closes, if any.
fn cycle_from(edges: &[PythonLockEdge], start: i32) -> Option<Vec<&PythonLockEdge>> {
    let mut path: Vec<&PythonLockEdge> = Vec::new();
    let mut at = start;
    for _ in 0..=edges.len() {
        let edge = edges.iter().find(|e| e.waiter_tid == at)?;
        path.push(edge);
        at = edge.holder_tid;
        if at == start {
            return Some(path);
        }
    }
    None
}

/// Explains one process from its stacks: one line per thread that matters, idle pools
/// collapsed, Python lock holders, and the meaning of a known pattern.
pub fn explain(pid: i32, threads: &[&ThreadStack], paused_ms: Option<f64>) -> StackExplanation {
    let mut explanation = StackExplanation {
        pid,
        paused_ms,
        ..StackExplanation::default()
    };
    for stack in threads {
        let Some(wait) = &stack.wait else { continue };
        if wait.idle {
            let pool = wait.object.clone().unwrap_or_else(|| "pool".into());
            match explanation.idle_pools.iter_mut().find(|(p, _)| *p == pool) {
                Some((_, n)) => *n += 1,
                None => explanation.idle_pools.push((pool, 1)),
            }
        } else {
            explanation.lines.push(line_of(stack, wait));
        }
    }
    explanation.python_locks = python_lock_edges(threads);
    let label = |tid: i32| {
        threads
            .iter()
            .find(|t| t.tid == tid)
            .map_or_else(|| format!("thread {tid}"), |t| thread_label(t))
    };
    for edge in &explanation.python_locks {
        explanation.lines.push(format!(
            "  `{}` is held by {} ({}: {})",
            edge.lock,
            label(edge.holder_tid),
            match edge.confidence {
                Confidence::Proven => "proven",
                Confidence::Likely => "likely",
            },
            edge.because
        ));
    }
    // Patterns, most specific first.
    let cycle = explanation
        .python_locks
        .iter()
        .find_map(|e| cycle_from(&explanation.python_locks, e.waiter_tid));
    if let Some(cycle) = cycle {
        let proven = cycle.iter().all(|e| e.confidence == Confidence::Proven);
        let steps: Vec<String> = cycle
            .iter()
            .map(|e| {
                format!(
                    "{} waits for `{}` held by {}",
                    label(e.waiter_tid),
                    e.lock,
                    label(e.holder_tid)
                )
            })
            .collect();
        explanation.meaning = Some(format!(
            "{} Python lock-order deadlock: {} (take the locks in one order everywhere)",
            if proven { "a proven" } else { "a likely" },
            steps.join("; ")
        ));
    } else {
        let op_waiter = threads.iter().find(|t| {
            t.wait
                .as_ref()
                .is_some_and(|w| w.kind == WaitName::TensorflowOp)
        });
        let callback_waiter = threads.iter().find(|t| {
            t.wait.as_ref().is_some_and(|w| {
                matches!(w.kind, WaitName::PythonLock | WaitName::Gil) && w.inside.is_some()
            })
        });
        if let Some(meaning) = starvation(threads).or_else(|| join_without_feeder(threads)) {
            explanation.meaning = Some(meaning);
        } else if let (Some(op), Some(callback)) = (op_waiter, callback_waiter) {
            let held_by_op = explanation
                .python_locks
                .iter()
                .any(|e| e.waiter_tid == callback.tid && e.holder_tid == op.tid);
            explanation.meaning = Some(format!(
                "a callback into Python waits for a lock that the thread waiting for the op {}: {} cannot finish its op until {} gets the lock (release the lock before calling the TensorFlow function, or do not take it in the callback)",
                if held_by_op { "holds" } else { "likely holds" },
                label(op.tid),
                label(callback.tid)
            ));
        }
    }
    explanation
}

/// The class of a thread's wait, `Unknown` where it was not named.
fn class(stack: &ThreadStack) -> WaitClass {
    stack.wait.as_ref().map_or(WaitClass::Unknown, |w| w.class)
}

/// Thread-pool starvation: every worker of a `ThreadPoolExecutor` waits for a future —
/// of the same pool, since no other thread could run it. The pool and the line.
fn starvation(threads: &[&ThreadStack]) -> Option<String> {
    let pool_of = |t: &&&ThreadStack| {
        let name = t.name.as_deref()?;
        name.starts_with("ThreadPoolExecutor-").then(|| {
            name.rsplit_once('_')
                .map_or(name, |(pool, _)| pool)
                .to_string()
        })
    };
    let mut pools: Vec<String> = threads.iter().filter_map(|t| pool_of(&t)).collect();
    pools.sort();
    pools.dedup();
    pools.into_iter().find_map(|pool| {
        let workers: Vec<&&ThreadStack> = threads
            .iter()
            .filter(|t| pool_of(t).as_deref() == Some(pool.as_str()))
            .collect();
        let all_wait = workers
            .iter()
            .all(|t| t.wait.as_ref().is_some_and(|w| w.kind == WaitName::Future));
        (all_wait && !workers.is_empty()).then(|| {
            let at = workers
                .iter()
                .find_map(|t| t.wait.as_ref().and_then(|w| w.at.clone()))
                .unwrap_or_else(|| "?".to_string());
            format!(
                "thread-pool starvation: all {} worker(s) of {pool} wait for futures at {at}, and only a worker of the same pool could run them (give the inner tasks their own pool, or do not wait on a pool's futures from its own tasks)",
                workers.len()
            )
        })
    })
}

/// A `join` on a thread that waits in `queue.get()` for an item no thread of the process
/// can put: every thread waits, none for anything outside.
fn join_without_feeder(threads: &[&ThreadStack]) -> Option<String> {
    let joiner = threads
        .iter()
        .find(|t| t.wait.as_ref().is_some_and(|w| w.kind == WaitName::Join))?;
    let consumer = threads.iter().find(|t| {
        t.wait
            .as_ref()
            .is_some_and(|w| w.kind == WaitName::Queue && w.class == WaitClass::IdleWork)
    })?;
    let nobody_can_act = threads.iter().all(|t| !class(t).can_act());
    nobody_can_act.then(|| {
        let at = consumer
            .wait
            .as_ref()
            .and_then(|w| w.at.clone())
            .unwrap_or_else(|| "?".to_string());
        format!(
            "{} joins {}, which waits in `queue.get()` at {at} for an item (a sentinel) that no thread of the process can put: every thread waits (send the sentinel before joining, or use `get(timeout=…)`)",
            thread_label(joiner),
            thread_label(consumer)
        )
    })
}

#[cfg(test)]
mod tests;
