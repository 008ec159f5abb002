//! The watch engine as the observer of `run-workload --verify`: it attaches to every
//! scenario run, samples it at the watch interval, and reports what the detectors found
//! and how long after the onset of the problem.
//!
//! The verify run uses scaled-down windows so it ends in minutes (documented in the
//! README): a 3 s hang window, and memory judged against a 384 MiB budget as if the
//! job ran in a container with that limit.

use std::time::{Duration, Instant};

use crate::detect::DetectConfig;
use crate::model::{FindingKind, Severity};
use crate::rules::RuleSet;
use crate::sampler::{SampleTime, Sampler, SamplerConfig};
use crate::snapshot::unix_now;
use crate::workload::Scenario;
use crate::workload::Variant;
use crate::workload::verify::{Detection, RunInfo, RunOutcome, ScenarioObserver};

use super::{Event, Watch};

/// Sampling interval of the verify watch.
pub const VERIFY_INTERVAL: Duration = Duration::from_secs(1);
/// Hang window of the verify watch.
pub const VERIFY_HANG_AFTER_SECONDS: f64 = 3.0;
/// Memory budget the verify watch judges RSS against.
pub const VERIFY_MEMORY_LIMIT_BYTES: u64 = 384 << 20;

/// The findings that count as detecting each scenario's broken variant, the most
/// telling first (verify shows the first of them that was raised).
pub fn expected_findings(scenario: Scenario) -> &'static [FindingKind] {
    match scenario {
        Scenario::Deadlock => &[FindingKind::Deadlock, FindingKind::NoProgress],
        Scenario::ForkLock => &[FindingKind::ForkInheritedLock],
        Scenario::Oversubscribe => &[FindingKind::Oversubscription],
        Scenario::ThreadExplosion => &[FindingKind::ThreadExplosion],
        // Process-shared pthread mutexes taken in opposite orders by two processes: the
        // cross-process cycle is the proof; GPU sharing where NVML sees the device.
        Scenario::GpuContention => &[
            FindingKind::Deadlock,
            FindingKind::GpuShared,
            FindingKind::NoProgress,
        ],
        Scenario::QueueOverload => &[FindingKind::StallPendingWork],
        Scenario::MemoryGrowth => &[FindingKind::MemoryPressure],
        Scenario::Healthy => &[],
    }
}

/// The detector settings of the verify watch.
pub fn verify_detect_config() -> DetectConfig {
    DetectConfig {
        hang_after_seconds: VERIFY_HANG_AFTER_SECONDS,
        memory_limit_override: Some(VERIFY_MEMORY_LIMIT_BYTES),
        ..DetectConfig::default()
    }
}

struct Current {
    sampler: Sampler,
    watch: Watch,
    started: Instant,
    next_sample: Instant,
    /// First time each kind was raised (severity warning or above).
    raised: Vec<(FindingKind, Instant)>,
}

/// Watches every scenario run with the real sampler and detectors.
#[derive(Default)]
pub struct WatchObserver {
    current: Option<Current>,
    /// Why the last run could not be watched, if it could not.
    pub problem: Option<String>,
}

impl WatchObserver {
    pub fn new() -> Self {
        WatchObserver::default()
    }

    fn sample(&mut self, now: Instant) {
        let Some(current) = self.current.as_mut() else {
            return;
        };
        if now < current.next_sample {
            return;
        }
        let lateness = now.duration_since(current.next_sample).as_secs_f64();
        while current.next_sample <= now {
            current.next_sample += VERIFY_INTERVAL;
        }
        let at = SampleTime {
            elapsed_seconds: now.duration_since(current.started).as_secs_f64(),
            time_unix_seconds: unix_now(),
            lateness_seconds: lateness,
        };
        let Ok(sample) = current.sampler.sample(at) else {
            return;
        };
        for event in current.watch.observe(sample) {
            if let Event::Finding(f) = event
                && f.finding.severity >= Severity::Warning
                && !current.raised.iter().any(|(k, _)| *k == f.finding.kind)
            {
                current.raised.push((f.finding.kind, now));
            }
        }
    }
}

impl ScenarioObserver for WatchObserver {
    fn started(&mut self, run: &RunInfo) {
        self.problem = None;
        let config = SamplerConfig {
            details_every: 1,
            ..SamplerConfig::default()
        };
        self.current = match Sampler::new(run.pid, config) {
            Ok(sampler) => {
                let now = Instant::now();
                Some(Current {
                    sampler,
                    watch: Watch::new(verify_detect_config(), RuleSet::defaults()),
                    started: now,
                    next_sample: now,
                    raised: Vec::new(),
                })
            }
            Err(e) => {
                self.problem = Some(e.to_string());
                None
            }
        };
    }

    fn poll(&mut self, _run: &RunInfo, now: Instant) {
        self.sample(now);
    }

    fn finished(&mut self, run: &RunInfo, _outcome: &RunOutcome) -> Option<Detection> {
        let current = self.current.take();
        let Some(current) = current else {
            return Some(Detection {
                finding: format!(
                    "not watched: {}",
                    self.problem.take().unwrap_or_else(|| "no sampler".into())
                ),
                latency_seconds: None,
                ok: false,
            });
        };
        let expected = expected_findings(run.scenario);
        let onset = run.onset.unwrap_or(current.started);
        match run.variant {
            Variant::Broken => {
                // The most telling finding raised (the order of `expected`), not the first.
                let hit = expected
                    .iter()
                    .find_map(|k| current.raised.iter().find(|(kind, _)| kind == k));
                Some(match hit {
                    Some((kind, at)) => Detection {
                        finding: kind.to_string(),
                        latency_seconds: Some(at.saturating_duration_since(onset).as_secs_f64()),
                        ok: true,
                    },
                    None => Detection {
                        finding: if current.raised.is_empty() {
                            "missed".to_string()
                        } else {
                            format!("missed (saw {})", kinds(&current.raised))
                        },
                        latency_seconds: None,
                        ok: false,
                    },
                })
            }
            Variant::Fixed => Some(if current.raised.is_empty() {
                Detection {
                    finding: "none".to_string(),
                    latency_seconds: None,
                    ok: true,
                }
            } else {
                Detection {
                    finding: format!("false alarm: {}", kinds(&current.raised)),
                    latency_seconds: None,
                    ok: false,
                }
            }),
        }
    }
}

fn kinds(raised: &[(FindingKind, Instant)]) -> String {
    raised
        .iter()
        .map(|(k, _)| k.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}
