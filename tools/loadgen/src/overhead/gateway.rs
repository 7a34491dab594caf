//! The gateway under test: a route table that sends two public routes (one unauthenticated, one
//! needing a credential) to the bare server, the command line that starts it alone with rate
//! limits off, a JWT it accepts, and the process, which never outlives the measurement.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;
use tempfile::TempDir;
use tokio::process::{Child, Command};

use crate::bench::{NO_RATE_LIMITS, free_port, terminate, wait_ready};

/// The unauthenticated route lives under this prefix: a run whose base URL is the gateway's
/// plus this prefix posts to it with the runner's usual path, the credential route stays at
/// the usual place.
pub const OPEN_PREFIX: &str = "/open";

/// The user and account the benchmark token names.
pub const TOKEN_SUBJECT: &str = "loadgen-overhead";
pub const TOKEN_ACCOUNT: &str = "loadgen-overhead-account";

/// The route table (`--routes-file`): `POST {OPEN_PREFIX}/api/deliveryrequests` passed through
/// without authentication, `POST /api/deliveryrequests` with a credential, both onto the same
/// path of `upstream`.
pub fn routes_file(upstream: &str) -> String {
    format!(
        r#"# Written by `loadgen overhead`: the same upstream behind the gateway with and without authentication.
[upstreams]
baseline = "{upstream}"

[[routes]]
methods = ["POST"]
path = "/deliveryrequests"
prefixes = ["{OPEN_PREFIX}/api"]
upstream = "baseline"
target = "/api/deliveryrequests"
auth = "none"

[[routes]]
methods = ["POST"]
path = "/deliveryrequests"
prefixes = ["/api"]
upstream = "baseline"
target = "/api/deliveryrequests"
auth = "credential"
"#
    )
}

/// The secrets of one run, random each time: nothing outside this run can present a token.
#[derive(Debug, Clone)]
pub struct Secrets {
    /// Signs the identity the gateway forwards (at least 16 bytes).
    pub identity: String,
    /// Signs and verifies HS256 JWTs (at least 32 bytes).
    pub jwt_hs256: String,
}

impl Secrets {
    pub fn random() -> Self {
        let random = || format!("{:016x}{:016x}", rand::random::<u64>(), rand::random::<u64>());
        Self { identity: format!("loadgen-identity-{}", random()), jwt_hs256: format!("loadgen-jwt-{}", random()) }
    }
}

/// The gateway's command line: listen on `port`, serve `routes`, accept HS256 tokens, no rate
/// limits (one client on one address sends far more than a tenant may).
pub fn gateway_args(port: u16, routes: &Path, secrets: &Secrets) -> Vec<OsString> {
    let mut args: Vec<OsString> = vec!["--listen".into(), format!("127.0.0.1:{port}").into()];
    args.extend(["--routes-file".into(), routes.as_os_str().to_owned()]);
    args.extend(["--identity-secret".into(), secrets.identity.clone().into()]);
    args.extend(["--jwt-hs256-secret".into(), secrets.jwt_hs256.clone().into()]);
    args.extend(NO_RATE_LIMITS.map(OsString::from));
    args
}

/// An HS256 token for the benchmark's user and account, valid for an hour after `now_unix`.
pub fn mint_jwt(secret: &str, now_unix: i64) -> anyhow::Result<String> {
    let claims = json!({ "sub": TOKEN_SUBJECT, "account_id": TOKEN_ACCOUNT, "exp": now_unix + 3600 });
    Ok(jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &EncodingKey::from_secret(secret.as_bytes()))?)
}

/// A gateway process started for this run. Killed when dropped, so an error on the way never
/// leaves it running; [`Gateway::stop`] shuts it down gracefully.
pub struct Gateway {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    pub secrets: Secrets,
    /// Holds the routes file (the gateway watches it) and the gateway's log.
    dir: TempDir,
}

