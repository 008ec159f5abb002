//! The stacks section of the text report: per process, who waits for what in one
//! screen, then one stack per thread (idle pool threads in one line each).

use std::io::Write;

use crate::model::stacks::{StacksReport, ThreadStack};
use crate::model::waits::{StackExplanation, thread_label};
use crate::model::{Finding, FindingKind, Severity};

/// What the stacks say of one process, in one line: the verdict a report opens with.
/// A known pattern (a lock-order deadlock, a callback waiting on its caller) first, then
/// a hang the watch proved (its finding already rewritten by the stacks), then idle
/// (every thread waits for work), else how many threads wait with no known pattern.
pub fn verdict_line(explained: &StackExplanation, findings: &[Finding]) -> String {
    let pid = explained.pid;
    if let Some(meaning) = &explained.meaning {
        // The pattern's name; its details follow in "what it means".
        let name = meaning.split(':').next().unwrap_or(meaning);
        return format!("pid {pid}: {name}");
    }
    if let Some(hang) = findings.iter().find(|f| {
        matches!(f.kind, FindingKind::NoProgress | FindingKind::Deadlock)
            && f.severity >= Severity::Warning
            && f.pids.contains(&pid)
    }) {
        return format!("pid {pid}: hung — {}", hang.summary);
    }
    let waiting = explained
        .lines
        .iter()
        .filter(|l| !l.starts_with(' '))
        .count();
    if waiting == 0 {
        return format!(
            "pid {pid}: idle — {}",
            explained
                .idle_line()
                .unwrap_or_else(|| "no thread waits on anything".to_string())
        );
    }
    format!("pid {pid}: no known hang pattern in the stacks; {waiting} thread(s) waiting")
}

/// The VERDICT section: per process, the verdict of its stacks and who waits for what.
/// Nothing is written (and `false` returned) when no stacks were explained.
pub fn write_verdict(
    stacks: &StacksReport,
    findings: &[Finding],
    out: &mut impl Write,
) -> std::io::Result<bool> {
    if stacks.explained.is_empty() {
        return Ok(false);
    }
    writeln!(out, "VERDICT (from the stacks)")?;
    for explained in &stacks.explained {
        writeln!(out, "  {}", verdict_line(explained, findings))?;
        let pause = pause_text(stacks, explained.pid);
        write_explanation(explained, pause.as_deref(), out)?;
    }
    Ok(true)
}

/// "paused 35.2 ms (native 30.1 ms, 7 threads; python 5.1 ms, 2 threads)".
fn pause_text(stacks: &StacksReport, pid: i32) -> Option<String> {
    let total = stacks.paused_ms(pid)?;
    let parts: Vec<String> = stacks
        .pauses
        .iter()
        .filter(|p| p.pid == pid)
        .map(|p| {
            let partial = match (p.partial, p.budget_ms) {
                (false, _) => String::new(),
                (true, Some(ms)) => format!(
                    ", partial: {} not unwound within the {ms:.0} ms budget",
                    p.not_unwound
                ),
                (true, None) => format!(", partial: {} not unwound", p.not_unwound),
            };
            if p.in_place {
                let running = match (p.read_while_running, p.budget_ms) {
                    (Some(tid), Some(ms)) => format!(
                        ", thread {tid} read while it ran (a stopped read would pass the {ms:.0} ms budget)"
                    ),
                    (Some(tid), None) => format!(", thread {tid} read while it ran"),
                    (None, _) => String::new(),
                };
                return format!(
                    "{} read in place, {} thread(s){partial}{running}",
                    p.kind, p.threads
                );
            }
            format!(
                "{} {:.1} ms, {} thread(s){partial}",
                p.kind,
                p.seconds * 1000.0,
                p.threads,
            )
        })
        .collect();
    Some(format!("paused {total:.1} ms ({})", parts.join("; ")))
}

/// The one-screen explanation of one process.
pub fn write_explanation(
    explained: &StackExplanation,
    pause: Option<&str>,
    out: &mut impl Write,
) -> std::io::Result<()> {
    writeln!(
        out,
        "  pid {}: who waits for what{}",
        explained.pid,
        pause.map(|p| format!(" ({p})")).unwrap_or_default()
    )?;
    for line in &explained.lines {
        writeln!(out, "    {line}")?;
    }
    if let Some(idle) = explained.idle_line() {
        writeln!(out, "    {idle}")?;
    }
    if let Some(meaning) = &explained.meaning {
        writeln!(out, "    what it means: {meaning}")?;
    }
    Ok(())
}

fn write_stack(stack: &ThreadStack, out: &mut impl Write) -> std::io::Result<()> {
    let gil = match stack.owns_gil {
        Some(true) => ", holds the GIL",
        _ => "",
    };
    let wait = stack
        .wait
        .as_ref()
        .map(|w| format!(": {}", w.text))
        .unwrap_or_default();
    let not_unwound = match &stack.not_unwound {
        Some(why) if stack.frames.is_empty() => {
            return writeln!(out, "  {} of pid {}: {why}", thread_label(stack), stack.pid);
        }
        // Left out by the native unwinder, its Python frames taken.
        Some(why) => format!(" (native frames {why})"),
        None => String::new(),
    };
    if stack.wait.as_ref().is_some_and(|w| w.idle) {
        return writeln!(
            out,
            "  {} of pid {}{gil}{wait} ({} frames)",
            thread_label(stack),
            stack.pid,
            stack.frames.len()
        );
    }
    writeln!(
        out,
        "  {} of pid {}, {} stack{gil}{wait}{not_unwound}:",
        thread_label(stack),
        stack.pid,
        stack.kind
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
        let marker = if frame.python { "py " } else { "   " };
        writeln!(out, "    {marker}{function}{at}")?;
    }
    Ok(())
}

/// Writes the stacks for people: the explanation of each process, then per thread,
/// innermost frame first (`py` marks Python frames), then what is missing.
#[cfg(test)]
pub fn write_text(stacks: &StacksReport, out: &mut impl Write) -> std::io::Result<()> {
    write_section(stacks, true, out)
}

/// The STACKS section; `explanations`: false when the VERDICT section above holds them.
pub fn write_section(
    stacks: &StacksReport,
    explanations: bool,
    out: &mut impl Write,
) -> std::io::Result<()> {
    writeln!(out, "STACKS")?;
    if stacks.threads.is_empty() && stacks.unavailable.is_empty() {
        writeln!(out, "  none taken")?;
    }
    if explanations {
        for explained in &stacks.explained {
            let pause = pause_text(stacks, explained.pid);
            write_explanation(explained, pause.as_deref(), out)?;
        }
    }
    for stack in &stacks.threads {
        write_stack(stack, out)?;
    }
    let mut pids: Vec<i32> = stacks.threads.iter().map(|s| s.pid).collect();
    pids.dedup();
    for pid in pids {
        let python: Vec<&ThreadStack> = stacks
            .threads
            .iter()
            .filter(|s| s.pid == pid && s.owns_gil.is_some())
            .collect();
        if python.is_empty() {
            continue;
        }
        match python.iter().find(|s| s.owns_gil == Some(true)) {
            Some(holder) => writeln!(
                out,
                "  pid {pid}: {} holds the GIL, {} other Python thread(s) do not (read by py-spy from the interpreter state)",
                thread_label(holder),
                python.len() - 1
            )?,
            None => writeln!(
                out,
                "  pid {pid}: no Python thread holds the GIL (read by py-spy from the interpreter state)"
            )?,
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
mod tests;
