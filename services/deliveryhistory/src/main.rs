use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = deliveryhistory::Config::parse();
    platform::telemetry::init(config.common.log_format);
    let listener = tokio::net::TcpListener::bind(config.listen).await?;
    deliveryhistory::run(config, listener, platform::shutdown::token_on_signal()).await
}
