//! TLS termination: HTTPS with a certificate made here (rcgen), HTTP/2 by ALPN, HSTS, and a
//! new certificate picked up from the files without a restart.

mod common;

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use common::{Accounts, Seen};
use gateway::{GatewayOptions, TlsOptions};
use http_body_util::BodyExt;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::TlsConnector;

/// A self-signed certificate for `localhost`: its PEM, key PEM and DER.
fn certificate() -> (String, String, CertificateDer<'static>) {
    let made = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    (made.cert.pem(), made.signing_key.serialize_pem(), made.cert.der().clone())
}

/// Connects over TLS trusting only `trusted`, offering h2 and http/1.1; returns the stream and
/// the protocol the server chose.
async fn connect(
    addr: std::net::SocketAddr,
    trusted: &CertificateDer<'static>,
) -> Result<(tokio_rustls::client::TlsStream<tokio::net::TcpStream>, Option<Vec<u8>>), std::io::Error> {
    gateway::tls::install_crypto_provider();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(trusted.clone()).unwrap();
    let mut config = rustls::ClientConfig::builder().with_root_certificates(roots).with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let stream = TlsConnector::from(Arc::new(config)).connect(ServerName::try_from("localhost").unwrap(), tcp).await?;
    let alpn = stream.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
    Ok((stream, alpn))
}

#[tokio::test]
async fn serves_https_over_http2_with_hsts_and_reloads_the_certificate() {
    let (cert_pem, key_pem, cert_der) = certificate();
    let dir = tempfile::tempdir().unwrap();
    let (cert_file, key_file) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    std::fs::write(&cert_file, &cert_pem).unwrap();
    std::fs::write(&key_file, &key_pem).unwrap();

    let seen = Seen::default();
    let accounts = Accounts::default();
    let key = accounts.issue("k1", "acc-1", None);
    let upstreams = common::upstreams(&seen, accounts.start().await).await;
    let options = GatewayOptions {
        tls: TlsOptions { tls_cert: Some(cert_file.clone()), tls_key: Some(key_file.clone()), ..Default::default() },
        reload_poll_ms: 100,
        ..GatewayOptions::default()
    };
    let (addr, shutdown) = common::start_gateway(upstreams, options).await;

    let mut connected = None;
    for _ in 0..50 {
        if let Ok(c) = connect(addr, &cert_der).await {
            connected = Some(c);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (stream, alpn) = connected.expect("a TLS connection");
    assert_eq!(alpn.as_deref(), Some(&b"h2"[..]), "ALPN picks HTTP/2");
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream)).await.unwrap();
    tokio::spawn(connection);
    let request = axum::http::Request::builder()
        .uri(format!("https://localhost:{}/api/deliveries/d1", addr.port()))
        .header("authorization", format!("Bearer {key}"))
        .body(Body::empty())
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.version(), axum::http::Version::HTTP_2);
    assert_eq!(response.status(), 202);
    assert!(response.headers()["strict-transport-security"].to_str().unwrap().starts_with("max-age="));
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let echoed: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(echoed["uri"], "/api/deliveries/public/d1");

    // A renewed certificate: new connections get it, without a restart.
    let (new_cert_pem, new_key_pem, new_cert_der) = certificate();
    std::fs::write(&key_file, &new_key_pem).unwrap();
    std::fs::write(&cert_file, &new_cert_pem).unwrap();
    let mut renewed = false;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        if connect(addr, &new_cert_der).await.is_ok() {
            renewed = true;
            break;
        }
    }
    assert!(renewed, "the new certificate is served");
    assert!(connect(addr, &cert_der).await.is_err(), "the old one is not");
    shutdown.cancel();
}
