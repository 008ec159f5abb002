//! Command-line interface: clap derive types, checked into settings by each command;
//! [`manual`] renders them as `--help` extras, shell completions and man pages.

pub mod manual;

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Deadlock and oversubscription diagnostics for machine-learning processes.
#[derive(Debug, Parser)]
#[command(name = "tfwatch", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// One-shot triage report of a process and its descendants.
    Snapshot(SnapshotArgs),
    /// Watch a process tree live (JSON lines when stdout is not a terminal or with --json).
    Attach(AttachArgs),
    /// Watch every job of the machine: processes grouped by cgroup (pod, container,
    /// unit) or process tree, each job judged on its own and the node as a whole.
    Node(NodeArgs),
    /// Run a command under watch: CI regression gate and hang watchdog.
    Run(RunArgs),
    /// Built-in reference workload that reproduces each problem and its fix.
    RunWorkload(WorkloadArgs),
    /// Run the detectors and rules over a recorded timeline (`attach --record`) and print
    /// the findings.
    Replay(ReplayArgs),
    /// Ranks of distributed jobs across nodes, read from Prometheus (which scrapes
    /// `tfwatch node --listen` on every node): where each rank is and the cross-rank
    /// verdict.
    Ranks(RanksArgs),
    /// Check or export alert rule files.
    #[command(subcommand)]
    Rules(RulesCommand),
    /// Print a shell completion script on stdout.
    Completions(CompletionsArgs),
    /// Print the manual page (roff) on stdout, or write one page per command to --dir.
    Manpage(ManpageArgs),
    /// Print the JSON Schema (draft 2020-12) of the event lines or of the JSON reports.
    Schema(SchemaArgs),
    /// List the metrics rules can compare and `--listen` exports, with their units.
    Metrics(MetricsArgs),
}

/// `tfwatch metrics`.
#[derive(Debug, Clone, Args)]
pub struct MetricsArgs {
    /// One JSON array of {name, unit, help} instead of the table.
    #[arg(long)]
    pub json: bool,
}

/// `tfwatch ranks`.
#[derive(Debug, Clone, Args)]
pub struct RanksArgs {
    /// The Prometheus server to query (`http://HOST:PORT`), which scrapes `tfwatch node
    /// --listen` on the nodes of the job.
    #[arg(long, value_name = "URL")]
    pub prometheus: String,
    /// Only the distributed job with this identity (its `distributed_job` label, e.g.
    /// `10.0.0.1:29500`).
    #[arg(long, value_name = "ID")]
    pub job: Option<String>,
    /// One JSON document on stdout instead of text.
    #[arg(long)]
    pub json: bool,
    /// How long each query of Prometheus may take.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration_arg)]
    pub timeout: std::time::Duration,
}

/// `tfwatch schema`.
#[derive(Debug, Clone, Args)]
pub struct SchemaArgs {
    /// Which schema: `events` (the lines of `--json`), `report` (`snapshot --format json`,
    /// `run --report` and `ranks --json`).
    #[arg(value_enum, value_name = "WHAT")]
    pub what: SchemaWhat,
}

/// What `tfwatch schema` describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SchemaWhat {
    // Every JSON line of `attach`, `run`, `node` and `replay`. (Plain comments: a value
    // with help of its own would switch `--help` to the long layout.)
    Events,
    // The documents of `snapshot --format json`, `run --report` and `ranks --json`.
    Report,
}

/// `tfwatch completions`.
#[derive(Debug, Clone, Args)]
pub struct CompletionsArgs {
    /// Shell to complete for (e.g. `tfwatch completions bash > /etc/bash_completion.d/tfwatch`).
    #[arg(value_enum, value_name = "SHELL")]
    pub shell: CompletionShell,
}

/// The shells `tfwatch completions` writes for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CompletionShell {
    Bash,
    Zsh,
    Fish,
}

