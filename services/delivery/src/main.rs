use std::sync::Arc;

use clap::Parser;
use platform::clock::SystemClock;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = delivery::Config::parse();
    platform::telemetry::init("delivery", config.common.log_format);
    let listener = tokio::net::TcpListener::bind(config.listen).await?;
    let result = delivery::run(config, listener, Arc::new(SystemClock), platform::shutdown::token_on_signal()).await;
    // The last spans reach the collector, or are given up after a short wait.
    platform::telemetry::shutdown();
    result
}
