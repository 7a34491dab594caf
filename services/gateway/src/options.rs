//! The gateway's settings, each a flag with an environment fallback.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;

use crate::invoice::PriceList;

/// Where the services behind the gateway listen. A routes file may add more upstreams.
#[derive(Debug, Clone, clap::Args)]
pub struct UpstreamUrls {
    #[arg(long, env = "FABRIKAM_INGESTION_URL", default_value = "http://127.0.0.1:8081")]
    pub ingestion_url: String,
    #[arg(long, env = "FABRIKAM_DELIVERY_URL", default_value = "http://127.0.0.1:8082")]
    pub delivery_url: String,
    #[arg(long, env = "FABRIKAM_PACKAGE_URL", default_value = "http://127.0.0.1:8083")]
    pub package_url: String,
    #[arg(long, env = "FABRIKAM_DRONESCHEDULER_URL", default_value = "http://127.0.0.1:8084")]
    pub dronescheduler_url: String,
    #[arg(long, env = "FABRIKAM_DELIVERYHISTORY_URL", default_value = "http://127.0.0.1:8087")]
    pub deliveryhistory_url: String,
    /// The account service: API key verification and the admin routes.
    #[arg(long, env = "FABRIKAM_ACCOUNT_URL", default_value = "http://127.0.0.1:8088")]
    pub account_url: String,
}

impl UpstreamUrls {
    /// Every built-in upstream by its name in the route table.
    pub fn by_name(&self) -> Vec<(&'static str, String)> {
        vec![
            ("ingestion", self.ingestion_url.clone()),
            ("delivery", self.delivery_url.clone()),
            ("package", self.package_url.clone()),
            ("dronescheduler", self.dronescheduler_url.clone()),
            ("deliveryhistory", self.deliveryhistory_url.clone()),
            ("account", self.account_url.clone()),
        ]
    }
}

// The admission defaults, measured in BENCHMARKS.md ("Session 9").
const MAX_IN_FLIGHT: usize = 128;
const QUEUE_WAIT_MS: u64 = 1000;
const OVERLOAD_QUEUE_WAIT_MS: u64 = 5;

/// How the gateway protects the services behind it.
#[derive(Debug, Clone, clap::Args)]
#[group(id = "gateway-options")]
pub struct GatewayOptions {
    /// How long to wait for an upstream, in milliseconds (a route may set its own).
    #[arg(long, env = "FABRIKAM_GATEWAY_TIMEOUT_MS", default_value_t = 10_000)]
    pub timeout_ms: u64,

    /// Requests forwarded at once; more wait (see --queue-wait-ms), then get 503 + Retry-After
    /// instead of piling connections onto the services until they fail.
    #[arg(long, env = "FABRIKAM_GATEWAY_MAX_IN_FLIGHT", default_value_t = MAX_IN_FLIGHT)]
    pub max_in_flight: usize,

    /// How long a request waits for a free slot before it is shed, in milliseconds, while the
    /// queue is a passing burst. A queue that stays longer than this is overload.
    #[arg(long, env = "FABRIKAM_GATEWAY_QUEUE_WAIT_MS", default_value_t = QUEUE_WAIT_MS)]
    pub queue_wait_ms: u64,

    /// How long a request waits for a slot, in milliseconds, once the queue has stood longer
    /// than --queue-wait-ms: under overload the excess is shed at once instead of every
    /// request waiting in a queue that never drains.
    #[arg(long, env = "FABRIKAM_GATEWAY_OVERLOAD_QUEUE_WAIT_MS", default_value_t = OVERLOAD_QUEUE_WAIT_MS)]
    pub overload_queue_wait_ms: u64,

    /// Address for /healthz* and /metrics only. When set, the public listener does not serve
    /// them; unset, the public listener serves them as every service does.
    #[arg(long, env = "FABRIKAM_GATEWAY_INTERNAL_LISTEN")]
    pub internal_listen: Option<SocketAddr>,

