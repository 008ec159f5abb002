//! `tfwatch metrics`: the metric catalogue (`model::metrics::METRICS`) that rules compare
//! and `--listen` exports, for people (a table) or scripts (`--json`) — what a rules
//! error points to, since `docs/` is not installed with the binary.

use std::io::Write;

use anyhow::{Context, Result};
use serde::Serialize;

use crate::cli::MetricsArgs;
use crate::model::metrics::{METRICS, MetricInfo};

/// One metric as `--json` writes it.
#[derive(Serialize)]
struct Metric<'a> {
    name: &'a str,
    unit: &'a str,
    help: &'a str,
}

/// The table: name, unit and meaning, one metric a line.
pub fn write_table(metrics: &[MetricInfo], out: &mut impl Write) -> std::io::Result<()> {
    let name_width = metrics.iter().map(|m| m.name.len()).max().unwrap_or(0);
    let unit_width = metrics.iter().map(|m| m.unit.len()).max().unwrap_or(0);
    writeln!(
        out,
        "{:<name_width$}  {:<unit_width$}  MEANING",
        "METRIC", "UNIT"
    )?;
    for m in metrics {
        writeln!(
            out,
            "{:<name_width$}  {:<unit_width$}  {}",
            m.name, m.unit, m.help
        )?;
    }
    writeln!(
        out,
        "\nRules compare these (a *_ratio threshold may be written as a percentage, \"80%\"); --listen exports each as tfwatch_<metric>."
    )
}

/// `tfwatch metrics [--json]`.
pub fn command(args: &MetricsArgs) -> Result<u8> {
    let mut out = std::io::stdout().lock();
    if args.json {
        let list: Vec<Metric> = METRICS
            .iter()
            .map(|m| Metric {
                name: m.name,
                unit: m.unit,
                help: m.help,
            })
            .collect();
        // As an io::Error, so that a closed stdout (`| head`) is not an error.
        crate::sink::json::to_writer_pretty(&mut out, &list).map_err(std::io::Error::from)?;
        writeln!(out)?;
    } else {
        write_table(METRICS, &mut out)?;
    }
    out.flush().context("cannot write the metrics")?;
    Ok(super::exit::OK)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_lists_every_metric_with_its_unit() {
        let mut out = Vec::new();
        write_table(METRICS, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        for m in METRICS {
            let line = text
                .lines()
                .find(|l| l.split_whitespace().next() == Some(m.name))
                .unwrap_or_else(|| panic!("{} not listed: {text}", m.name));
            assert!(line.contains(m.unit) && line.ends_with(m.help), "{line}");
        }
    }
}
