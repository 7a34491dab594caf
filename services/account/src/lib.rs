//! The account service: business customers (accounts) with their status, the users acting for
//! them, and their API keys; operator tokens guard the admin API that manages them.
//!
//! The gateway asks `POST /internal/credentials/verify` which account an API key belongs to;
//! the workflow asks `GET /internal/accounts/{id}` whether an account may still have deliveries
//! scheduled. Secrets are handed out once and stored only as hashes (see [`domain`]).

pub mod api;
pub mod bootstrap;
pub mod domain;
pub mod store;

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use platform::clock::SharedClock;
use platform::config::CommonArgs;
use platform::http::ServiceRouter;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use store::{AccountStore, PostgresAccountStore, SqliteAccountStore};

/// The service's name in logs and metrics.
pub const SERVICE: &str = "account";

/// Settings for the account service, and its operator commands.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "fabrikam-account",
    about = "Fabrikam account service: accounts, users, API keys and the operator admin API"
)]
pub struct Config {
    #[command(subcommand)]
    pub command: Option<Command>,

    /// Address to listen on.
    #[arg(long, env = "FABRIKAM_ACCOUNT_LISTEN", default_value = "127.0.0.1:8088")]
    pub listen: SocketAddr,

    /// Where accounts and credentials are stored: sqlite://PATH (embedded) or
    /// postgres://USER@HOST/DB (shared by several account processes; postgresql:// works too).
    #[arg(long, env = "FABRIKAM_ACCOUNT_DB", default_value = "sqlite://./data/account.db", global = true)]
    pub database_url: String,

    #[command(flatten)]
    pub common: CommonArgs,
}

/// Operator commands run against the store instead of serving.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum Command {
    /// Creates the first operator token and prints it once on stdout (for the distributed mode's
    /// first run). Refuses when an operator token was ever created, unless --force.
    BootstrapOperator(bootstrap::BootstrapArgs),
}

/// Opens the store named by `url`: `sqlite://PATH` or `postgres://...` (`postgresql://...`).
pub async fn open_store(url: &str) -> anyhow::Result<Arc<dyn AccountStore>> {
    let store: Arc<dyn AccountStore> = if platform::postgres::is_postgres_url(url) {
        // The URL stays out of the message: it may carry a password.
        Arc::new(PostgresAccountStore::open(url).await.context("opening account store on PostgreSQL")?)
    } else if url.starts_with("sqlite:") {
        let path = platform::sqlite::path_from_url(url).map_err(anyhow::Error::msg)?;
        Arc::new(SqliteAccountStore::open(&path).await.with_context(|| format!("opening account store {url}"))?)
    } else {
        anyhow::bail!("unsupported account store URL: expected sqlite://PATH or postgres://USER@HOST/DB");
    };
    Ok(store)
}

/// The complete HTTP router: API routes plus health, metrics and the shared layers.
pub fn router(store: Arc<dyn AccountStore>, clock: SharedClock, common: &CommonArgs) -> axum::Router {
    let state = api::AppState { store: store.clone(), clock };
    ServiceRouter::new(SERVICE, api::routes(state))
        .readiness(platform::http::probe("account-store", move || {
            let store = store.clone();
            async move { store.ping().await.map_err(|e| e.to_string()) }
        }))
        .options(common.http_options())
        .build()
}

/// Runs the service on `listener` until `shutdown` is cancelled.
pub async fn run(
    config: Config,
    listener: TcpListener,
    clock: SharedClock,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let starting = platform::http::Starting::serve(listener, shutdown.clone(), config.common.shutdown_grace());
    let store = open_store(&config.database_url).await?;
    let app = router(store, clock, &config.common);
    tracing::info!(service = SERVICE, addr = ?starting.addr(), "listening");
    starting.finish(app).await?;
    Ok(())
}

/// What `fabrikam-account` (or `fabrikam account`) does: a command when one is given, else serve.
pub async fn main_with(config: Config, clock: SharedClock, shutdown: CancellationToken) -> anyhow::Result<()> {
    match &config.command {
        Some(Command::BootstrapOperator(args)) => {
            let store = open_store(&config.database_url).await?;
            let token = bootstrap::operator(&*store, clock, args).await?;
            eprintln!("{}", bootstrap::OPERATOR_TOKEN_NOTE);
            // Alone on stdout, so a script can capture it: token=$(fabrikam-account bootstrap-operator)
            println!("{token}");
            Ok(())
        }
        None => {
            platform::telemetry::init(SERVICE, config.common.log_format);
            let listener = TcpListener::bind(config.listen).await?;
            run(config, listener, clock, shutdown).await
        }
    }
}

#[cfg(test)]
mod cli_tests {
    use clap::Parser;

    #[test]
    fn the_command_line_is_well_formed() {
        <super::Config as clap::CommandFactory>::command().debug_assert();
    }

    #[test]
    fn bootstrap_takes_the_store_before_or_after_the_command() {
        let after =
            super::Config::parse_from(["fabrikam-account", "bootstrap-operator", "--database-url", "sqlite://x"]);
        assert_eq!(after.database_url, "sqlite://x");
        let before =
            super::Config::parse_from(["fabrikam-account", "--database-url", "sqlite://y", "bootstrap-operator"]);
        assert_eq!(before.database_url, "sqlite://y");
        assert!(matches!(before.command, Some(super::Command::BootstrapOperator(ref a)) if !a.force));
    }
}
