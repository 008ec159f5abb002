use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = tfwatch::cli::manual::parse();
    match tfwatch::app::run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(err) => {
            if tfwatch::app::is_broken_pipe(&err) {
                return ExitCode::SUCCESS;
            }
            eprintln!("tfwatch: {err:#}");
            if tfwatch::app::settings::is_usage(&err) {
                return ExitCode::from(tfwatch::app::exit::USAGE);
            }
            ExitCode::from(tfwatch::app::exit::TFWATCH_FAILED)
        }
    }
}
