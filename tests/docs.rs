//! The documentation against the program: every long flag of every command is in
//! README.md or docs/, every `tfwatch …` example in them parses, every relative link
//! (and its `#anchor`) of README.md, CONTRIBUTING.md, benches/README.md and docs/**
//! leads somewhere, the event shapes of docs/rules.md are what the engine writes, the
//! `rules check` example is what the binary prints; `--help` has one layout; the shell
//! completions load in their shells and the man pages render.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::tfwatch_output;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Every `.md` file under `dir`, at any depth, sorted.
fn markdown_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .flatten()
        .map(|e| e.path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            out.extend(markdown_under(&path));
        } else if path.extension().is_some_and(|e| e == "md") {
            out.push(path);
        }
    }
    out
}

fn read(paths: Vec<PathBuf>) -> Vec<(PathBuf, String)> {
    paths
        .into_iter()
        .map(|p| {
            let text = std::fs::read_to_string(&p).unwrap();
            (p, text)
        })
        .collect()
}

/// The user's documents: README.md and every .md under docs/, as (path, text).
fn documents() -> Vec<(PathBuf, String)> {
    let mut paths = vec![root().join("README.md")];
    paths.extend(markdown_under(&root().join("docs")));
    read(paths)
}

/// The documents whose links are checked: the user's, and those a contributor reads.
fn linked_documents() -> Vec<(PathBuf, String)> {
    let mut all = documents();
    all.extend(read(vec![
        root().join("CONTRIBUTING.md"),
        root().join("benches/README.md"),
    ]));
    all
}

#[test]
fn the_guide_and_reference_are_found_at_every_depth() {
    let names: Vec<String> = documents()
        .iter()
        .map(|(p, _)| p.strip_prefix(root()).unwrap().display().to_string())
        .collect();
    for expected in [
        "docs/README.md",
        "docs/metrics.md",
        "docs/guide/snapshot.md",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} not among {names:?}"
        );
    }
}

/// The text of `markdown` without its fenced code blocks and inline code spans, where
/// brackets are code, not links.
fn prose(markdown: &str) -> String {
    let mut out = String::new();
    let mut fenced = false;
    // A code span may run over a line break, not past a paragraph.
    let mut in_code = false;
    for line in markdown.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            in_code = false;
            out.push('\n');
            continue;
        }
        if fenced || line.trim().is_empty() {
            in_code = false;
            out.push('\n');
            continue;
        }
        for c in line.chars() {
            if c == '`' {
                in_code = !in_code;
                continue;
            }
            if !in_code {
                out.push(c);
            }
        }
        out.push('\n');
    }
    out
}

/// The targets of the inline links `[text](target)` of `markdown`, outside code, with
/// their line numbers.
fn link_targets(markdown: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    for (index, line) in prose(markdown).lines().enumerate() {
        let mut rest = line;
        while let Some(at) = rest.find("](") {
            let after = &rest[at + 2..];
            let Some(end) = after.find(')') else { break };
            let target = after[..end].split_whitespace().next().unwrap_or_default();
            out.push((index + 1, target.to_string()));
            rest = &after[end..];
        }
    }
    out
}

/// GitHub's anchor of a heading: lower case, punctuation dropped but `-` and `_`,
/// spaces to `-`.
fn anchor_of(heading: &str) -> String {
    heading
        .trim()
        .chars()
        .filter_map(|c| {
            if c == ' ' {
                Some('-')
            } else if c.is_alphanumeric() || c == '-' || c == '_' {
                Some(c.to_lowercase().next().unwrap_or(c))
            } else {
                None
            }
        })
        .collect()
}

/// The anchors of the headings of `markdown` (a repeated heading gets `-1`, `-2`, …).
fn anchors(markdown: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut fenced = false;
    for line in markdown.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if fenced || !line.starts_with('#') {
            continue;
        }
        let heading = line.trim_start_matches('#');
        if !heading.starts_with(' ') {
            continue;
        }
        let base = anchor_of(&heading.replace('`', ""));
        let mut anchor = base.clone();
        let mut n = 0;
        while out.contains(&anchor) {
            n += 1;
            anchor = format!("{base}-{n}");
        }
        out.insert(anchor);
    }
    out
}

