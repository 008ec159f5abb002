//! The proof phase of `run` on a recorded source: one detail sample reaches every sink,
//! and a source that ends gives up at once, with no sleeping.

use std::time::Duration;

use anyhow::Result;

use super::{DetailSource, prove};
use crate::collect::{Next, Recorded, SampleSource};
use crate::engine::sink::{Control, Sink};
use crate::engine::{Event, Watch};
use crate::model::Sample;
use crate::rules::RuleSet;
use crate::source::clock::FakeClock;
use crate::verify::observer::verify_detect_config;

/// A recorded source that notes whether details were asked for.
struct Detailed {
    recorded: Recorded,
    asked: bool,
}

impl SampleSource for Detailed {
    fn next_sample(&mut self, timeout: Duration) -> Next {
        self.recorded.next_sample(timeout)
    }
}

impl DetailSource for Detailed {
    fn request_details(&mut self) {
        self.asked = true;
    }
}

#[derive(Default)]
struct Count(usize);

impl Sink for Count {
    fn sample(&mut self, _: &Watch, events: &[Event]) -> Result<Control> {
        assert!(matches!(events.first(), Some(Event::Sample(_))));
        self.0 += 1;
        Ok(Control::Continue)
    }
}

fn deadlock_samples() -> Vec<Sample> {
    let path = format!(
        "{}/fixtures/timelines/deadlock.jsonl",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read_to_string(&path)
        .expect("a recorded timeline")
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).expect("a recorded sample"))
        .collect()
}

#[test]
fn the_proof_asks_for_details_and_hands_one_sample_to_every_sink() {
    let samples = deadlock_samples();
    let clock = FakeClock::new(1_800_000_000.0);
    let mut source = Detailed {
        recorded: Recorded::new(samples.clone(), Some(clock.clone())),
        asked: false,
    };
    let mut watch = Watch::new(verify_detect_config(), RuleSet::defaults());
    let (mut first, mut second) = (Count::default(), Count::default());
    let proved = prove(
        &mut source,
        &clock,
        Duration::from_secs(3600),
        &mut watch,
        &mut [&mut first, &mut second],
    )
    .expect("the proof runs");
    assert!(proved && source.asked);
    assert_eq!((first.0, second.0), (1, 1), "one sample, to each sink");
    assert_eq!(watch.timeline.len(), 1);
}

#[test]
fn a_source_that_ended_gives_no_proof_at_once() {
    let clock = FakeClock::new(1_800_000_000.0);
    let mut source = Detailed {
        recorded: Recorded::new(Vec::new(), Some(clock.clone())),
        asked: false,
    };
    let mut watch = Watch::new(verify_detect_config(), RuleSet::defaults());
    let mut sink = Count::default();
    let proved = prove(
        &mut source,
        &clock,
        Duration::from_secs(3600),
        &mut watch,
        &mut [&mut sink],
    )
    .expect("the proof runs");
    assert!(!proved && source.asked);
    assert_eq!(sink.0, 0);
}
