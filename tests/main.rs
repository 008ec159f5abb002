//! One integration-test binary, so the link step runs once.

// The whole crate is test code: unwrap is as welcome here as in #[test] functions.
#![allow(clippy::unwrap_used)]

mod support;

mod attach;
mod contention;
mod deadlock;
mod distributed;
mod docs;
mod environ;
mod explain;
mod export_limits;
mod frameworks;
mod fuse;
mod gil;
mod html;
mod idle;
mod layers;
mod node;
mod prometheus;
mod ranks;
mod rules;
mod run;
mod sampler;
mod schema;
mod scrape;
mod snapshot;
mod stuck;
mod tensorflow;
mod throttle;
mod tui;
mod workload;
