//! What can go wrong in `kubectl baas`, and the exit code each outcome gives, as kubectl
//! does: 1 when the operation failed (or the run it followed did not succeed), 2 when the
//! command line cannot be acted on. Messages never hold a Secret's value: the plugin reads
//! credentials only to hand them to restic's environment.

use thiserror::Error;

/// Exit code of a failed operation.
pub const EXIT_FAILED: i32 = 1;
/// Exit code of a command line that cannot be acted on.
pub const EXIT_USAGE: i32 = 2;

/// Everything a verb reports instead of its result.
#[derive(Error, Debug)]
pub enum PluginError {
    /// The command line or the namespace does not say what to act on (several Schedules and
    /// no `--schedule`).
    #[error("{0}")]
    Usage(String),
    /// The kubeconfig cannot be read or names no usable cluster.
    #[error("kubeconfig: {0}")]
    Kubeconfig(String),
    /// The API server refused a request; worded as kubectl words it.
    #[error("{}", api_message(.0))]
    Kube(#[from] kube::Error),
    /// The operation, or the run it followed, did not succeed.
    #[error("{0}")]
    Failed(String),
}

impl PluginError {
    /// The process's exit code for this error.
    pub fn exit_code(&self) -> i32 {
        match self {
            PluginError::Usage(_) => EXIT_USAGE,
            PluginError::Kubeconfig(_) | PluginError::Kube(_) | PluginError::Failed(_) => {
                EXIT_FAILED
            }
        }
    }
}

/// `Error from server (NotFound): ...` for API errors, as kubectl prints them.
fn api_message(error: &kube::Error) -> String {
    match error {
        kube::Error::Api(status) => {
            let reason = if status.reason.is_empty() {
                format!("{}", status.code)
            } else {
                status.reason.clone()
            };
            format!("Error from server ({reason}): {}", status.message)
        }
        other => crate::redact::redact(&other.to_string()),
    }
}

/// What a verb returns.
pub type PluginResult<T> = std::result::Result<T, PluginError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_errors_exit_2_and_failures_exit_1() {
        assert_eq!(PluginError::Usage("x".into()).exit_code(), 2);
        assert_eq!(PluginError::Failed("x".into()).exit_code(), 1);
        assert_eq!(PluginError::Kubeconfig("x".into()).exit_code(), 1);
    }

    #[test]
    fn api_errors_read_as_kubectl_prints_them() {
        let status = kube::core::Status::failure(
            "schedules.backup.appuio.ch \"nightly\" not found",
            "NotFound",
        )
        .with_code(404);
        let error = PluginError::from(kube::Error::Api(Box::new(status)));
        assert_eq!(
            error.to_string(),
            "Error from server (NotFound): schedules.backup.appuio.ch \"nightly\" not found"
        );
    }
}
