//! Sinks: where the engine's events and read-only state go — the triage report (text
//! and JSON), JSON lines, the Prometheus exporter, JUnit, the run summary, the HTML
//! report with charts and the live dashboard. Sinks never read the system.

pub mod events;
pub mod export;
pub mod html;
pub mod json;
pub mod junit;
pub mod line;
pub mod record;
pub mod report;
pub mod summary;
pub mod tui;
