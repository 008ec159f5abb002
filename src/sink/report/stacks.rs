//! The stacks section of the text report.

use std::io::Write;

use crate::model::stacks::{StacksReport, ThreadStack};

/// Writes the stacks for people: per thread, innermost frame first.
pub fn write_text(stacks: &StacksReport, out: &mut impl Write) -> std::io::Result<()> {
    writeln!(out, "STACKS")?;
    if stacks.threads.is_empty() && stacks.unavailable.is_empty() {
        writeln!(out, "  none taken")?;
    }
    let mut paused_reported = Vec::new();
    for stack in &stacks.threads {
        let gil = match stack.owns_gil {
            Some(true) => ", holds the GIL",
            _ => "",
        };
        writeln!(
            out,
            "  {} stack of thread {} ({}) of pid {}{gil}:",
            stack.kind,
            stack.tid,
            stack.name.as_deref().unwrap_or("?"),
            stack.pid
        )?;
        for frame in &stack.frames {
            let function = frame.function.as_deref().unwrap_or("??");
            let at = match (&frame.file, frame.line) {
                (Some(file), Some(line)) => format!(" at {file}:{line}"),
                (Some(file), None) => format!(" in {file}"),
                _ => frame
                    .address
                    .map(|a| format!(" [{a:#x}]"))
                    .unwrap_or_default(),
            };
            writeln!(out, "      {function}{at}")?;
        }
        if !paused_reported.contains(&(stack.pid, stack.kind.clone())) {
            paused_reported.push((stack.pid, stack.kind.clone()));
        }
    }
    for (pid, kind) in &paused_reported {
        let pid = *pid;
        if kind != "python" {
            continue;
        }
        let python: Vec<&ThreadStack> = stacks
            .threads
            .iter()
            .filter(|s| s.pid == pid && s.kind == "python")
            .collect();
        match python.iter().find(|s| s.owns_gil == Some(true)) {
            Some(holder) => writeln!(
                out,
                "  pid {pid}: thread {} ({}) holds the GIL, {} other Python thread(s) do not (read by py-spy from the interpreter state)",
                holder.tid,
                holder.name.as_deref().unwrap_or("?"),
                python.len() - 1
            )?,
            None => writeln!(
                out,
                "  pid {pid}: no Python thread holds the GIL (read by py-spy from the interpreter state)"
            )?,
        }
    }
    for (pid, kind) in paused_reported {
        if let Some(stack) = stacks
            .threads
            .iter()
            .find(|s| s.pid == pid && s.kind == kind)
        {
            writeln!(
                out,
                "  pid {pid} was paused {:.1} ms for its {kind} stacks",
                stack.paused_seconds * 1000.0
            )?;
        }
    }
    for u in &stacks.unavailable {
        let pid = u.pid.map(|p| format!(" (pid {p})")).unwrap_or_default();
        writeln!(out, "  unavailable: {}{pid}: {}", u.source, u.reason)?;
        if let Some(fix) = &u.fix {
            writeln!(out, "      fix: {fix}")?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Unavailable;
    use crate::model::stacks::StackFrame;

    #[test]
    fn text_lists_frames_pause_gil_and_what_is_missing() {
        let frame = |function: &str, file: Option<&str>, line: Option<u32>| StackFrame {
            function: Some(function.into()),
            file: file.map(str::to_string),
            line,
            address: Some(0x10),
        };
        let stacks = StacksReport {
            threads: vec![
                ThreadStack {
                    pid: 7,
                    tid: 8,
                    name: Some("worker-a".into()),
                    kind: "native".into(),
                    frames: vec![
                        frame("__lll_lock_wait", None, None),
                        frame("workload_lock_mutex", Some("common.rs"), Some(261)),
                    ],
                    paused_seconds: 0.0125,
                    owns_gil: None,
                },
                ThreadStack {
                    pid: 7,
                    tid: 9,
                    name: Some("MainThread".into()),
                    kind: "python".into(),
                    frames: vec![frame("spin", Some("job.py"), Some(4))],
                    paused_seconds: 0.001,
                    owns_gil: Some(true),
                },
            ],
            unavailable: vec![Unavailable {
                source: "stacks".to_string(),
                pid: Some(11),
                reason: "no ptrace access to pid 11".into(),
                fix: Some(crate::source::PTRACE_ADVICE.to_string()),
            }],
        };
        let mut out = Vec::new();
        write_text(&stacks, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        for expected in [
            "native stack of thread 8 (worker-a) of pid 7:",
            "      __lll_lock_wait [0x10]",
            "      workload_lock_mutex at common.rs:261",
            "python stack of thread 9 (MainThread) of pid 7, holds the GIL:",
            "      spin at job.py:4",
            "pid 7: thread 9 (MainThread) holds the GIL, 0 other Python thread(s) do not",
            "pid 7 was paused 12.5 ms for its native stacks",
            "unavailable: stacks (pid 11): no ptrace access to pid 11",
            "fix: run tfwatch as root",
        ] {
            assert!(text.contains(expected), "{expected:?} in\n{text}");
        }
    }
}
