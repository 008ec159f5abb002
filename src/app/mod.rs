//! The command layer: turns parsed arguments into work and an exit code.

pub mod attach;
pub mod run;
pub mod snapshot;
pub mod workload;

use anyhow::Result;

use crate::cli::{Cli, Command, RulesCommand};

/// tfwatch itself failed (as coreutils `timeout` uses 125).
pub const EXIT_TFWATCH_FAILED: u8 = 125;

/// Runs one command; returns the process exit code.
pub fn run(cli: Cli) -> Result<u8> {
    match cli.command {
        Command::Snapshot(args) => crate::app::snapshot::command(&args),
        Command::RunWorkload(args) => Ok(exit_code(workload::command(&args)?)),
        Command::Attach(args) => crate::app::attach::command(&args),
        Command::Run(args) => crate::app::run::command(&args),
        Command::Rules(RulesCommand::Check { files }) => crate::rules::check_command(&files),
        Command::Rules(RulesCommand::Export { format, files }) => {
            crate::sink::export::rules_export_command(format, &files)
        }
    }
}

fn exit_code(code: i32) -> u8 {
    u8::try_from(code).unwrap_or(EXIT_TFWATCH_FAILED)
}

/// A closed stdout (`tfwatch snapshot 1 | head`) is not an error.
pub fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}