    /// Route table file (TOML; see docs/gateway-routes.example.toml). It replaces the built-in
    /// table and is reloaded when it changes; a bad file is logged and the table in use kept.
    #[arg(long, env = "FABRIKAM_GATEWAY_ROUTES_FILE")]
    pub routes_file: Option<PathBuf>,

    /// How often the routes file and the TLS certificate are checked for changes, in milliseconds.
    #[arg(long, env = "FABRIKAM_GATEWAY_RELOAD_POLL_MS", default_value_t = 2000)]
    pub reload_poll_ms: u64,

    #[command(flatten)]
    pub auth: AuthOptions,

    #[command(flatten)]
    pub protection: ProtectionOptions,

    #[command(flatten)]
    pub tls: TlsOptions,

    #[command(flatten)]
    pub prices: PriceList,
}

impl Default for GatewayOptions {
    fn default() -> Self {
        Self {
            timeout_ms: 10_000,
            max_in_flight: MAX_IN_FLIGHT,
            queue_wait_ms: QUEUE_WAIT_MS,
            overload_queue_wait_ms: OVERLOAD_QUEUE_WAIT_MS,
            internal_listen: None,
            routes_file: None,
            reload_poll_ms: 2000,
            auth: AuthOptions::default(),
            protection: ProtectionOptions::default(),
            tls: TlsOptions::default(),
            prices: PriceList::default(),
        }
    }
}

impl GatewayOptions {
    /// How long a request may wait for a slot (see [`crate::admission`]).
    pub fn wait_rule(&self) -> crate::admission::WaitRule {
        crate::admission::WaitRule {
            patient: Duration::from_millis(self.queue_wait_ms),
            overloaded: Duration::from_millis(self.overload_queue_wait_ms),
        }
    }
}

/// How callers authenticate.
#[derive(Debug, Clone, clap::Args)]
pub struct AuthOptions {
    /// How long a verified API key is trusted without asking the account service again, in
    /// milliseconds; a revoked key stops working within this time. 0 asks every time.
    #[arg(long, env = "FABRIKAM_CREDENTIAL_CACHE_MS", default_value_t = 2000)]
    pub credential_cache_ms: u64,

    /// Most API keys kept in the verification cache.
    #[arg(long, env = "FABRIKAM_CREDENTIAL_CACHE_SIZE", default_value_t = 10_000)]
    pub credential_cache_size: usize,

    /// Secret for HS256 JWTs (at least 32 bytes). Unset: HS256 tokens are refused.
    #[arg(long, env = "FABRIKAM_JWT_HS256_SECRET", hide_env_values = true)]
    pub jwt_hs256_secret: Option<String>,

    /// JWKS file with the RS256/ES256 public keys tokens may be signed with.
    #[arg(long, env = "FABRIKAM_JWT_JWKS_FILE")]
    pub jwt_jwks_file: Option<PathBuf>,

    /// Required `iss` of JWTs (unset: not checked).
    #[arg(long, env = "FABRIKAM_JWT_ISSUER")]
    pub jwt_issuer: Option<String>,

    /// Required `aud` of JWTs (unset: not checked).
    #[arg(long, env = "FABRIKAM_JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,

    /// The JWT claim holding the caller's account id (the user is `sub`).
    #[arg(long, env = "FABRIKAM_JWT_ACCOUNT_CLAIM", default_value = "account_id")]
    pub jwt_account_claim: String,

    /// Clock skew allowed on `exp` and `nbf`, in seconds.
    #[arg(long, env = "FABRIKAM_JWT_LEEWAY_SECS", default_value_t = 30)]
    pub jwt_leeway_secs: u64,
}

impl Default for AuthOptions {
    fn default() -> Self {
        Self {
            credential_cache_ms: 2000,
            credential_cache_size: 10_000,
            jwt_hs256_secret: None,
            jwt_jwks_file: None,
            jwt_issuer: None,
            jwt_audience: None,
            jwt_account_claim: "account_id".to_owned(),
            jwt_leeway_secs: 30,
        }
    }
}