/// `tfwatch manpage`.
#[derive(Debug, Clone, Args)]
pub struct ManpageArgs {
    /// Write tfwatch.1 and a page per subcommand (tfwatch-run.1, …) into DIR instead.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

/// Where tfwatch reads the system from; hidden options for tests and recorded trees.
#[derive(Debug, Clone, Args)]
pub struct SourceArgs {
    /// Read /proc from this directory instead (a recorded tree under fixtures/).
    #[arg(long, value_name = "DIR", default_value = "/proc", hide = true)]
    pub proc_root: PathBuf,
    /// Read cgroup files from this directory instead of /sys/fs/cgroup.
    #[arg(
        long,
        value_name = "DIR",
        default_value = "/sys/fs/cgroup",
        hide = true
    )]
    pub cgroup_root: PathBuf,
}

/// Optional sources read beside each sample: the application's metrics and the GPUs.
#[derive(Debug, Clone, Args)]
pub struct WatchSourceArgs {
    /// The application's Prometheus metrics endpoint, scraped each interval (repeatable;
    /// `{pid}` in the URL is replaced by the pid of each process of the tree).
    #[arg(long = "metrics-url", value_name = "URL")]
    pub metrics_urls: Vec<String>,
    /// How long one scrape may take.
    #[arg(long, value_name = "DURATION", default_value = "500ms", value_parser = parse_duration_arg)]
    pub metrics_timeout: std::time::Duration,
    /// Do not read the GPUs through NVML.
    #[arg(long)]
    pub no_gpu: bool,
    /// An event loop (a thread seen in epoll_wait) that stays away from its poll this
    /// long at a time is blocked (asyncio's slow_callback_duration).
    #[arg(long, value_name = "DURATION", default_value = "100ms", value_parser = parse_duration_arg)]
    pub loop_block: std::time::Duration,
}

/// The Prometheus endpoint of `attach`, `run` and `node`.
#[derive(Debug, Clone, Default, Args)]
pub struct ListenArgs {
    /// Serve Prometheus metrics at http://ADDR/metrics (e.g. 127.0.0.1:9464 or :9464; port
    /// 0 picks a free port, printed on stderr). Loopback only unless --allow-remote.
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,
    /// Allow a --listen address that is not loopback (e.g. 0.0.0.0:9464 in a pod); the
    /// endpoint is read-only and serves only /metrics.
    #[arg(long, requires = "listen")]
    pub allow_remote: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum Format {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Args)]
pub struct SnapshotArgs {
    /// Process to diagnose (its descendants are included).
    pub pid: i32,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
    /// Time between the two samples the report compares (rates, progress); 0 takes one.
    #[arg(long, value_name = "DURATION", default_value = "500ms", value_parser = parse_duration_arg)]
    pub window: std::time::Duration,
    /// Add native (and Python, where possible) stacks of every thread.
    #[arg(long)]
    pub stacks: bool,
    /// List every thread, not only the groups and the notable threads.
    #[arg(long)]
    pub all_threads: bool,
    /// Do not read the GPUs through NVML.
    #[arg(long)]
    pub no_gpu: bool,
    /// Also write the report as a self-contained HTML page with charts to FILE.
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,
    /// Diagnose only the named process, not its descendants.
    #[arg(long)]
    pub no_children: bool,
    #[command(flatten)]
    pub source: SourceArgs,
}

#[derive(Debug, Args)]
pub struct AttachArgs {
    /// Process to watch (its descendants are included).
    pub pid: i32,
    /// Time between samples.
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = parse_duration_arg)]
    pub interval: std::time::Duration,
    /// Report a hang after this long without progress.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_duration_arg)]
    pub hang_after: std::time::Duration,
    /// Rule files (TOML); later files override rules of the same name.
    #[arg(long = "rules", value_name = "FILE")]
    pub rules: Vec<PathBuf>,
    /// Stream JSON lines instead of the dashboard.
    #[arg(long)]
    pub json: bool,
    /// Headless: no dashboard and nothing on stdout unless --json (with --listen it just
    /// serves the metrics).
    #[arg(long)]
    pub no_tui: bool,
    /// Also write every full sample to FILE as JSON lines (a recorded timeline).
    #[arg(long, value_name = "FILE")]
    pub record: Option<PathBuf>,
    /// Stop after this long.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration_arg)]
    pub duration: Option<std::time::Duration>,
    /// Do not take stacks when a hang is found (they pause each process briefly; the
    /// pause is reported).
    #[arg(long)]
    pub no_stacks: bool,
    #[command(flatten)]
    pub sources: WatchSourceArgs,
    #[command(flatten)]
    pub listen: ListenArgs,
    /// Watch only the named process, not its descendants.
    #[arg(long)]
    pub no_children: bool,
    #[command(flatten)]
    pub source: SourceArgs,
}

