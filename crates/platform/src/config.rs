//! Command-line and environment settings shared by every service binary.

use std::net::SocketAddr;
use std::time::Duration;

use crate::telemetry::LogFormat;

/// Options every service process takes. Flatten it into a service's own `clap` struct.
#[derive(Debug, Clone, clap::Args)]
pub struct CommonArgs {
    /// Log line format.
    #[arg(long, env = "FABRIKAM_LOG_FORMAT", value_enum, default_value_t = LogFormat::Json)]
    pub log_format: LogFormat,

    /// Largest request body accepted, in bytes (larger gets 413).
    #[arg(long, env = "FABRIKAM_BODY_LIMIT", default_value_t = 64 * 1024)]
    pub body_limit: usize,

    /// How long in-flight requests may take to finish after SIGTERM, in seconds.
    #[arg(long, env = "FABRIKAM_SHUTDOWN_GRACE", default_value_t = 20)]
    pub shutdown_grace_secs: u64,

    /// Secret shared by the gateway and the services to sign and verify the caller's identity
    /// (at least 16 bytes). Unset on a service: public routes are neither authenticated nor
    /// scoped to an account, which is only for running a service alone.
    #[arg(long, env = "FABRIKAM_IDENTITY_SECRET", hide_env_values = true)]
    pub identity_secret: Option<String>,
}

impl CommonArgs {
    pub fn http_options(&self) -> crate::http::HttpOptions {
        crate::http::HttpOptions { body_limit_bytes: self.body_limit }
    }

    /// How this service treats the gateway's identity headers.
    pub fn identity_policy(&self) -> anyhow::Result<crate::identity::IdentityPolicy> {
        crate::identity::IdentityPolicy::from_secret(self.identity_secret.as_deref()).map_err(anyhow::Error::msg)
    }

    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_secs(self.shutdown_grace_secs)
    }
}

impl Default for CommonArgs {
    fn default() -> Self {
        Self { log_format: LogFormat::Json, body_limit: 64 * 1024, shutdown_grace_secs: 20, identity_secret: None }
    }
}

/// Parses `host:port`, for clap.
pub fn parse_addr(s: &str) -> Result<SocketAddr, String> {
    s.parse().map_err(|e| format!("{s:?} is not HOST:PORT: {e}"))
}
