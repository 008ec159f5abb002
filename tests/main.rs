//! One integration-test binary, so the link step runs once.

mod support;

mod prometheus;
mod rules;
mod sampler;
mod scrape;
mod snapshot;
mod workload;
