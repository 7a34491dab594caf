//! Readiness against a real PostgreSQL that goes away and comes back: the store is reached
//! through a relay on a local port that the test closes (connections cut, port refusing) and
//! opens again; the server itself is never touched. Liveness stays up throughout.
//!
//! Runs when `FABRIKAM_TEST_POSTGRES_URL` names a server, and is skipped (saying so) otherwise.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::{Method, StatusCode};
use platform::clock::SystemClock;
use platform::config::CommonArgs;
use platform::testenv;
use platform::testing::call;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// Forwards every connection on `addr` to `upstream` until stopped; stopping cuts them all.
struct Relay {
    addr: SocketAddr,
    upstream: String,
    task: Option<JoinHandle<()>>,
}

impl Relay {
    async fn start(upstream: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut relay = Self { addr, upstream: upstream.to_owned(), task: None };
        relay.task = Some(Self::spawn(listener, relay.upstream.clone()));
        relay
    }

    fn spawn(listener: TcpListener, upstream: String) -> JoinHandle<()> {
        tokio::spawn(async move {
            let mut connections = tokio::task::JoinSet::new();
            while let Ok((mut client, _)) = listener.accept().await {
                let upstream = upstream.clone();
                connections.spawn(async move {
                    if let Ok(mut server) = TcpStream::connect(&upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
            }
        })
    }

    /// The port refuses connections and the open ones are cut (dropping the task drops them).
    async fn stop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
    }

    async fn resume(&mut self) {
        let listener = TcpListener::bind(self.addr).await.expect("the relay's port is free again");
        self.task = Some(Self::spawn(listener, self.upstream.clone()));
    }
}

/// `host:port` of a `postgres://[user@]host:port/db…` URL, and the URL with it replaced.
fn through(url: &str, relay: SocketAddr) -> (String, String) {
    let after_scheme = url.find("://").unwrap() + 3;
    let start = url[after_scheme..].find('@').map_or(after_scheme, |at| after_scheme + at + 1);
    let end = start + url[start..].find('/').unwrap();
    let host = url[start..end].to_owned();
    (host, format!("{}{relay}{}", &url[..start], &url[end..]))
}

async fn status(router: &axum::Router, path: &str) -> StatusCode {
    call(router, Method::GET, path, None).await.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_goes_red_while_postgres_is_unreachable_and_green_when_it_returns() {
    let server = platform::require_server!(testenv::POSTGRES_URL, "package readiness on PostgreSQL");
    let cleanup = testenv::Cleanup::new();
    let url = cleanup.fresh_postgres_schema(&server).await;
    let (upstream, _) = through(&url, "127.0.0.1:1".parse().unwrap());
    let mut relay = Relay::start(&upstream).await;
    let (_, relayed) = through(&url, relay.addr);
    let store = package::open_store(&relayed, Arc::new(SystemClock)).await.expect("open through the relay");
    let router = package::router(store, &CommonArgs::default());
    assert_eq!(status(&router, "/healthz/ready").await, StatusCode::OK);

    relay.stop().await;
    let (code, body, _) = call(&router, Method::GET, "/healthz/ready", None).await;
    assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(body["failing"]["package-store"].is_string(), "{body}");
    assert_eq!(status(&router, "/healthz/live").await, StatusCode::OK, "liveness does not follow the store");

    relay.resume().await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while status(&router, "/healthz/ready").await != StatusCode::OK {
        assert!(Instant::now() < deadline, "readiness never came back");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status(&router, "/healthz/live").await, StatusCode::OK);
}
