//! The pass/fail table `run-workload --verify` prints.

use super::*;

/// The table for people; the detected columns appear once an observer fills them.
pub fn render_table(rows: &[VerifyRow]) -> String {
    let with_detection = rows.iter().any(|row| row.detected.is_some());
    let mut header = vec![
        "scenario",
        "variant",
        "measured",
        "value",
        "broken/fixed",
        "ok",
    ];
    if with_detection {
        header.extend(["detected", "latency"]);
    }
    header.push("note");
    let mut table: Vec<Vec<String>> = vec![header.iter().map(|h| h.to_string()).collect()];
    for row in rows {
        let mut cells = vec![
            row.scenario.clone(),
            row.variant.clone(),
            row.measured.clone(),
            row.value.clone(),
            row.ratio.clone().unwrap_or_else(|| "-".to_string()),
            if row.pass { "ok" } else { "FAIL" }.to_string(),
        ];
        if with_detection {
            cells.push(row.detected.clone().unwrap_or_else(|| "-".to_string()));
            cells.push(
                row.detection_latency_seconds
                    .map_or("-".to_string(), |s| format!("{s:.1}s")),
            );
        }
        cells.push(row.note.clone());
        table.push(cells);
    }
    let columns = table[0].len();
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            table
                .iter()
                .map(|r| r[c].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for cells in &table {
        let line: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(c, cell)| {
                if c + 1 == columns {
                    cell.clone()
                } else {
                    format!("{cell:<width$}", width = widths[c])
                }
            })
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out.pop();
    out
}