#[test]
fn every_relative_link_and_anchor_leads_somewhere() {
    let mut problems = Vec::new();
    let mut checked = 0;
    for (path, text) in linked_documents() {
        let shown = path.strip_prefix(root()).unwrap().display().to_string();
        for (line, target) in link_targets(&text) {
            if target.contains("://") || target.starts_with("mailto:") {
                continue;
            }
            checked += 1;
            let (file, anchor) = match target.split_once('#') {
                Some((file, anchor)) => (file, Some(anchor)),
                None => (target.as_str(), None),
            };
            let linked = if file.is_empty() {
                path.clone()
            } else {
                path.parent().unwrap().join(file)
            };
            if !linked.exists() {
                problems.push(format!("{shown}:{line}: {target}: no such file"));
                continue;
            }
            let Some(anchor) = anchor else { continue };
            if linked.extension().is_none_or(|e| e != "md") {
                continue;
            }
            let headings = anchors(&std::fs::read_to_string(&linked).unwrap());
            if !headings.contains(anchor) {
                problems.push(format!(
                    "{shown}:{line}: {target}: no heading with that anchor in {} ({})",
                    linked.display(),
                    headings.into_iter().collect::<Vec<_>>().join(", ")
                ));
            }
        }
    }
    assert!(checked >= 20, "only {checked} relative links found");
    assert!(
        problems.is_empty(),
        "links that lead nowhere:\n{}",
        problems.join("\n")
    );
}

#[test]
fn anchors_are_githubs() {
    assert_eq!(
        anchor_of("The application's own metrics (--metrics-url)"),
        "the-applications-own-metrics---metrics-url"
    );
    assert_eq!(
        anchor_of("Every job of the node: tfwatch node in a DaemonSet"),
        "every-job-of-the-node-tfwatch-node-in-a-daemonset"
    );
    let text = "# A\n\n```sh\n# not a heading\n```\n## A\n### `tfwatch run`\n";
    let found: Vec<String> = anchors(text).into_iter().collect();
    assert_eq!(found, ["a", "a-1", "tfwatch-run"]);
    assert_eq!(
        link_targets("see [x](a.md#b), `[not](code.md)` and [y](https://e.org)"),
        [(1, "a.md#b".to_string()), (1, "https://e.org".to_string())]
    );
}

/// Every visible command: its path of names (empty for `tfwatch`) and its clap command.
fn commands() -> Vec<(Vec<String>, clap::Command)> {
    fn walk(
        path: Vec<String>,
        command: &clap::Command,
        out: &mut Vec<(Vec<String>, clap::Command)>,
    ) {
        out.push((path.clone(), command.clone()));
        for sub in command.get_subcommands().filter(|s| !s.is_hide_set()) {
            let mut path = path.clone();
            path.push(sub.get_name().to_string());
            walk(path, sub, out);
        }
    }
    let mut command = tfwatch::cli::manual::command().disable_help_subcommand(true);
    command.build();
    let mut out = Vec::new();
    walk(Vec::new(), &command, &mut out);
    out
}

