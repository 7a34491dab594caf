use std::sync::Arc;

use clap::Parser;
use platform::clock::SystemClock;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = account::Config::parse();
    let is_command = config.command.is_some();
    let result = account::main_with(config, Arc::new(SystemClock), platform::shutdown::token_on_signal()).await;
    // The last spans reach the collector, or are given up after a short wait.
    platform::telemetry::shutdown();
    if let (true, Err(err)) = (is_command, &result) {
        // An operator's command: a one-line error and a failing exit code, no backtrace.
        eprintln!("error: {err:#}");
        std::process::exit(1);
    }
    result
}