impl Gateway {
    /// Starts `binary` in front of `upstream` and waits until it is ready.
    pub async fn start(binary: &Path, upstream: &str) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let routes = dir.path().join("routes.toml");
        std::fs::write(&routes, routes_file(upstream))?;
        let secrets = Secrets::random();
        let port = free_port()?;
        let log = std::fs::File::create(dir.path().join("gateway.log"))?;
        let mut child = Command::new(binary)
            .args(gateway_args(port, &routes, &secrets))
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| anyhow::anyhow!("starting {}: {e}", binary.display()))?;
        let base = format!("http://127.0.0.1:{port}");
        let log_path = dir.path().join("gateway.log");
        let ready_url = format!("{base}/healthz/ready");
        tokio::select! {
            ready = wait_ready(&ready_url, Duration::from_secs(60)) => {
                ready.map_err(|e| anyhow::anyhow!("{e}; gateway log:\n{}", read_log(&log_path)))?;
            }
            exited = child.wait() => {
                anyhow::bail!("the gateway exited at start-up ({}); its log:\n{}", exited?, read_log(&log_path));
            }
        }
        Ok(Self { child, base, secrets, dir })
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Where the gateway writes its log, for error messages.
    pub fn log(&self) -> PathBuf {
        self.dir.path().join("gateway.log")
    }

    /// SIGTERM, then a kill if it is still there after the grace period.
    pub async fn stop(mut self) {
        terminate(std::slice::from_mut(&mut self.child)).await;
    }
}

/// The end of the gateway's log (it is quiet at `warn`, so the end is what went wrong).
pub fn read_log(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_routes_file_has_an_open_and_an_authenticated_route_onto_the_upstream() {
        let text = routes_file("http://127.0.0.1:4321");
        let table: toml::Value = toml::from_str(&text).expect("valid TOML");
        assert_eq!(table["upstreams"]["baseline"].as_str(), Some("http://127.0.0.1:4321"));
        let routes = table["routes"].as_array().unwrap();
        assert_eq!(routes.len(), 2);
        let public = |r: &toml::Value| {
            let prefix = r["prefixes"][0].as_str().unwrap();
            format!("{prefix}{}", r["path"].as_str().unwrap())
        };
        let open = &routes[0];
        assert_eq!(open["auth"].as_str(), Some("none"));
        assert_eq!(public(open), format!("{OPEN_PREFIX}{}", crate::runner::CREATE_PATH));
        let authenticated = &routes[1];
        assert_eq!(authenticated["auth"].as_str(), Some("credential"));
        assert_eq!(public(authenticated), crate::runner::CREATE_PATH);
        for route in routes {
            assert_eq!(route["upstream"].as_str(), Some("baseline"));
            assert_eq!(route["target"].as_str(), Some(crate::runner::CREATE_PATH));
            assert_eq!(route["methods"].as_array().unwrap(), &[toml::Value::from("POST")]);
        }
    }

    #[test]
    fn the_gateway_runs_with_both_secrets_and_no_rate_limits() {
        let secrets = Secrets::random();
        assert!(secrets.identity.len() >= 16 && secrets.jwt_hs256.len() >= 32, "{secrets:?}");
        assert_ne!(secrets.jwt_hs256, Secrets::random().jwt_hs256);
        let args: Vec<String> = gateway_args(8123, Path::new("/tmp/r.toml"), &secrets)
            .into_iter()
            .map(|a| a.into_string().unwrap())
            .collect();
        let value = |flag: &str| args.iter().position(|a| a == flag).map(|i| args[i + 1].as_str());
        assert_eq!(value("--listen"), Some("127.0.0.1:8123"));
        assert_eq!(value("--routes-file"), Some("/tmp/r.toml"));
        assert_eq!(value("--identity-secret"), Some(secrets.identity.as_str()));
        assert_eq!(value("--jwt-hs256-secret"), Some(secrets.jwt_hs256.as_str()));
        assert_eq!(value("--rate-limit-per-credential"), Some("0"));
        assert_eq!(value("--rate-limit-per-ip"), Some("0"));
    }

    #[test]
    fn the_token_names_user_and_account_and_expires_in_an_hour() {
        use jsonwebtoken::{DecodingKey, Validation};
        let secret = "a secret for this test that is long enough";
        let now = chrono::Utc::now().timestamp();
        let token = mint_jwt(secret, now).unwrap();
        let decoded = jsonwebtoken::decode::<serde_json::Value>(
            &token,
            &DecodingKey::from_secret(secret.as_bytes()),
            &Validation::new(Algorithm::HS256),
        )
        .expect("verifies with the same secret");
        assert_eq!(decoded.claims["sub"], TOKEN_SUBJECT);
        assert_eq!(decoded.claims["account_id"], TOKEN_ACCOUNT);
        assert_eq!(decoded.claims["exp"], now + 3600);
        let wrong = DecodingKey::from_secret(b"another secret that is also long enough");
        assert!(jsonwebtoken::decode::<serde_json::Value>(&token, &wrong, &Validation::new(Algorithm::HS256)).is_err());
    }
}
