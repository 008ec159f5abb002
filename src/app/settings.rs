//! Settings before work: every command's parsed arguments are checked once here and
//! turned into the settings the lower layers take. Nothing below the command layer sees
//! a clap type.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::cli::{
    AttachArgs, FailOn, Format, ListenArgs, MinSeverity, ReplayArgs, RunArgs, SnapshotArgs,
    SourceArgs, WatchSourceArgs,
};
use crate::collect::sources::ScrapeSettings;
use crate::detect::DetectConfig;
use crate::model::{PidNamespace, Severity};
use crate::rules::RuleSet;
use crate::sink::summary::{self, RunSummary};
use crate::source::proc::SamplerConfig;

/// What a watch (`attach`, `run`) samples and judges.
pub struct WatchSettings {
    pub interval: Duration,
    pub detect: DetectConfig,
    pub rules: RuleSet,
    pub scrape: ScrapeSettings,
    pub gpu: bool,
    /// `--listen`: where to serve the Prometheus endpoint.
    pub listen: Option<SocketAddr>,
}

/// How `attach` shows what it sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttachOutput {
    /// The live dashboard (a person at a terminal).
    Dashboard,
    /// JSON lines on stdout.
    Json,
    /// Nothing on stdout (`--no-tui` without `--json`).
    Quiet,
}

pub struct AttachSettings {
    pub pid: i32,
    pub sampler: SamplerConfig,
    pub watch: WatchSettings,
    pub output: AttachOutput,
    pub record: Option<PathBuf>,
    pub duration: Option<Duration>,
    /// Take stacks when a hang is found (`--no-stacks` turns it off).
    pub stacks: bool,
}

pub struct RunSettings {
    pub command: Vec<String>,
    pub watch: WatchSettings,
    pub timeout: Option<Duration>,
    pub kill_on_hang: bool,
    /// `--leave-orphans`: what the command left running when it exited is left running.
    pub leave_orphans: bool,
    /// Take stacks for the diagnosis of a hang (`--no-stacks` turns it off).
    pub stacks: bool,
    pub grace: Duration,
    /// The gate fails on a finding or alert at or above this; `None`: never.
    pub fail_at: Option<Severity>,
    /// The least severity of a finding or alert written on stderr (`--min-severity`).
    pub min_severity: Severity,
    pub json: bool,
    pub report: Option<PathBuf>,
    pub junit: Option<PathBuf>,
    pub summary: Option<PathBuf>,
    /// `--html`: the page with charts.
    pub html: Option<PathBuf>,
    /// The stored summary and the allowed increase of each figure.
    pub baseline: Option<(RunSummary, std::collections::BTreeMap<String, f64>)>,
}

pub struct SnapshotSettings {
    pub pid: i32,
    pub sampler: SamplerConfig,
    pub format: Format,
    pub window: Duration,
    pub stacks: bool,
    pub all_threads: bool,
    pub gpu: bool,
    /// `--html`: the page with charts.
    pub html: Option<PathBuf>,
}

/// What `replay` reads and how it judges.
pub struct ReplaySettings {
    pub timeline: PathBuf,
    pub detect: DetectConfig,
    pub rules: RuleSet,
    pub json: bool,
    pub html: Option<PathBuf>,
}

/// The sampler settings the command-line source options ask for; `include_children`
/// is false for `--no-children` (`snapshot`, `attach`).
pub fn sampler_config(source: &SourceArgs, include_children: bool) -> SamplerConfig {
    SamplerConfig {
        proc_root: source.proc_root.clone(),
        cgroup_root: source.cgroup_root.clone(),
        include_children,
        ..SamplerConfig::default()
    }
}

/// How long a large tree's process that does not move stays known by its `stat` alone:
/// half the hang window (at most 30 s), so its threads are read, and a hang judged of
/// them, before the window ends.
pub fn read_still_after_seconds(hang_after_seconds: f64) -> f64 {
    (hang_after_seconds / 2.0).min(30.0)
}

/// tfwatch's own pid namespace, read from the proc root it watches.
pub fn pid_namespace(proc_root: &std::path::Path) -> PidNamespace {
    crate::source::gpu::read_pid_namespace_in(proc_root)
}

/// A command-line argument that cannot be used: `main` maps it to exit code 2
/// ([`crate::app::exit::USAGE`]), apart from tfwatch's own failures (125).
#[derive(Debug)]
pub struct UsageError(pub anyhow::Error);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:#}", self.0)
    }
}