#[derive(Debug, Args)]
pub struct NodeArgs {
    /// Time between samples.
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = parse_duration_arg)]
    pub interval: std::time::Duration,
    /// Report a hang after this long without progress.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_duration_arg)]
    pub hang_after: std::time::Duration,
    /// Rule files (TOML); later files override rules of the same name.
    #[arg(long = "rules", value_name = "FILE")]
    pub rules: Vec<PathBuf>,
    /// JSON lines (the default when stdout is not a terminal; on a terminal the node
    /// dashboard is shown).
    #[arg(long)]
    pub json: bool,
    /// Text lines on a terminal instead of the node dashboard.
    #[arg(long, conflicts_with = "json")]
    pub no_tui: bool,
    /// Stop after this long.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration_arg)]
    pub duration: Option<std::time::Duration>,
    /// Only processes whose command line matches this regular expression.
    #[arg(long = "match", value_name = "REGEX")]
    pub pattern: Option<String>,
    /// Only processes whose cgroup path starts with PATH (as in /proc/PID/cgroup).
    #[arg(long, value_name = "PATH")]
    pub cgroup: Option<String>,
    /// Only processes of this user (a name from /etc/passwd, or a uid).
    #[arg(long, value_name = "NAME")]
    pub user: Option<String>,
    #[command(flatten)]
    pub listen: ListenArgs,
    #[command(flatten)]
    pub source: SourceArgs,
}

/// Values of `run --fail-on` (`never`: the gate never fails on findings or alerts).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FailOn {
    Warning,
    Error,
    Never,
}

/// Values of `run --min-severity`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum MinSeverity {
    Info,
    Warning,
    Error,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Time between samples.
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = parse_duration_arg)]
    pub interval: std::time::Duration,
    /// Call it a hang after this long without progress.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_duration_arg)]
    pub hang_after: std::time::Duration,
    /// End the command after this long (exit 124, as coreutils `timeout`).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration_arg)]
    pub timeout: Option<std::time::Duration>,
    /// Leave a hung command running instead of ending it (the diagnosis is still written).
    #[arg(long)]
    pub no_kill_on_hang: bool,
    /// Do not take stacks for the diagnosis of a hang (they pause each process briefly;
    /// the pause is reported).
    #[arg(long)]
    pub no_stacks: bool,
    /// Time between SIGTERM and SIGKILL when ending the command.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = parse_duration_arg)]
    pub grace: std::time::Duration,
    /// Leave running what the command left behind when it exited (processes it started
    /// and did not wait for, daemons); by default they are named and ended.
    #[arg(long)]
    pub leave_orphans: bool,
    /// Rule files (TOML); later files override rules of the same name.
    #[arg(long = "rules", value_name = "FILE")]
    pub rules: Vec<PathBuf>,
    /// Fail the run (exit 120) when a finding or alert of this severity or worse fired;
    /// `never`: findings and alerts never fail it.
    #[arg(long, value_enum, value_name = "SEVERITY", default_value_t = FailOn::Error)]
    pub fail_on: FailOn,
    /// Leave the findings and alerts below this severity out of stderr (`warning` hides
    /// the info findings of a passing run); the closing line counts them, and the
    /// reports (--report, --junit, --html) keep them all.
    #[arg(long, value_enum, value_name = "SEVERITY", default_value_t = MinSeverity::Info)]
    pub min_severity: MinSeverity,
    /// Print events as JSON lines on stderr (all of them, samples included).
    #[arg(long)]
    pub json: bool,
    /// Write the JSON report (outcome, summary, findings, alerts, diagnosis) here.
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,
    /// Write a JUnit XML report here (one test case per rule and detector).
    #[arg(long, value_name = "FILE")]
    pub junit: Option<PathBuf>,
    /// Write a self-contained HTML page here: charts over the run with the findings and
    /// alerts marked, then the diagnosis.
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,
    /// Write the run summary (peaks and rates) here, to serve as a baseline later.
    #[arg(long, value_name = "FILE")]
    pub summary: Option<PathBuf>,
    /// Compare the run summary with this stored one.
    #[arg(long, value_name = "FILE")]
    pub baseline: Option<PathBuf>,
    /// Allowed increases over the baseline, e.g. `threads=10%,rss=20%`.
    #[arg(long, value_name = "LIST", requires = "baseline")]
    pub max_increase: Option<String>,
    /// Judge memory against this many bytes (e.g. 512MiB) instead of the cgroup limit or MemTotal.
    #[arg(long, value_name = "SIZE")]
    pub memory_limit: Option<String>,
    #[command(flatten)]
    pub sources: WatchSourceArgs,
    #[command(flatten)]
    pub listen: ListenArgs,
    /// The command to run, after `--`.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
    pub command: Vec<String>,
}

