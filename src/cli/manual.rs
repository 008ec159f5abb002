//! The command line as documentation: the exit codes under `--help`, shell completions
//! (clap_complete) and man pages (clap_mangen), all from the one [`Cli`] definition.

use std::io::Write;

use clap::{CommandFactory, FromArgMatches};
use clap_mangen::roff::{Roff, bold, roman};

use super::{Cli, CompletionShell};

/// The exit codes, as `--help` and the man page give them. `app::exit` defines the
/// constants; its tests keep this table in step with them.
pub const EXIT_CODES: &[(u8, &str)] = &[
    (0, "success"),
    (
        1,
        "run-workload --verify: some run did not behave as expected",
    ),
    (
        2,
        "bad usage: an option out of range or that cannot be used, an invalid rules file",
    ),
    (
        120,
        "run: the rule gate failed (a finding or alert at or above --fail-on)",
    ),
    (
        121,
        "run: a regression over --baseline beyond --max-increase",
    ),
    (
        122,
        "run: a hang (no progress, a deadlock, a fork-inherited lock)",
    ),
    (124, "run: --timeout reached (as coreutils timeout)"),
    (
        125,
        "tfwatch itself failed (e.g. the pid does not exist, the --listen port is taken)",
    ),
    (126, "run: the command cannot be executed"),
    (127, "run: the command was not found"),
];

/// What `run` exits with when no gate failed.
pub const RUN_OWN_STATUS: &str = "run: when no gate fails and no hang or timeout ends it, tfwatch exits with the command's own status (128 + N when signal N ended it).";

/// The exit codes as a `--help` section.
pub fn exit_codes_help() -> String {
    let mut text = String::from("Exit codes:\n");
    for (code, meaning) in EXIT_CODES {
        text.push_str(&format!("  {code:<4} {meaning}\n"));
    }
    text.push_str("  ");
    text.push_str(RUN_OWN_STATUS);
    text
}

/// The clap command of tfwatch: [`Cli`] with the exit codes under `tfwatch --help` and
/// `tfwatch run --help`.
pub fn command() -> clap::Command {
    let help = exit_codes_help();
    Cli::command()
        .after_help(help.clone())
        .mut_subcommand("run", |run| run.after_help(help))
}

/// Parses the process's arguments; on bad usage prints clap's message and exits 2
/// (`--help` and `--version` exit 0).
pub fn parse() -> Cli {
    let mut command = command();
    let matches = command.clone().get_matches();
    Cli::from_arg_matches(&matches).unwrap_or_else(|err| err.format(&mut command).exit())
}

/// The completion script for `shell`.
pub fn completions(shell: CompletionShell) -> Vec<u8> {
    let shell = match shell {
        CompletionShell::Bash => clap_complete::Shell::Bash,
        CompletionShell::Zsh => clap_complete::Shell::Zsh,
        CompletionShell::Fish => clap_complete::Shell::Fish,
    };
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut command(), "tfwatch", &mut script);
    script
}

/// The man pages: `tfwatch.1` first, then one per visible subcommand
/// (`tfwatch-run.1`, `tfwatch-rules-check.1`, …), as (file name, roff text).
pub fn man_pages() -> std::io::Result<Vec<(String, Vec<u8>)>> {
    let mut root = command().disable_help_subcommand(true);
    root.build();
    let mut pages = Vec::new();
    add_pages(&root, &mut pages)?;
    Ok(pages)
}

fn add_pages(command: &clap::Command, pages: &mut Vec<(String, Vec<u8>)>) -> std::io::Result<()> {
    let man = clap_mangen::Man::new(command.clone());
    let mut page = Vec::new();
    man.render_title(&mut page)?;
    man.render_name_section(&mut page)?;
    man.render_synopsis_section(&mut page)?;
    man.render_description_section(&mut page)?;
    man.render_options_section(&mut page)?;
    if command.get_subcommands().any(|sub| !sub.is_hide_set()) {
        man.render_subcommands_section(&mut page)?;
    }
    if command.get_after_help().is_some() {
        exit_status_section(&mut page)?;
    }
    if command.get_version().is_some() {
        man.render_version_section(&mut page)?;
    }
    pages.push((man.get_filename(), page));
    for sub in command.get_subcommands().filter(|sub| !sub.is_hide_set()) {
        add_pages(sub, pages)?;
    }
    Ok(())
}

/// The EXIT STATUS section of a man page.
fn exit_status_section(out: &mut dyn Write) -> std::io::Result<()> {
    let mut roff = Roff::new();
    roff.control("SH", ["EXIT STATUS"]);
    for (code, meaning) in EXIT_CODES {
        roff.control("TP", []);
        roff.text([bold(code.to_string())]);
        roff.text([roman(*meaning)]);
    }
    roff.control("PP", []);
    roff.text([roman(RUN_OWN_STATUS)]);
    roff.to_writer(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn help_of_tfwatch_and_run_lists_the_exit_codes() {
        for path in [&[][..], &["run"][..]] {
            let mut command = command();
            let mut target = &mut command;
            for name in path {
                target = target.find_subcommand_mut(name).expect("subcommand");
            }
            let help = target.render_help().to_string();
            for (code, meaning) in EXIT_CODES {
                assert!(
                    help.contains(&format!("{code:<4} {meaning}")),
                    "{path:?}: {help}"
                );
            }
        }
        let snapshot = command()
            .find_subcommand_mut("snapshot")
            .expect("snapshot")
            .render_help()
            .to_string();
        assert!(!snapshot.contains("Exit codes"), "{snapshot}");
    }

    #[test]
    fn completions_name_every_subcommand() {
        for shell in [
            CompletionShell::Bash,
            CompletionShell::Zsh,
            CompletionShell::Fish,
        ] {
            let script = String::from_utf8(completions(shell)).expect("UTF-8");
            for sub in [
                "snapshot",
                "attach",
                "run",
                "run-workload",
                "rules",
                "completions",
            ] {
                assert!(script.contains(sub), "{shell:?} lacks {sub}");
            }
            assert!(script.contains("hang-after"), "{shell:?}");
        }
    }

    #[test]
    fn man_pages_cover_each_command_and_the_exit_codes() {
        let pages = man_pages().unwrap();
        let names: Vec<&str> = pages.iter().map(|(name, _)| name.as_str()).collect();
        for name in [
            "tfwatch.1",
            "tfwatch-run.1",
            "tfwatch-rules-check.1",
            "tfwatch-manpage.1",
        ] {
            assert!(names.contains(&name), "{name} not in {names:?}");
        }
        assert!(
            !names.iter().any(|n| n.starts_with("tfwatch-help")),
            "{names:?}"
        );
        let root = String::from_utf8(pages[0].1.clone()).unwrap();
        assert!(root.contains(".SH \"EXIT STATUS\""), "{root}");
        assert!(root.contains("122"), "{root}");
        let snapshot = &pages
            .iter()
            .find(|(n, _)| n == "tfwatch-snapshot.1")
            .unwrap()
            .1;
        let snapshot = String::from_utf8_lossy(snapshot);
        assert!(
            !snapshot.contains("EXIT STATUS") && snapshot.contains("no\\-children"),
            "{snapshot}"
        );
    }
}
