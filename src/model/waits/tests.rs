use super::*;
use crate::model::stacks::PythonLockObject;

fn native(function: &str) -> StackFrame {
    StackFrame {
        function: Some(function.into()),
        address: Some(0x1000),
        ..StackFrame::default()
    }
}

fn python(function: &str, file: &str, line: u32, code: &str, scope: &[&str]) -> StackFrame {
    StackFrame {
        function: Some(function.into()),
        file: Some(file.into()),
        line: Some(line),
        python: true,
        code: Some(code.into()),
        scope: scope.iter().map(|s| s.to_string()).collect(),
        ..StackFrame::default()
    }
}

fn thread(tid: i32, name: &str, frames: Vec<StackFrame>) -> ThreadStack {
    let mut stack = ThreadStack {
        pid: 100,
        tid,
        name: Some(name.into()),
        kind: crate::model::stacks::StackKind::Mixed,
        frames,
        state: Some('S'),
        wchan: Some("futex_do_wait".into()),
        ..ThreadStack::default()
    };
    stack.wait = Some(name_wait(
        &stack.frames,
        stack.state,
        stack.wchan.as_deref(),
    ));
    stack
}

const SITE: &str = "/usr/lib/python3.11/site-packages/tensorflow/python/eager/execute.py";

/// The threads of the TensorFlow callback-lock hang, as tfwatch unwinds them.
fn tensorflow_callback_hang() -> Vec<ThreadStack> {
    let eigen_idle = || {
        vec![
            native("__futex_abstimed_wait_common"),
            native("pthread_cond_wait@@GLIBC_2.3.2"),
            native("std::condition_variable::wait(std::unique_lock<std::mutex>&)"),
            native("Eigen::EventCount::CommitWait(Eigen::EventCount::Waiter*)"),
            native(
                "Eigen::ThreadPoolTempl<tsl::thread::EigenEnvironment>::WaitForWork(Eigen::EventCount::Waiter*, Eigen::ThreadPoolTempl<tsl::thread::EigenEnvironment>::Task*)",
            ),
            native("start_thread"),
        ]
    };
    vec![
        thread(
            10,
            "MainThread",
            vec![
                native("syscall"),
                native(
                    "absl::lts_20250814::synchronization_internal::FutexWaiter::WaitUntil(std::atomic<int>*, int, absl::lts_20250814::synchronization_internal::KernelTimeout)",
                ),
                native("absl::lts_20250814::Notification::WaitForNotification() const"),
                native(
                    "tensorflow::ProcessFunctionLibraryRuntime::RunSync(tensorflow::FunctionLibraryRuntime::Options const&, unsigned long, absl::lts_20250814::Span<tensorflow::Tensor const>, std::vector<tensorflow::Tensor, std::allocator<tensorflow::Tensor> >*)",
                ),
                native("TFE_Execute"),
                python(
                    "quick_execute",
                    SITE,
                    53,
                    "tensors = pywrap_tfe.TFE_Py_Execute(ctx._handle, device_name, op_name,",
                    &["def quick_execute(op_name, num_outputs, inputs, attrs, ctx, name=None):"],
                ),
                python(
                    "<module>",
                    "/job/train.py",
                    31,
                    "print(\"step:\", float(step(tf.constant(1.0))), flush=True)",
                    &["with state_lock:"],
                ),
            ],
        ),
        thread(
            11,
            "python3",
            vec![
                native("pthread_cond_wait@@GLIBC_2.3.2"),
                native("blas_thread_server"),
            ],
        ),
        thread(12, "tf_Compute", eigen_idle()),
        thread(13, "tf_graph_runner", eigen_idle()),
        thread(
            14,
            "tf_Compute",
            vec![
                native("__new_sem_wait_slow64.constprop.0"),
                native("PyThread_acquire_lock_timed"),
                native("lock_PyThread_acquire_lock"),
                python(
                    "callback",
                    "/job/train.py",
                    20,
                    "with state_lock:  # held by the caller",
                    &["def callback(x):"],
                ),
                python(
                    "EagerFunc.__call__",
                    "/usr/lib/python3.11/site-packages/tensorflow/python/ops/script_ops.py",
                    145,
                    "return self._call(device, args)",
                    &[],
                ),
                native("tensorflow::PyFuncOp::Compute(tensorflow::OpKernelContext*)"),
                native("Eigen::ThreadPoolTempl<tsl::thread::EigenEnvironment>::WorkerLoop(int)"),
            ],
        ),
    ]
}

