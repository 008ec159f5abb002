//! The watch engine as the observer of `run-workload --verify`: it attaches to every
//! scenario run, samples it at the watch interval, and reports what the detectors found
//! and how long after the onset of the problem.
//!
//! The verify run uses scaled-down windows so it ends in minutes (documented in the
//! README): a 3 s hang window, memory judged against a 384 MiB budget as if the job ran
//! in a container with that limit, and the p99 latency rule at 2 s instead of 30 s.
//! Alerts from rules count as detections too: a fixed variant must raise neither
//! findings nor alerts of severity warning or above.

use std::time::{Duration, Instant};

use crate::detect::DetectConfig;
use crate::model::{FindingKind, Severity};
use crate::rules::RuleSet;
use crate::source::clock::SystemClock;
use crate::source::gpu::GpuSource;
use crate::source::proc::{SampleTime, Sampler, SamplerConfig};
use crate::verify::{Detection, RunInfo, RunOutcome, ScenarioObserver};
use crate::workload::Scenario;
use crate::workload::Variant;

use crate::collect::sources::{Scrapes, Sources};
use crate::engine::{Event, Watch};

/// Sampling interval of the verify watch.
pub const VERIFY_INTERVAL: Duration = Duration::from_secs(1);
/// Hang window of the verify watch.
pub const VERIFY_HANG_AFTER_SECONDS: f64 = 3.0;
/// Memory budget the verify watch judges RSS against.
pub const VERIFY_MEMORY_LIMIT_BYTES: u64 = 384 << 20;

/// Rules of the verify watch: the defaults, with the latency rule scaled down.
pub const VERIFY_RULES: &str = r#"
[[rule]]
name = "slow-requests"
metric = "latency_p99_seconds"
op = ">"
threshold = 2
severity = "warning"
message = "p99 latency {value} (verify threshold {threshold})"
remedy = "Bound the queue and shed load (reject or apply backpressure) so that latency stays bounded; add capacity if the load is real."
"#;

/// The rules that count as detecting each scenario's broken variant.
pub fn expected_alerts(scenario: Scenario) -> &'static [&'static str] {
    match scenario {
        Scenario::QueueOverload => &["queue-backlog", "slow-requests"],
        _ => &[],
    }
}

/// The verify rule set: defaults plus [`VERIFY_RULES`].
pub fn verify_rules() -> RuleSet {
    let mut rules = RuleSet::defaults();
    if let Ok(scaled) = RuleSet::parse(VERIFY_RULES, std::path::Path::new("verify rules")) {
        rules.merge(scaled);
    }
    rules
}

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
        Scenario::LockContention => &[FindingKind::LockContention],
        Scenario::Gil => &[FindingKind::GilContention],
        Scenario::EventLoop => &[FindingKind::EventLoopBlocked],
        Scenario::Healthy => &[],
        Scenario::IdlePool => &[FindingKind::NoProgress],
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

/// Something the watch raised: a finding kind or a rule.
#[derive(Debug, Clone, PartialEq)]
enum Raised {
    Finding(FindingKind),
    Alert(String),
}

impl Raised {
    fn name(&self) -> String {
        match self {
            Raised::Finding(kind) => kind.to_string(),
            Raised::Alert(rule) => format!("alert {rule}"),
        }
    }
}

struct Current {
    sampler: Sampler,
    sources: Sources,
    watch: Watch,
    started: Instant,
    /// The run's clock (zero when it started).
    clock: SystemClock,
    next_sample: Instant,
    /// First time each finding kind or rule was raised (severity warning or above).
    raised: Vec<(Raised, Instant)>,
}

/// Watches every scenario run with the real sampler, sources and detectors.
#[derive(Default)]
pub struct WatchObserver {
    current: Option<Current>,
    /// The GPU source, opened once and lent to each run.
    gpu: Option<Box<dyn GpuSource>>,
    /// Why the last run could not be watched, if it could not.
    pub problem: Option<String>,
}

impl WatchObserver {
    pub fn new() -> Self {
        WatchObserver {
            gpu: Some(crate::source::gpu::open_gpu_source()),
            ..WatchObserver::default()
        }
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
        let at = SampleTime::on(&current.clock, lateness);
        let Ok(mut sample) = current.sampler.sample(at) else {
            return;
        };
        current.sources.fill(&mut sample);
        for event in current.watch.observe(sample) {
            let raised = match event {
                Event::Finding(f) if f.finding.severity >= Severity::Warning => {
                    Raised::Finding(f.finding.kind)
                }
                Event::Alert(a) if a.alert.severity >= Severity::Warning => {
                    Raised::Alert(a.alert.rule)
                }
                _ => continue,
            };
            if !current.raised.iter().any(|(r, _)| *r == raised) {
                current.raised.push((raised, now));
            }
        }
    }
}

