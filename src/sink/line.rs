//! The event stream: every JSON line any command writes is one [`Line`], tagged by its
//! `type`. `tfwatch schema events` prints its JSON Schema; docs/events.md says how it
//! may change (additive changes only, as cargo's `--message-format json`).

use schemars::JsonSchema;
use serde::Serialize;

use crate::engine::{AlertLine, Event, ExitLine, FindingEvent, ResolvedLine, SampleLine};
use crate::model::jobs::JobLabels;
use crate::model::stacks::StacksReport;
use crate::model::{Finding, Severity};
use crate::sink::report::SnapshotReport;
use crate::sink::summary::Comparison;

/// One line of the event stream.
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum Line {
    /// Every interval: the tree's metrics and what is active.
    Sample(Labelled<SampleLine>),
    /// A detector raised or escalated a finding; again when stacks explain it.
    Finding(Labelled<FindingEvent>),
    /// A rule fired.
    Alert(Labelled<AlertLine>),
    /// A finding (`kind`, `key`) or an alert (`rule`) cleared.
    Resolved(Labelled<ResolvedLine>),
    /// The stacks taken on a hang, and the finding they explain (`attach`).
    Stacks(StacksLine),
    /// `run`: the report taken on a hang or a timeout.
    Diagnosis(DiagnosisLine),
    /// `--listen`: where the exporter serves.
    Listening { url: String },
    /// `run --json`: a note for people.
    Message { message: String },
    /// `node`: a job's first process appeared.
    JobStarted(JobChange),
    /// `node`: a job's last process ended.
    JobEnded(JobChange),
    /// `node`: a job's sample missed its interval (a `/proc` read of the job blocks):
    /// said when its first tick is skipped, and again when its sample comes back.
    JobLate(JobLate),
    /// `node`: the node's scan missed whole intervals (a fork burst, a loaded machine).
    NodeLate(NodeLate),
    /// `node`: a finding over the node's jobs together.
    NodeFinding(NodeFindingLine),
    /// `node`: a node finding cleared.
    NodeResolved(NodeFindingLine),
    /// `replay`: what the recording raised in all.
    Replayed(ReplayedLine),
    /// The last line: how the command ended.
    Exit(ExitEvent),
}

impl Line {
    /// The line of one of the watch's events, with no job labels.
    pub fn of(event: &Event) -> Line {
        Line::labelled(event, None)
    }

    /// The line of one of the watch's events; `node` gives the job's labels.
    pub fn labelled(event: &Event, job: Option<&JobLabels>) -> Line {
        let job = job.cloned();
        match event {
            Event::Sample(line) => Line::Sample(Labelled::new(job, line)),
            Event::Finding(line) => Line::Finding(Labelled::new(job, line)),
            Event::Alert(line) => Line::Alert(Labelled::new(job, line)),
            Event::Resolved(line) => Line::Resolved(Labelled::new(job, line)),
            Event::Exit(line) => Line::Exit(ExitEvent::of(line.clone())),
        }
    }

    /// The line as one JSON object and a line break.
    pub fn write_json(&self, out: &mut impl std::io::Write) -> std::io::Result<()> {
        serde_json::to_writer(&mut *out, self)?;
        out.write_all(b"\n")
    }
}

/// A line of a watch, with the job it is of under `node` (`job`, `pod`, `container`,
/// `namespace`).
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[schemars(rename = "Labelled{T}")]
pub struct Labelled<T> {
    #[serde(flatten)]
    pub job: Option<JobLabels>,
    #[serde(flatten)]
    pub line: T,
}

impl<T: Clone> Labelled<T> {
    fn new(job: Option<JobLabels>, line: &T) -> Self {
        Labelled {
            job,
            line: line.clone(),
        }
    }
}

/// The stacks of a hang and the finding they explain.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct StacksLine {
    pub time_unix_seconds: f64,
    /// The `key` of the finding explained.
    pub key: String,
    /// The finding as the stacks explain it.
    pub finding: Finding,
    pub stacks: StacksReport,
}

/// Why `run` diagnosed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
pub enum DiagnosisReason {
    #[serde(rename = "hang detected")]
    HangDetected,
    #[serde(rename = "timed out")]
    TimedOut,
}