#[test]
fn each_wait_of_the_tensorflow_hang_is_named() {
    let threads = tensorflow_callback_hang();
    let kinds: Vec<WaitName> = threads
        .iter()
        .map(|t| t.wait.as_ref().unwrap().kind)
        .collect();
    assert_eq!(
        kinds,
        vec![
            WaitName::TensorflowOp,
            WaitName::PoolIdle,
            WaitName::PoolIdle,
            WaitName::PoolIdle,
            WaitName::PythonLock
        ]
    );
    let main = threads[0].wait.as_ref().unwrap();
    assert_eq!(
        main.at.as_deref(),
        Some("train.py:31 in `<module>`"),
        "the job's own frame, not TensorFlow's"
    );
    let callback = threads[4].wait.as_ref().unwrap();
    assert_eq!(callback.object.as_deref(), Some("state_lock"));
    assert_eq!(callback.lock_kind.as_deref(), Some("Lock"));
    assert_eq!(
        callback.inside.as_deref(),
        Some("a `tf.py_function` callback")
    );
    assert_eq!(
        threads[1].wait.as_ref().unwrap().object.as_deref(),
        Some("OpenBLAS")
    );
}

#[test]
fn the_tensorflow_hang_explains_itself_in_a_few_lines() {
    let threads = tensorflow_callback_hang();
    let refs: Vec<&ThreadStack> = threads.iter().collect();
    let explanation = explain(100, &refs, Some(42.0));
    assert_eq!(explanation.lines.len(), 3, "{:#?}", explanation.lines);
    assert_eq!(
        explanation.lines[0],
        "MainThread waits for a TensorFlow op at train.py:31 in `<module>`"
    );
    assert_eq!(
        explanation.lines[1],
        "thread 14 (tf_Compute) waits on Python Lock `state_lock` at train.py:20 in `callback`, inside a `tf.py_function` callback"
    );
    assert!(
        explanation.lines[2].contains("`state_lock` is held by MainThread (likely"),
        "{}",
        explanation.lines[2]
    );
    assert_eq!(
        explanation.idle_line().unwrap(),
        "3 idle pool thread(s) waiting for work, as pools do (1 OpenBLAS, 2 Eigen (TensorFlow))"
    );
    let meaning = explanation.meaning.unwrap();
    assert!(
        meaning.starts_with(
            "a callback into Python waits for a lock that the thread waiting for the op holds"
        ),
        "{meaning}"
    );
}

/// Two threads of `worker(first, second)`: thread 21 holds `first` (lock A, ident 0xa)
/// and waits for `second` (lock B); thread 22 holds `second` and waits for `first`.
fn abba(kind_function: &str, owners: bool) -> Vec<ThreadStack> {
    let locks = || {
        vec![
            PythonLockObject {
                name: "first".into(),
                address: 0xa0,
                kind: "RLock".into(),
                owner_ident: owners.then_some(0xa),
            },
            PythonLockObject {
                name: "second".into(),
                address: 0xb0,
                kind: "RLock".into(),
                owner_ident: owners.then_some(0xb),
            },
        ]
    };
    let worker = |tid: i32, name: &str, waits: &str, holds: &str, ident: u64| {
        let mut frame = python(
            "worker",
            "/job/abba.py",
            12,
            &format!("with {waits}:"),
            &[&format!("with {holds}:"), "def worker(first, second):"],
        );
        frame.locks = locks();
        let mut stack = thread(
            tid,
            name,
            vec![
                native("__futex_abstimed_wait_common"),
                native(kind_function),
                frame,
            ],
        );
        stack.python_ident = Some(ident);
        stack
    };
    vec![
        worker(21, "Thread-1 (worker)", "second", "first", 0xa),
        worker(22, "Thread-2 (worker)", "first", "second", 0xb),
    ]
}

