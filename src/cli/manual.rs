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
        "tfwatch itself failed (e.g. no such pid, --listen port taken, an output not writable)",
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

/// What tfwatch is for, as the DESCRIPTION of tfwatch(1).
pub const DESCRIPTION: &[&str] = &[
    "tfwatch watches the processes of a machine-learning job (TensorFlow, PyTorch, numpy, multiprocessing, asyncio) from outside, read-only, and says why the job is slow or stuck: a deadlock or other hang, more runnable threads than usable CPUs, a cgroup CPU quota that throttles it, thread or memory growth, a stalled GPU.",
    "Every finding names the processes and threads it concerns, the evidence it saw, and a remedy. A hang is explained from the stacks: who waits for what, and which thread holds the lock it waits for.",
    "snapshot reports once; attach watches one process tree live (a dashboard, or JSON lines); node watches every job of the machine; run starts a command under watch, as a CI gate and hang watchdog with documented exit codes; replay judges a recorded timeline again; run-workload reproduces each problem and its fix; metrics lists what rules can compare.",
    DURATIONS,
];

/// Examples per command (its path under tfwatch: "" is tfwatch itself), as
/// (command line, what it does): `--help` shows them, the man pages have them as EXAMPLES.
pub const EXAMPLES: &[(&str, &[(&str, &str)])] = &[
    (
        "",
        &[
            (
                "tfwatch snapshot --stacks 4242",
                "why is pid 4242 stuck? (stacks need ptrace: run as root or the job's user)",
            ),
            (
                "tfwatch run --hang-after 10m -- python train.py",
                "a CI job that fails (exit 122) with a diagnosis when it hangs",
            ),
            ("tfwatch attach 4242", "watch a process tree live"),
            (
                "tfwatch node",
                "every job of this machine, judged on its own",
            ),
        ],
    ),
    (
        "snapshot",
        &[
            (
                "tfwatch snapshot 4242",
                "a triage report of pid 4242 and its descendants",
            ),
            (
                "tfwatch snapshot --stacks 4242",
                "with every thread's stack and who waits for what",
            ),
            (
                "tfwatch snapshot --format json 4242 > report.json",
                "the same for scripts (tfwatch schema report)",
            ),
        ],
    ),
    (
        "attach",
        &[
            ("tfwatch attach 4242", "the live dashboard on a terminal"),
            (
                "tfwatch attach --json --hang-after 2m 4242 | jq .",
                "JSON lines (tfwatch schema events)",
            ),
            (
                "tfwatch attach --listen 127.0.0.1:9464 4242",
                "also serve the metrics to Prometheus",
            ),
        ],
    ),
    (
        "node",
        &[
            (
                "tfwatch node",
                "every job of this machine, grouped by cgroup or process tree",
            ),
            (
                "tfwatch node --json --duration 1m",
                "one minute of JSON lines, then exit",
            ),
        ],
    ),
    (
        "run",
        &[
            (
                "tfwatch run --hang-after 10m -- python train.py",
                "exit 122 and a diagnosis when the job makes no progress for 10 minutes",
            ),
            (
                "tfwatch run --timeout 2h --report run.json --html run.html -- python train.py",
                "a time limit, and reports to keep as CI artifacts",
            ),
            (
                "tfwatch run --fail-on warning --min-severity warning -- pytest",
                "fail on any warning; leave the info findings out of stderr",
            ),
        ],
    ),
    (
        "run-workload",
        &[
            ("tfwatch run-workload --list", "the reference scenarios"),
            (
                "tfwatch run-workload --scenario deadlock",
                "reproduce one problem, to watch it with attach",
            ),
            (
                "tfwatch run-workload --verify --python .venv/bin/python3",
                "every scenario broken then fixed; the framework rows under that interpreter",
            ),
        ],
    ),
    (
        "replay",
        &[(
            "tfwatch replay timeline.jsonl",
            "judge a timeline recorded with attach --record again",
        )],
    ),
    (
        "metrics",
        &[
            (
                "tfwatch metrics",
                "the metrics rules can compare, with their units",
            ),
            ("tfwatch metrics --json", "the same as JSON"),
        ],
    ),
];

/// The examples of the command at `path`, as a `--help` section; `None` when it has none.
pub fn examples_help(path: &str) -> Option<String> {
    let (_, examples) = EXAMPLES.iter().find(|(p, _)| *p == path)?;
    let mut text = String::from("Examples:\n");
    for (line, what) in *examples {
        text.push_str(&format!("  {line}\n      {what}\n"));
    }
    Some(text)
}

/// How every DURATION option reads its value: said under `--help` of each command that
/// has one, and in tfwatch(1).
pub const DURATIONS: &str =
    "DURATION: a number and a unit (500ms, 10s, 2m, 1h30m); a bare number is seconds.";

/// Whether `command` has an option whose value is a DURATION.
fn takes_durations(command: &clap::Command) -> bool {
    command.get_arguments().any(|arg| {
        arg.get_value_names()
            .is_some_and(|names| names.iter().any(|n| n.as_str() == "DURATION"))
    })
}

