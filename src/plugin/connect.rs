//! The user's connection to the cluster: their kubeconfig (or `--kubeconfig`), context and
//! namespace, resolved the way kubectl resolves them, so the plugin acts with exactly the
//! user's rights.

use kube::Client;
use kube::config::{KubeConfigOptions, Kubeconfig};

use super::args::GlobalArgs;
use super::error::{PluginError, PluginResult};

/// A client and the namespace a verb works in.
pub struct Connection {
    /// Authenticated as the kubeconfig's user.
    pub client: Client,
    /// `-n`, else the context's namespace, else `default`.
    pub namespace: String,
}

/// Connects as the kubeconfig says; nothing is sent until a verb asks.
pub async fn connect(global: &GlobalArgs) -> PluginResult<Connection> {
    // rustls needs one process-wide provider; a second install is harmless.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let options = KubeConfigOptions {
        context: global.context.clone(),
        ..KubeConfigOptions::default()
    };
    let kubeconfig = |e: &dyn std::fmt::Display| PluginError::Kubeconfig(e.to_string());
    let config = match (&global.kubeconfig, &global.context) {
        (Some(path), _) => {
            let file = Kubeconfig::read_from(path)
                .map_err(|e| kubeconfig(&format!("{}: {e}", path.display())))?;
            kube::Config::from_custom_kubeconfig(file, &options)
                .await
                .map_err(|e| kubeconfig(&e))?
        }
        (None, Some(_)) => kube::Config::from_kubeconfig(&options)
            .await
            .map_err(|e| kubeconfig(&e))?,
        // No kubeconfig at all falls back to the pod's service account, as kubectl does.
        (None, None) => kube::Config::infer().await.map_err(|e| kubeconfig(&e))?,
    };
    let namespace = global
        .namespace
        .clone()
        .unwrap_or_else(|| config.default_namespace.clone());
    let client = Client::try_from(config).map_err(|e| kubeconfig(&e))?;
    Ok(Connection { client, namespace })
}
