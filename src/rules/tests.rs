//! Tests of rule loading and evaluation, with sample files under `fixtures/rules/` and a
//! fake clock (elapsed seconds passed in), never sleeps.

use std::path::{Path, PathBuf};

use super::*;
use crate::model::metrics::MetricValues;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/rules")
        .join(name)
}

/// The single problem of a bad fixture: (line, column, message).
fn problem(name: &str) -> (Option<usize>, Option<usize>, InvalidRule, String) {
    let path = fixture(name);
    let err = RuleSet::load(&path).expect_err("the fixture is refused");
    match err {
        RulesError::Invalid { at, problem } => {
            assert_eq!(at.file, path);
            let text = format!("{at}: {problem}");
            (at.line, at.column, problem, text)
        }
        other => panic!("expected one problem in {name}, got {other}"),
    }
}

fn values(pairs: &[(&str, f64)]) -> MetricValues {
    pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
}

fn rules(text: &str) -> RuleSet {
    RuleSet::parse(text, Path::new("test.toml")).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn defaults_load() {
    let set = RuleSet::defaults();
    let names: Vec<&str> = set.rules().iter().map(|r| r.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "too-many-threads",
            "memory-pressure",
            "slow-requests",
            "queue-backlog",
            "runqueue-wait",
            "oversubscribed",
            "cpu-throttled",
            "no-progress",
            "gpu-shared",
            "gpu-memory",
            "repeated-failures"
        ]
    );
    let memory = set.get("memory-pressure").expect("rule");
    assert_eq!(memory.threshold.value, 0.8);
    assert!(memory.threshold.percent);
    let wait = set.get("runqueue-wait").expect("rule");
    assert_eq!(wait.for_duration, Duration::from_secs(10));
    assert_eq!(wait.for_text.as_deref(), Some("10s"));
    let hung = set.get("no-progress").expect("rule");
    assert_eq!((hung.op, hung.threshold.value), (Op::GreaterOrEqual, 60.0));
    assert_eq!(hung.severity, Severity::Error);
    assert!(set.rules().iter().all(|r| !r.remedy.is_empty()));
    // The file on disk is the embedded one.
    let from_disk =
        RuleSet::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("rules/default.toml"))
            .expect("rules/default.toml loads");
    assert_eq!(from_disk.len(), set.len());
    assert_eq!(load_rule_files(&[]).expect("defaults"), set);
}

#[test]
fn unknown_metric_names_line_and_near_names() {
    let (line, column, problem, text) = problem("unknown-metric.toml");
    assert_eq!((line, column), (Some(3), Some(10)));
    assert!(matches!(problem, InvalidRule::UnknownMetric { .. }));
    assert!(
        text.ends_with(
            "unknown-metric.toml:3:10: unknown metric \"thread\" (did you mean threads, \
             threads_runnable, threads_blocked_lock?); `tfwatch metrics` lists them"
        ),
        "{text}"
    );
}

#[test]
fn unknown_field() {
    let (line, column, problem, text) = problem("unknown-field.toml");
    assert_eq!((line, column), (Some(5), Some(1)));
    assert!(matches!(problem, InvalidRule::UnknownField { .. }));
    assert!(text.contains("unknown field `treshold`"), "{text}");
}

#[test]
fn bad_duration() {
    let (line, column, problem, text) = problem("bad-duration.toml");
    assert_eq!((line, column), (Some(6), Some(7)));
    assert!(matches!(problem, InvalidRule::BadDuration { .. }));
    assert!(
        text.contains("invalid `for`: invalid duration \"10 parsecs\": unknown time unit"),
        "{text}"
    );
}

#[test]
fn bad_op() {
    let (line, _, problem, text) = problem("bad-op.toml");
    assert_eq!(line, Some(4));
    assert_eq!(problem, InvalidRule::BadOp { op: "=>".into() });
    assert!(text.contains("expected one of > >= < <= == !="), "{text}");
}

