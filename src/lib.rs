//! tfwatch: a deadlock and oversubscription diagnostic profiler for machine-learning
//! processes. The module list reads as the data flow (see `ARCHITECTURE.md`):
//! sources → collection → model → timeline → detectors and rules → engine → sinks, with
//! the command layer (`app`, the only user of `cli`) choosing what runs.

pub mod units;

pub mod model;

pub mod source;

pub mod collect;

pub mod timeline;

pub mod detect;

pub mod rules;

pub mod engine;

pub mod sink;

pub mod workload;

pub mod verify;

pub mod cli;

pub mod app;
