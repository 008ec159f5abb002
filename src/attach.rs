//! `tfwatch attach`: watch a live process tree and stream what happens.

use std::fs::File;
use std::io::{BufWriter, IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::cli::AttachArgs;
use crate::detect::DetectConfig;
use crate::rules::RuleSet;
use crate::sampler::Sampler;
use crate::snapshot::{sampler_config, unix_now};
use crate::watch::collector::{Collected, Collector, Next};
use crate::watch::sources::Sources;
use crate::watch::{Event, ExitLine, Watch};

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

/// Where events go: JSON lines for scripts, short text lines for people.
pub struct EventSink<W: Write> {
    out: W,
    json: bool,
}

impl<W: Write> EventSink<W> {
    pub fn new(out: W, json: bool) -> Self {
        EventSink { out, json }
    }

    pub fn write(&mut self, event: &Event) -> std::io::Result<()> {
        if self.json {
            serde_json::to_writer(&mut self.out, event)?;
            writeln!(self.out)?;
        } else {
            write_text_event(&mut self.out, event)?;
        }
        self.out.flush()
    }
}

/// One event as a line for people.
pub fn write_text_event(out: &mut impl Write, event: &Event) -> std::io::Result<()> {
    match event {
        Event::Sample(s) => {
            let get = |name: &str| s.metrics.get(name).copied();
            writeln!(
                out,
                "[{:>7.1}s] threads {} runnable {} on {} CPU(s), wait ratio {}, RSS {}{}",
                s.elapsed_seconds,
                get("threads").unwrap_or(0.0),
                get("threads_runnable").unwrap_or(0.0),
                get("usable_cpus").unwrap_or(0.0),
                get("runqueue_wait_ratio")
                    .map(|r| format!("{r:.2}"))
                    .unwrap_or_else(|| "-".into()),
                crate::units::format_bytes(get("rss_bytes").unwrap_or(0.0) as u64),
                if s.findings_active.is_empty() {
                    String::new()
                } else {
                    format!("; active: {}", s.findings_active.join(" "))
                }
            )?;
            for u in &s.unavailable {
                writeln!(
                    out,
                    "          unavailable: {}{}: {}{}",
                    u.source,
                    u.pid.map(|p| format!(" (pid {p})")).unwrap_or_default(),
                    u.reason,
                    u.fix
                        .as_ref()
                        .map(|f| format!(" — {f}"))
                        .unwrap_or_default()
                )?;
            }
        }
        Event::Finding(f) => {
            let finding = &f.finding;
            writeln!(
                out,
                "[{:>7.1}s] FINDING [{}] {}: {}",
                f.elapsed_seconds, finding.severity, finding.kind, finding.summary
            )?;
            for line in &finding.evidence {
                writeln!(out, "            - {line}")?;
            }
            writeln!(out, "            remedy: {}", finding.remedy)?;
        }
        Event::Alert(a) => writeln!(
            out,
            "[{:>7.1}s] ALERT {}",
            a.elapsed_seconds,
            serde_json::to_string(&a.alert).unwrap_or_default()
        )?,
        Event::Resolved(r) => writeln!(
            out,
            "[{:>7.1}s] resolved {} after {:.0}s",
            r.elapsed_seconds,
            r.kind
                .map(|k| k.to_string())
                .or_else(|| r.rule.clone())
                .unwrap_or_default(),
            r.active_seconds
        )?,
        Event::Exit(e) => writeln!(out, "[{:>7.1}s] exit: {}", e.elapsed_seconds, e.message)?,
    }
    Ok(())
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
        pid_namespace: crate::gpu::read_pid_namespace(),
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
    let exporter = crate::export::Exporter::from_args(&args.listen, &rules)?;
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
        return crate::tui::run(crate::tui::Attach {
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
