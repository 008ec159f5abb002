//! The watch loop over a recorded timeline, a fake clock and capturing sinks: every
//! event of a real recording arrives in order, the closing line carries the clock's
//! time, and a deadline or a sink ends the watch — with no sleeping.

use std::time::Duration;

use anyhow::Result;
use crossterm::event::{Event as TermEvent, KeyCode, KeyEvent, KeyModifiers};
use ratatui::Terminal;
use ratatui::backend::TestBackend;

use super::WatchLoop;
use crate::collect::Recorded;
use crate::engine::sink::{Control, Ending, Reason, Sink};
use crate::engine::{Event, ExitLine, Watch};
use crate::model::{FindingKind, Sample};
use crate::rules::RuleSet;
use crate::sink::tui::{Dashboard, ScriptedInput};
use crate::source::clock::{Clock, FakeClock};
use crate::verify::observer::verify_detect_config;

fn recorded(name: &str) -> Vec<Sample> {
    let path = format!(
        "{}/fixtures/timelines/{name}.jsonl",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).expect("a recorded sample"))
        .collect()
}

/// Keeps every event and the closing line; stops after `stop_after` samples if set.
#[derive(Default)]
struct Capture {
    events: Vec<Event>,
    samples: usize,
    stop_after: Option<usize>,
    exit: Option<ExitLine>,
}

impl Sink for Capture {
    fn sample(&mut self, _watch: &Watch, events: &[Event]) -> Result<Control> {
        self.samples += 1;
        self.events.extend(events.iter().cloned());
        Ok(match self.stop_after {
            Some(n) if self.samples >= n => {
                Control::Stop(Ending::new(Reason::Stopped, "enough samples"))
            }
            _ => Control::Continue,
        })
    }

    fn finish(&mut self, _watch: &Watch, exit: &ExitLine) -> Result<Option<Ending>> {
        self.exit = Some(exit.clone());
        Ok(None)
    }
}

fn never() -> bool {
    false
}

fn run_recorded(
    samples: Vec<Sample>,
    deadline: Option<Duration>,
    sinks: &mut [&mut dyn Sink],
) -> (Ending, FakeClock) {
    let clock = FakeClock::new(1_800_000_000.0);
    let pid = samples.first().map_or(0, |s| s.root_pid);
    let mut source = Recorded::new(samples, Some(clock.clone()));
    let mut watch = Watch::new(verify_detect_config(), RuleSet::defaults());
    let ending = WatchLoop {
        source: &mut source,
        clock: &clock,
        deadline,
        interrupted: &never,
        pid,
    }
    .run(&mut watch, sinks)
    .expect("the loop runs");
    (ending, clock)
}

#[test]
fn a_recorded_deadlock_streams_its_events_and_ends_when_the_recording_does() {
    let samples = recorded("deadlock");
    let count = samples.len();
    let last_elapsed = samples.last().map_or(0.0, |s| s.elapsed_seconds);
    let root = samples[0].root_pid;
    let mut capture = Capture::default();
    let (ending, clock) = run_recorded(samples, None, &mut [&mut capture]);
    assert_eq!(ending.reason, Reason::TargetExited);
    assert_eq!(ending.message, format!("process {root} exited"));
    assert_eq!(
        capture.samples, count,
        "every recorded sample reached the sink"
    );
    let sample_lines = capture
        .events
        .iter()
        .filter(|e| matches!(e, Event::Sample(_)))
        .count();
    assert_eq!(sample_lines, count, "one sample line per sample");
    let hang = capture.events.iter().any(|e| {
        matches!(e, Event::Finding(f)
            if matches!(f.finding.kind, FindingKind::NoProgress | FindingKind::Deadlock))
    });
    assert!(hang, "the recorded deadlock is reported");
    let exit = capture.exit.expect("a closing line");
    assert_eq!(exit.reason, Reason::TargetExited);
    assert_eq!(exit.pid, Some(root));
    assert!(
        (exit.elapsed_seconds - last_elapsed).abs() < 1e-6,
        "{exit:?}"
    );
    assert!((clock.unix_seconds() - (1_800_000_000.0 + last_elapsed)).abs() < 1e-6);
}

#[test]
fn a_deadline_on_the_clock_ends_the_watch() {
    let samples = recorded("healthy");
    let count = samples.len();
    assert!(count >= 4, "{count}");
    // The deadline falls between the second and third sample's times.
    let cut = (samples[1].elapsed_seconds + samples[2].elapsed_seconds) / 2.0;
    let mut capture = Capture::default();
    let (ending, _) = run_recorded(
        samples,
        Some(Duration::from_secs_f64(cut)),
        &mut [&mut capture],
    );
    assert_eq!(ending.reason, Reason::Duration);
    assert_eq!(
        capture.samples, 3,
        "the sample that moved the clock past it is the last"
    );
    assert_eq!(capture.exit.expect("closing line").reason, Reason::Duration);
}

