//! Sources: everything tfwatch reads from outside, read-only. Sources never judge: they
//! fill plain [`crate::model`] values, and what cannot be read becomes an
//! "unavailable" entry with its reason.

pub mod clock;
pub mod gpu;
pub mod proc;
pub mod scrape;
pub mod stacks;
