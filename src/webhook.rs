//! The admission webhook: validating and mutating AdmissionReviews over HTTPS.

use crate::cli::{ValidateArgs, WebhookArgs};
use crate::{Error, Result};

/// `baas webhook`: serves the admission webhook alone.
pub async fn run_webhook(_args: WebhookArgs) -> Result<()> {
    Err(Error::NotImplemented("webhook"))
}

/// `baas validate`: returns whether every object would be admitted.
pub async fn run_validate(_args: ValidateArgs) -> Result<bool> {
    Err(Error::NotImplemented("validate"))
}
