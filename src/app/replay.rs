//! `tfwatch replay TIMELINE`: the detectors and rules over a recorded timeline (the
//! samples `attach --record` wrote), on the recording's own clock, through the one watch
//! loop; prints the findings as they are raised and what was raised in all, and writes
//! the HTML page on `--html`.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};

use super::run::{check_writable, write_file};
use super::settings::{ReplaySettings, UsageError};
use super::watch_loop::WatchLoop;
use crate::cli::ReplayArgs;
use crate::collect::{Collected, Next, SampleSource};
use crate::engine::sink::{Control, Reason, Sink};
use crate::engine::{Event, Watch};
use crate::model::{Finding, Sample, Severity};
use crate::sink::events::{EventSink, Format, Lines};
use crate::sink::html::{self, HtmlSink, Page};
use crate::sink::line::{Line, ReplayedAlert, ReplayedLine};
use crate::sink::report;
use crate::source::clock::FakeClock;

/// The longest line a recording may hold (one sample of a very large tree is a few MiB).
const MAX_LINE_BYTES: u64 = 256 << 20;

/// Samples read one line at a time from a recording, the clock moved to each sample's
/// time. A line that is not a sample ends the replay with its line number; a last line
/// cut off mid-way (the recorder was killed) is left out and said so.
struct RecordingSource<R> {
    reader: R,
    path: PathBuf,
    clock: FakeClock,
    line_number: usize,
    samples: usize,
    first_elapsed: Option<f64>,
    last_elapsed: f64,
    root_pid: i32,
    ended: bool,
    /// Why the replay stopped early, when a line was bad.
    error: Option<String>,
    /// The line number of a cut-off last line, when there was one.
    cut_off: Option<usize>,
    line: String,
}

impl<R: BufRead> RecordingSource<R> {
    fn new(reader: R, path: &Path, clock: FakeClock) -> Self {
        RecordingSource {
            reader,
            path: path.to_path_buf(),
            clock,
            line_number: 0,
            samples: 0,
            first_elapsed: None,
            last_elapsed: f64::NEG_INFINITY,
            root_pid: 0,
            ended: false,
            error: None,
            cut_off: None,
            line: String::new(),
        }
    }

    fn fail(&mut self, why: String) -> Next {
        let message = format!("{} line {}: {why}", self.path.display(), self.line_number);
        self.error = Some(message.clone());
        self.ended = true;
        Next::Collected(Collected::Failed(message))
    }

    fn end(&mut self) -> Next {
        self.ended = true;
        Next::Collected(Collected::TargetGone { pid: self.root_pid })
    }
}

impl<R: BufRead> SampleSource for RecordingSource<R> {
    fn next_sample(&mut self, _timeout: Duration) -> Next {
        if self.ended {
            return Next::Closed;
        }
        loop {
            self.line.clear();
            let read = (&mut self.reader)
                .take(MAX_LINE_BYTES)
                .read_line(&mut self.line);
            self.line_number += 1;
            match read {
                Ok(0) => return self.end(),
                Ok(_) => {}
                Err(e) => return self.fail(format!("cannot be read: {e}")),
            }
            let complete = self.line.ends_with('\n');
            if !complete && self.line.len() as u64 >= MAX_LINE_BYTES {
                return self.fail(format!(
                    "longer than {} MiB: not a recorded timeline",
                    MAX_LINE_BYTES >> 20
                ));
            }
            if self.line.trim().is_empty() {
                continue;
            }
            let sample: Sample = match serde_json::from_str(&self.line) {
                Ok(sample) => sample,
                // The recorder was stopped mid-line: the samples before it still count.
                Err(_) if !complete && self.samples > 0 => {
                    self.cut_off = Some(self.line_number);
                    return self.end();
                }
                Err(e) => {
                    return self.fail(format!(
                        "not a recorded sample ({e}); a timeline is what `tfwatch attach --record FILE` writes"
                    ));
                }
            };
            if let Err(why) = sample.check_times() {
                return self.fail(why);
            }
            if sample.elapsed_seconds < self.last_elapsed {
                let why = format!(
                    "elapsed_seconds {} comes before the previous sample's {}: not one recording (files joined?)",
                    sample.elapsed_seconds, self.last_elapsed
                );
                return self.fail(why);
            }
            self.first_elapsed.get_or_insert(sample.elapsed_seconds);
            self.last_elapsed = sample.elapsed_seconds;
            // Checked above: at most `MAX_ELAPSED_SECONDS`, so a `Duration` holds it.
            self.clock
                .set(Duration::try_from_secs_f64(sample.elapsed_seconds).unwrap_or(Duration::MAX));
            self.root_pid = sample.root_pid;
            self.samples += 1;
            return Next::Collected(Collected::Sample(Box::new(sample)));
        }
    }
}