/// `tfwatch replay`.
#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// The recorded timeline: one sample per line, as `attach --record FILE` writes it.
    #[arg(value_name = "TIMELINE")]
    pub timeline: PathBuf,
    /// Call it a hang after this long without progress (on the recording's clock).
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_duration_arg)]
    pub hang_after: std::time::Duration,
    /// Rule files (TOML); later files override rules of the same name.
    #[arg(long = "rules", value_name = "FILE")]
    pub rules: Vec<PathBuf>,
    /// Judge memory against this many bytes (e.g. 512MiB) instead of the recorded limit.
    #[arg(long, value_name = "SIZE")]
    pub memory_limit: Option<String>,
    /// Print JSON lines (findings, alerts, resolutions, then a `replayed` summary).
    #[arg(long)]
    pub json: bool,
    /// Also write a self-contained HTML page with charts of the recording to FILE.
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum RulesCommand {
    /// Validate rule files; a bad file is refused with file, line and reason.
    Check {
        /// Rule files (TOML), each checked on its own; exit 2 when any is bad.
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
    },
    /// Print rule files (the built-in defaults without FILE) as alerting rules for another
    /// system: `--format prometheus` writes a Prometheus rules file over the series of
    /// `--listen`.
    Export {
        /// Format to write (`prometheus`: a Prometheus alerting-rules file, YAML).
        #[arg(long, value_enum, default_value_t = RulesFormat::Prometheus)]
        format: RulesFormat,
        /// Rule files (TOML), merged in order; none: the built-in defaults.
        #[arg(value_name = "FILE")]
        files: Vec<PathBuf>,
    },
}

/// Formats of `tfwatch rules export`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RulesFormat {
    // A Prometheus alerting-rules file (YAML).
    Prometheus,
}