impl WatchObserver {
    /// Starts watching `pid` (the start of every run); `problem` says why it could not.
    pub fn begin(&mut self, pid: i32) {
        self.begin_with(pid, verify_detect_config());
    }

    /// [`WatchObserver::begin`] with other detector settings.
    pub fn begin_with(&mut self, pid: i32, detect: DetectConfig) {
        self.problem = None;
        let config = SamplerConfig {
            details_every: 1,
            ..SamplerConfig::default()
        };
        self.current = match Sampler::new(pid, config) {
            Ok(sampler) => {
                let now = Instant::now();
                let rules = verify_rules();
                let sources = Sources {
                    gpu: self.gpu.take(),
                    scrapes: Scrapes::new(
                        Vec::new(),
                        Duration::from_millis(500),
                        rules.metrics_mapping(),
                    ),
                    waits: Some(crate::collect::waits::WaitProber::new(
                        "/proc",
                        crate::collect::waits::WaitProber::probe_after(detect.hang_after_seconds),
                        crate::collect::waits::StackBudget::JOB,
                    )),
                    gil: Some(crate::collect::gil::GilProber::standard()),
                };
                Some(Current {
                    sampler,
                    sources,
                    watch: Watch::new(detect, rules),
                    started: now,
                    clock: SystemClock::new(),
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

    /// Takes a sample when one is due (call about every 100 ms).
    pub fn tick(&mut self, now: Instant) {
        self.sample(now);
    }

    /// What the watch raised so far (severity warning or above): the finding kind
    /// (`None` for an alert), its name and when it was first raised.
    pub fn raised(&self) -> Vec<(Option<FindingKind>, String, Instant)> {
        self.current
            .as_ref()
            .map(|c| {
                c.raised
                    .iter()
                    .map(|(r, at)| {
                        let kind = match r {
                            Raised::Finding(kind) => Some(*kind),
                            Raised::Alert(_) => None,
                        };
                        (kind, r.name(), *at)
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Ends the watch of the current run, keeping the GPU source for the next.
    pub fn end(&mut self) {
        if let Some(mut current) = self.current.take() {
            self.gpu = current.sources.gpu.take();
        }
    }
}

impl ScenarioObserver for WatchObserver {
    fn started(&mut self, run: &RunInfo) {
        self.begin(run.pid);
    }

    fn poll(&mut self, run: &RunInfo, now: Instant) {
        if let (Some(current), Some(url)) = (self.current.as_mut(), run.metrics_url.as_ref())
            && current.sources.scrapes.is_empty()
        {
            current.sources.scrapes = Scrapes::new(
                vec![url.clone()],
                Duration::from_millis(500),
                current.watch.rules_mapping(),
            );
        }
        self.sample(now);
    }

    fn finished(&mut self, run: &RunInfo, _outcome: &RunOutcome) -> Option<Detection> {
        let current = self.current.take();
        let Some(mut current) = current else {
            return Some(Detection {
                finding: format!(
                    "not watched: {}",
                    self.problem.take().unwrap_or_else(|| "no sampler".into())
                ),
                latency_seconds: None,
                ok: false,
            });
        };
        self.gpu = current.sources.gpu.take();
        let findings = expected_findings(run.scenario);
        let alerts = expected_alerts(run.scenario);
        let expected = |raised: &Raised| match raised {
            Raised::Finding(kind) => findings.contains(kind),
            Raised::Alert(rule) => alerts.contains(&rule.as_str()),
        };
        let onset = run.onset.unwrap_or(current.started);
        match run.variant {
            Variant::Broken => {
                // The most telling finding raised (the order of `expected`), not the first.
                let hit = findings
                    .iter()
                    .find_map(|k| {
                        current
                            .raised
                            .iter()
                            .find(|(raised, _)| *raised == Raised::Finding(*k))
                    })
                    .or_else(|| current.raised.iter().find(|(raised, _)| expected(raised)));
                Some(match hit {
                    Some((raised, at)) => Detection {
                        finding: raised.name(),
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

fn kinds(raised: &[(Raised, Instant)]) -> String {
    raised
        .iter()
        .map(|(r, _)| r.name())
        .collect::<Vec<_>>()
        .join(", ")
}