/// Every finding raised (the most severe version of each) and every alert fired.
#[derive(Default)]
struct Raised {
    findings: Vec<Finding>,
    alerts: Vec<(Severity, String, String)>,
}

impl Sink for Raised {
    fn sample(&mut self, _watch: &Watch, events: &[Event]) -> Result<Control> {
        for event in events {
            match event {
                Event::Finding(f) => {
                    crate::detect::keep_most_severe(&mut self.findings, &f.finding);
                }
                Event::Alert(a) => self.alerts.push((
                    a.alert.severity,
                    a.alert.rule.clone(),
                    a.alert.message.clone(),
                )),
                _ => {}
            }
        }
        Ok(Control::Continue)
    }
}

/// How long `replay` waits for the first byte of a timeline that is not a regular file
/// (a FIFO whose writer has not started).
const FIRST_BYTE_WAIT: Duration = Duration::from_secs(5);

/// Opens the timeline. A regular file opens at once; anything else (a FIFO, a device)
/// is opened without blocking and given [`FIRST_BYTE_WAIT`] to have something to read,
/// so a FIFO nothing writes to is refused instead of waited on for ever.
fn open_timeline(path: &Path) -> Result<File> {
    use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
    use std::os::unix::io::AsRawFd;
    let cannot_open = || format!("cannot open the timeline {}", path.display());
    let kind = std::fs::metadata(path)
        .with_context(cannot_open)?
        .file_type();
    if kind.is_file() || kind.is_dir() {
        return File::open(path).with_context(cannot_open);
    }
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .with_context(cannot_open)?;
    let fd = file.as_raw_fd();
    let mut wait = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    let millis = i32::try_from(FIRST_BYTE_WAIT.as_millis()).unwrap_or(i32::MAX);
    // SAFETY: one valid pollfd of a descriptor we own, for a bounded time.
    let ready = unsafe { libc::poll(&mut wait, 1, millis) };
    if ready < 0 {
        return Err(std::io::Error::last_os_error()).with_context(cannot_open);
    }
    if ready == 0 {
        let what = if kind.is_fifo() {
            "a FIFO"
        } else {
            "not a regular file"
        };
        anyhow::bail!(
            "the timeline {} is {what} and nothing could be read from it within {} s (is its writer running?): start the writer first, or replay a recorded file",
            path.display(),
            FIRST_BYTE_WAIT.as_secs()
        );
    }
    // Readable: read it as any file, blocking.
    // SAFETY: fcntl on a descriptor we own, changing only its O_NONBLOCK flag.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        if flags >= 0 {
            libc::fcntl(fd, libc::F_SETFL, flags & !libc::O_NONBLOCK);
        }
    }
    Ok(file)
}

/// `tfwatch replay`.
pub fn command(args: &ReplayArgs) -> Result<u8> {
    let settings = ReplaySettings::from_args(args)?;
    let path = &settings.timeline;
    let file = open_timeline(path).map_err(UsageError)?;
    if let Some(html) = &settings.html {
        check_writable(html, "--html").map_err(UsageError)?;
    }
    let clock = FakeClock::new(0.0);
    let mut source = RecordingSource::new(BufReader::new(file), path, clock.clone());
    let mut watch = Watch::new(settings.detect.clone(), settings.rules.clone());
    let mut raised = Raised::default();
    let mut page = settings.html.as_ref().map(|_| HtmlSink::new());
    let stdout = std::io::stdout();
    let mut lines =
        EventSink::new(stdout.lock(), Format::json_if(settings.json)).lines(Lines::CHANGES);
    let ending = {
        let mut sinks: Vec<&mut dyn Sink> = vec![&mut lines, &mut raised];
        if let Some(page) = page.as_mut() {
            sinks.push(page);
        }
        WatchLoop {
            source: &mut source,
            clock: &clock,
            deadline: None,
            interrupted: &|| false,
            pid: 0,
        }
        .run(&mut watch, &mut sinks)?
    };
    drop(lines);
    if let Some(error) = source.error.take() {
        return Err(UsageError(anyhow::anyhow!(error)).into());
    }
    if ending.reason != Reason::TargetExited {
        anyhow::bail!(
            "the replay of {} stopped: {}",
            path.display(),
            ending.message
        );
    }
    if source.samples == 0 {
        return Err(UsageError(anyhow::anyhow!(
            "the timeline {} holds no sample (record one with `tfwatch attach PID --record FILE`)",
            path.display()
        ))
        .into());
    }
    if let Some(line) = source.cut_off {
        writeln!(
            std::io::stderr(),
            "tfwatch: {} line {line} is cut off (the recording was stopped mid-line); replayed the {} complete samples before it",
            path.display(),
            source.samples
        )
        .context("cannot write to stderr")?;
    }
    let mut findings: Vec<Finding> = raised.findings;
    crate::detect::sort_findings(&mut findings);
    // The whole recording, not only the part the timeline still holds.
    let span = source
        .first_elapsed
        .map_or(0.0, |first| (source.last_elapsed - first).max(0.0));
    let root = watch.timeline.latest().map_or(0, |s| s.root_pid);
    write_summary(
        &settings,
        source.samples,
        span,
        root,
        &findings,
        &raised.alerts,
    )
    .context("cannot write the findings")?;

    if let (Some(html_path), Some(page)) = (&settings.html, page) {
        let recording = Recording {
            samples: source.samples,
            span,
            root,
        };
        write_html(&settings, html_path, &page, &watch, findings, &recording)?;
    }
    Ok(super::exit::OK)
}

