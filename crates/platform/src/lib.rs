//! What every Fabrikam service shares: configuration, telemetry, the HTTP scaffold
//! (health, metrics, graceful shutdown, problem+json), the bus, and small utilities
//! (clock, backoff, geography, SQLite set-up).

pub mod backoff;
pub mod bus;
pub mod client;
pub mod clock;
pub mod config;
pub mod geo;
pub mod http;
pub mod identity;
pub mod identity_http;
pub mod json;
pub mod metrics;
pub mod postgres;
pub mod problem;
pub mod process;
pub mod prom_text;
pub mod query;
pub mod shutdown;
pub mod sqlite;
pub mod testenv;

pub mod telemetry;
pub mod testing;
pub mod ttl_cache;

pub use problem::Problem;
