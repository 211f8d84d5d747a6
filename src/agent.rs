//! The agent that runs inside a Job and drives restic.

use crate::cli::AgentArgs;
use crate::{Error, Result};

/// `baas agent <op>`: returns the process exit code.
pub async fn run(_args: AgentArgs) -> Result<i32> {
    Err(Error::NotImplemented("agent"))
}
