use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = tfwatch::cli::Cli::parse();
    match tfwatch::commands::run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(err) => {
            if tfwatch::commands::is_broken_pipe(&err) {
                return ExitCode::SUCCESS;
            }
            eprintln!("tfwatch: {err:#}");
            ExitCode::from(tfwatch::commands::EXIT_TFWATCH_FAILED)
        }
    }
}
