//! The command layer: the only user of [`crate::cli`]. Each command checks its arguments
//! into settings ([`settings`]), chooses its sinks and runs the one watch loop
//! ([`watch_loop`]) or its one-shot work; exit codes live in [`exit`].

pub mod attach;
pub mod exit;
pub mod frozen;
pub mod hang_stacks;
pub mod manual;
pub mod metrics;
pub mod node;
pub mod ranks;
pub mod replay;
pub mod rules;
pub mod run;
pub mod schema;
pub mod settings;
pub mod signals;
pub mod snapshot;
pub mod watch_loop;
pub mod workload;

use anyhow::Result;

use crate::cli::{Cli, Command, RulesCommand};

/// Runs one command; returns the process exit code.
pub fn run(cli: Cli) -> Result<u8> {
    match cli.command {
        Command::Snapshot(args) => snapshot::command(&args),
        Command::RunWorkload(args) => Ok(exit::from_i32(workload::command(&args)?)),
        Command::Attach(args) => attach::command(&args),
        Command::Node(args) => node::command(&args),
        Command::Run(args) => run::command(&args),
        Command::Replay(args) => replay::command(&args),
        Command::Ranks(args) => ranks::command(&args),
        Command::Rules(RulesCommand::Check { files }) => rules::check_command(&files),
        Command::Rules(RulesCommand::Export { format, files }) => {
            rules::export_command(format, &files)
        }
        Command::Completions(args) => manual::completions_command(&args),
        Command::Manpage(args) => manual::manpage_command(&args),
        Command::Schema(args) => schema::command(&args),
        Command::Metrics(args) => metrics::command(&args),
    }
}

/// A closed stdout (`tfwatch snapshot 1 | head`) is not an error.
pub fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// The stacks of processes whose waits /proc cannot judge, for a watch of one job:
/// `None` when stacks are turned off (`--no-stacks`), and /proc alone judges. A rank of
/// a distributed job that stays still has its stacks taken too (its communication
/// threads poll whatever it does), so its series name its collective and call site as
/// `node`'s do.
pub(crate) fn wait_prober(
    stacks: bool,
    watch: &settings::WatchSettings,
) -> Option<crate::collect::waits::WaitProber> {
    use crate::collect::waits::{StackBudget, WaitProber};
    stacks.then(|| {
        WaitProber::new(
            "/proc",
            WaitProber::probe_after(watch.detect.hang_after_seconds),
            StackBudget::JOB,
        )
        .probe_ranks()
    })
}
