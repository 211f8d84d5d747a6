//! The reconciler: Schedules become runs, runs become Jobs.

use crate::cli::OperatorArgs;
use crate::{Error, Result};

/// `baas operator`: the webhook and the reconciler in one process.
pub async fn run_operator(_args: OperatorArgs) -> Result<()> {
    Err(Error::NotImplemented("operator"))
}
