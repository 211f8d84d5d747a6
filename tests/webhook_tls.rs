//! The HTTPS server for real: TLS with a generated certificate, reloading a renewed pair,
//! keeping the old pair when the new files are broken, and stopping on the shutdown signal.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use baas::cli::ServeArgs;
use baas::webhook::{WebhookState, serve_with_reload};

struct Pair {
    cert_pem: String,
    key_pem: String,
    der: CertificateDer<'static>,
}

fn generate() -> Pair {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_string()])
        .expect("a self-signed certificate");
    Pair {
        cert_pem: certified.cert.pem(),
        key_pem: certified.signing_key.serialize_pem(),
        der: certified.cert.der().clone(),
    }
}

fn write(dir: &Path, pair: &Pair) {
    std::fs::write(dir.join("tls.pem"), &pair.cert_pem).expect("write cert");
    std::fs::write(dir.join("tls.key"), &pair.key_pem).expect("write key");
}

fn free_port() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    listener.local_addr().expect("an address")
}

/// GET `path` trusting only `trusted`; `Err` when the TLS handshake or the request fails.
async fn get(
    addr: SocketAddr,
    trusted: &CertificateDer<'static>,
    path: &str,
) -> Result<String, String> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(trusted.clone()).map_err(|e| e.to_string())?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let name = ServerName::try_from("localhost").map_err(|e| e.to_string())?;
    let mut tls = TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .map_err(|e| e.to_string())?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    tls.write_all(request.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut response = String::new();
    tls.read_to_string(&mut response)
        .await
        .map_err(|e| e.to_string())?;
    Ok(response)
}

async fn eventually(addr: SocketAddr, trusted: &CertificateDer<'static>) -> Result<String, String> {
    let mut last = Err("never tried".to_string());
    for _ in 0..50 {
        last = get(addr, trusted, "/healthz").await;
        if last.is_ok() {
            return last;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    last
}

#[tokio::test]
async fn webhook_serves_tls_reloads_renewed_pair_and_stops_on_signal() {
    let dir = tempfile::tempdir().expect("temp dir");
    let first = generate();
    write(dir.path(), &first);
    let addr = free_port();
    let args = ServeArgs {
        listen: addr,
        tls_cert: dir.path().join("tls.pem"),
        tls_key: dir.path().join("tls.key"),
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        serve_with_reload(
            &args,
            WebhookState::offline(),
            async {
                let _ = stopped.await;
            },
            Duration::from_millis(100),
        )
        .await
    });

    let response = eventually(addr, &first.der)
        .await
        .expect("the first pair serves");
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.ends_with("ok"), "{response}");

    // A half-written renewal: the old pair must keep serving.
    std::fs::write(dir.path().join("tls.key"), "not a key").expect("write");
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(
        get(addr, &first.der, "/healthz").await.is_ok(),
        "the old pair is kept"
    );

    let second = generate();
    write(dir.path(), &second);
    let response = eventually(addr, &second.der)
        .await
        .expect("the renewed pair serves");
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(
        get(addr, &first.der, "/healthz").await.is_err(),
        "the old pair is gone"
    );

    stop.send(()).expect("the server listens for the signal");
    let ended = tokio::time::timeout(Duration::from_secs(15), server)
        .await
        .expect("the server stops after the signal")
        .expect("the server task does not panic");
    assert!(ended.is_ok(), "{ended:?}");
}

#[tokio::test]
async fn webhook_with_unusable_pair_fails_to_start_with_reason() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("tls.pem"), "garbage").expect("write");
    std::fs::write(dir.path().join("tls.key"), "garbage").expect("write");
    let args = ServeArgs {
        listen: free_port(),
        tls_cert: dir.path().join("tls.pem"),
        tls_key: dir.path().join("tls.key"),
    };
    let error = serve_with_reload(
        &args,
        WebhookState::offline(),
        async {},
        Duration::from_secs(1),
    )
    .await
    .expect_err("no usable certificate");
    assert!(error.to_string().contains("certificate"), "{error}");
}
