//! TLS termination with rustls: the certificate and key come from PEM files and are reloaded
//! when their content changes, so a renewed certificate is served without a restart. ALPN
//! offers HTTP/2 and HTTP/1.1.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum_server::tls_rustls::RustlsConfig;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// The server certificate chain and its key.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Makes rustls use *ring* in this process (the crate graph may enable more than one provider,
/// and then rustls will not pick one by itself). Safe to call more than once.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Serves `app` over TLS on `listener` until `shutdown`, then lets requests finish within `drain`.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    files: TlsFiles,
    reload_every: Duration,
    shutdown: CancellationToken,
    drain: Duration,
) -> anyhow::Result<()> {
    install_crypto_provider();
    let config = RustlsConfig::from_pem_file(&files.cert, &files.key).await.with_context(|| {
        format!("loading the TLS certificate {} and key {}", files.cert.display(), files.key.display())
    })?;
    tokio::spawn(watch(config.clone(), files, reload_every, shutdown.clone()));
    let handle = axum_server::Handle::new();
    let stopping = handle.clone();
    tokio::spawn(async move {
        shutdown.cancelled().await;
        stopping.graceful_shutdown(Some(drain));
    });
    axum_server::from_tcp_rustls(listener.into_std()?, config)?
        .handle(handle)
        .serve(app.into_make_service_with_connect_info::<SocketAddr>())
        .await?;
    Ok(())
}

/// Reloads the certificate when either file's content changes; a bad pair is logged and the
/// one in use kept.
async fn watch(config: RustlsConfig, files: TlsFiles, every: Duration, shutdown: CancellationToken) {
    let read = |files: &TlsFiles| (std::fs::read(&files.cert).ok(), std::fs::read(&files.key).ok());
    let mut last = read(&files);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(every) => {}
        }
        let now = read(&files);
        if now == last {
            continue;
        }
        match config.reload_from_pem_file(&files.cert, &files.key).await {
            Ok(()) => {
                tracing::info!(cert = %files.cert.display(), "reloaded the TLS certificate");
                last = now;
            }
            // Keep `last` so a half-written pair is retried on the next tick.
            Err(err) => tracing::warn!(error = %err, "the new TLS certificate or key is not usable; keeping the old"),
        }
    }
}
