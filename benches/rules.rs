//! Parse time of rule files: `RuleSet::parse` (TOML, checks, positions for every rule) of
//! generated files of 1,000 and 10,000 rules, each with every field. Positions come from
//! line starts found once, so the time grows linearly with the file.
//!
//! Run: `cargo bench --bench rules`.

use std::hint::black_box;
use std::path::Path;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput};
use tfwatch::rules::RuleSet;

/// `count` rules over a few metrics, nine lines each.
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

fn main() {
    let mut criterion = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5))
        .configure_from_args();
    let mut group = criterion.benchmark_group("rules parse");
    for count in [1_000, 10_000] {
        let text = generated_rules(count);
        let parsed = RuleSet::parse(&text, Path::new("bench.toml")).map(|set| set.len());
        assert_eq!(parsed.ok(), Some(count), "the generated rules are valid");
        group.throughput(Throughput::Elements(count as u64));
        group.bench_with_input(BenchmarkId::from_parameter(count), &text, |b, text| {
            b.iter(|| RuleSet::parse(black_box(text), Path::new("bench.toml")));
        });
    }
    group.finish();
    criterion.final_summary();
}