impl std::error::Error for UsageError {}

/// Whether `err` is (or wraps) a [`UsageError`].
pub fn is_usage(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| cause.is::<UsageError>())
}

/// The shortest `--interval`: a shorter one burns a core on sampling.
pub const MIN_INTERVAL: Duration = Duration::from_millis(10);
/// The longest `--interval`.
pub const MAX_INTERVAL: Duration = Duration::from_secs(3600);
/// The longest `--duration`, `--timeout`, `--hang-after` and `--grace`: 30 days.
pub const MAX_DURATION: Duration = Duration::from_secs(30 * 24 * 3600);

fn check_interval(interval: Duration) -> Result<Duration> {
    if interval < MIN_INTERVAL {
        bail!(
            "--interval {} is too short: at least 10ms (a shorter one burns a core on sampling)",
            humantime::format_duration(interval)
        );
    }
    if interval > MAX_INTERVAL {
        bail!(
            "--interval {} is too long: at most 1h",
            humantime::format_duration(interval)
        );
    }
    Ok(interval)
}

/// The smallest `--memory-limit`: 1 MiB (no process runs in less).
pub const MIN_MEMORY_LIMIT: u64 = 1 << 20;
/// The largest `--memory-limit`: 1 PiB (more than any machine holds).
pub const MAX_MEMORY_LIMIT: u64 = 1 << 50;

/// `--memory-limit SIZE`, checked.
fn memory_limit(written: Option<&str>) -> Result<Option<u64>> {
    let Some(written) = written else {
        return Ok(None);
    };
    let bytes =
        crate::units::parse_size(written).map_err(|e| anyhow::anyhow!("--memory-limit: {e}"))?;
    check_memory_limit(bytes).map(Some)
}

fn check_memory_limit(bytes: u64) -> Result<u64> {
    if bytes < MIN_MEMORY_LIMIT {
        bail!("--memory-limit {bytes} bytes is too small: at least 1MiB");
    }
    if bytes > MAX_MEMORY_LIMIT {
        bail!("--memory-limit {bytes} bytes is too large: at most 1PiB");
    }
    Ok(bytes)
}

/// Refuses a duration over [`MAX_DURATION`] (30 days), so no deadline overflows.
pub fn check_duration(flag: &str, duration: Duration) -> Result<Duration> {
    if duration > MAX_DURATION {
        bail!(
            "{flag} {} is too long: at most 30 days",
            humantime::format_duration(duration)
        );
    }
    Ok(duration)
}

fn scrape(args: &WatchSourceArgs, rules: &RuleSet) -> Result<ScrapeSettings> {
    for url in &args.metrics_urls {
        crate::source::scrape::validate_url_pattern(url)
            .map_err(|e| anyhow::anyhow!("--metrics-url {url:?}: {e}"))?;
    }
    if args.metrics_timeout.is_zero() {
        bail!("--metrics-timeout must be greater than 0");
    }
    Ok(ScrapeSettings {
        urls: args.metrics_urls.clone(),
        timeout: args.metrics_timeout,
        mapping: rules.metrics_mapping(),
    })
}

fn listen(args: &ListenArgs) -> Result<Option<SocketAddr>> {
    args.listen
        .as_deref()
        .map(|written| crate::sink::export::listen_address(written, args.allow_remote))
        .transpose()
        .map_err(anyhow::Error::from)
}

#[allow(clippy::too_many_arguments)]
pub(super) fn watch(
    interval: Duration,
    hang_after: Duration,
    rules: &[PathBuf],
    sources: &WatchSourceArgs,
    listen_args: &ListenArgs,
    memory_limit: Option<u64>,
    proc_root: &std::path::Path,
) -> Result<WatchSettings> {
    check_duration("--hang-after", hang_after)?;
    check_duration("--loop-block", sources.loop_block)?;
    let rules = super::rules::load(rules)?;
    let scrape = scrape(sources, &rules)?;
    Ok(WatchSettings {
        interval: check_interval(interval)?,
        detect: DetectConfig {
            hang_after_seconds: hang_after.as_secs_f64(),
            pid_namespace: pid_namespace(proc_root),
            memory_limit_override: memory_limit,
            event_loop_block_seconds: sources.loop_block.as_secs_f64(),
            ..DetectConfig::default()
        },
        scrape,
        gpu: !sources.no_gpu,
        listen: listen(listen_args)?,
        rules,
    })
}