impl DiagnosisReason {
    pub fn as_str(self) -> &'static str {
        match self {
            DiagnosisReason::HangDetected => "hang detected",
            DiagnosisReason::TimedOut => "timed out",
        }
    }
}

/// `run`'s diagnosis: the snapshot report's fields, after these.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct DiagnosisLine {
    pub reason: DiagnosisReason,
    pub pid: i32,
    pub command: Vec<String>,
    /// The report (absent when no sample was taken).
    #[serde(flatten)]
    pub report: Option<Box<SnapshotReport>>,
}

/// A job appearing or ending under `node`.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct JobChange {
    #[serde(flatten)]
    pub labels: JobLabels,
    pub elapsed_seconds: f64,
    pub pids: Vec<i32>,
    /// The job's ranks of distributed jobs, with their pids.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ranks: Vec<crate::engine::PidRank>,
}

/// A job whose sample is late under `node`: the ticks it missed, and how long it
/// has waited for its sample.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct JobLate {
    #[serde(flatten)]
    pub labels: JobLabels,
    pub elapsed_seconds: f64,
    /// Ticks the job has missed while its sample was out.
    pub skipped_ticks: u64,
    /// Seconds since its sample was due.
    pub late_seconds: f64,
    /// Whether its sample has come back (the job samples again from its next tick).
    pub resumed: bool,
}

/// The node's scan began late, past whole intervals.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct NodeLate {
    pub elapsed_seconds: f64,
    /// Intervals with no scan at all.
    pub skipped_ticks: u64,
    /// Seconds from the first tick missed to the scan.
    pub late_seconds: f64,
    /// How long the scan before took, seconds.
    pub scan_seconds: f64,
}

/// A node finding appearing or resolving.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct NodeFindingLine {
    pub elapsed_seconds: f64,
    #[serde(flatten)]
    pub finding: Finding,
}

/// What `replay` raised in all.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct ReplayedLine {
    /// The recording's path.
    pub timeline: String,
    pub samples: usize,
    pub span_seconds: f64,
    pub pid: i32,
    /// Every finding raised (the most severe version of each, the newest among equals).
    pub findings: Vec<Finding>,
    pub alerts: Vec<ReplayedAlert>,
}

/// An alert `replay` saw fire.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct ReplayedAlert {
    pub rule: String,
    pub severity: Severity,
    pub message: String,
}

/// The closing line of every command: how the watch ended, and what `run` and `node`
/// add.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct ExitEvent {
    #[serde(flatten)]
    pub watch: ExitLine,
    #[serde(flatten)]
    pub run: Option<RunExit>,
    #[serde(flatten)]
    pub node: Option<NodeExit>,
}

impl ExitEvent {
    /// The exit line of `attach` and `replay`.
    pub fn of(watch: ExitLine) -> ExitEvent {
        ExitEvent {
            watch,
            run: None,
            node: None,
        }
    }
}

/// What `run`'s exit line adds.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct RunExit {
    pub outcome: Outcome,
    /// The command's own exit code, or 128 + signal when a signal ended it.
    pub command_exit_code: Option<i32>,
    /// The comparison with `--baseline`, row by row.
    pub baseline: Option<Vec<Comparison>>,
}

/// What `node`'s exit line adds.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct NodeExit {
    pub jobs_seen: usize,
    /// Jobs seen while every slot was taken ([`crate::model::jobs::MAX_JOBS`]): counted,
    /// never sampled (a job once admitted keeps its slot until its last process ends).
    #[serde(default)]
    pub jobs_not_admitted: usize,
    /// Jobs that ended before they were announced (their processes lived less than an
    /// interval, or never gave a sample): counted, neither started nor ended.
    #[serde(default)]
    pub jobs_short_lived: usize,
    /// Ticks the node's scan missed in all, and ticks jobs missed waiting for their
    /// samples.
    #[serde(default)]
    pub skipped_ticks: u64,
    #[serde(default)]
    pub job_skipped_ticks: u64,
    /// CPU time tfwatch used over the watch, seconds (its own cost, for the record).
    pub cpu_seconds: f64,
}

