//! One integration-test binary, so the link step runs once.

mod support;

mod rules;
mod sampler;
mod scrape;
mod snapshot;
mod tui;
mod workload;
