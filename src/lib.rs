//! baas — Backup as a Service for Kubernetes.
//!
//! Teams declare in their namespace what to back up and where (`Schedule`, `Restore`, ...);
//! an admission webhook refuses bad objects at apply time and injects defaults, and a
//! stateless reconciler runs restic through Kubernetes Jobs.
#![forbid(unsafe_code)]

pub mod agent;
pub mod cli;
pub mod controller;
pub mod crd;
pub mod cron;
pub mod duration;
pub mod error;
pub mod job;
pub mod lookup;
pub mod plugin;
pub mod redact;
pub mod report;
pub mod serve;
pub mod webhook;

pub use error::{Error, Result};
