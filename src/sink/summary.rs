//! The run summary (peaks and rates of one run) and its comparison with a stored
//! baseline: the regression gate.

use std::collections::BTreeMap;
use std::io::Write;

use serde::{Deserialize, Serialize};

use crate::engine::Values;

/// Peaks and rates of one run; written by `--summary`, read by `--baseline`.
#[derive(Debug, Clone, Default, Serialize, schemars::JsonSchema, Deserialize, PartialEq)]
pub struct RunSummary {
    pub peak_threads: f64,
    pub peak_runnable_threads: f64,
    pub peak_rss_bytes: f64,
    /// Σ run-queue wait / Σ run time over the whole run.
    pub runqueue_wait_ratio: f64,
    pub involuntary_switches_per_second: f64,
    pub gpu_memory_peak_bytes: Option<f64>,
    pub wall_seconds: f64,
    pub samples: u64,
}

/// Accumulates a [`RunSummary`] from the watch's per-sample values.
#[derive(Debug, Default)]
pub struct SummaryBuilder {
    summary: RunSummary,
    wait_ratio_sum: f64,
    switches_sum: f64,
    rate_samples: u64,
}

impl SummaryBuilder {
    pub fn add(&mut self, values: &Values) {
        let s = &mut self.summary;
        s.samples += 1;
        let get = |name: &str| values.get(name).copied();
        if let Some(v) = get("threads") {
            s.peak_threads = s.peak_threads.max(v);
        }
        if let Some(v) = get("threads_runnable") {
            s.peak_runnable_threads = s.peak_runnable_threads.max(v);
        }
        if let Some(v) = get("rss_bytes") {
            s.peak_rss_bytes = s.peak_rss_bytes.max(v);
        }
        if let Some(v) = get("gpu_memory_used_bytes") {
            s.gpu_memory_peak_bytes = Some(s.gpu_memory_peak_bytes.unwrap_or(0.0).max(v));
        }
        if let (Some(w), Some(c)) = (
            get("runqueue_wait_ratio"),
            get("involuntary_switches_per_second"),
        ) {
            self.wait_ratio_sum += w;
            self.switches_sum += c;
            self.rate_samples += 1;
        }
    }

    pub fn finish(mut self, wall_seconds: f64) -> RunSummary {
        if self.rate_samples > 0 {
            let n = self.rate_samples as f64;
            self.summary.runqueue_wait_ratio = self.wait_ratio_sum / n;
            self.summary.involuntary_switches_per_second = self.switches_sum / n;
        }
        self.summary.wall_seconds = wall_seconds;
        self.summary
    }
}

/// The summary fields a tolerance can name, with their short names.
const COMPARED: &[(&str, &str)] = &[
    ("threads", "peak_threads"),
    ("runnable", "peak_runnable_threads"),
    ("rss", "peak_rss_bytes"),
    ("wait_ratio", "runqueue_wait_ratio"),
    ("switches", "involuntary_switches_per_second"),
    ("gpu_memory", "gpu_memory_peak_bytes"),
    ("wall", "wall_seconds"),
];

/// Tolerances used when `--max-increase` is not given.
pub const DEFAULT_MAX_INCREASE: &str = "threads=10%,runnable=25%,rss=20%";

/// Parses `threads=10%,rss=20%` into short name → allowed relative increase.
pub fn parse_max_increase(text: &str) -> Result<BTreeMap<String, f64>, String> {
    let mut limits = BTreeMap::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (name, value) = part.split_once('=').ok_or_else(|| {
            format!("invalid tolerance {part:?}: expected NAME=PERCENT%, e.g. threads=10%")
        })?;
        let name = name.trim();
        if !COMPARED.iter().any(|(short, _)| *short == name) {
            let known: Vec<&str> = COMPARED.iter().map(|(s, _)| *s).collect();
            return Err(format!(
                "unknown metric {name:?} in --max-increase; known: {}",
                known.join(", ")
            ));
        }
        let number = value.trim().trim_end_matches('%');
        let percent: f64 = number
            .parse()
            .ok()
            .filter(|p: &f64| p.is_finite() && *p >= 0.0)
            .ok_or_else(|| {
                format!("invalid tolerance {value:?} for {name}: expected a percentage such as 10%")
            })?;
        limits.insert(name.to_string(), percent / 100.0);
    }
    Ok(limits)
}