/// What the page says of the recording as a whole.
struct Recording {
    samples: usize,
    span: f64,
    root: i32,
}

/// `--html`: the page of the replay.
fn write_html(
    settings: &ReplaySettings,
    html_path: &Path,
    charts: &HtmlSink,
    watch: &Watch,
    findings: Vec<Finding>,
    recording: &Recording,
) -> Result<()> {
    let report = report::from_watch(watch);
    let facts = vec![
        (
            "timeline".to_string(),
            settings.timeline.display().to_string(),
        ),
        (
            "samples".to_string(),
            format!(
                "{} over {}",
                recording.samples,
                crate::units::format_seconds(recording.span)
            ),
        ),
        ("root pid".to_string(), recording.root.to_string()),
        (
            "judged with".to_string(),
            format!(
                "hang after {}{}",
                crate::units::format_seconds(settings.detect.hang_after_seconds),
                settings
                    .detect
                    .memory_limit_override
                    .map(|b| format!(", memory limit {}", crate::units::format_bytes(b)))
                    .unwrap_or_default()
            ),
        ),
    ];
    let command = watch
        .timeline
        .latest()
        .and_then(|s| s.process(s.root_pid))
        .map(|p| p.cmdline.join(" "))
        .filter(|c| !c.is_empty());
    let page = Page {
        title: format!("tfwatch replay: {}", settings.timeline.display()),
        facts,
        command,
        data: &charts.data,
        findings,
        diagnosis: report.as_ref().map(|r| {
            (
                r,
                "The report of the recording's last two samples, with the findings active at its end."
                    .to_string(),
            )
        }),
        notes: Vec::new(),
    };
    write_file(html_path, "HTML report", |out| html::write_page(&page, out))?;
    if !settings.json {
        writeln!(std::io::stdout(), "HTML report: {}", html_path.display())
            .context("cannot write to stdout")?;
    }
    Ok(())
}

