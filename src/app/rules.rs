//! `tfwatch rules check` and `tfwatch rules export`.

use std::path::PathBuf;

use anyhow::Result;

use crate::cli::RulesFormat;
use crate::rules::RuleSet;

/// Loads the rules the user named, or the defaults.
pub fn load(files: &[PathBuf]) -> Result<RuleSet> {
    if files.is_empty() {
        Ok(RuleSet::defaults())
    } else {
        Ok(crate::rules::load_rule_files(files)?)
    }
}

/// `tfwatch rules check FILE...`: prints "FILE: N rules OK" for each good file and the
/// problems of each bad one to stderr; exit code 0, or 2 when any file is bad.
pub fn check_command(files: &[PathBuf]) -> Result<u8> {
    use std::io::Write;
    let stdout = std::io::stdout();
    let stderr = std::io::stderr();
    let mut code = 0;
    for file in files {
        match RuleSet::load(file) {
            Ok(set) => {
                let noun = if set.len() == 1 { "rule" } else { "rules" };
                writeln!(stdout.lock(), "{}: {} {noun} OK", file.display(), set.len())?;
            }
            Err(err) => {
                let mut stderr = stderr.lock();
                for problem in err.problems() {
                    writeln!(stderr, "{problem}")?;
                }
                code = 2;
            }
        }
    }
    Ok(code)
}

/// `tfwatch rules export --format prometheus [FILE...]`: the rules (the built-in defaults
/// without FILE) as an alerting-rules file on stdout. A bad file is refused as `rules
/// check` refuses it: its problems on stderr, exit code 2.
pub fn export_command(format: RulesFormat, files: &[PathBuf]) -> Result<u8> {
    use std::io::Write;
    let rules = match crate::rules::load_rule_files(files) {
        Ok(rules) => rules,
        Err(err) => {
            let mut stderr = std::io::stderr().lock();
            for problem in err.problems() {
                writeln!(stderr, "{problem}")?;
            }
            return Ok(2);
        }
    };
    let origin = if files.is_empty() {
        crate::rules::DEFAULT_RULES_ORIGIN.to_string()
    } else {
        files
            .iter()
            .map(|f| f.display().to_string())
            .collect::<Vec<_>>()
            .join("\n")
    };
    let text = match format {
        RulesFormat::Prometheus => {
            crate::sink::export::alert_rules::prometheus_rules(&rules, &origin)
        }
    };
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(text.as_bytes())?;
    stdout.flush()?;
    Ok(0)
}
