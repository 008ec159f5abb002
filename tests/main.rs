//! One integration-test binary, so the link step runs once.

mod sampler;
mod support;

mod rules;
