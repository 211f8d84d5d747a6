//! The library's error type. `category()` drives how the reconciler retries and how errors
//! are counted in metrics.

use thiserror::Error;

/// Everything that can go wrong in baas outside `main`.
#[derive(Error, Debug)]
pub enum Error {
    /// The Kubernetes API refused or failed a request.
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// An object's spec cannot be acted on until the user changes it.
    #[error("invalid spec: {0}")]
    InvalidSpec(String),
    /// Reading or writing a local file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory involved.
        path: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// JSON or YAML that does not parse.
    #[error("{0}")]
    Serialization(String),
    /// TLS material that cannot be used.
    #[error("TLS: {0}")]
    Tls(String),
    /// A restic invocation failed.
    #[error("restic: {0}")]
    Restic(String),
    /// A backup command could not be run in its pod, or failed there.
    #[error("backup command: {0}")]
    Exec(String),
    /// An HTTP server (an S3 endpoint, a Pushgateway) refused a request or could not be reached.
    #[error("{0}")]
    Http(String),
    /// This replica no longer holds the leader-election Lease.
    #[error("leader election: {0}")]
    Leadership(String),
    /// A subcommand that this build does not provide yet.
    #[error("`baas {0}` is not available in this build yet")]
    NotImplemented(&'static str),
}

impl Error {
    /// A short, stable name for metrics labels and retry policy.
    pub fn category(&self) -> &'static str {
        match self {
            Error::Kube(_) => "kube",
            Error::InvalidSpec(_) => "invalid_spec",
            Error::Io { .. } => "io",
            Error::Serialization(_) => "serialization",
            Error::Tls(_) => "tls",
            Error::Restic(_) => "restic",
            Error::Exec(_) => "exec",
            Error::Http(_) => "http",
            Error::Leadership(_) => "leadership",
            Error::NotImplemented(_) => "not_implemented",
        }
    }
}

/// Shorthand used across the library.
pub type Result<T, E = Error> = std::result::Result<T, E>;