#[test]
fn an_rlock_cycle_is_proven_from_the_owners_in_memory() {
    // Thread 21 waits for an RLock owned by ident 0xb (thread 22), and back.
    let threads = abba("rlock_acquire", true);
    let refs: Vec<&ThreadStack> = threads.iter().collect();
    let explanation = explain(100, &refs, None);
    assert!(
        explanation
            .python_locks
            .iter()
            .all(|e| e.confidence == Confidence::Proven)
    );
    assert_eq!(explanation.python_locks[0].holder_tid, 22);
    let meaning = explanation.meaning.unwrap();
    assert!(
        meaning.starts_with("a proven Python lock-order deadlock"),
        "{meaning}"
    );
    assert!(
        meaning.contains("thread 21 (Thread-1 (worker)) waits for `second` held by thread 22"),
        "{meaning}"
    );
}

#[test]
fn a_plain_lock_cycle_is_likely_from_the_with_blocks() {
    let threads = abba("lock_PyThread_acquire_lock", false);
    let refs: Vec<&ThreadStack> = threads.iter().collect();
    let explanation = explain(100, &refs, None);
    assert_eq!(explanation.python_locks.len(), 2);
    assert!(
        explanation
            .python_locks
            .iter()
            .all(|e| e.confidence == Confidence::Likely)
    );
    assert!(
        explanation
            .meaning
            .unwrap()
            .starts_with("a likely Python lock-order deadlock")
    );
}

#[test]
fn lock_expressions_and_scopes() {
    assert_eq!(
        acquired_lock("with state_lock:  # note").as_deref(),
        Some("state_lock")
    );
    assert_eq!(
        acquired_lock("with self._lock as held:").as_deref(),
        Some("self._lock")
    );
    assert_eq!(
        acquired_lock("ok = registry_lock.acquire(timeout=1)").as_deref(),
        Some("registry_lock")
    );
    assert_eq!(acquired_lock("x = 1"), None);
    // A body on the same line, a slice and a walrus in the header.
    assert_eq!(
        acquired_lock("with cache_lock: pass").as_deref(),
        Some("cache_lock")
    );
    assert_eq!(
        acquired_lock("with locks[1:2][0]: x = {1: 2}").as_deref(),
        Some("locks[1:2][0]")
    );
    assert_eq!(
        acquired_lock("with (held := pool.lock):").as_deref(),
        Some("(held := pool.lock)")
    );
    let frame = python(
        "f",
        "a.py",
        3,
        "g()",
        &["for x in y:", "with a, b:", "def f():"],
    );
    assert_eq!(held_by_scope(&frame), vec!["a".to_string()]);
}