/// One row of the baseline comparison.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema, PartialEq)]
pub struct Comparison {
    pub metric: String,
    pub baseline: f64,
    pub current: f64,
    /// (current − baseline) / baseline; `None` when the baseline is 0.
    pub ratio: Option<f64>,
    pub allowed_increase: f64,
    pub regressed: bool,
}

fn field(summary: &RunSummary, name: &str) -> Option<f64> {
    match name {
        "peak_threads" => Some(summary.peak_threads),
        "peak_runnable_threads" => Some(summary.peak_runnable_threads),
        "peak_rss_bytes" => Some(summary.peak_rss_bytes),
        "runqueue_wait_ratio" => Some(summary.runqueue_wait_ratio),
        "involuntary_switches_per_second" => Some(summary.involuntary_switches_per_second),
        "gpu_memory_peak_bytes" => summary.gpu_memory_peak_bytes,
        "wall_seconds" => Some(summary.wall_seconds),
        _ => None,
    }
}

/// Compares `current` with `baseline` under the tolerances.
pub fn compare(
    baseline: &RunSummary,
    current: &RunSummary,
    limits: &BTreeMap<String, f64>,
) -> Vec<Comparison> {
    COMPARED
        .iter()
        .filter_map(|(short, name)| {
            let allowed = *limits.get(*short)?;
            let (b, c) = (field(baseline, name)?, field(current, name)?);
            let ratio = (b > 0.0).then(|| (c - b) / b);
            let regressed = match ratio {
                Some(r) => r > allowed,
                None => c > 0.0,
            };
            Some(Comparison {
                metric: (*short).to_string(),
                baseline: b,
                current: c,
                ratio,
                allowed_increase: allowed,
                regressed,
            })
        })
        .collect()
}

/// Prints the comparison table for people.
pub fn write_comparison(rows: &[Comparison], out: &mut impl Write) -> std::io::Result<()> {
    writeln!(
        out,
        "{:<12} {:>14} {:>14} {:>9} {:>8}  verdict",
        "metric", "baseline", "current", "change", "allowed"
    )?;
    for row in rows {
        writeln!(
            out,
            "{:<12} {:>14.2} {:>14.2} {:>9} {:>7.0}%  {}",
            row.metric,
            row.baseline,
            row.current,
            row.ratio
                .map(|r| format!("{:+.1}%", r * 100.0))
                .unwrap_or_else(|| "n/a".to_string()),
            row.allowed_increase * 100.0,
            if row.regressed { "REGRESSED" } else { "ok" }
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tolerances_parse_and_refuse_unknowns() {
        let limits = parse_max_increase("threads=10%, rss=20").unwrap();
        assert_eq!(limits["threads"], 0.1);
        assert_eq!(limits["rss"], 0.2);
        assert!(parse_max_increase("cats=1%").unwrap_err().contains("cats"));
        assert!(parse_max_increase("threads").is_err());
        assert!(parse_max_increase("threads=-5%").is_err());
    }

    #[test]
    fn regression_beyond_tolerance() {
        let baseline = RunSummary {
            peak_threads: 10.0,
            peak_rss_bytes: 100.0,
            ..RunSummary::default()
        };
        let current = RunSummary {
            peak_threads: 12.0,
            peak_rss_bytes: 110.0,
            ..RunSummary::default()
        };
        let rows = compare(
            &baseline,
            &current,
            &parse_max_increase("threads=10%,rss=20%").unwrap(),
        );
        assert_eq!(rows.len(), 2);
        let threads = rows.iter().find(|r| r.metric == "threads").unwrap();
        assert!(threads.regressed);
        assert!((threads.ratio.unwrap() - 0.2).abs() < 1e-9);
        assert!(!rows.iter().find(|r| r.metric == "rss").unwrap().regressed);
    }

    #[test]
    fn summary_keeps_peaks_and_means() {
        let mut builder = SummaryBuilder::default();
        for (threads, ratio) in [(3.0, 1.0), (7.0, 3.0), (5.0, 2.0)] {
            let mut v = Values::new();
            v.insert("threads".into(), threads);
            v.insert("runqueue_wait_ratio".into(), ratio);
            v.insert("involuntary_switches_per_second".into(), 10.0);
            builder.add(&v);
        }
        let s = builder.finish(4.0);
        assert_eq!(s.peak_threads, 7.0);
        assert_eq!(s.runqueue_wait_ratio, 2.0);
        assert_eq!(s.wall_seconds, 4.0);
        assert_eq!(s.samples, 3);
    }
}
