//! The detectors and rules replayed over timelines recorded from the reference
//! workload (`tfwatch attach PID --record FILE`, see fixtures/timelines/README.md).
//! No live process and no root needed.

use std::collections::BTreeSet;

use crate::model::{FindingKind, Sample, Severity};
use crate::rules::RuleSet;

use super::{Event, Watch};
use crate::verify::observer::verify_detect_config;

/// Replays a recorded timeline through a watch with the verify settings; returns the
/// finding kinds raised at warning or above, and the alerts.
fn replay(name: &str) -> (BTreeSet<FindingKind>, BTreeSet<String>) {
    let path = format!(
        "{}/fixtures/timelines/{name}.jsonl",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let mut watch = Watch::new(verify_detect_config(), RuleSet::defaults());
    let mut kinds = BTreeSet::new();
    let mut alerts = BTreeSet::new();
    let mut lines = 0;
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let sample: Sample = serde_json::from_str(line).expect("a recorded sample");
        lines += 1;
        for event in watch.observe(sample) {
            match event {
                Event::Finding(f) if f.finding.severity >= Severity::Warning => {
                    kinds.insert(f.finding.kind);
                }
                Event::Alert(a) => {
                    alerts.insert(a.alert.rule);
                }
                _ => {}
            }
        }
    }
    assert!(lines >= 5, "{path} holds {lines} samples");
    (kinds, alerts)
}

#[test]
fn deadlock_is_a_hang() {
    let (kinds, _) = replay("deadlock");
    assert!(
        kinds.contains(&FindingKind::NoProgress) || kinds.contains(&FindingKind::Deadlock),
        "{kinds:?}"
    );
}

#[test]
fn fork_lock_child_is_found() {
    let (kinds, _) = replay("fork-lock");
    assert!(kinds.contains(&FindingKind::ForkInheritedLock), "{kinds:?}");
    assert!(
        !kinds.contains(&FindingKind::NoProgress),
        "the parent is healthy: {kinds:?}"
    );
}

#[test]
fn oversubscription_is_found_and_its_fix_is_quiet() {
    let (kinds, _) = replay("oversubscribe");
    assert!(kinds.contains(&FindingKind::Oversubscription), "{kinds:?}");
    let (kinds, _) = replay("oversubscribe-fixed");
    assert!(kinds.is_empty(), "{kinds:?}");
}

#[test]
fn thread_explosion_is_found_with_the_thread_rule() {
    let (kinds, alerts) = replay("thread-explosion");
    assert!(kinds.contains(&FindingKind::ThreadExplosion), "{kinds:?}");
    assert!(alerts.contains("too-many-threads"), "{alerts:?}");
}

#[test]
fn memory_growth_is_found_and_its_fix_is_quiet() {
    let (kinds, _) = replay("memory-growth");
    assert!(kinds.contains(&FindingKind::MemoryPressure), "{kinds:?}");
    let (kinds, _) = replay("memory-growth-fixed");
    assert!(kinds.is_empty(), "{kinds:?}");
}

#[test]
fn healthy_raises_nothing() {
    let (kinds, alerts) = replay("healthy");
    assert!(kinds.is_empty(), "{kinds:?}");
    assert!(alerts.is_empty(), "{alerts:?}");
}
