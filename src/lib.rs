//! tfwatch: a deadlock and oversubscription diagnostic profiler for machine-learning
//! processes. The module list reads as the data flow of `shared/design.md`:
//! sources → sampler → model → timeline → detectors/rules → report/exports.

pub mod attach;
pub mod audit;
pub mod cli;
pub mod commands;
pub mod detect;
pub mod export;
pub mod gpu;
pub mod metrics;
pub mod model;
pub mod parse;
pub mod report;
pub mod rules;
pub mod run;
pub mod sampler;
pub mod scrape;
pub mod snapshot;
pub mod stacks;
pub mod timeline;
pub mod tui;
pub mod units;
pub mod watch;
pub mod workload;
