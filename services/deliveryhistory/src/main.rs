use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = deliveryhistory::Config::parse();
    platform::telemetry::init("deliveryhistory", config.common.log_format);
    let listener = tokio::net::TcpListener::bind(config.listen).await?;
    let result = deliveryhistory::run(config, listener, platform::shutdown::token_on_signal()).await;
    // The last spans reach the collector, or are given up after a short wait.
    platform::telemetry::shutdown();
    result
}
