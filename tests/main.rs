//! One integration-test binary, so the link step runs once.

mod support;

mod deadlock;
mod rules;
mod sampler;
mod scrape;
mod snapshot;
mod workload;
