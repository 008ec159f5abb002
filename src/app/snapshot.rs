//! `tfwatch snapshot`: two samples a short window apart, the detectors over them, and
//! the triage report.

use std::io::Write;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};

use crate::cli::{Format, SnapshotArgs, SourceArgs};
use crate::collect::sources::Sources;
use crate::detect::{self, DetectConfig};
use crate::model::{FindingKind, Sample};
use crate::sink::report::{self, LongerWatch, SnapshotReport};
use crate::source::proc::{SampleTime, Sampler, SamplerConfig};
use crate::timeline::Timeline;
use crate::units::format_seconds;

/// The sampler settings the command-line source options ask for.
pub fn sampler_config(source: &SourceArgs) -> SamplerConfig {
    SamplerConfig {
        proc_root: source.proc_root.clone(),
        cgroup_root: source.cgroup_root.clone(),
        include_children: !source.no_children,
        ..SamplerConfig::default()
    }
}

/// Seconds since the Unix epoch, now.
pub fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Takes the two samples of a snapshot (and a GPU reading unless `gpu` is off) and
/// builds the report.
pub fn take_snapshot(
    pid: i32,
    config: SamplerConfig,
    window: Duration,
    gpu: bool,
) -> Result<SnapshotReport> {
    take_snapshot_with(pid, config, window, gpu, false)
}

/// As [`take_snapshot`]; with `stacks`, the stacks of every thread are taken after the
/// second sample (this pauses each process briefly).
pub fn take_snapshot_with(
    pid: i32,
    config: SamplerConfig,
    window: Duration,
    gpu: bool,
    stacks: bool,
) -> Result<SnapshotReport> {
    let mut sampler =
        Sampler::new(pid, config).with_context(|| format!("cannot watch pid {pid}"))?;
    let start = Instant::now();
    let at = |start: Instant| SampleTime {
        elapsed_seconds: start.elapsed().as_secs_f64(),
        time_unix_seconds: unix_now(),
        lateness_seconds: 0.0,
    };
    sampler.request_details();
    let before = sampler
        .sample(at(start))
        .with_context(|| format!("cannot sample pid {pid}"))?;
    let mut after = if window.is_zero() {
        before.clone()
    } else {
        std::thread::sleep(window);
        sampler.request_details();
        sampler
            .sample(at(start))
            .with_context(|| format!("cannot sample pid {pid} a second time"))?
    };
    if gpu {
        let mut sources = Sources::none();
        sources.gpu = Some(crate::source::gpu::open_gpu_source());
        sources.fill(&mut after);
    }
    let stacks = stacks.then(|| crate::source::stacks::take(&after));
    let mut report = report_from_samples(before, after);
    if let Some(stacks) = &stacks {
        confirm_gil(&mut report.locks, stacks);
    }
    report.stacks = stacks;
    Ok(report)
}

/// Adds the GIL holder py-spy read from the interpreter to the heuristic's note.
fn confirm_gil(
    notes: &mut [crate::detect::deadlock::LockNote],
    stacks: &crate::source::stacks::StacksReport,
) {
    for note in notes.iter_mut().filter(|n| n.kind == "gil-heuristic") {
        if let Some(holder) = stacks
            .threads
            .iter()
            .find(|s| s.pid == note.pid && s.owns_gil == Some(true))
        {
            note.text.push_str(&format!(
                "; py-spy reads the GIL holder from the interpreter: thread {} ({})",
                holder.tid,
                holder.name.as_deref().unwrap_or("?")
            ));
        }
    }
}

/// Runs the one-shot detectors over two samples and builds the report.
pub fn report_from_samples(before: Sample, after: Sample) -> SnapshotReport {
    let window = (after.elapsed_seconds - before.elapsed_seconds).max(0.0);
    let mut timeline = Timeline::new(3600.0);
    timeline.push(before.clone());
    if window > 0.0 {
        timeline.push(after.clone());
    }
    let config = DetectConfig {
        pid_namespace: crate::source::gpu::read_pid_namespace(),
        ..DetectConfig::one_shot(window)
    };
    let mut findings = detect::detect(&timeline, &config);
    findings.extend(crate::detect::audit::audit_findings(&after));
    findings.sort_by(|a, b| b.severity.cmp(&a.severity).then(a.kind.cmp(&b.kind)));
    let longer = needs_longer_watch(&timeline, window, &findings);
    report::build_snapshot(&before, &after, findings, longer)
}

/// Hangs cannot be decided in a one-shot window: say what was seen and how to decide.
fn needs_longer_watch(
    timeline: &Timeline,
    window: f64,
    findings: &[crate::model::Finding],
) -> Vec<LongerWatch> {
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

/// `tfwatch snapshot`.
pub fn command(args: &SnapshotArgs) -> Result<u8> {
    let report = take_snapshot_with(
        args.pid,
        sampler_config(&args.source),
        args.window,
        !args.no_gpu,
        args.stacks,
    )?;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    match args.format {
        Format::Json => report::write_json(&report, &mut out),
        Format::Text => report::write_text(&report, args.all_threads, &mut out),
    }
    .context("cannot write the report")?;
    out.flush().context("cannot write the report")?;
    Ok(0)
}