#[test]
fn bad_severity() {
    let (line, _, problem, _) = problem("bad-severity.toml");
    assert_eq!(line, Some(6));
    assert_eq!(
        problem,
        InvalidRule::BadSeverity {
            severity: "critical".into()
        }
    );
}

#[test]
fn bad_toml() {
    let (line, _, problem, text) = problem("bad-toml.toml");
    assert_eq!(line, Some(3));
    assert!(matches!(problem, InvalidRule::Toml { .. }), "{text}");
    assert!(text.contains("invalid TOML"), "{text}");
}

#[test]
fn missing_file_says_the_os_error_once() {
    let path = fixture("no-such-file.toml");
    let err = load_rule_files(std::slice::from_ref(&path)).expect_err("missing");
    assert_eq!(
        err.to_string(),
        format!(
            "cannot read {}: No such file or directory (os error 2)",
            path.display()
        )
    );
    // As `main` prints it, with the chain of causes: still once.
    let printed = format!("{:#}", anyhow::Error::from(err));
    assert_eq!(printed.matches("No such file").count(), 1, "{printed}");
}

/// A file under the temporary directory, unique to this test process, removed on drop.
struct TempFile(PathBuf);

impl TempFile {
    fn new(name: &str, contents: &[u8]) -> TempFile {
        let path =
            std::env::temp_dir().join(format!("tfwatch-rules-{}-{name}", std::process::id()));
        std::fs::write(&path, contents).expect("temporary file written");
        TempFile(path)
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[test]
fn binary_file_is_not_text() {
    let file = TempFile::new("binary.toml", b"[[rule]]\nname = \"\xff\xfe\"\n");
    let err = RuleSet::load(&file.0).expect_err("refused");
    assert!(
        matches!(err, RulesError::NotText { offset: 17, .. }),
        "{err:?}"
    );
    let expected = format!(
        "{} is not a text file: invalid UTF-8 at byte 17",
        file.0.display()
    );
    assert_eq!(err.to_string(), expected);
    assert_eq!(format!("{:#}", anyhow::Error::from(err)), expected);
}

#[test]
fn oversized_file_is_refused_with_its_size_and_the_cap() {
    let big = TempFile::new("big.toml", &vec![b'#'; 2 << 20]);
    let err = RuleSet::load(&big.0).expect_err("refused");
    assert_eq!(
        err.to_string(),
        format!(
            "{} is 2097152 bytes, over the 1048576 bytes (1.0 MiB) a rules file may have: \
             split the rules over several files and pass each with --rules",
            big.0.display()
        )
    );
    // At the cap it is read; one byte over, refused.
    let at_cap = TempFile::new("at-cap.toml", &[b'#'; 100]);
    assert_eq!(
        read_rules_file(&at_cap.0, 100).map(|t| t.len()).ok(),
        Some(100)
    );
    let err = read_rules_file(&at_cap.0, 99).expect_err("over the cap");
    assert!(
        matches!(
            err,
            RulesError::TooLarge {
                size: 100,
                at_least: false,
                cap: 99,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .contains(" is 100 bytes, over the 99 bytes (99 B) "),
        "{err}"
    );
    // A file whose size says nothing (a device, a pipe) is read only up to the cap.
    let err = RuleSet::load(Path::new("/dev/zero")).expect_err("refused");
    assert!(
        matches!(
            err,
            RulesError::TooLarge {
                size: 1_048_577,
                at_least: true,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .starts_with("/dev/zero is at least 1048577 bytes"),
        "{err}"
    );
}

fn problems_of(text: &str) -> Vec<String> {
    match RuleSet::parse(text, Path::new("p.toml")) {
        Ok(set) => panic!("expected problems, got {} rules", set.len()),
        Err(err) => err.problems().iter().map(ToString::to_string).collect(),
    }
}

#[test]
fn every_problem_of_a_file_is_reported_at_once() {
    let problems = problems_of(
        "[[rule]]\nname = \"a\"\nmetric = \"thread\"\nop = \">\"\nthreshold = 5\n\
         for = \"10 parsecs\"\ncolour = \"red\"\n\n\
         [[rule]]\nname = 7\nmetric = \"threads\"\nop = \"=>\"\nthreshold = [1]\n\n\
         [[rule]]\nmetric = \"threads\"\nop = \">\"\nthreshold = 1\n\n[extra]\n",
    );
    let expected = [
        "p.toml:3:10: unknown metric \"thread\"",
        "p.toml:6:7: invalid `for`: invalid duration \"10 parsecs\"",
        "p.toml:7:1: unknown field `colour`, expected one of `name`, `metric`",
        "p.toml:10:8: `name` must be a string, not integer 7",
        "p.toml:12:6: invalid op \"=>\"",
        "p.toml:13:13: `threshold` must be a number or a string, not array [1]",
        "p.toml:15:1: missing field `name`; every rule needs name, metric, op and threshold",
        "p.toml:20:2: unknown field `extra`, expected `rule` or `metrics`",
    ];
    assert_eq!(problems.len(), expected.len(), "{problems:#?}");
    for (problem, expected) in problems.iter().zip(expected) {
        assert!(
            problem.starts_with(expected),
            "{problem}\n  expected {expected}"
        );
    }
}

#[test]
fn rule_must_be_an_array_of_tables() {
    let problems = problems_of("[rule]\nname = \"a\"\n");
    assert_eq!(
        problems,
        [
            "p.toml:1:2: invalid TOML: `rule` must be an array of tables, not table: write each rule as a [[rule]] table"
        ]
    );
    let problems = problems_of("rule = [1]\n");
    assert_eq!(
        problems,
        [
            "p.toml:1:9: invalid TOML: `rule` must be a table, not integer: write each rule as a [[rule]] table"
        ]
    );
}

#[test]
fn misspelt_required_field_is_one_problem_with_a_suggestion() {
    let (line, column, problem, text) = problem("unknown-field.toml");
    assert_eq!((line, column), (Some(5), Some(1)));
    assert!(matches!(problem, InvalidRule::UnknownField { .. }));
    assert!(
        text.contains("unknown field `treshold` (did you mean `threshold`?)"),
        "{text}"
    );
    // The metrics section's own problems are reported with the rules'.
    let problems = problems_of(
        "[metrics]\nqueue = \"x\"\n\n[[rule]]\nname = \"a\"\nmetric = \"nope\"\nop = \">\"\nthreshold = 1\n",
    );
    assert_eq!(problems.len(), 2, "{problems:#?}");
    assert!(
        problems[0].contains("unknown field `queue`"),
        "{}",
        problems[0]
    );
    assert!(
        problems[1].starts_with("p.toml:6:10: unknown metric"),
        "{}",
        problems[1]
    );
}

fn one_rule(field: &str) -> String {
    format!("[[rule]]\nname = \"a\"\nmetric = \"threads\"\nop = \">\"\nthreshold = 5\n{field}\n")
}

#[test]
fn for_is_bounded_to_30_days() {
    for written in ["1e20", "1e19", "2592001", "\"1e20\"", "\"31d\""] {
        let problems = problems_of(&one_rule(&format!("for = {written}")));
        let shown = written.trim_matches('"');
        assert_eq!(
            problems,
            [format!(
                "p.toml:6:7: invalid `for`: {shown} is longer than the 30 days a rule may wait; \
                 `for` must be from 0s to 30d (2592000 seconds)"
            )]
        );
    }
    for (written, seconds) in [("\"30d\"", 2_592_000), ("2592000", 2_592_000), ("1.5", 1)] {
        let set = rules(&one_rule(&format!("for = {written}")));
        assert_eq!(set.rules()[0].for_duration.as_secs(), seconds, "{written}");
    }
    let problems = problems_of(&one_rule("for = -1"));
    assert!(problems[0].contains("-1 is not a duration"), "{problems:?}");
}

#[test]
fn thresholds_must_be_finite() {
    for written in ["inf", "-inf", "nan", "1e400"] {
        let problems = problems_of(&format!(
            "[[rule]]\nname = \"a\"\nmetric = \"threads\"\nop = \">\"\nthreshold = {written}\n"
        ));
        assert_eq!(
            problems,
            [format!(
                "p.toml:5:13: invalid threshold \"{written}\": the threshold must be a finite number (not inf or nan), in the metric's unit"
            )]
        );
    }
}

#[test]
fn huge_and_tiny_numbers_print_compactly() {
    assert_eq!(format_number(1e308), "1e308");
    assert_eq!(format_number(-1e308), "-1e308");
    assert_eq!(format_number(1.234e20), "1.23e20");
    assert_eq!(format_number(1e15), "1e15");
    assert_eq!(format_number(999_999_999_999_999.0), "999999999999999");
    assert_eq!(format_number(4.5e-9), "4.5e-9");
    assert_eq!(format_number(f64::MIN_POSITIVE), "2.23e-308");
    assert_eq!(format_number(0.0), "0");
    assert_eq!(format_number(-0.0), "0");
    assert_eq!(format_number(0.000_001_5), "0.0000015");
    for value in [1e308, 1e-300, 5e-324, -1.7976931348623157e308] {
        assert!(format_number(value).len() <= 10, "{}", format_number(value));
    }
    // In messages, in each metric's unit.
    let set = rules(
        "[[rule]]\nname = \"n\"\nmetric = \"threads\"\nop = \">\"\nthreshold = 1e300\n\
         [[rule]]\nname = \"s\"\nmetric = \"latency_p99_seconds\"\nop = \">\"\nthreshold = 1\n\
         [[rule]]\nname = \"b\"\nmetric = \"rss_bytes\"\nop = \">\"\nthreshold = 1\n",
    );
    let render = |name: &str| {
        let rule = set.get(name).expect("rule");
        rule.render(&rule.message, 1e308)
    };
    assert_eq!(render("n"), "threads is 1e308 (> 1e300)");
    assert_eq!(render("s"), "latency_p99_seconds is 1e308s (> 1.00s)");
    assert_eq!(render("b"), "rss_bytes is 1e308 B (> 1 B)");
    let mut engine = RuleEngine::new(set.clone());
    let events = engine.evaluate(0.0, &values(&[("threads", 1e308)]));
    let [AlertEvent::Fired(alert)] = events.as_slice() else {
        panic!("expected one alert, got {events:?}");
    };
    assert_eq!(alert.message, "threads is 1e308 (> 1e300)");
}

/// `count` rules, one per metric in turn, each with every field.
fn generated_rules(count: usize) -> String {
    let metrics = [
        "threads",
        "memory_used_ratio",
        "latency_p99_seconds",
        "queue_depth",
    ];
    let mut text = String::new();
    for i in 0..count {
        let metric = metrics[i % metrics.len()];
        text.push_str(&format!(
            "[[rule]]\nname = \"rule-{i}\"\nmetric = \"{metric}\"\nop = \">\"\nthreshold = {i}\n\
             for = \"10s\"\nseverity = \"info\"\nmessage = \"{{metric}} is {{value}}\"\n\n"
        ));
    }
    text
}

#[test]
fn twenty_thousand_rules_parse() {
    let count = 20_000;
    let text = generated_rules(count);
    let set = rules(&text);
    assert_eq!(set.len(), count);
    let last = &set.rules()[count - 1];
    assert_eq!(last.name, "rule-19999");
    // Nine lines per rule: positions are right at the end of a long file too.
    assert_eq!(last.defined_at.line, Some(9 * (count - 1) + 2));
    assert_eq!(last.defined_at.column, Some(8));
    // A name used again at the end is found, with the line of its first use.
    let twice = format!(
        "{text}[[rule]]\nname = \"rule-3\"\nmetric = \"threads\"\nop = \">\"\nthreshold = 1\n"
    );
    let problems = problems_of(&twice);
    assert_eq!(
        problems,
        [format!(
            "p.toml:{}:8: rule \"rule-3\" is defined twice in this file (first at line 29); rename one or delete it",
            9 * count + 2
        )]
    );
    // Merging sets of this size: replaced in place, new ones appended.
    let mut merged = set.clone();
    merged.merge(rules(&generated_rules(count + 1)));
    assert_eq!(merged.len(), count + 1);
    assert_eq!(merged.rules()[count].name, "rule-20000");
}

#[test]
fn several_problems_reported_together() {
    let err = RuleSet::load(&fixture("several-errors.toml")).expect_err("refused");
    let problems: Vec<String> = err.problems().iter().map(ToString::to_string).collect();
    assert_eq!(problems.len(), 3, "{problems:#?}");
    assert!(
        problems[0].contains(":6:13: invalid threshold \"eighty\""),
        "{}",
        problems[0]
    );
    assert!(
        problems[1]
            .contains(":9:8: rule \"memory\" is defined twice in this file (first at line 3)"),
        "{}",
        problems[1]
    );
    assert!(
        problems[2].contains(":12:13: invalid threshold \"80%\": a percentage is only allowed"),
        "{}",
        problems[2]
    );
}

#[test]
fn missing_required_field() {
    let err = RuleSet::parse(
        "[[rule]]\nname = \"x\"\nmetric = \"threads\"\nop = \">\"\n",
        Path::new("m.toml"),
    )
    .expect_err("refused");
    let text = err.to_string();
    assert!(
        text.starts_with("m.toml:1:1: missing field `threshold`"),
        "{text}"
    );
}

#[test]
fn unknown_placeholder_and_top_level_typo() {
    let err = RuleSet::parse(
        "[[rule]]\nname = \"x\"\nmetric = \"threads\"\nop = \">\"\nthreshold = 5\nmessage = \"{count} threads\"\n",
        Path::new("p.toml"),
    )
    .expect_err("refused");
    assert!(
        err.to_string()
            .starts_with("p.toml:6:11: unknown placeholder {count} in message"),
        "{err}"
    );
    let err =
        RuleSet::parse("[[rules]]\nname = \"x\"\n", Path::new("t.toml")).expect_err("refused");
    assert!(err.to_string().contains("unknown field `rules`"), "{err}");
}

#[test]
fn merge_later_rule_overrides() {
    let set = load_rule_files(&[
        Path::new(env!("CARGO_MANIFEST_DIR")).join("rules/default.toml"),
        fixture("override.toml"),
    ])
    .expect("loads");
    assert_eq!(set.len(), 12);
    // Replaced in place, the new rule appended.
    assert_eq!(set.rules()[0].name, "too-many-threads");
    assert_eq!(set.rules()[0].threshold.value, 200.0);
    assert_eq!(set.rules()[0].severity, Severity::Error);
    assert!(set.rules()[0].defined_at.file.ends_with("override.toml"));
    assert_eq!(set.rules()[11].name, "cpu-idle");
    assert_eq!(set.rules()[11].remedy, "");
}

#[test]
fn percent_strings_only_for_ratios() {
    let set = rules(
        "[[rule]]\nname = \"m\"\nmetric = \"memory_used_ratio\"\nop = \">=\"\nthreshold = \"85.5%\"\n",
    );
    assert!((set.rules()[0].threshold.value - 0.855).abs() < 1e-12);
    assert!(
        RuleSet::parse(
            "[[rule]]\nname = \"m\"\nmetric = \"threads\"\nop = \">\"\nthreshold = \"50%\"\n",
            Path::new("x.toml")
        )
        .is_err()
    );
}

#[test]
fn ops() {
    assert!(Op::Greater.holds(2.0, 1.0));
    assert!(!Op::Greater.holds(1.0, 1.0));
    assert!(Op::GreaterOrEqual.holds(1.0, 1.0));
    assert!(Op::Less.holds(0.5, 1.0));
    assert!(Op::LessOrEqual.holds(1.0, 1.0));
    assert!(Op::Equal.holds(0.1 + 0.2, 0.3));
    assert!(Op::NotEqual.holds(2.0, 1.0));
    assert_eq!(Op::parse(" >= "), Some(Op::GreaterOrEqual));
    assert_eq!(Op::parse("=>"), None);
}

#[test]
fn messages_render_in_the_metric_unit() {
    let set = RuleSet::defaults();
    let memory = set.get("memory-pressure").expect("rule");
    assert_eq!(
        memory.render(&memory.message, 0.853),
        "resident memory at 85.3% of the effective limit (threshold 80%)"
    );
    let latency = set.get("slow-requests").expect("rule");
    assert_eq!(
        latency.render(&latency.message, 45.5),
        "p99 latency 45.50s (threshold 30.00s)"
    );
    let wait = set.get("runqueue-wait").expect("rule");
    assert_eq!(
        wait.render(
            "{name}: {metric} {op} {threshold} for {for}, {{literal}}",
            3.0
        ),
        "runqueue-wait: runqueue_wait_ratio_busy > 1 for 10s, {literal}"
    );
    assert_eq!(format_number(2.345), "2.35");
    assert_eq!(format_number(0.00123), "0.0012");
    assert_eq!(format_number(-3.0), "-3");
}

fn wait_rule() -> RuleEngine {
    RuleEngine::new(rules(
        "[[rule]]\nname = \"runqueue-wait\"\nmetric = \"runqueue_wait_ratio\"\nop = \">\"\n\
         threshold = 1\nfor = \"10s\"\nseverity = \"warning\"\n\
         message = \"wait {value}x for {for}\"\nremedy = \"cap pools at {threshold}\"\n",
    ))
}

#[test]
fn pending_then_firing_then_resolved() {
    let mut engine = wait_rule();
    let high = values(&[("runqueue_wait_ratio", 3.0)]);
    // Pending from t=100 until the 10 s have passed.
    for t in 100..110 {
        assert_eq!(engine.evaluate(f64::from(t), &high), [], "t={t}");
        assert_eq!(engine.pending(), ["runqueue-wait"]);
    }
    let events = engine.evaluate(110.0, &high);
    let [AlertEvent::Fired(alert)] = events.as_slice() else {
        panic!("expected one alert, got {events:?}");
    };
    assert_eq!(alert.rule, "runqueue-wait");
    assert_eq!((alert.since, alert.fired_at), (100.0, 110.0));
    assert_eq!(alert.message, "wait 3x for 10s");
    assert_eq!(alert.remedy, "cap pools at 1");
    assert_eq!(alert.severity, Severity::Warning);
    // Still firing: no new event, the latest value is kept.
    assert_eq!(
        engine.evaluate(111.0, &values(&[("runqueue_wait_ratio", 4.0)])),
        []
    );
    let active = engine.active();
    assert_eq!(active.len(), 1);
    assert_eq!(active[0].value, 4.0);
    // Resolves when the condition no longer holds.
    let events = engine.evaluate(125.0, &values(&[("runqueue_wait_ratio", 0.5)]));
    let [AlertEvent::Resolved(resolution)] = events.as_slice() else {
        panic!("expected a resolution, got {events:?}");
    };
    assert_eq!(resolution.duration_firing, 15.0);
    assert_eq!(resolution.value, 0.5);
    assert!(engine.active().is_empty());
}

#[test]
fn condition_dropping_while_pending_resets() {
    let mut engine = wait_rule();
    let high = values(&[("runqueue_wait_ratio", 2.0)]);
    let low = values(&[("runqueue_wait_ratio", 0.2)]);
    assert_eq!(engine.evaluate(0.0, &high), []);
    assert_eq!(engine.evaluate(9.0, &high), []);
    // Below the threshold: pending ends without an event.
    assert_eq!(engine.evaluate(10.0, &low), []);
    assert!(engine.pending().is_empty());
    // It must hold another full 10 s.
    assert_eq!(engine.evaluate(11.0, &high), []);
    assert_eq!(engine.evaluate(20.0, &high), []);
    assert_eq!(engine.evaluate(21.0, &high).len(), 1);
}

#[test]
fn missing_metric_holds_state() {
    let mut engine = wait_rule();
    let high = values(&[("runqueue_wait_ratio", 2.0)]);
    let absent = values(&[("threads", 10.0)]);
    assert_eq!(engine.evaluate(0.0, &high), []);
    // Unavailable for a while: still pending, and the clock still runs.
    assert_eq!(engine.evaluate(5.0, &absent), []);
    assert_eq!(engine.pending(), ["runqueue-wait"]);
    assert_eq!(engine.evaluate(10.0, &high).len(), 1);
    // Firing, then unavailable: neither resolves nor fires again.
    assert_eq!(engine.evaluate(11.0, &absent), []);
    assert_eq!(
        engine.evaluate(12.0, &values(&[("runqueue_wait_ratio", f64::NAN)])),
        []
    );
    assert_eq!(engine.active().len(), 1);
}

#[test]
fn rules_without_for_fire_at_once() {
    let mut engine = RuleEngine::new(RuleSet::defaults());
    let events = engine.evaluate(
        0.0,
        &values(&[
            ("threads", 212.0),
            ("memory_used_ratio", 0.5),
            ("gpu_processes_per_device_max", 2.0),
        ]),
    );
    let names: Vec<&str> = events.iter().map(AlertEvent::rule).collect();
    assert_eq!(names, ["too-many-threads", "gpu-shared"]);
    let AlertEvent::Fired(alert) = &events[0] else {
        panic!("fired");
    };
    assert_eq!(alert.message, "212 threads in the process tree (limit 50)");
    let events = engine.evaluate(1.0, &values(&[("threads", 40.0)]));
    assert_eq!(
        events.iter().map(AlertEvent::rule).collect::<Vec<_>>(),
        ["too-many-threads"]
    );
    assert_eq!(engine.active().len(), 1);
    assert_eq!(engine.active()[0].rule, "gpu-shared");
}

#[test]
fn events_serialise_as_json_lines() {
    let mut engine = wait_rule();
    let high = values(&[("runqueue_wait_ratio", 2.0)]);
    engine.evaluate(0.0, &high);
    let fired = engine.evaluate(10.0, &high);
    let json = serde_json::to_value(&fired[0]).expect("serialises");
    assert_eq!(json["type"], "alert");
    assert_eq!(json["rule"], "runqueue-wait");
    assert_eq!(json["severity"], "warning");
    assert_eq!(json["op"], ">");
    assert_eq!(json["value"], 2.0);
    assert_eq!(json["threshold"], 1.0);
    assert_eq!(json["since"], 0.0);
    let resolved = engine.evaluate(12.0, &values(&[("runqueue_wait_ratio", 0.0)]));
    let json = serde_json::to_value(&resolved[0]).expect("serialises");
    assert_eq!(json["type"], "resolved");
    assert_eq!(json["rule"], "runqueue-wait");
    assert_eq!(json["duration_firing"], 2.0);
}

#[test]
fn rule_names_outside_the_safe_set_are_refused() {
    let (line, column, problem, text) = problem("bad-name.toml");
    assert_eq!((line, column), (Some(3), Some(8)), "{text}");
    assert_eq!(
        problem,
        InvalidRule::UnsafeName {
            name: "threads\n{{ $value }}".into()
        }
    );
    // TOML literal strings: the characters as they are.
    for bad in ["a b", "a\"b", "{{x}}", "naïve", "a\u{202e}b", "x{y}", "a/b"] {
        let text =
            format!("[[rule]]\nname = '{bad}'\nmetric = \"threads\"\nop = \">\"\nthreshold = 1\n");
        let err = RuleSet::parse(&text, Path::new("t.toml")).expect_err(bad);
        assert!(
            err.to_string().contains("invalid rule name"),
            "{bad}: {err}"
        );
    }
    for good in ["threads-50", "gpu.shared", "ns:rule_1", "A"] {
        let set = rules(&format!(
            "[[rule]]\nname = {good:?}\nmetric = \"threads\"\nop = \">\"\nthreshold = 1\n"
        ));
        assert_eq!(set.rules()[0].name, good);
    }
}
