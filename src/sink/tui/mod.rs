//! The live dashboard of `tfwatch attach` when stdout is a terminal.
//!
//! - [`app`]: what the user can change and the keys that change it (pure);
//! - [`view`]: the view model built from the watch;
//! - [`widgets`]: one render function per part of the screen, taking the view model;
//! - [`terminal`]: raw mode and the alternate screen, restored on every exit and panic;
//! - [`run`]: the loop tying the collector, the watch and the screen together;
//! - [`node`]: the node view of `tfwatch node` (its jobs; Enter opens a job's screen).

pub mod app;
pub mod node;
pub mod run;
pub mod terminal;
pub mod view;
pub mod widgets;

pub use run::{CrosstermInput, Dashboard, ScriptedInput, TermInput};

#[cfg(test)]
mod tests;
