//! The real-framework rows of `run-workload --verify`: each case of
//! [`crate::workload::frameworks::CASES`] whose framework `python3` can import runs as a
//! child process under the same watch as the built-in scenarios. A broken case passes
//! when it hangs (it has not ended) and the watch raised a hang finding; a fixed case
//! when it ends with exit 0 and the watch raised nothing of severity warning or above.
//! A case whose framework is missing is left out with a line that says why.

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::model::FindingKind;
use crate::verify::VerifyRow;
use crate::verify::observer::{VERIFY_HANG_AFTER_SECONDS, WatchObserver};
use crate::workload::frameworks::{
    CASES, Expect, Framework, FrameworkCase, Python, SKIP_EXIT, available,
};

/// The longest a case may take: a TensorFlow import alone takes over a minute on a
/// loaded two-core machine.
const CASE_LIMIT: Duration = Duration::from_secs(300);

/// A hang is judged once it has lasted this long past the finding (so that "it has
/// not ended" means something).
const HANG_CONFIRM: Duration = Duration::from_secs(2);

/// The findings that count as a hang.
const HANG_FINDINGS: &[FindingKind] = &[
    FindingKind::ForkInheritedLock,
    FindingKind::DistributedHang,
    FindingKind::Deadlock,
    FindingKind::NoProgress,
];

