//! `tfwatch attach`: watch a live process tree and stream what happens (JSON lines or
//! the live dashboard), through the one watch loop.

use std::fs::File;
use std::io::{BufWriter, IsTerminal, Write};
use std::sync::Arc;

use anyhow::{Context, Result};

use super::settings::{AttachOutput, AttachSettings, WatchSettings};
use super::signals::{catch_interrupts, interrupted};
use super::watch_loop::WatchLoop;
use crate::cli::AttachArgs;
use crate::collect::Collector;
use crate::collect::sources::Sources;
use crate::engine::Watch;
use crate::engine::sink::{Ending, Reason, Sink};
use crate::sink::events::{EventSink, Format};
use crate::sink::export::Exporter;
use crate::sink::line::Line;
use crate::sink::record::Recorder;
use crate::sink::tui::terminal::TerminalGuard;
use crate::sink::tui::{CrosstermInput, Dashboard};
use crate::source::clock::SystemClock;
use crate::source::proc::Sampler;

/// The Prometheus endpoint of a watch (`--listen`), started before sampling; says where
/// it listens on stderr, for people or (`run --json`) as a `listening` line.
pub fn start_exporter(watch: &WatchSettings, stderr: Format) -> Result<Option<Exporter>> {
    let Some(address) = watch.listen else {
        return Ok(None);
    };
    let exporter = Exporter::serve(address, &watch.rules)?;
    if stderr == Format::Json {
        let line = Line::Listening {
            url: exporter.url().to_string(),
        };
        line.write_json(&mut std::io::stderr().lock())
            .context("cannot write the listening line")?;
    } else {
        writeln!(
            std::io::stderr(),
            "tfwatch: listening on {}",
            exporter.url()
        )
        .context("cannot write the listening line")?;
    }
    Ok(Some(exporter))
}

/// The exit code of a watch that ended this way: tfwatch failed only when sampling did.
pub fn exit_code(ending: &Ending) -> u8 {
    if ending.reason == Reason::SamplerFailed {
        super::exit::TFWATCH_FAILED
    } else {
        super::exit::OK
    }
}

/// Opens the `--record` file without blocking: a FIFO with no reader is refused at once
/// instead of hanging start-up (`open` would wait for a reader).
fn open_record(path: &std::path::Path) -> Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    use std::os::unix::io::AsRawFd;
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| {
            if e.raw_os_error() == Some(libc::ENXIO) {
                anyhow::anyhow!(
                    "--record {}: a FIFO with no reader (start its reader first)",
                    path.display()
                )
            } else {
                anyhow::Error::new(e)
                    .context(format!("cannot create the record file {}", path.display()))
            }
        })?;
    // Writes block again (a FIFO's reader sets the pace; a regular file is unaffected).
    // SAFETY: fcntl on a descriptor this function owns.
    unsafe {
        let fd = file.as_raw_fd();
        let flags = libc::fcntl(fd, libc::F_GETFL);
        if flags >= 0 {
            libc::fcntl(fd, libc::F_SETFL, flags & !libc::O_NONBLOCK);
        }
    }
    Ok(file)
}

/// `tfwatch attach`.
pub fn command(args: &AttachArgs) -> Result<u8> {
    let settings = AttachSettings::from_args(args, std::io::stdout().is_terminal())?;
    let pid = settings.pid;
    let sampler = Sampler::new(pid, settings.sampler.clone())
        .with_context(|| format!("cannot watch pid {pid}"))?;
    let mut recorder = match &settings.record {
        Some(path) => Some(Recorder::new(BufWriter::new(
            open_record(path).map_err(super::settings::UsageError)?,
        ))),
        None => None,
    };
    let mut exporter = start_exporter(&settings.watch, Format::Text)?;
    catch_interrupts();
    let clock = SystemClock::new();
    let sources = Sources::open(settings.watch.gpu, &settings.watch.scrape)
        .with_waits(super::wait_prober(settings.stacks, &settings.watch));
    let mut collector =
        Collector::start(sampler, sources, settings.watch.interval, Arc::new(clock));
    let mut watch = Watch::new(settings.watch.detect.clone(), settings.watch.rules.clone());
    let mut watch_loop = WatchLoop {
        source: &mut collector,
        clock: &clock,
        deadline: settings.duration,
        interrupted: &interrupted,
        pid,
    };
    let mut hang_stacks =
        super::hang_stacks::HangStacks::new(Format::json_if(settings.output == AttachOutput::Json));
    let mut sinks: Vec<&mut dyn Sink> = Vec::new();
    if let Some(recorder) = recorder.as_mut() {
        sinks.push(recorder);
    }
    if let Some(exporter) = exporter.as_mut() {
        sinks.push(exporter);
    }
    match settings.output {
        AttachOutput::Dashboard => {
            // A person at a terminal: the live dashboard instead of lines.
            let (guard, terminal) =
                TerminalGuard::enter().context("cannot open the dashboard on this terminal")?;
            let mut dashboard = Dashboard::new(terminal, CrosstermInput, pid, interrupted);
            // Stacks first: the dashboard then shows a hang explained in the same frame.
            if settings.stacks {
                sinks.push(&mut hang_stacks);
            }
            sinks.push(&mut dashboard);
            let ending = watch_loop.run(&mut watch, &mut sinks);
            drop(sinks);
            drop(dashboard);
            drop(guard);
            let ending = ending?;
            write_closing(
                pid,
                &ending,
                &watch,
                &hang_stacks,
                &mut std::io::stdout().lock(),
            )
            .context("cannot write the closing lines to stdout")?;
            Ok(exit_code(&ending))
        }
        AttachOutput::Json => {
            let mut lines = EventSink::new(std::io::stdout().lock(), Format::Json);
            sinks.push(&mut lines);
            if settings.stacks {
                sinks.push(&mut hang_stacks);
            }
            let ending = watch_loop.run(&mut watch, &mut sinks)?;
            Ok(exit_code(&ending))
        }
        AttachOutput::Quiet => {
            let ending = watch_loop.run(&mut watch, &mut sinks)?;
            Ok(exit_code(&ending))
        }
    }
}

/// What the dashboard leaves on the terminal after it closes: how the watch ended, the
/// findings active then, and the stacks taken on a hang.
fn write_closing(
    pid: i32,
    ending: &Ending,
    watch: &Watch,
    hang_stacks: &super::hang_stacks::HangStacks,
    out: &mut impl Write,
) -> std::io::Result<()> {
    writeln!(out, "tfwatch attach {pid}: {}", ending.message)?;
    for finding in watch.active_findings() {
        writeln!(
            out,
            "  [{}] {}: {}",
            finding.severity, finding.kind, finding.summary
        )?;
    }
    if !hang_stacks.explained.is_empty() {
        writeln!(out, "  stacks taken on the hang:")?;
        hang_stacks.write_text(out)?;
    }
    out.flush()
}