#[test]
fn every_long_flag_is_documented() {
    let text: String = documents().into_iter().map(|(_, t)| t).collect();
    let mut missing = BTreeSet::new();
    for (path, command) in commands() {
        for arg in command.get_arguments().filter(|a| !a.is_hide_set()) {
            let Some(long) = arg.get_long() else { continue };
            if matches!(long, "help" | "version") {
                continue;
            }
            let flag = format!("--{long}");
            let documented = text.match_indices(&flag).any(|(at, _)| {
                !text[at + flag.len()..]
                    .starts_with(|c: char| c.is_ascii_alphanumeric() || c == '-')
            });
            if !documented {
                missing.insert(format!("tfwatch {} {flag}", path.join(" ")));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "flags in no document (README.md or docs/**/*.md):\n{}",
        missing.into_iter().collect::<Vec<_>>().join("\n")
    );
}

#[test]
fn help_has_one_layout_and_describes_every_argument() {
    let mut problems = Vec::new();
    for (path, mut command) in commands() {
        let name = format!("tfwatch {}", path.join(" "));
        for arg in command.get_arguments().filter(|a| !a.is_hide_set()) {
            if arg.get_help().is_none() {
                problems.push(format!("{name}: {} has no help text", arg.get_id()));
            }
        }
        // `--help` prints the compact layout of `-h` unless some argument has help that
        // only the long layout shows (a value with help of its own switched every option
        // of `run --help` to the long layout); clap then offers "a summary with '-h'".
        let long = command.render_long_help().to_string();
        if long.contains("see a summary with '-h'") {
            problems.push(format!("{name}: --help has the long layout:\n{long}"));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// `text` split as a shell would split a simple command (quotes, no expansions), up to
/// the first `|`, `>`, `<`, `&&`, `;` or comment.
fn shell_words(text: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\'' | '"' => {
                in_word = true;
                for q in chars.by_ref() {
                    if q == c {
                        break;
                    }
                    word.push(q);
                }
            }
            '|' | '>' | '<' | ';' | '&' => break,
            '#' if !in_word => break,
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            c => {
                in_word = true;
                word.push(c);
            }
        }
    }
    if in_word {
        words.push(word);
    }
    // A redirection's file descriptor (`2>`) is not an argument.
    if text.contains('>')
        && words
            .last()
            .is_some_and(|w| w.chars().all(|c| c.is_ascii_digit()))
    {
        words.pop();
    }
    words
}

/// Every `tfwatch …` command in the shell code blocks of `text` (```sh, bash, shell;
/// the `$ ` lines of ```console), continuation lines joined, as (line number, command).
fn example_commands(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut block: Option<String> = None;
    let mut pending: Option<(usize, String)> = None;
    for (index, line) in text.lines().enumerate() {
        if let Some(info) = line.trim_start().strip_prefix("```") {
            block = match block {
                Some(_) => None,
                None => Some(info.trim().to_string()),
            };
            continue;
        }
        let Some(kind) = block.as_deref() else {
            continue;
        };
        let shell = matches!(kind, "sh" | "bash" | "shell");
        let console = kind == "console" && line.trim_start().starts_with("$ ");
        if !shell && !console && pending.is_none() {
            continue;
        }
        if let Some((at, mut command)) = pending.take() {
            command.push(' ');
            command.push_str(line.trim().trim_end_matches('\\'));
            if line.trim_end().ends_with('\\') {
                pending = Some((at, command));
            } else {
                out.push((at, command));
            }
            continue;
        }
        let trimmed = line.trim_start().trim_start_matches("$ ");
        let Some(at) = trimmed.find("tfwatch ") else {
            continue;
        };
        // The command itself, or one after `cargo run … --` or a variable assignment.
        let before = &trimmed[..at];
        if !(before.is_empty()
            || before.ends_with("-- ")
            || before.ends_with("/")
            || before.split_whitespace().all(|w| w.contains('=')))
        {
            continue;
        }
        let command = trimmed[at..].trim_end().trim_end_matches('\\').to_string();
        if trimmed.trim_end().ends_with('\\') {
            pending = Some((index + 1, command));
        } else {
            out.push((index + 1, command));
        }
    }
    out
}

#[test]
fn every_example_command_in_the_docs_parses() {
    let mut checked = 0;
    let mut problems = Vec::new();
    for (path, text) in documents() {
        for (line, example) in example_commands(&text) {
            // A shell variable stands for a value: a pid, in the examples.
            let words: Vec<String> = shell_words(&example)
                .into_iter()
                .map(|w| {
                    if w.starts_with('$') {
                        "1".to_string()
                    } else {
                        w
                    }
                })
                .collect();
            if words.first().map(String::as_str) != Some("tfwatch") {
                continue;
            }
            checked += 1;
            let Err(err) = tfwatch::cli::manual::command().try_get_matches_from(&words) else {
                continue;
            };
            use clap::error::ErrorKind;
            if !matches!(
                err.kind(),
                ErrorKind::DisplayHelp | ErrorKind::DisplayVersion
            ) {
                problems.push(format!(
                    "{}:{line}: {example}\n  {}",
                    path.strip_prefix(root()).unwrap().display(),
                    err.to_string().lines().next().unwrap_or_default()
                ));
            }
        }
    }
    assert!(checked >= 5, "only {checked} example commands found");
    assert!(
        problems.is_empty(),
        "examples that do not parse:\n{}",
        problems.join("\n")
    );
}

/// The JSON lines of the ```json blocks of `text`.
fn json_examples(text: &str) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    let mut in_json = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            in_json = line.trim() == "```json";
            continue;
        }
        if in_json && line.trim_start().starts_with('{') {
            out.push(serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")));
        }
    }
    out
}

fn keys(value: &serde_json::Value) -> BTreeSet<String> {
    value
        .as_object()
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default()
}

/// The events of a real watch over a synthetic tree whose memory rises past the
/// memory-pressure bound and falls back, under a rule on the thread count that fires and
/// resolves with it.
fn alert_and_resolution_events() -> Vec<serde_json::Value> {
    use tfwatch::model::{MemoryLimit, ProcessSample, Sample, ThreadSample};
    let rules = tfwatch::rules::RuleSet::parse(
        "[[rule]]\nname = \"busy\"\nmetric = \"threads\"\nop = \">\"\nthreshold = 2\nseverity = \"warning\"\nmessage = \"{value} threads\"\nremedy = \"fewer\"\n",
        Path::new("docs-test.toml"),
    )
    .unwrap();
    let mut watch = tfwatch::engine::Watch::new(tfwatch::detect::DetectConfig::default(), rules);
    let limit = 1_u64 << 30;
    let mut events = Vec::new();
    for step in 0..8 {
        let high = step < 3;
        let threads = if high { 4 } else { 1 };
        let sample = Sample {
            elapsed_seconds: f64::from(step),
            time_unix_seconds: 1_700_000_000.0 + f64::from(step),
            root_pid: 10,
            processes: vec![ProcessSample {
                pid: 10,
                comm: "python3".into(),
                rss_bytes: if high { limit / 100 * 97 } else { limit / 10 },
                cpu_seconds: f64::from(step),
                num_threads: threads,
                threads: (0..threads)
                    .map(|i| ThreadSample {
                        tid: 10 + i as i32,
                        state: 'S',
                        cpu_seconds: f64::from(step),
                        ..ThreadSample::default()
                    })
                    .collect(),
                ..ProcessSample::default()
            }],
            memory_limit: MemoryLimit {
                bytes: limit,
                ..MemoryLimit::default()
            },
            ..Sample::default()
        };
        for event in watch.observe(sample) {
            events.push(serde_json::to_value(tfwatch::sink::line::Line::of(&event)).unwrap());
        }
    }
    events
}

#[test]
fn the_event_shapes_in_rules_md_are_what_the_engine_writes() {
    let text = std::fs::read_to_string(root().join("docs/rules.md")).unwrap();
    let examples = json_examples(&text);
    assert!(examples.len() >= 2, "{examples:?}");
    let events = alert_and_resolution_events();
    let of_type =
        |t: &str| -> Vec<&serde_json::Value> { events.iter().filter(|e| e["type"] == t).collect() };
    assert!(!of_type("alert").is_empty(), "no alert among {events:?}");
    assert!(
        of_type("resolved").len() >= 2,
        "an alert's and a finding's resolution: {events:?}"
    );
    for example in &examples {
        let kind = example["type"].as_str().expect("every example has a type");
        let real = of_type(kind);
        assert!(
            real.iter().any(|e| keys(e) == keys(example)),
            "docs/rules.md shows a {kind:?} event with fields {:?}; the engine writes {:?}",
            keys(example),
            real.iter().map(|e| keys(e)).collect::<Vec<_>>()
        );
    }
}

#[test]
fn the_rules_check_example_is_what_the_binary_prints() {
    let text = std::fs::read_to_string(root().join("docs/rules.md")).unwrap();
    let block_start = text
        .find("$ tfwatch rules check rules/default.toml mine.toml")
        .expect("the example");
    let block = &text[block_start..];
    let block = &block[..block.find("```").unwrap()];
    let mut lines = block.lines().skip(1);
    let expected: Vec<&str> = lines
        .by_ref()
        .take_while(|l| !l.starts_with("$ "))
        .collect();
    let code: i32 = lines.next().unwrap().trim().parse().unwrap();
    // Run where the example runs: rules/default.toml beside mine.toml.
    let dir = std::env::temp_dir().join(format!("tfwatch-docs-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("rules")).unwrap();
    std::fs::copy(
        root().join("rules/default.toml"),
        dir.join("rules/default.toml"),
    )
    .unwrap();
    std::fs::copy(
        root().join("fixtures/rules/mine.toml"),
        dir.join("mine.toml"),
    )
    .unwrap();
    let out = Command::new(crate::support::tfwatch_bin())
        .args(["rules", "check", "rules/default.toml", "mine.toml"])
        .current_dir(&dir)
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let printed: String =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    let printed: Vec<&str> = printed.lines().collect();
    assert_eq!(out.status.code(), Some(code));
    assert_eq!(
        printed.len(),
        expected.len(),
        "printed:\n{}",
        printed.join("\n")
    );
    for (want, got) in expected.iter().zip(&printed) {
        // `…` in the docs stands for the rest of a long line.
        let matches = match want.split_once('…') {
            Some((head, _)) => got.starts_with(head),
            None => got == want,
        };
        assert!(
            matches,
            "docs/rules.md shows\n  {want}\nthe binary prints\n  {got}"
        );
    }
}

// --- Shell completions and man pages ---------------------------------------------------

fn have(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

fn completion_script(shell: &str) -> PathBuf {
    let out = tfwatch_output(&["completions", shell]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.stdout.is_empty());
    let path =
        std::env::temp_dir().join(format!("tfwatch-completion-{}-{shell}", std::process::id()));
    std::fs::write(&path, &out.stdout).unwrap();
    path
}

#[test]
fn bash_completion_loads_and_completes_subcommands() {
    let script = completion_script("bash");
    let check = Command::new("bash")
        .arg("-n")
        .arg(&script)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    // Loaded into a real bash, it registers for tfwatch and completes `tfwatch ru`.
    let probe = format!(
        "source {}; complete -p tfwatch; COMP_WORDS=(tfwatch ru); COMP_CWORD=1; COMP_LINE='tfwatch ru'; COMP_POINT=10; _tfwatch tfwatch ru tfwatch; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
        script.display()
    );
    let out = Command::new("bash")
        .args(["--norc", "-c", &probe])
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&script);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("-F _tfwatch tfwatch"), "{stdout}");
    let replies: BTreeSet<&str> = stdout.lines().skip(1).collect();
    let expected: BTreeSet<String> = commands()
        .into_iter()
        .filter(|(path, _)| path.len() == 1 && path[0].starts_with("ru"))
        .map(|(path, _)| path[0].clone())
        .collect();
    assert!(expected.len() >= 2, "{expected:?}");
    assert_eq!(
        replies,
        expected.iter().map(String::as_str).collect::<BTreeSet<_>>()
    );
}

#[test]
fn zsh_and_fish_completions_parse_where_installed() {
    for (shell, check) in [("zsh", ["-n"]), ("fish", ["--no-execute"])] {
        if !have(shell) {
            crate::support::skip(
                shell,
                format!("{shell} is not installed (apt-get install {shell})"),
            );
            continue;
        }
        let script = completion_script(shell);
        let out = Command::new(shell)
            .args(check)
            .arg(&script)
            .output()
            .unwrap();
        let _ = std::fs::remove_file(&script);
        assert!(
            out.status.success(),
            "{shell}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn man_pages_render_with_the_exit_codes() {
    let page = tfwatch_output(&["manpage"]);
    assert!(
        page.status.success(),
        "{}",
        String::from_utf8_lossy(&page.stderr)
    );
    let dir = std::env::temp_dir().join(format!("tfwatch-man-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let dir_arg = dir.to_string_lossy().into_owned();
    let out = tfwatch_output(&["manpage", "--dir", &dir_arg]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let written = std::fs::read(dir.join("tfwatch.1")).unwrap();
    assert_eq!(
        written, page.stdout,
        "stdout and --dir give the same tfwatch.1"
    );
    let mut pages: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    pages.sort();
    for (path, _) in commands() {
        let name = if path.is_empty() {
            "tfwatch.1".to_string()
        } else {
            format!("tfwatch-{}.1", path.join("-"))
        };
        assert!(pages.contains(&name), "{name} not among {pages:?}");
    }
    if !have("groff") {
        crate::support::skip(
            "groff",
            "rendering: groff is not installed (apt-get install groff-base)",
        );
        let _ = std::fs::remove_dir_all(&dir);
        return;
    }
    for name in &pages {
        let out = Command::new("groff")
            .args(["-k", "-man", "-Tutf8", "-ww", "-z"])
            .arg(dir.join(name))
            .output()
            .unwrap();
        assert!(
            out.status.success() && out.stderr.is_empty(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let out = Command::new("groff")
        .args(["-k", "-man", "-Tutf8"])
        .arg(dir.join("tfwatch.1"))
        .env("GROFF_NO_SGR", "1")
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let text = String::from_utf8_lossy(&out.stdout);
    // groff's plain-text output keeps overstrike for bold: compare without it.
    let plain = strip_overstrike(&text);
    assert!(plain.contains("EXIT STATUS"), "{plain}");
    assert!(plain.contains("122"), "{plain}");
    assert!(plain.contains("run-workload"), "{plain}");
}

/// Removes `x\bx` (bold) and `_\bx` (underline) overstrike.
fn strip_overstrike(text: &str) -> String {
    let mut out: Vec<char> = Vec::with_capacity(text.len());
    for c in text.chars() {
        if c == '\u{8}' {
            out.pop();
            continue;
        }
        out.push(c);
    }
    out.into_iter().collect()
}
