//! `tfwatch attach`: watch a live process tree and stream what happens.

use std::fs::File;
use std::io::{BufWriter, IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::app::snapshot::{sampler_config, unix_now};
use crate::cli::AttachArgs;
use crate::collect::sources::Sources;
use crate::collect::{Collected, Collector, Next};
use crate::detect::DetectConfig;
use crate::engine::{Event, ExitLine, Watch};
use crate::rules::RuleSet;
use crate::sink::events::EventSink;
use crate::source::proc::Sampler;

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Makes SIGINT and SIGTERM set a flag the watch loop checks, so it ends cleanly.
pub fn catch_interrupts() {
    use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};
    let action = SigAction::new(
        SigHandler::Handler(on_signal),
        SaFlags::empty(),
        SigSet::empty(),
    );
    for signal in [Signal::SIGINT, Signal::SIGTERM] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        let _ = unsafe { sigaction(signal, &action) };
    }
}

pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// Loads the rules the user named, or the defaults.
pub fn load_rules(files: &[std::path::PathBuf]) -> Result<RuleSet> {
    if files.is_empty() {
        Ok(RuleSet::defaults())
    } else {
        Ok(crate::rules::load_rule_files(files)?)
    }
}

/// `tfwatch attach`.
pub fn command(args: &AttachArgs) -> Result<u8> {
    let rules = load_rules(&args.rules)?;
    let mapping = rules.metrics_mapping();
    if args.interval.is_zero() {
        anyhow::bail!("--interval must be greater than 0");
    }
    let detect = DetectConfig {
        hang_after_seconds: args.hang_after.as_secs_f64(),
        pid_namespace: crate::source::gpu::read_pid_namespace(),
        ..DetectConfig::default()
    };
    let sampler = Sampler::new(args.pid, sampler_config(&args.source))
        .with_context(|| format!("cannot watch pid {}", args.pid))?;
    let mut record = match &args.record {
        Some(path) => Some(BufWriter::new(File::create(path).with_context(|| {
            format!("cannot create the record file {}", path.display())
        })?)),
        None => None,
    };
    // Prometheus endpoint (--listen): started before the loop, fed each sample below.
    let exporter = crate::sink::export::Exporter::from_args(&args.listen, &rules)?;
    catch_interrupts();
    // --no-tui: nothing on stdout unless --json.
    let quiet = args.no_tui && !args.json;
    let json = args.json || !std::io::stdout().is_terminal();
    let stdout = std::io::stdout();
    let mut sink = EventSink::new(stdout.lock(), json);
    let started = Instant::now();
    let sources = Sources::from_args(&args.sources, mapping)?;
    let collector = Collector::start(sampler, sources, args.interval, started);
    let mut watch = Watch::new(detect, rules);
    let deadline = args.duration.map(|d| started + d);
    if !json && !args.no_tui {
        // A person at a terminal: the live dashboard (src/tui) instead of text lines.
        drop(sink);
        return crate::sink::tui::run(crate::sink::tui::Attach {
            pid: args.pid,
            collector,
            watch,
            deadline,
            record,
            exporter,
        });
    }
    let (reason, message) = loop {
        if interrupted() {
            break ("interrupted", "interrupted; stopped watching".to_string());
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            break ("duration", "watch duration reached".to_string());
        }
        match collector.next(Duration::from_millis(100)) {
            Next::Collected(Collected::Sample(sample)) => {
                if let Some(file) = record.as_mut() {
                    serde_json::to_writer(&mut *file, &sample)
                        .context("cannot write the record file")?;
                    writeln!(file).context("cannot write the record file")?;
                }
                let events = watch.observe(*sample);
                if let Some(exporter) = &exporter {
                    exporter.update(&watch, &events);
                }
                if !quiet {
                    for event in &events {
                        sink.write(event).context("cannot write to stdout")?;
                    }
                }
            }
            Next::Collected(Collected::TargetGone { pid }) => {
                break ("target-exited", format!("process {pid} exited"));
            }
            Next::Collected(Collected::Failed(why)) => {
                break ("sampler-failed", format!("sampling failed: {why}"));
            }
            Next::Late => {}
            Next::Closed => break ("sampler-failed", "the sampler stopped".to_string()),
        }
    };
    if let Some(mut file) = record {
        file.flush().context("cannot write the record file")?;
    }
    let exit = Event::Exit(ExitLine {
        time_unix_seconds: unix_now(),
        elapsed_seconds: started.elapsed().as_secs_f64(),
        pid: args.pid,
        reason: reason.to_string(),
        exit_code: None,
        message,
    });
    if !quiet {
        sink.write(&exit).context("cannot write to stdout")?;
    }
    Ok(if reason == "sampler-failed" { 125 } else { 0 })
}
