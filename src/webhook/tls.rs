//! The serving certificate: rustls with the ring provider, TLS 1.2 and 1.3, and a pair that is
//! re-read when its files change (cert-manager renews them in place) and swapped only when both
//! parse, so a half-written renewal never takes the webhook down.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum_server::tls_rustls::RustlsConfig;
use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::{Error, Result};

/// How often the cert/key files are checked for changes.
pub const RELOAD_INTERVAL: Duration = Duration::from_secs(10);

/// Builds a server config from PEM files.
pub fn load_server_config(cert: &Path, key: &Path) -> Result<ServerConfig> {
    let read = |path: &Path| {
        std::fs::read(path).map_err(|source| Error::Io {
            path: path.display().to_string(),
            source,
        })
    };
    server_config_from_pem(&read(cert)?, &read(key)?)
}

/// Builds a server config from a PEM certificate chain and a PEM private key.
pub fn server_config_from_pem(cert_pem: &[u8], key_pem: &[u8]) -> Result<ServerConfig> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| Error::Tls(format!("certificate: {e}")))?;
    if chain.is_empty() {
        return Err(Error::Tls("certificate: no PEM certificate found".into()));
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem)
        .map_err(|e| Error::Tls(format!("private key: {e}")))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| Error::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| Error::Tls(format!("certificate and key do not match: {e}")))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// Watches the pair and swaps it into `config` when a file changed and both parse. Runs until
/// the task is dropped.
pub async fn reload_forever(config: RustlsConfig, cert: PathBuf, key: PathBuf, every: Duration) {
    let mut seen = (modified(&cert), modified(&key));
    let mut ticker = tokio::time::interval(every);
    ticker.tick().await;
    loop {
        ticker.tick().await;
        let now = (modified(&cert), modified(&key));
        if now == seen {
            continue;
        }
        let (c, k) = (cert.clone(), key.clone());
        match tokio::task::spawn_blocking(move || load_server_config(&c, &k)).await {
            Ok(Ok(server_config)) => {
                config.reload_from_config(Arc::new(server_config));
                seen = now;
                tracing::info!(cert = %cert.display(), "serving certificate reloaded");
            }
            Ok(Err(error)) => {
                // Keep `seen` so the next tick retries: the other file may still be coming.
                tracing::warn!(%error, "new serving certificate not usable; keeping the old one");
            }
            Err(error) => tracing::error!(%error, "certificate reload task failed"),
        }
    }
}
