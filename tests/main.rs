//! One integration-test binary, so the link step runs once.

mod support;

mod attach;
mod rules;
mod run;
mod sampler;
mod scrape;
mod snapshot;
mod workload;
