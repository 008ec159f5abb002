//! Properties of the rules loader over generated input: no panic on any text, nor on
//! the default rules with a character changed, a line dropped or the text cut short;
//! and a rule rendered from generated fields loads back with those fields.

use std::path::Path;

use proptest::prelude::*;

use super::*;
use crate::model::Severity;
use crate::model::metrics::METRICS;

fn parse(text: &str) -> Result<RuleSet, RulesError> {
    RuleSet::parse(text, Path::new("prop.toml"))
}

/// A TOML basic string holding `text`.
fn toml_string(text: &str) -> String {
    let mut out = String::from("\"");
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn any_text_loads_or_fails_cleanly(text in any::<String>()) {
        let _ = parse(&text);
    }

    #[test]
    fn toml_soup_loads_or_fails_cleanly(
        text in "(\\[\\[rule\\]\\]\n|\\[metrics\\]\n)?([a-z_]{1,10} = (\"[ -~]{0,12}\"|-?[0-9.e]{1,8}%?|true|\\[\\]|\\{\\})\n){0,8}",
    ) {
        let _ = parse(&text);
    }

    #[test]
    fn edited_defaults_load_or_fail_cleanly(at: usize, c: char, edit in 0..3u8) {
        let mut text = DEFAULT_RULES.to_string();
        let mut at = at % (text.len() + 1);
        while !text.is_char_boundary(at) {
            at -= 1;
        }
        match edit {
            0 => text.insert(at, c),
            1 => text.truncate(at),
            _ => {
                let lines: Vec<&str> = text.lines().collect();
                let drop = at % lines.len().max(1);
                text = lines
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| *i != drop)
                    .map(|(_, l)| format!("{l}\n"))
                    .collect();
            }
        }
        if let Ok(set) = parse(&text) {
            prop_assert!(set.len() <= RuleSet::defaults().len() + 1);
        }
    }

    #[test]
    fn a_rendered_rule_loads_back(
        name in "[a-z][a-z0-9-]{0,20}",
        metric in proptest::sample::select(METRICS.iter().map(|m| m.name).collect::<Vec<_>>()),
        op in proptest::sample::select(Op::ALL.to_vec()),
        threshold in -1e9..1e9f64,
        for_seconds in proptest::option::of(1..3600u64),
        severity in proptest::sample::select(vec![Severity::Info, Severity::Warning, Severity::Error]),
        // No braces: `{...}` are placeholders, checked on load.
        message in "[!-z|~é][ -z|~é\n]{0,39}",
        remedy in "[!-z|~é][ -z|~é\n]{0,39}",
    ) {
        let mut text = format!(
            "[[rule]]\nname = {}\nmetric = {}\nop = {}\nthreshold = {threshold:?}\nseverity = {}\nmessage = {}\nremedy = {}\n",
            toml_string(&name),
            toml_string(metric),
            toml_string(op.as_str()),
            toml_string(severity.as_str()),
            toml_string(&message),
            toml_string(&remedy),
        );
        if let Some(seconds) = for_seconds {
            text.push_str(&format!("for = \"{seconds}s\"\n"));
        }
        let set = parse(&text).map_err(|e| TestCaseError::fail(format!("{e}\n{text}")))?;
        prop_assert_eq!(set.len(), 1);
        let rule = &set.rules()[0];
        prop_assert_eq!(&rule.name, &name);
        prop_assert_eq!(&rule.metric, metric);
        prop_assert_eq!(rule.op, op);
        prop_assert_eq!(rule.threshold.value, threshold);
        prop_assert!(!rule.threshold.percent);
        prop_assert_eq!(rule.for_duration.as_secs(), for_seconds.unwrap_or(0));
        prop_assert_eq!(rule.severity, severity);
        prop_assert_eq!(&rule.message, &message);
        prop_assert_eq!(&rule.remedy, &remedy);
    }
}
