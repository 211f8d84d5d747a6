//! The reconciler: Schedules become runs, runs become Jobs, Jobs become run status.
//!
//! Stateless: everything needed to resume after a crash is in the API server. Run names are
//! derived from the Schedule and the tick, Job names from the run, so a restarted operator or
//! a second replica finds what was already done instead of doing it again.
//!
//! From the bottom up: [`context`] (what every reconcile gets, with [`stores`] and [`memory`]),
//! [`kinds`] (the run kinds), the reconcilers [`schedule`] and [`run`], [`watch`] (the
//! controllers and the watches that wake them), and [`process`] (`baas operator`).

pub mod context;
#[cfg(test)]
pub mod fixtures;
pub mod history;
pub mod kinds;
pub mod leader;
pub mod memory;
pub mod metrics;
pub mod process;
pub mod rbac;
pub mod run;
pub mod schedule;
pub mod stores;
pub mod watch;

pub use context::{Context, FIELD_MANAGER, Settings, now_seconds};
pub use metrics::Metrics;
pub use process::run_operator;
pub use stores::{JobState, Stores};
pub use watch::run_controllers;
