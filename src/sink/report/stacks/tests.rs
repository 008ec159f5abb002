use super::*;
use crate::model::Unavailable;
use crate::model::stacks::{Pause, StackFrame};
use crate::model::waits::{explain, name_wait};

fn native(function: &str) -> StackFrame {
    StackFrame {
        function: Some(function.into()),
        address: Some(0x10),
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

fn thread(tid: i32, name: &str, owns_gil: Option<bool>, frames: Vec<StackFrame>) -> ThreadStack {
    let mut stack = ThreadStack {
        pid: 7,
        tid,
        name: Some(name.into()),
        kind: if owns_gil.is_some() {
            crate::model::stacks::StackKind::Mixed
        } else {
            crate::model::stacks::StackKind::Native
        },
        frames,
        owns_gil,
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

/// The TensorFlow callback-lock hang, as the stacks of its threads read.
fn tensorflow_hang() -> StacksReport {
    let idle = || {
        vec![
            native("pthread_cond_wait@@GLIBC_2.3.2"),
            native(
                "Eigen::ThreadPoolTempl<tsl::thread::EigenEnvironment>::WaitForWork(Eigen::EventCount::Waiter*, Eigen::ThreadPoolTempl<tsl::thread::EigenEnvironment>::Task*)",
            ),
            native("start_thread"),
        ]
    };
    let threads = vec![
        thread(
            21440,
            "MainThread",
            Some(false),
            vec![
                native("syscall"),
                native("absl::lts_20250814::Notification::WaitForNotification() const"),
                native("TFE_Execute"),
                python(
                    "quick_execute",
                    "/usr/lib/python3.11/site-packages/tensorflow/python/eager/execute.py",
                    53,
                    "tensors = pywrap_tfe.TFE_Py_Execute(",
                    &[],
                ),
                python(
                    "<module>",
                    "/job/train.py",
                    19,
                    "print(float(step(tf.constant(1.0))))",
                    &["with registry_lock:"],
                ),
            ],
        ),
        thread(
            21441,
            "python3",
            None,
            vec![
                native("pthread_cond_wait@@GLIBC_2.3.2"),
                native("blas_thread_server"),
            ],
        ),
        thread(21442, "tf_Compute", None, idle()),
        thread(21443, "tf_Compute", None, idle()),
        thread(
            21445,
            "tf_Compute",
            Some(false),
            vec![
                native("__new_sem_wait_slow64.constprop.0"),
                native("PyThread_acquire_lock_timed"),
                native("lock_PyThread_acquire_lock"),
                python(
                    "lookup",
                    "/job/train.py",
                    11,
                    "with registry_lock:",
                    &["def lookup(x):"],
                ),
                native("tensorflow::PyFuncOp::Compute(tensorflow::OpKernelContext*)"),
                native("start_thread"),
            ],
        ),
    ];
    let refs: Vec<&ThreadStack> = threads.iter().collect();
    let pauses = vec![
        Pause {
            pid: 7,
            kind: crate::model::stacks::StackKind::Native,
            seconds: 0.0412,
            threads: 5,
            ..Pause::default()
        },
        Pause {
            pid: 7,
            kind: crate::model::stacks::StackKind::Python,
            seconds: 0.0031,
            threads: 2,
            ..Pause::default()
        },
    ];
    let explained = explain(7, &refs, Some(44.3));
    StacksReport {
        threads: threads.clone(),
        unavailable: vec![Unavailable {
            source: "stacks".to_string(),
            pid: Some(11),
            reason: "no ptrace access to pid 11".into(),
            fix: Some(crate::source::PTRACE_ADVICE.to_string()),
        }],
        pauses,
        explained: vec![explained],
    }
}

#[test]
fn one_screen_explanation_of_the_tensorflow_callback_hang() {
    let stacks = tensorflow_hang();
    let text = text_of(&stacks);
    insta::assert_snapshot!("tensorflow_callback_hang", text);
    assert!(
        text.contains("paused 44.3 ms (native 41.2 ms, 5 thread(s); python 3.1 ms, 2 thread(s))"),
        "{text}"
    );
    assert!(
        text.contains("    MainThread waits for a TensorFlow op at train.py:19 in `<module>`\n"),
        "{text}"
    );
    assert!(text.contains("thread 21445 (tf_Compute) waits on Python Lock `registry_lock` at train.py:11 in `lookup`, inside a `tf.py_function` callback"), "{text}");
    assert!(text.contains("3 idle pool thread(s)"), "{text}");
    assert!(text.contains("what it means: a callback into Python waits for a lock that the thread waiting for the op holds"), "{text}");
    assert!(text.contains("fix: run tfwatch as root"), "{text}");
}

#[test]
fn a_thread_in_uninterruptible_sleep_is_said_so() {
    let mut stack = ThreadStack {
        pid: 9,
        tid: 10,
        name: Some("reader".into()),
        kind: crate::model::stacks::StackKind::Native,
        state: Some('D'),
        wchan: Some("fuse_wait_answer".into()),
        not_unwound: Some("uninterruptible sleep in `fuse_wait_answer`, not unwound".into()),
        ..ThreadStack::default()
    };
    stack.wait = Some(name_wait(&[], stack.state, stack.wchan.as_deref()));
    let explained = explain(9, &[&stack], None);
    let stacks = StacksReport {
        threads: vec![stack],
        explained: vec![explained],
        ..StacksReport::default()
    };
    let text = text_of(&stacks);
    assert!(
        text.contains(
            "thread 10 (reader) is in uninterruptible sleep in `fuse_wait_answer`, not unwound"
        ),
        "{text}"
    );
    assert!(
        text.contains(
            "thread 10 (reader) of pid 9: uninterruptible sleep in `fuse_wait_answer`, not unwound"
        ),
        "{text}"
    );
}

#[test]
fn a_partial_unwind_says_what_it_left_out() {
    // A busy rank: its running thread was left out natively, its Python frames kept.
    let mut busy = thread(
        31,
        "MainThread",
        Some(true),
        vec![python("step", "/job/train.py", 40, "loss = model(x)", &[])],
    );
    busy.kind = crate::model::stacks::StackKind::Python;
    busy.state = Some('R');
    busy.not_unwound =
        Some("running, not unwound (the 200 ms pause budget went to the blocked threads)".into());
    busy.wait = Some(name_wait(&busy.frames, busy.state, None));
    let mut left = ThreadStack {
        pid: 7,
        tid: 32,
        name: Some("worker".into()),
        kind: crate::model::stacks::StackKind::Native,
        state: Some('S'),
        not_unwound: Some("not unwound: the 200 ms pause budget was spent".into()),
        ..ThreadStack::default()
    };
    left.wait = Some(name_wait(&[], left.state, None));
    let refs = [&busy, &left];
    let stacks = StacksReport {
        threads: vec![busy.clone(), left.clone()],
        pauses: vec![Pause {
            pid: 7,
            kind: crate::model::stacks::StackKind::Native,
            seconds: 0.2031,
            threads: 14,
            partial: true,
            not_unwound: 2,
            budget_ms: Some(200.0),
            in_place: false,
            read_while_running: None,
        }],
        explained: vec![explain(7, &refs, Some(203.1))],
        ..StacksReport::default()
    };
    assert_eq!(
        stacks.partial(7).as_deref(),
        Some("partial: 2 thread(s) not unwound within the 200 ms budget")
    );
    let text = text_of(&stacks);
    assert!(
        text.contains(
            "paused 203.1 ms (native 203.1 ms, 14 thread(s), partial: 2 not unwound within the 200 ms budget)"
        ),
        "{text}"
    );
    assert!(
        text.contains("(native frames running, not unwound (the 200 ms pause budget went to the blocked threads)):\n    py step at /job/train.py:40"),
        "{text}"
    );
    assert!(
        text.contains(
            "thread 32 (worker) of pid 7: not unwound: the 200 ms pause budget was spent"
        ),
        "{text}"
    );
}

/// Python stacks read without stopping the process (none of its threads ran) say so
/// and add nothing to the pause.
#[test]
fn python_stacks_read_in_place_add_no_pause() {
    let stacks = python_read_in_place(None);
    assert_eq!(stacks.paused_ms(7).map(|ms| ms.round()), Some(41.0));
    let text = text_of(&stacks);
    assert!(
        text.contains(
            "paused 41.2 ms (native 41.2 ms, 5 thread(s); python read in place, 2 thread(s))"
        ),
        "{text}"
    );
}

/// Python stacks read in place although the GIL's holder ran (the budget left could not
/// hold a stopped read) name that thread.
#[test]
fn a_gil_holder_read_while_it_ran_is_named_in_the_pause() {
    let text = text_of(&python_read_in_place(Some(21445)));
    assert!(
        text.contains(
            "python read in place, 2 thread(s), thread 21445 read while it ran (a stopped read would pass the 12 ms budget)"
        ),
        "{text}"
    );
}

/// The TensorFlow hang with its Python stacks read in place, its budget 12 ms, and
/// `read_while_running` as given.
fn python_read_in_place(read_while_running: Option<i32>) -> StacksReport {
    let mut stacks = tensorflow_hang();
    for pause in stacks
        .pauses
        .iter_mut()
        .filter(|p| p.kind == crate::model::stacks::StackKind::Python)
    {
        pause.seconds = 0.0;
        pause.in_place = true;
        pause.read_while_running = read_while_running;
        pause.budget_ms = Some(12.0);
    }
    stacks
}

/// The stacks section as text.
fn text_of(stacks: &StacksReport) -> String {
    let mut out = Vec::new();
    write_text(stacks, &mut out).unwrap();
    String::from_utf8(out).unwrap()
}