/// How a run ended (`run`'s exit line and `--report`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// The command ended by itself with code 0 and no gate failed.
    Passed,
    /// The command exited with a code other than 0; no gate failed.
    CommandFailed,
    /// A signal ended the command; no gate failed.
    CommandKilled,
    RuleGateFailed,
    BaselineRegression,
    HangDetected,
    TimedOut,
    /// tfwatch was interrupted (SIGINT, SIGTERM, SIGHUP, SIGQUIT), passed it on, and the
    /// command ended.
    Interrupted,
    /// The command could not be started.
    NotStarted,
}

impl Outcome {
    /// The outcome as words for the closing line.
    pub fn describe(self) -> &'static str {
        match self {
            Outcome::Passed => "passed",
            Outcome::CommandFailed => "command failed",
            Outcome::CommandKilled => "command killed",
            Outcome::RuleGateFailed => "rule gate failed",
            Outcome::BaselineRegression => "baseline regression",
            Outcome::HangDetected => "hang detected",
            Outcome::TimedOut => "timed out",
            Outcome::Interrupted => "interrupted",
            Outcome::NotStarted => "not started",
        }
    }
}

/// The JSON Schema (draft 2020-12) of the event lines.
pub fn events_schema() -> schemars::Schema {
    schema_of::<Line>()
}

/// The JSON Schema (draft 2020-12) of what `T` serializes to: a field tfwatch leaves out
/// when empty (`skip_serializing_if`) is not required.
pub fn schema_of<T: JsonSchema>() -> schemars::Schema {
    schemars::generate::SchemaSettings::draft2020_12()
        .for_serialize()
        .into_generator()
        .into_root_schema_for::<T>()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exit(reason: crate::engine::Reason) -> ExitLine {
        ExitLine {
            time_unix_seconds: 1.0,
            elapsed_seconds: 2.0,
            pid: Some(7),
            reason,
            exit_code: None,
            message: "done".into(),
        }
    }

    #[test]
    fn every_exit_line_has_one_shape() {
        let attach = serde_json::to_value(Line::Exit(ExitEvent::of(exit(
            crate::engine::Reason::TargetExited,
        ))))
        .unwrap();
        assert_eq!(attach["type"], "exit");
        assert_eq!(attach["reason"], "target-exited");
        assert_eq!(attach["pid"], 7);
        assert!(attach.get("outcome").is_none(), "{attach}");
        let run = serde_json::to_value(Line::Exit(ExitEvent {
            run: Some(RunExit {
                outcome: Outcome::NotStarted,
                command_exit_code: None,
                baseline: None,
            }),
            ..ExitEvent::of(exit(crate::engine::Reason::NotStarted))
        }))
        .unwrap();
        assert_eq!(run["outcome"], "not-started");
        assert_eq!(run["reason"], "not-started");
        assert!(run["baseline"].is_null() && run.get("baseline").is_some());
    }

    #[test]
    fn node_lines_carry_the_job_first() {
        let labels = JobLabels {
            job: "tree/7-python".into(),
            ..JobLabels::default()
        };
        let line = Line::JobStarted(JobChange {
            labels,
            elapsed_seconds: 0.5,
            pids: vec![7],
            ranks: Vec::new(),
        });
        let text = serde_json::to_string(&line).unwrap();
        assert!(
            text.starts_with(r#"{"type":"job-started","job":"tree/7-python""#),
            "{text}"
        );
    }

    #[test]
    fn the_diagnosis_reason_reads_as_before() {
        let line = Line::Diagnosis(DiagnosisLine {
            reason: DiagnosisReason::TimedOut,
            pid: 7,
            command: vec!["sleep".into()],
            report: None,
        });
        let json = serde_json::to_value(line).unwrap();
        assert_eq!(json["reason"], "timed out");
        assert_eq!(json["type"], "diagnosis");
    }

    #[test]
    fn the_schema_is_draft_2020_12_and_names_every_type() {
        let schema = serde_json::to_string(&events_schema()).unwrap();
        assert!(schema.contains("https://json-schema.org/draft/2020-12/schema"));
        for tag in [
            "sample",
            "finding",
            "alert",
            "resolved",
            "stacks",
            "diagnosis",
            "listening",
            "message",
            "job-started",
            "job-ended",
            "node-finding",
            "node-resolved",
            "replayed",
            "exit",
        ] {
            assert!(schema.contains(&format!("\"{tag}\"")), "{tag}");
        }
    }
}