impl AttachSettings {
    /// `stdout_is_terminal`: whether a person watches (the dashboard), else JSON lines.
    pub fn from_args(
        args: &AttachArgs,
        stdout_is_terminal: bool,
    ) -> std::result::Result<Self, UsageError> {
        Self::check(args, stdout_is_terminal).map_err(UsageError)
    }

    fn check(args: &AttachArgs, stdout_is_terminal: bool) -> Result<Self> {
        if let Some(duration) = args.duration {
            check_duration("--duration", duration)?;
        }
        let sampler = SamplerConfig {
            read_still_after_seconds: read_still_after_seconds(args.hang_after.as_secs_f64()),
            ..sampler_config(&args.source, !args.no_children)
        };
        let watch = watch(
            args.interval,
            args.hang_after,
            &args.rules,
            &args.sources,
            &args.listen,
            None,
            &sampler.proc_root,
        )?;
        let output = if args.no_tui && !args.json {
            AttachOutput::Quiet
        } else if args.json || !stdout_is_terminal {
            AttachOutput::Json
        } else {
            AttachOutput::Dashboard
        };
        Ok(AttachSettings {
            pid: args.pid,
            sampler,
            watch,
            output,
            record: args.record.clone(),
            stacks: !args.no_stacks,
            duration: args.duration,
        })
    }
}

impl RunSettings {
    pub fn from_args(args: &RunArgs) -> std::result::Result<Self, UsageError> {
        Self::check(args).map_err(UsageError)
    }

    fn check(args: &RunArgs) -> Result<Self> {
        if let Some(timeout) = args.timeout {
            check_duration("--timeout", timeout)?;
        }
        check_duration("--grace", args.grace)?;
        let memory_limit = memory_limit(args.memory_limit.as_deref())?;
        let watch = watch(
            args.interval,
            args.hang_after,
            &args.rules,
            &args.sources,
            &args.listen,
            memory_limit,
            std::path::Path::new("/proc"),
        )?;
        let baseline = match &args.baseline {
            Some(path) => {
                let limits = summary::parse_max_increase(
                    args.max_increase
                        .as_deref()
                        .unwrap_or(summary::DEFAULT_MAX_INCREASE),
                )
                .map_err(anyhow::Error::msg)?;
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read the baseline {}", path.display()))?;
                let stored: RunSummary = serde_json::from_str(&text).with_context(|| {
                    format!(
                        "the baseline {} is not a tfwatch run summary (write one with --summary)",
                        path.display()
                    )
                })?;
                Some((stored, limits))
            }
            None => None,
        };
        Ok(RunSettings {
            command: args.command.clone(),
            watch,
            timeout: args.timeout,
            kill_on_hang: !args.no_kill_on_hang,
            leave_orphans: args.leave_orphans,
            stacks: !args.no_stacks,
            grace: args.grace,
            min_severity: match args.min_severity {
                MinSeverity::Info => Severity::Info,
                MinSeverity::Warning => Severity::Warning,
                MinSeverity::Error => Severity::Error,
            },
            fail_at: match args.fail_on {
                FailOn::Warning => Some(Severity::Warning),
                FailOn::Error => Some(Severity::Error),
                FailOn::Never => None,
            },
            json: args.json,
            report: args.report.clone(),
            junit: args.junit.clone(),
            summary: args.summary.clone(),
            html: args.html.clone(),
            baseline,
        })
    }
}

impl SnapshotSettings {
    pub fn from_args(args: &SnapshotArgs) -> Self {
        SnapshotSettings {
            pid: args.pid,
            sampler: sampler_config(&args.source, !args.no_children),
            format: args.format,
            window: args.window,
            stacks: args.stacks,
            all_threads: args.all_threads,
            gpu: !args.no_gpu,
            html: args.html.clone(),
        }
    }
}

impl ReplaySettings {
    pub fn from_args(args: &ReplayArgs) -> std::result::Result<Self, UsageError> {
        Self::check(args).map_err(UsageError)
    }

    fn check(args: &ReplayArgs) -> Result<Self> {
        check_duration("--hang-after", args.hang_after)?;
        Ok(ReplaySettings {
            timeline: args.timeline.clone(),
            detect: DetectConfig {
                hang_after_seconds: args.hang_after.as_secs_f64(),
                memory_limit_override: memory_limit(args.memory_limit.as_deref())?,
                ..DetectConfig::default()
            },
            rules: super::rules::load(&args.rules)?,
            json: args.json,
            html: args.html.clone(),
        })
    }
}
