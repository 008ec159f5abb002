//! `tfwatch snapshot`: two samples a short window apart, the detectors over them, and
//! the triage report.

use std::io::Write;
use std::time::Duration;

use anyhow::{Context, Result};

use super::settings::SnapshotSettings;
use crate::cli::{Format, SnapshotArgs};
use crate::collect::sources::Sources;
use crate::model::Sample;
use crate::sink::html::{self, ChartData, Page};
use crate::sink::report::{self, SnapshotReport};
use crate::source::clock::SystemClock;
use crate::source::proc::{SampleTime, Sampler, SamplerConfig};

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
    sample_and_report(pid, config, window, gpu, stacks).map(|(report, ..)| report)
}

/// As [`take_snapshot_with`], with the two samples the report was built from (the same
/// sample twice when the window is 0).
pub fn take_snapshot_samples(
    pid: i32,
    config: SamplerConfig,
    window: Duration,
    gpu: bool,
    stacks: bool,
) -> Result<(SnapshotReport, [Sample; 2])> {
    let (report, before, after) = sample_and_report(pid, config, window, gpu, stacks)?;
    let after = after.unwrap_or_else(|| before.clone());
    Ok((report, [before, after]))
}

/// The report, the first sample and the second (`None` when the window is 0 and no GPU
/// reading was added: the first is the second).
fn sample_and_report(
    pid: i32,
    config: SamplerConfig,
    window: Duration,
    gpu: bool,
    stacks: bool,
) -> Result<(SnapshotReport, Sample, Option<Sample>)> {
    let proc_root = config.proc_root.clone();
    // Without a window the one sample is the whole snapshot: nothing is read that only
    // a second sample would use.
    let config = SamplerConfig {
        one_shot: config.one_shot || window.is_zero(),
        ..config
    };
    let mut sampler =
        Sampler::new(pid, config).with_context(|| format!("cannot watch pid {pid}"))?;
    let clock = SystemClock::new();
    sampler.request_details();
    let before = sampler
        .sample(SampleTime::on(&clock, 0.0))
        .with_context(|| format!("cannot sample pid {pid}"))?;
    let mut second = if window.is_zero() {
        None
    } else {
        std::thread::sleep(window);
        sampler.request_details();
        Some(
            sampler
                .sample(SampleTime::on(&clock, 0.0))
                .with_context(|| format!("cannot sample pid {pid} a second time"))?,
        )
    };
    if gpu {
        let mut after = second.take().unwrap_or_else(|| before.clone());
        let mut sources = Sources::none();
        sources.gpu = Some(crate::source::gpu::open_gpu_source());
        sources.fill(&mut after);
        second = Some(after);
    }
    let after = second.as_ref().unwrap_or(&before);
    let stacks = stacks.then(|| crate::source::stacks::take(after, &proc_root));
    let pid_namespace = super::settings::pid_namespace(&proc_root);
    let mut report = report_from_samples(&before, after, pid_namespace);
    if let Some(stacks) = &stacks {
        confirm_gil(&mut report.locks, stacks);
        crate::detect::explain_with_stacks(&mut report.findings, stacks);
        observe_ranks(&mut report, &before, after, stacks);
    }
    report.stacks = stacks;
    Ok((report, before, second))
}

/// The cross-rank diagnosis of the distributed jobs in the tree over the window and the
/// stacks (`detect::distributed::observe_window`): one finding per job, which then
/// stands for its ranks' "needs a longer watch" notes.
fn observe_ranks(
    report: &mut SnapshotReport,
    before: &Sample,
    after: &Sample,
    stacks: &crate::model::stacks::StacksReport,
) {
    let mut timeline = crate::timeline::Timeline::new(3600.0);
    timeline.push(before.clone());
    timeline.push(after.clone());
    let jobs = crate::detect::distributed::observe_window(&timeline, stacks);
    let pids: Vec<i32> = jobs.iter().flat_map(|f| f.pids.clone()).collect();
    report.needs_longer_watch.retain(|w| {
        !pids
            .iter()
            .any(|pid| w.observed.starts_with(&format!("pid {pid} (")))
    });
    report.findings.extend(jobs);
    crate::detect::sort_findings(&mut report.findings);
}

