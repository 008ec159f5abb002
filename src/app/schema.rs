//! `tfwatch schema events|report`: the JSON Schemas (draft 2020-12) of what tfwatch
//! writes for machines, derived from the types that write it.

use std::io::Write;

use anyhow::Result;
use schemars::JsonSchema;

use super::run::RunReport;
use crate::cli::{SchemaArgs, SchemaWhat};
use crate::sink::report::SnapshotReport;

/// A JSON report of tfwatch: `snapshot --format json`, `run --report`, or `ranks
/// --json`.
#[derive(JsonSchema)]
#[serde(untagged)]
#[allow(dead_code)] // only its schema is used
enum ReportDocument {
    Run(Box<RunReport>),
    Snapshot(Box<SnapshotReport>),
    Ranks(Box<super::ranks::RanksReport>),
}

/// The schema of `what`.
pub fn schema(what: SchemaWhat) -> schemars::Schema {
    match what {
        SchemaWhat::Events => crate::sink::line::events_schema(),
        SchemaWhat::Report => crate::sink::line::schema_of::<ReportDocument>(),
    }
}

/// `tfwatch schema WHAT`: the schema, pretty, on stdout.
pub fn command(args: &SchemaArgs) -> Result<u8> {
    let mut stdout = std::io::stdout().lock();
    // As an io::Error, so that a closed stdout (`| head`) is not an error.
    crate::sink::json::to_writer_pretty(&mut stdout, &schema(args.what))
        .map_err(std::io::Error::from)?;
    writeln!(stdout)?;
    stdout.flush()?;
    Ok(super::exit::OK)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_report_schema_offers_both_documents() {
        let schema = serde_json::to_value(schema(SchemaWhat::Report)).unwrap();
        assert_eq!(
            schema["$schema"],
            "https://json-schema.org/draft/2020-12/schema"
        );
        let text = schema.to_string();
        for field in [
            "outcome",
            "processes",
            "needs_longer_watch",
            "diagnosis",
            "missing_ranks",
        ] {
            assert!(text.contains(&format!("\"{field}\"")), "{field}");
        }
    }
}
