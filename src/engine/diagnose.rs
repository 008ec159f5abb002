//! The diagnosis: what the detectors found, the lock notes and what needs a longer
//! watch, for the triage report. A watch gives its own (its active findings, the hang
//! first); a one-shot window is judged here.

use crate::detect::{self, DetectConfig};
use crate::model::locks::{LockNote, LongerWatch};
use crate::model::{Finding, FindingKind, PidNamespace, Sample};
use crate::timeline::Timeline;
use crate::units::format_seconds;

/// What the report says was found.
#[derive(Debug, Clone, Default)]
pub struct Diagnosis {
    /// Most severe first.
    pub findings: Vec<Finding>,
    pub lock_notes: Vec<LockNote>,
    pub needs_longer_watch: Vec<LongerWatch>,
}

/// Runs the one-shot detectors over the window between two samples (`snapshot`).
pub fn diagnose_window(before: &Sample, after: &Sample, pid_namespace: PidNamespace) -> Diagnosis {
    let window = (after.elapsed_seconds - before.elapsed_seconds).max(0.0);
    let mut timeline = Timeline::new(3600.0);
    timeline.push(before.clone());
    if window > 0.0 {
        timeline.push(after.clone());
    }
    let config = DetectConfig {
        pid_namespace,
        ..DetectConfig::one_shot(window)
    };
    let judgement = detect::judge(&timeline, &config);
    let mut findings = judgement.findings;
    findings.extend(crate::detect::audit::audit_findings(after));
    detect::sort_findings(&mut findings);
    let needs_longer_watch = needs_longer_watch(&timeline, window, &findings);
    Diagnosis {
        findings,
        lock_notes: judgement.lock_notes,
        needs_longer_watch,
    }
}

/// Hangs cannot be decided in a one-shot window: say what was seen and how to decide.
fn needs_longer_watch(timeline: &Timeline, window: f64, findings: &[Finding]) -> Vec<LongerWatch> {
    let Some(summary) = timeline.latest_summary() else {
        return Vec::new();
    };
    let reported: Vec<i32> = findings.iter().flat_map(|f| f.pids.clone()).collect();
    let mut longer = Vec::new();
    for p in &summary.processes {
        if reported.contains(&p.pid) || window <= 0.0 {
            continue;
        }
        if let Some(span) = detect::stall_span(timeline, p.pid)
            && span.seconds > 0.0
        {
            longer.push(LongerWatch {
                kind: FindingKind::NoProgress,
                observed: format!(
                    "pid {} ({}) made no progress in the {} window; {} of {} thread(s) blocked on locks",
                    p.pid,
                    p.comm,
                    format_seconds(window),
                    p.lock_waiters,
                    p.threads
                ),
                how: format!(
                    "`tfwatch attach {} --hang-after 60s` reports a hang once it lasts the window",
                    p.pid
                ),
            });
        }
    }
    longer
}