/// Checks the GIL heuristic's note against the stacks: where the frames name the waits of
/// the threads it took for GIL waiters and none of them is the GIL (a Python `Lock`, a
/// condition), the note says what they wait on instead and is an unknown owner's note;
/// otherwise it gains the GIL holder py-spy read from the interpreter.
fn confirm_gil(
    notes: &mut [crate::model::locks::LockNote],
    stacks: &crate::model::stacks::StacksReport,
) {
    use crate::model::stacks::WaitName;
    for note in notes
        .iter_mut()
        .filter(|n| n.kind == crate::model::locks::LockNoteKind::GilHeuristic)
    {
        let waits: Vec<&crate::model::stacks::NamedWait> = note
            .tids
            .iter()
            .filter_map(|tid| {
                let stack = stacks
                    .threads
                    .iter()
                    .find(|s| s.pid == note.pid && s.tid == *tid)?;
                stack.wait.as_ref()
            })
            .collect();
        if !waits.is_empty() && waits.iter().all(|w| w.kind != WaitName::Gil) {
            let mut seen: Vec<(&str, usize)> = Vec::new();
            for wait in &waits {
                match seen.iter_mut().find(|(text, _)| *text == wait.text) {
                    Some((_, count)) => *count += 1,
                    None => seen.push((&wait.text, 1)),
                }
            }
            let named: Vec<String> = seen
                .iter()
                .map(|(text, count)| format!("{count} {text}"))
                .collect();
            note.kind = crate::model::locks::LockNoteKind::UnknownOwner;
            note.text = format!(
                "not the GIL: the {} threads the GIL heuristic took for its waiters wait, by their stacks: {}",
                note.tids.len(),
                named.join("; ")
            );
            continue;
        }
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

/// `--html`: the page of a snapshot, its charts over the two samples.
fn write_html(path: &std::path::Path, report: &SnapshotReport, samples: &[Sample]) -> Result<()> {
    let mut data = ChartData::from_samples(samples);
    if let Some(last) = samples.last() {
        data.mark_findings(last.elapsed_seconds, &report.findings);
    }
    let comm = report.processes.first().map_or("?", |p| p.comm.as_str());
    let facts = vec![
        (
            "process".to_string(),
            format!(
                "pid {} ({comm}) and {} descendant(s)",
                report.root_pid,
                report.processes.len().saturating_sub(1)
            ),
        ),
        (
            "window".to_string(),
            crate::units::format_seconds(report.window_seconds),
        ),
    ];
    let command = report
        .processes
        .first()
        .map(|p| p.cmdline.join(" "))
        .filter(|c| !c.is_empty());
    let page = Page {
        title: format!("tfwatch snapshot of pid {} ({comm})", report.root_pid),
        facts,
        command,
        data: &data,
        findings: report.findings.clone(),
        diagnosis: Some((report, "The snapshot report.".to_string())),
        notes: Vec::new(),
    };
    super::run::write_file(path, "HTML report", |out| html::write_page(&page, out))
}

/// Runs the one-shot detectors over two samples and builds the report.
pub fn report_from_samples(
    before: &Sample,
    after: &Sample,
    pid_namespace: crate::model::PidNamespace,
) -> SnapshotReport {
    let diagnosis = crate::engine::diagnose_window(before, after, pid_namespace);
    let mut report = report::build_snapshot(before, after, diagnosis);
    super::frozen::note_frozen_processes(&mut report, std::path::Path::new("/proc"));
    report
}

/// `tfwatch snapshot`.
pub fn command(args: &SnapshotArgs) -> Result<u8> {
    let settings = SnapshotSettings::from_args(args);
    if let Some(path) = &settings.html {
        super::run::check_writable(path, "--html").map_err(super::settings::UsageError)?;
    }
    let (report, samples) = take_snapshot_samples(
        settings.pid,
        settings.sampler,
        settings.window,
        settings.gpu,
        settings.stacks,
    )?;
    if let Some(path) = &settings.html {
        // One sample when the window is 0: the second is the first again.
        let samples = if settings.window.is_zero() {
            &samples[1..]
        } else {
            &samples[..]
        };
        write_html(path, &report, samples)?;
    }
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    match settings.format {
        Format::Json => report::write_json(&report, &mut out),
        Format::Text => report::write_text(&report, settings.all_threads, &mut out),
    }
    .context("cannot write the report")?;
    out.flush().context("cannot write the report")?;
    // The process ends here: its memory goes back whole, without freeing the report
    // and samples piece by piece (some thousands of allocations for 1,000 threads).
    std::mem::forget((report, samples));
    Ok(super::exit::OK)
}

#[cfg(test)]
mod gil_tests {
    use super::confirm_gil;
    use crate::model::locks::LockNote;
    use crate::model::stacks::{NamedWait, StacksReport, ThreadStack, WaitName};

    fn note() -> LockNote {
        LockNote {
            pid: 7,
            kind: crate::model::locks::LockNoteKind::GilHeuristic,
            text: "likely the GIL (heuristic)".into(),
            tids: vec![8, 9],
        }
    }

    fn stacks(kind: WaitName, text: &str) -> StacksReport {
        let stack = |tid: i32, owns_gil: bool| ThreadStack {
            pid: 7,
            tid,
            name: Some(format!("t{tid}")),
            owns_gil: Some(owns_gil),
            wait: (tid != 10).then(|| NamedWait::new(kind, text)),
            ..ThreadStack::default()
        };
        StacksReport {
            threads: vec![stack(8, false), stack(9, false), stack(10, true)],
            ..StacksReport::default()
        }
    }

    #[test]
    fn stacks_that_show_no_gil_wait_refute_the_heuristic() {
        let mut notes = [note()];
        confirm_gil(
            &mut notes,
            &stacks(WaitName::PythonLock, "waits on Python Lock `lock`"),
        );
        assert_eq!(
            notes[0].kind,
            crate::model::locks::LockNoteKind::UnknownOwner
        );
        assert_eq!(
            notes[0].text,
            "not the GIL: the 2 threads the GIL heuristic took for its waiters wait, by their stacks: 2 waits on Python Lock `lock`"
        );
    }

    #[test]
    fn stacks_that_show_the_gil_wait_name_its_holder() {
        let mut notes = [note()];
        confirm_gil(&mut notes, &stacks(WaitName::Gil, "waits for the GIL"));
        assert_eq!(
            notes[0].kind,
            crate::model::locks::LockNoteKind::GilHeuristic
        );
        assert!(
            notes[0]
                .text
                .ends_with("; py-spy reads the GIL holder from the interpreter: thread 10 (t10)"),
            "{}",
            notes[0].text
        );
    }
}