/// `tfwatch run-workload`.
#[derive(Debug, Clone, Args)]
pub struct WorkloadArgs {
    /// Scenario to run: deadlock, fork-lock, oversubscribe, thread-explosion,
    /// gpu-contention, queue-overload, memory-growth, lock-contention, event-loop, gil,
    /// healthy, idle-pool.
    #[arg(
        long,
        value_name = "NAME",
        value_parser = crate::workload::parse_scenario,
        required_unless_present_any = ["verify", "list"]
    )]
    pub scenario: Option<crate::workload::Scenario>,
    /// Run the fixed variant instead of the broken one.
    #[arg(long)]
    pub fixed: bool,
    /// How long the scenario runs before it ends by itself (hung or not).
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration_arg)]
    pub duration: Duration,
    /// Threads: tasks for thread-explosion (default 300); team size of each broken
    /// oversubscribe process (default: all online CPUs; the fixed variant uses usable
    /// CPUs / processes); request threads of broken lock-contention (default 8).
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
    /// Processes: oversubscribe workers (default 2 × usable CPUs), gpu-contention ranks
    /// (default 2).
    #[arg(long, value_name = "P")]
    pub procs: Option<usize>,
    /// Port of the Prometheus metrics endpoint on 127.0.0.1 (0 picks a free one).
    #[arg(long, value_name = "PORT", default_value_t = 0)]
    pub metrics_port: u16,
    /// memory-growth: the most resident memory the broken variant grows to, in MiB.
    #[arg(long, value_name = "MiB", default_value_t = 512)]
    pub cap: u64,
    /// memory-growth: allocation rate in MiB/s.
    #[arg(long, value_name = "MiB/s", default_value_t = 64)]
    pub rate: u64,
    /// memory-growth --fixed: size of the bounded cache in MiB.
    #[arg(long, value_name = "MiB", default_value_t = 64)]
    pub cache: u64,
    /// deadlock: number of threads (and mutexes) in the lock cycle.
    #[arg(long, value_name = "N", default_value_t = 2)]
    pub cycle: usize,
    /// queue-overload: service time of one batch, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 20)]
    pub service_ms: u64,
    /// queue-overload: requests per second offered (default: 3 × what the server serves).
    #[arg(long, value_name = "PER_SECOND")]
    pub request_rate: Option<u64>,
    /// queue-overload --fixed: queue bound; requests beyond it are rejected.
    #[arg(long, value_name = "N", default_value_t = 1000)]
    pub queue_cap: usize,
    /// oversubscribe: total work units (matrix multiplies) shared by all processes.
    #[arg(long, value_name = "N")]
    pub units: Option<u64>,
    /// Run every scenario (or only --scenario), broken then fixed, as child processes and
    /// print a table of what was measured; exit 0 only if every fix works.
    #[arg(long, conflicts_with = "list")]
    pub verify: bool,
    /// With --verify: leave out the real-framework scenarios (TensorFlow, torch), which
    /// otherwise run wherever python3 can import the framework.
    #[arg(long, requires = "verify")]
    pub skip_frameworks: bool,
    /// With --verify: the Python interpreter of the real-framework scenarios (a
    /// virtualenv's `bin/python3`, a system `/usr/bin/python3`); default: `python3` from
    /// PATH. The table says which interpreter and version ran them.
    #[arg(
        long,
        value_name = "PATH",
        requires = "verify",
        conflicts_with = "skip_frameworks"
    )]
    pub python: Option<PathBuf>,
    /// List the scenarios and exit.
    #[arg(long)]
    pub list: bool,
    /// Internal: role of a re-executed child process of a scenario.
    #[arg(long, hide = true, value_name = "ROLE")]
    pub role: Option<String>,
    /// Internal: index of a child process among its siblings.
    #[arg(long, hide = true, default_value_t = 0)]
    pub index: usize,
    /// Internal: file or socket the children of a scenario share.
    #[arg(long, hide = true, value_name = "PATH")]
    pub endpoint: Option<PathBuf>,
}