/// Runs every case whose framework is importable; returns the rows and a line for each
/// framework left out.
pub fn verify_frameworks(
    observer: &mut WatchObserver,
    python: &Python,
) -> (Vec<VerifyRow>, Vec<String>) {
    let mut rows = Vec::new();
    let mut skipped = Vec::new();
    let dir = std::env::temp_dir().join(format!("tfwatch-verify-{}", std::process::id()));
    if let Err(e) = std::fs::create_dir_all(&dir) {
        skipped.push(format!(
            "framework scenarios skipped: cannot make {}: {e}",
            dir.display()
        ));
        return (rows, skipped);
    }
    for framework in Framework::ALL {
        if let Err(why) = available(framework, python) {
            skipped.push(format!("{} scenarios skipped: {why}", framework.module()));
            continue;
        }
        for case in CASES.iter().filter(|c| c.framework == framework) {
            match run_case(case, &dir, observer, python) {
                Ok(row) => rows.push(row),
                Err(Skip(why)) => {
                    skipped.push(format!("{} skipped: {why}", case.name));
                }
            }
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    (rows, skipped)
}

/// Why a case was not run.
struct Skip(String);

fn run_case(
    case: &FrameworkCase,
    dir: &std::path::Path,
    observer: &mut WatchObserver,
    python: &Python,
) -> Result<VerifyRow, Skip> {
    let path = dir.join(case.file);
    std::fs::write(&path, case.script)
        .map_err(|e| Skip(format!("cannot write {}: {e}", path.display())))?;
    let mut command = Command::new(&python.command);
    command
        .arg(&path)
        .args(case.args)
        .env("TF_CPP_MIN_LOG_LEVEL", "3")
        .env("PYTHONUNBUFFERED", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        // Its own process group, so that a hung case's children end with it.
        .process_group(0);
    // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let started = Instant::now();
    let mut child = command
        .spawn()
        .map_err(|e| Skip(format!("cannot start {}: {e}", python.command.display())))?;
    let pid = child.id() as i32;
    let lines = read_lines(child.stdout.take());
    // The verify hang window, but memory judged against the machine's real limit: a
    // framework job is larger than the budget the memory-growth scenario is judged by.
    observer.begin_with(
        pid,
        crate::detect::DetectConfig {
            hang_after_seconds: VERIFY_HANG_AFTER_SECONDS,
            ..crate::detect::DetectConfig::default()
        },
    );
    let mut output: Vec<String> = Vec::new();
    let mut onset: Option<Instant> = None;
    let mut exit: Option<i32> = None;
    let mut hang_seen: Option<(String, Instant)> = None;
    let mut timed_out = false;
    loop {
        while let Ok(line) = lines.try_recv() {
            if onset.is_none() && (line.starts_with("forked") || line.starts_with("calling")) {
                onset = Some(Instant::now());
            }
            output.push(line);
            if output.len() > 20 {
                output.remove(0);
            }
        }
        let now = Instant::now();
        observer.tick(now);
        if let Some(status) = crate::source::exited(&mut child) {
            exit = Some(status.code().unwrap_or(-1));
            break;
        }
        if hang_seen.is_none() {
            hang_seen = observer
                .raised()
                .into_iter()
                .find(|(kind, ..)| kind.is_some_and(|k| HANG_FINDINGS.contains(&k)))
                .map(|(_, name, at)| (name, at));
        }
        if case.expect == Expect::Hang
            && hang_seen
                .as_ref()
                .is_some_and(|(_, at)| now.duration_since(*at) >= HANG_CONFIRM)
        {
            break;
        }
        if now.duration_since(started) > CASE_LIMIT {
            timed_out = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let raised = observer.raised();
    observer.end();
    if exit.is_none() {
        // SAFETY: kill has no memory-safety preconditions; the group is the case's own.
        unsafe {
            libc::kill(-pid, libc::SIGKILL);
        }
        let _ = child.kill();
        let _ = child.wait();
    }
    let wall = started.elapsed().as_secs_f64();
    if exit == Some(SKIP_EXIT)
        && let Some(reason) = output.iter().find(|l| l.starts_with("skip:"))
    {
        return Err(Skip(reason.clone()));
    }
    let names = |list: &[(Option<FindingKind>, String, Instant)]| {
        list.iter()
            .map(|(_, name, _)| name.clone())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let last_line = output.last().cloned().unwrap_or_default();
    let row = match case.expect {
        Expect::Hang => {
            let hung = exit.is_none() && !timed_out;
            let pass = hung && hang_seen.is_some();
            let (detected, latency) = match &hang_seen {
                Some((name, at)) => (
                    name.clone(),
                    Some(
                        at.saturating_duration_since(onset.unwrap_or(started))
                            .as_secs_f64(),
                    ),
                ),
                None if raised.is_empty() => ("missed".to_string(), None),
                None => (format!("missed (saw {})", names(&raised)), None),
            };
            VerifyRow {
                scenario: case.name.to_string(),
                variant: "broken".to_string(),
                measured: "completion".to_string(),
                value: match exit {
                    Some(code) => format!("ended (exit {code})"),
                    None if timed_out => "still running at the limit".to_string(),
                    None => format!("hung ({}s after the finding)", HANG_CONFIRM.as_secs()),
                },
                ratio: None,
                pass,
                note: format!(
                    "{}; hang window {VERIFY_HANG_AFTER_SECONDS:.0}s; {wall:.0}s with the import",
                    case.framework.module()
                ),
                detected: Some(detected),
                detection_latency_seconds: latency,
            }
        }
        Expect::Healthy => {
            let ok = exit == Some(0);
            let pass = ok && raised.is_empty();
            VerifyRow {
                scenario: case.name.to_string(),
                variant: "fixed".to_string(),
                measured: "completion".to_string(),
                value: match exit {
                    Some(0) => format!("completed in {wall:.1}s"),
                    Some(code) => format!("exit {code}"),
                    None => "did not end in time".to_string(),
                },
                ratio: None,
                pass,
                note: format!("{}; {last_line}", case.framework.module()),
                detected: Some(if raised.is_empty() {
                    "none".to_string()
                } else {
                    format!("false alarm: {}", names(&raised))
                }),
                detection_latency_seconds: None,
            }
        }
    };
    Ok(row)
}

fn read_lines(stdout: Option<std::process::ChildStdout>) -> mpsc::Receiver<String> {
    let (sender, receiver) = mpsc::channel();
    if let Some(stdout) = stdout {
        let _ = std::thread::Builder::new()
            .name("verify-frameworks".to_string())
            .spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    if sender.send(line).is_err() {
                        return;
                    }
                }
            });
    }
    receiver
}