#[test]
fn other_waits_are_named() {
    let name = |frames: Vec<StackFrame>| name_wait(&frames, Some('S'), None).kind;
    assert_eq!(
        name(vec![
            native("__lll_lock_wait"),
            native("pthread_mutex_lock@@GLIBC_2.2.5")
        ]),
        WaitName::Mutex
    );
    assert_eq!(
        name(vec![native("take_gil"), native("PyEval_RestoreThread")]),
        WaitName::Gil
    );
    assert_eq!(
        name(vec![
            native("__kmp_suspend_64"),
            native("__kmp_fork_barrier")
        ]),
        WaitName::PoolIdle
    );
    assert_eq!(
        name(vec![
            native("gomp_team_barrier_wait_end"),
            native("main._omp_fn.0"),
            native("GOMP_parallel")
        ]),
        WaitName::Barrier
    );
    assert_eq!(
        name(vec![native("c10::ThreadPool::main_loop(unsigned long)")]),
        WaitName::PoolIdle
    );
    assert_eq!(
        name(vec![native("nanosleep"), native("time_sleep")]),
        WaitName::Sleep
    );
    assert_eq!(name(vec![native("recv")]), WaitName::Socket);
    let wait = name_wait(
        &[
            native(
                "gloo::transport::tcp::UnboundBuffer::waitRecv(int*, std::chrono::duration<long, std::ratio<1l, 1000l> >)",
            ),
            python(
                "all_reduce",
                "/usr/lib/python3.11/site-packages/torch/distributed/distributed_c10d.py",
                2050,
                "work.wait()",
                &[],
            ),
        ],
        Some('S'),
        None,
    );
    assert_eq!(wait.kind, WaitName::Collective);
    assert_eq!(wait.object.as_deref(), Some("all_reduce"));
    let event = name_wait(
        &[
            native("lock_PyThread_acquire_lock"),
            python(
                "Condition.wait",
                "/usr/lib/python3.11/threading.py",
                327,
                "waiter.acquire()",
                &[],
            ),
            python(
                "Event.wait",
                "/usr/lib/python3.11/threading.py",
                629,
                "signaled = self._cond.wait(timeout)",
                &[],
            ),
            python("main", "/job/serve.py", 5, "stop.wait()", &[]),
        ],
        Some('S'),
        None,
    );
    assert_eq!(event.kind, WaitName::Condvar);
    assert_eq!(event.text, "waits on a Python `Event.wait`");
    assert_eq!(event.at.as_deref(), Some("serve.py:5 in `main`"));
    let queue = name_wait(
        &[python(
            "Queue.get",
            "/usr/lib/python3.11/queue.py",
            171,
            "self.not_empty.wait()",
            &[],
        )],
        Some('S'),
        None,
    );
    assert_eq!(queue.kind, WaitName::Queue);
    let d = name_wait(&[], Some('D'), Some("fuse_wait_answer"));
    assert_eq!(d.kind, WaitName::Uninterruptible);
    assert_eq!(
        d.text,
        "is in uninterruptible sleep in `fuse_wait_answer`, not unwound"
    );
    assert_eq!(
        name_wait(&[], Some('S'), Some("do_epoll_wait")).kind,
        WaitName::Socket
    );
}

#[test]
fn a_loop_thread_waiting_for_a_future_result_waits_on_itself() {
    let lib = "/usr/lib/python3.11";
    let frames = |outer: Vec<StackFrame>| {
        let mut frames = vec![
            native("__futex_abstimed_wait_common"),
            native("lock_PyThread_acquire_lock"),
            python(
                "Condition.wait",
                &format!("{lib}/threading.py"),
                327,
                "waiter.acquire()",
                &[],
            ),
            python(
                "Future.result",
                &format!("{lib}/concurrent/futures/_base.py"),
                451,
                "self._condition.wait(timeout)",
                &[],
            ),
            python("handler", "/srv/app.py", 8, "return future.result()", &[]),
        ];
        frames.extend(outer);
        frames
    };
    let on_loop = thread(
        1,
        "MainThread",
        frames(vec![
            python(
                "Handle._run",
                &format!("{lib}/asyncio/events.py"),
                80,
                "",
                &[],
            ),
            python(
                "BaseEventLoop.run_forever",
                &format!("{lib}/asyncio/base_events.py"),
                607,
                "",
                &[],
            ),
        ]),
    );
    let wait = on_loop.wait.unwrap();
    assert_eq!(wait.kind, WaitName::Future);
    assert!(
        wait.text.contains("the loop waits on itself"),
        "{}",
        wait.text
    );
    // The same wait on a thread that runs no loop is a plain future wait.
    let plain = thread(2, "worker", frames(vec![]));
    let wait = plain.wait.unwrap();
    assert_eq!(wait.kind, WaitName::Future);
    assert!(!wait.text.contains("itself"), "{}", wait.text);
}

#[test]
fn an_idle_selector_and_an_idle_event_loop_are_named_with_their_article() {
    let text = |file: &str, function: &str| {
        let frames = vec![python(function, file, 415, "", &[])];
        name_wait(&frames, Some('S'), None).text
    };
    assert_eq!(
        text(
            "/usr/lib/python3.11/selectors.py",
            "_PollLikeSelector.select"
        ),
        "is a selector waiting for I/O"
    );
    assert_eq!(
        text("/usr/lib/python3.11/asyncio/base_events.py", "_run_once"),
        "is an asyncio event loop waiting for I/O"
    );
}