#[test]
fn a_sink_can_stop_the_watch_and_every_sink_sees_the_end() {
    let mut stopper = Capture {
        stop_after: Some(2),
        ..Capture::default()
    };
    let mut other = Capture::default();
    let (ending, _) = run_recorded(recorded("healthy"), None, &mut [&mut stopper, &mut other]);
    assert_eq!(ending, Ending::new(Reason::Stopped, "enough samples"));
    assert_eq!(stopper.samples, 2);
    assert_eq!(
        other.samples, 1,
        "the stopping sink came first on the second sample"
    );
    assert_eq!(other.exit.expect("closing line").reason, Reason::Stopped);
}

fn key(code: KeyCode) -> TermEvent {
    TermEvent::Key(KeyEvent::new(code, KeyModifiers::NONE))
}

#[test]
fn the_dashboard_runs_in_the_loop_with_scripted_keys() {
    let samples = recorded("deadlock");
    let count = samples.len();
    let backend = TestBackend::new(160, 50);
    let terminal = Terminal::new(backend).expect("a test terminal");
    // `?` opens the help overlay, any key closes it; `s` sorts; the script then runs
    // out, the recording ends, and the dashboard lingers until `q`.
    let mut input = ScriptedInput::new([
        key(KeyCode::Char('?')),
        key(KeyCode::Esc),
        key(KeyCode::Char('s')),
    ]);
    input.events.extend((0..count).map(|_| key(KeyCode::Null)));
    input.events.push_back(key(KeyCode::Char('q')));
    let pid = samples[0].root_pid;
    let mut dashboard = Dashboard::new(terminal, input, pid, never);
    let (ending, _) = run_recorded(samples, None, &mut [&mut dashboard]);
    assert_eq!(
        ending.reason,
        Reason::TargetExited,
        "q after the exit keeps its message"
    );
    let screen = format!("{:?}", dashboard.terminal().backend().buffer());
    assert!(
        screen.contains("the last reading stays, q quits"),
        "{screen}"
    );
    assert!(
        screen.contains(&pid.to_string()),
        "the header names the process"
    );
    assert!(
        screen.contains("no-progress") || screen.contains("deadlock"),
        "the findings panel shows the hang: {screen}"
    );
}

#[test]
fn q_in_the_dashboard_stops_a_live_watch() {
    let backend = TestBackend::new(120, 40);
    let terminal = Terminal::new(backend).expect("a test terminal");
    let input = ScriptedInput::new([key(KeyCode::Char('q'))]);
    let mut dashboard = Dashboard::new(terminal, input, 1, never);
    let (ending, _) = run_recorded(recorded("healthy"), None, &mut [&mut dashboard]);
    assert_eq!(ending, Ending::new(Reason::Stopped, "stopped watching"));
}

/// Explains the first hang it sees, as `attach`'s stacks sink does.
#[derive(Default)]
struct Explainer {
    pending: Vec<(String, crate::model::Finding)>,
    done: bool,
}

impl Sink for Explainer {
    fn sample(&mut self, _watch: &Watch, events: &[Event]) -> Result<Control> {
        for event in events {
            if let Event::Finding(found) = event
                && found.finding.kind.is_hang()
                && !self.done
            {
                let mut finding = found.finding.clone();
                finding.evidence = vec!["pid 1 paused 3 ms for its stacks".into()];
                self.pending.push((found.key.clone(), finding));
                self.done = true;
            }
        }
        Ok(Control::Continue)
    }

    fn explanations(&mut self) -> Vec<(String, crate::model::Finding)> {
        std::mem::take(&mut self.pending)
    }
}

/// Records whether the watch held an explanation when it saw the hang's sample.
#[derive(Default)]
struct SeesExplained {
    seen_on_the_hang_sample: bool,
}

impl Sink for SeesExplained {
    fn sample(&mut self, watch: &Watch, events: &[Event]) -> Result<Control> {
        for event in events {
            if let Event::Finding(found) = event
                && found.finding.kind.is_hang()
                && watch.explained(&found.key).is_some()
            {
                self.seen_on_the_hang_sample = true;
            }
        }
        Ok(Control::Continue)
    }
}

#[test]
fn an_explanation_from_a_sink_reaches_the_watch_and_the_sinks_after_it() {
    let samples = recorded("deadlock");
    let clock = FakeClock::new(1_800_000_000.0);
    let pid = samples[0].root_pid;
    let mut source = Recorded::new(samples, Some(clock.clone()));
    let mut watch = Watch::new(verify_detect_config(), RuleSet::defaults());
    let mut explainer = Explainer::default();
    let mut after = SeesExplained::default();
    WatchLoop {
        source: &mut source,
        clock: &clock,
        deadline: None,
        interrupted: &never,
        pid,
    }
    .run(&mut watch, &mut [&mut explainer, &mut after])
    .expect("the loop runs");
    assert!(
        explainer.done,
        "the recorded deadlock is reported as a hang"
    );
    assert!(
        after.seen_on_the_hang_sample,
        "the sink after the explainer sees the explanation in the same sample"
    );
    // Kept while the hang stays active, in what the diagnosis says.
    let diagnosis = watch.diagnosis();
    assert!(
        diagnosis
            .findings
            .iter()
            .any(|f| f.evidence == ["pid 1 paused 3 ms for its stacks"]),
        "{:?}",
        diagnosis.findings
    );
}
