//! One integration-test binary, so the link step runs once.

mod scrape;
mod support;