/// Rate limits, size limits, IP lists and CORS.
#[derive(Debug, Clone, clap::Args)]
pub struct ProtectionOptions {
    /// Requests per second each account may make (token bucket refill); 0 turns it off.
    #[arg(long, env = "FABRIKAM_RATE_LIMIT_PER_CREDENTIAL", default_value_t = 1000)]
    pub rate_limit_per_credential: u32,

    /// Burst each account may make above its rate.
    #[arg(long, env = "FABRIKAM_RATE_LIMIT_CREDENTIAL_BURST", default_value_t = 2000)]
    pub rate_limit_credential_burst: u32,

    /// Requests per second each client IP may make, checked before authentication; 0 turns it off.
    #[arg(long, env = "FABRIKAM_RATE_LIMIT_PER_IP", default_value_t = 2000)]
    pub rate_limit_per_ip: u32,

    /// Burst each client IP may make above its rate.
    #[arg(long, env = "FABRIKAM_RATE_LIMIT_IP_BURST", default_value_t = 4000)]
    pub rate_limit_ip_burst: u32,

    /// Take the client IP from the first X-Forwarded-For address (only behind a proxy that
    /// sets it; otherwise a client picks its own IP).
    #[arg(long, env = "FABRIKAM_TRUST_FORWARDED_FOR")]
    pub trust_forwarded_for: bool,

    /// Largest total size of a request's headers, in bytes (larger gets 431).
    #[arg(long, env = "FABRIKAM_MAX_HEADER_BYTES", default_value_t = 16 * 1024)]
    pub max_header_bytes: usize,

    /// Client networks allowed to call (comma-separated CIDRs or addresses); empty allows all.
    #[arg(long, env = "FABRIKAM_ALLOW_IPS", value_delimiter = ',', value_parser = crate::routes::parse_net)]
    pub allow_ips: Vec<IpNet>,

    /// Client networks refused with 403 (comma-separated CIDRs or addresses); wins over allow.
    #[arg(long, env = "FABRIKAM_DENY_IPS", value_delimiter = ',', value_parser = crate::routes::parse_net)]
    pub deny_ips: Vec<IpNet>,

    /// Origins allowed to call from a browser (comma-separated; `*` for any); empty: no CORS.
    #[arg(long, env = "FABRIKAM_CORS_ORIGINS", value_delimiter = ',')]
    pub cors_origins: Vec<String>,
}

impl Default for ProtectionOptions {
    fn default() -> Self {
        Self {
            rate_limit_per_credential: 1000,
            rate_limit_credential_burst: 2000,
            rate_limit_per_ip: 2000,
            rate_limit_ip_burst: 4000,
            trust_forwarded_for: false,
            max_header_bytes: 16 * 1024,
            allow_ips: Vec::new(),
            deny_ips: Vec::new(),
            cors_origins: Vec::new(),
        }
    }
}

/// TLS termination.
#[derive(Debug, Clone, clap::Args)]
pub struct TlsOptions {
    /// PEM certificate chain; with --tls-key the gateway serves HTTPS (HTTP/2 and HTTP/1.1)
    /// and sends HSTS. Reloaded when the file changes.
    #[arg(long, env = "FABRIKAM_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key of --tls-cert.
    #[arg(long, env = "FABRIKAM_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// `max-age` of the Strict-Transport-Security header sent when TLS is on, in seconds.
    #[arg(long, env = "FABRIKAM_HSTS_MAX_AGE_SECS", default_value_t = 31_536_000)]
    pub hsts_max_age_secs: u64,
}

impl Default for TlsOptions {
    fn default() -> Self {
        Self { tls_cert: None, tls_key: None, hsts_max_age_secs: 31_536_000 }
    }
}