/// The clap command of tfwatch: [`Cli`] with examples under `--help` of each command
/// that has them, how durations read where a command takes one, and the exit codes
/// under `tfwatch --help` and `tfwatch run --help`.
pub fn command() -> clap::Command {
    let codes = exit_codes_help();
    let mut root = Cli::command();
    let names: Vec<String> = root
        .get_subcommands()
        .map(|sub| sub.get_name().to_string())
        .collect();
    for path in &names {
        let durations = root.find_subcommand(path).is_some_and(takes_durations);
        let mut help = examples_help(path).unwrap_or_default();
        if durations {
            if !help.is_empty() {
                help.push('\n');
            }
            help.push_str(DURATIONS);
            help.push('\n');
        }
        if path == "run" {
            help.push('\n');
            help.push_str(&codes);
        }
        if !help.is_empty() {
            root = root.mut_subcommand(path, |sub| sub.after_help(help));
        }
    }
    let help = format!("{}\n{codes}", examples_help("").unwrap_or_default());
    root.after_help(help)
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
    let root = command.get_name() == "tfwatch";
    if root {
        description_section(&mut page)?;
    } else {
        man.render_description_section(&mut page)?;
    }
    man.render_options_section(&mut page)?;
    if command.get_subcommands().any(|sub| !sub.is_hide_set()) {
        man.render_subcommands_section(&mut page)?;
    }
    let path = if root { "" } else { command.get_name() };
    examples_section(path, &mut page)?;
    if root || path == "run" {
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

/// The DESCRIPTION of tfwatch(1): what tfwatch is for, in paragraphs.
fn description_section(out: &mut dyn Write) -> std::io::Result<()> {
    let mut roff = Roff::new();
    roff.control("SH", ["DESCRIPTION"]);
    for (index, paragraph) in DESCRIPTION.iter().enumerate() {
        if index > 0 {
            roff.control("PP", []);
        }
        roff.text([roman(*paragraph)]);
    }
    roff.to_writer(out)
}

/// The EXAMPLES section of the page of the command at `path`, where it has examples.
fn examples_section(path: &str, out: &mut dyn Write) -> std::io::Result<()> {
    let Some((_, examples)) = EXAMPLES.iter().find(|(p, _)| *p == path) else {
        return Ok(());
    };
    let mut roff = Roff::new();
    roff.control("SH", ["EXAMPLES"]);
    for (line, what) in *examples {
        roff.control("TP", []);
        roff.text([bold(*line)]);
        roff.text([roman(*what)]);
    }
    roff.to_writer(out)
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
    fn every_command_with_examples_shows_them_under_help_and_in_its_man_page() {
        let pages = man_pages().unwrap();
        for (path, examples) in EXAMPLES {
            let mut command = command();
            let help = if path.is_empty() {
                command.render_help().to_string()
            } else {
                command
                    .find_subcommand_mut(path)
                    .unwrap_or_else(|| panic!("no command {path}"))
                    .render_help()
                    .to_string()
            };
            let page = if path.is_empty() {
                "tfwatch.1".to_string()
            } else {
                format!("tfwatch-{path}.1")
            };
            let page = &pages
                .iter()
                .find(|(n, _)| *n == page)
                .unwrap_or_else(|| panic!("no page {page}"))
                .1;
            let page = String::from_utf8_lossy(page);
            for (line, _) in *examples {
                assert!(help.contains(line), "{path}: {help}");
                assert!(
                    page.contains(&line.replace('-', "\\-")),
                    "{path}: {line} not in {page}"
                );
            }
        }
    }

    #[test]
    fn every_example_parses() {
        for (_, examples) in EXAMPLES {
            for (line, _) in *examples {
                // The command line, without what a shell does with its output.
                let words: Vec<&str> = line
                    .split(['|', '>'])
                    .next()
                    .unwrap_or_default()
                    .split_whitespace()
                    .collect();
                if let Err(e) = command().try_get_matches_from(&words) {
                    panic!("{line}: {e}");
                }
            }
        }
    }

    #[test]
    fn every_command_with_a_duration_says_a_bare_number_is_seconds() {
        let mut command = command();
        let mut with = Vec::new();
        for name in ["run", "attach", "snapshot", "node", "run-workload"] {
            let sub = command.find_subcommand_mut(name).expect(name);
            let help = sub.render_help().to_string();
            assert!(help.contains(DURATIONS), "{name}: {help}");
            with.push(name);
        }
        let schema = command
            .find_subcommand_mut("schema")
            .expect("schema")
            .render_help()
            .to_string();
        assert!(!schema.contains(DURATIONS), "{schema}");
        let pages = man_pages().unwrap();
        let root = String::from_utf8_lossy(&pages[0].1);
        assert!(root.contains("a bare number is seconds"), "{root}");
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
        // A DESCRIPTION of paragraphs, and the examples.
        let description = &root[root.find(".SH DESCRIPTION").expect("DESCRIPTION")..];
        let description = &description[..description[4..].find(".SH").unwrap() + 4];
        assert!(description.matches(".PP").count() >= 2, "{description}");
        assert!(root.contains(".SH EXAMPLES"), "{root}");
        assert!(
            root.contains("tfwatch snapshot \\-\\-stacks 4242"),
            "{root}"
        );
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
