//! `baas agent verify`: restores the newest snapshot of each path of the namespace into a
//! scratch directory and checks what it restored.

use std::path::Path;

use super::AgentEnv;
use crate::report::RunReport;
use crate::{Error, Result};

/// Verifies and reports.
pub async fn run(ctx: &AgentEnv, verify_dir: &Path) -> Result<RunReport> {
    let _ = (ctx, verify_dir);
    Err(Error::InvalidSpec(
        "baas agent verify is not implemented in this build".into(),
    ))
}