/// clap value parser for durations such as `500ms`, `1s`, `2m`.
pub fn parse_duration_arg(text: &str) -> Result<std::time::Duration, String> {
    crate::units::parse_duration(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_parses_pid_and_format() {
        let cli = Cli::try_parse_from(["tfwatch", "snapshot", "42", "--format", "json"]).unwrap();
        match cli.command {
            Command::Snapshot(args) => {
                assert_eq!(args.pid, 42);
                assert_eq!(args.format, Format::Json);
                assert_eq!(args.window, std::time::Duration::from_millis(500));
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn bad_pid_and_duration_are_refused() {
        assert!(Cli::try_parse_from(["tfwatch", "snapshot", "abc"]).is_err());
        let err = Cli::try_parse_from(["tfwatch", "attach", "1", "--interval", "soon"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("soon"), "{err}");
    }

    #[test]
    fn no_children_is_a_flag_of_snapshot_and_attach_only() {
        for command in [
            vec!["tfwatch", "snapshot", "7", "--no-children"],
            vec!["tfwatch", "attach", "7", "--no-children"],
        ] {
            assert!(Cli::try_parse_from(&command).is_ok(), "{command:?}");
        }
        // `node` watches every process of the machine: no named process to keep alone.
        assert!(Cli::try_parse_from(["tfwatch", "node", "--no-children"]).is_err());
        use clap::CommandFactory;
        let mut cli = Cli::command();
        let help = cli
            .find_subcommand_mut("node")
            .unwrap()
            .render_long_help()
            .to_string();
        assert!(!help.contains("no-children"), "{help}");
        assert!(!help.contains("named process"), "{help}");
    }

    #[test]
    fn listen_flags() {
        let cli = Cli::try_parse_from([
            "tfwatch",
            "attach",
            "7",
            "--no-tui",
            "--listen",
            "127.0.0.1:0",
        ])
        .unwrap();
        match cli.command {
            Command::Attach(args) => {
                assert!(args.no_tui);
                assert_eq!(args.listen.listen.as_deref(), Some("127.0.0.1:0"));
                assert!(!args.listen.allow_remote);
            }
            other => panic!("unexpected {other:?}"),
        }
        // --allow-remote means nothing without --listen.
        assert!(Cli::try_parse_from(["tfwatch", "attach", "7", "--allow-remote"]).is_err());
        let cli = Cli::try_parse_from([
            "tfwatch",
            "run",
            "--listen",
            "0.0.0.0:9464",
            "--allow-remote",
            "--",
            "true",
        ])
        .unwrap();
        match cli.command {
            Command::Run(args) => assert!(args.listen.allow_remote),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn rules_export_defaults_to_prometheus() {
        let cli = Cli::try_parse_from(["tfwatch", "rules", "export"]).unwrap();
        match cli.command {
            Command::Rules(RulesCommand::Export { format, files }) => {
                assert_eq!(format, RulesFormat::Prometheus);
                assert!(files.is_empty());
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(Cli::try_parse_from(["tfwatch", "rules", "export", "--format", "yaml"]).is_err());
    }

    #[test]
    fn run_takes_the_command_after_dashes() {
        let cli = Cli::try_parse_from(["tfwatch", "run", "--", "python3", "-c", "pass"]).unwrap();
        match cli.command {
            Command::Run(args) => assert_eq!(args.command, ["python3", "-c", "pass"]),
            other => panic!("unexpected {other:?}"),
        }
    }

    fn workload_cli(extra: &[&str]) -> Result<WorkloadArgs, clap::Error> {
        let mut argv = vec!["tfwatch", "run-workload"];
        argv.extend_from_slice(extra);
        match Cli::try_parse_from(argv)?.command {
            Command::RunWorkload(args) => Ok(args),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn bad_scenario_lists_the_valid_ones() {
        let err = workload_cli(&["--scenario", "dedlock"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("\"dedlock\""), "{err}");
        assert!(
            err.contains("fork-lock") && err.contains("memory-growth"),
            "{err}"
        );
    }

    #[test]
    fn parses_options() {
        let cli = workload_cli(&[
            "--scenario",
            "deadlock",
            "--fixed",
            "--duration",
            "3s",
            "--cycle",
            "3",
        ])
        .unwrap();
        assert_eq!(cli.scenario, Some(crate::workload::Scenario::Deadlock));
        assert!(cli.fixed);
        assert_eq!(cli.duration, Duration::from_secs(3));
        assert_eq!(cli.cycle, 3);
        assert!(workload_cli(&[]).is_err());
        assert!(workload_cli(&["--verify"]).is_ok());
        assert!(workload_cli(&["--verify", "--scenario", "deadlock"]).is_ok());
        assert!(workload_cli(&["--verify", "--list"]).is_err());
        assert!(workload_cli(&["--scenario", "deadlock", "--duration", "x"]).is_err());
    }
}