/// What was raised in all: a `replayed` JSON line, or lines for people.
fn write_summary(
    settings: &ReplaySettings,
    samples: usize,
    span: f64,
    root: i32,
    findings: &[Finding],
    alerts: &[(Severity, String, String)],
) -> std::io::Result<()> {
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    if settings.json {
        let line = Line::Replayed(ReplayedLine {
            timeline: settings.timeline.display().to_string(),
            samples,
            span_seconds: span,
            pid: root,
            findings: findings.to_vec(),
            alerts: alerts
                .iter()
                .map(|(severity, rule, message)| ReplayedAlert {
                    rule: rule.clone(),
                    severity: *severity,
                    message: message.clone(),
                })
                .collect(),
        });
        line.write_json(&mut out)?;
        return out.flush();
    }
    crate::units::write_escaped(&mut out, |text| {
        writeln!(
            text,
            "tfwatch replay: {samples} sample(s) of pid {root} over {} from {}",
            crate::units::format_seconds(span),
            settings.timeline.display()
        )?;
        if findings.is_empty() {
            writeln!(text, "findings raised: none")?;
        } else {
            writeln!(text, "findings raised:")?;
            for f in findings {
                writeln!(text, "  [{}] {}: {}", f.severity, f.kind, f.summary)?;
            }
        }
        if alerts.is_empty() {
            writeln!(text, "alerts fired: none")?;
        } else {
            writeln!(text, "alerts fired:")?;
            for (severity, rule, message) in alerts {
                writeln!(text, "  [{severity}] {rule}: {message}")?;
            }
        }
        Ok(())
    })?;
    out.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(text: &str) -> RecordingSource<&[u8]> {
        RecordingSource::new(text.as_bytes(), Path::new("t.jsonl"), FakeClock::new(0.0))
    }

    fn line(elapsed: f64) -> String {
        let sample = Sample {
            elapsed_seconds: elapsed,
            root_pid: 7,
            ..Sample::default()
        };
        serde_json::to_string(&sample).unwrap()
    }

    fn drain(source: &mut RecordingSource<&[u8]>) -> (usize, Option<String>) {
        let mut samples = 0;
        loop {
            match source.next_sample(Duration::ZERO) {
                Next::Collected(Collected::Sample(_)) => samples += 1,
                Next::Collected(Collected::TargetGone { pid }) => {
                    assert_eq!(pid, if samples > 0 { 7 } else { 0 });
                    return (samples, None);
                }
                Next::Collected(Collected::Failed(why)) => return (samples, Some(why)),
                other => panic!("unexpected {other:?}"),
            }
        }
    }

    #[test]
    fn samples_move_the_clock_and_blank_lines_are_skipped() {
        let text = format!("{}\n\n{}\n", line(0.5), line(2.0));
        let mut s = source(&text);
        let clock = s.clock.clone();
        assert!(matches!(
            s.next_sample(Duration::ZERO),
            Next::Collected(Collected::Sample(_))
        ));
        assert_eq!(
            crate::source::clock::Clock::elapsed(&clock),
            Duration::from_millis(500)
        );
        assert_eq!(drain(&mut s), (1, None));
        assert_eq!(
            crate::source::clock::Clock::elapsed(&clock),
            Duration::from_secs(2)
        );
        assert!(matches!(s.next_sample(Duration::ZERO), Next::Closed));
    }

    #[test]
    fn a_bad_line_is_named_with_its_number() {
        let text = format!("{}\n{{\"not\": \"a sample\"\n{}\n", line(0.0), line(1.0));
        let (samples, error) = drain(&mut source(&text));
        assert_eq!(samples, 1);
        let error = error.unwrap();
        assert!(
            error.starts_with("t.jsonl line 2: not a recorded sample"),
            "{error}"
        );
    }

    #[test]
    fn a_cut_off_last_line_is_left_out() {
        let full = line(1.0);
        let text = format!("{}\n{}", line(0.0), &full[..full.len() / 2]);
        let mut s = source(&text);
        assert_eq!(drain(&mut s), (1, None));
        assert_eq!(s.cut_off, Some(2));
        // Cut off as the first line: nothing to replay, an error.
        let (samples, error) = drain(&mut source(&full[..10]));
        assert_eq!(samples, 0);
        assert!(error.unwrap().contains("line 1"));
    }

    #[test]
    fn times_no_reading_gives_are_refused_with_the_line() {
        // 2e19 s would overflow the clock's Duration; -1e300 CPU seconds would show as
        // an infinite CPU share.
        let text = format!("{}\n{}\n", line(0.0), line(2e19));
        let (samples, error) = drain(&mut source(&text));
        assert_eq!(samples, 1);
        let error = error.unwrap();
        assert!(
            error.starts_with("t.jsonl line 2: elapsed_seconds 2e19 is not a time"),
            "{error}"
        );
        let mut sample: serde_json::Value = serde_json::from_str(&line(1.0)).unwrap();
        sample["processes"] = serde_json::json!([{
            "pid": 7, "ppid": 1, "comm": "x", "cmdline": [], "exe": null, "state": "S",
            "num_threads": 1, "rss_bytes": 0, "cpu_seconds": -1e300,
            "start_time_seconds": 0.0, "uid": null, "io": null, "threads": [],
            "audit": null,
        }]);
        let text = format!("{sample}\n");
        let (samples, error) = drain(&mut source(&text));
        assert_eq!(samples, 0);
        let error = error.unwrap();
        assert!(
            error.starts_with("t.jsonl line 1: pid 7's cpu_seconds -1e300"),
            "{error}"
        );
    }

    #[test]
    fn time_going_back_is_refused() {
        let text = format!("{}\n{}\n", line(5.0), line(1.0));
        let (samples, error) = drain(&mut source(&text));
        assert_eq!(samples, 1);
        assert!(error.unwrap().contains("not one recording"));
    }
}
