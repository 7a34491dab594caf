use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};
use loadgen::runner::{Mode, OPEN_LOOP_CONNECTIONS, RunOptions};
use loadgen::workload::Mix;
use loadgen::{Observe, bench, overhead};

/// Load generator and benchmark harness for Fabrikam Drone Delivery.
#[derive(Debug, Parser)]
#[command(name = "loadgen", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Send load to a running system (or a bare server) and report.
    Run(RunArgs),
    /// Serve the bare HTTP baseline: 202 and a small JSON body, no work.
    BaselineServer {
        #[arg(long, default_value = "127.0.0.1:8099")]
        listen: SocketAddr,
    },
    /// Build nothing, start everything: baseline, the system, the standard scenarios; write BENCHMARKS.md.
    Bench(bench::BenchArgs),
    /// What the gateway adds per request: the bare server directly, then through a gateway
    /// started here, without and with authentication (a JWT), at the same open-loop rate.
    Overhead(overhead::OverheadArgs),
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    /// Base URL of the gateway.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
    /// Open loop: requests per second (constant arrival rate).
    #[arg(long)]
    rate: Option<f64>,
    /// Closed loop: connections each keeping one request outstanding. With --rate: the most
    /// connections the open loop uses (default 512); a request due while all are busy waits
    /// for one, and the wait counts in its latency.
    #[arg(long)]
    connections: Option<usize>,
    /// Seconds of load.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Share of operations that reschedule an accepted delivery.
    #[arg(long, default_value_t = 0.05)]
    reschedule: f64,
    /// Share of operations that cancel an accepted delivery.
    #[arg(long, default_value_t = 0.02)]
    cancel: f64,
    /// Distinct owners in the generated requests.
    #[arg(long, default_value_t = 100)]
    owners: u32,
    /// Follow one created delivery in N until it is scheduled (0: none).
    #[arg(long, default_value_t = 200)]
    sample_every: u64,
    /// Prometheus endpoint of the system (for scheduled/lost counts and how far its event
    /// consumers trail); e.g. http://127.0.0.1:8080/metrics. Repeat it for a system of several
    /// processes: the counters are summed over all of them.
    #[arg(long)]
    metrics_url: Vec<String>,
    /// Process id(s) of the system, for CPU and peak memory.
    #[arg(long)]
    pid: Vec<u32>,
    /// Seconds without progress after which the drain stops waiting for scheduling.
    #[arg(long, default_value_t = 15.0)]
    drain_stall: f64,
    /// Also write the report as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Exit non-zero when any request failed (for smoke tests).
    #[arg(long)]
    strict: bool,
    /// Credential sent as `Authorization: Bearer <token>` on every request: an API key
    /// (`fdk_…`) or a JWT, since the gateway authenticates every public route.
    #[arg(long, env = "FABRIKAM_API_KEY", hide_env_values = true)]
    bearer: Option<String>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::BaselineServer { listen } => loadgen::baseline::run(listen).await,
        Command::Bench(args) => bench::run(args).await,
        Command::Overhead(args) => overhead::run(args).await,
        Command::Run(args) => {
            let mode = match (args.rate, args.connections) {
                (Some(rate), connections) if rate > 0.0 => {
                    Mode::Open { rate, connections: connections.unwrap_or(OPEN_LOOP_CONNECTIONS) }
                }
                (None, Some(connections)) => Mode::Closed { connections },
                _ => anyhow::bail!("give --rate N (open loop) or --connections N (closed loop)"),
            };
            let options = RunOptions {
                base: args.url,
                mode,
                duration: Duration::from_secs_f64(args.duration),
                sample_every: args.sample_every,
                max_in_flight: 20_000,
                progress: true,
                bearer: args.bearer,
            };
            let mix = Mix { reschedule: args.reschedule, cancel: args.cancel, owners: args.owners };
            let observe = Observe {
                metrics_urls: args.metrics_url,
                pids: args.pid,
                drain_stall: Duration::from_secs_f64(args.drain_stall),
            };
            let report = loadgen::measure("run", &options, mix, &observe).await?;
            print!("{}", report.text());
            if let Some(path) = args.json {
                std::fs::write(&path, serde_json::to_string_pretty(&report)?)?;
            }
            if args.strict && report.errors > 0 {
                anyhow::bail!("{} requests failed: {:?}", report.errors, report.errors_by_status);
            }
            if report.lost.is_some_and(|l| l > 0) {
                anyhow::bail!("{} accepted requests were never scheduled", report.lost.unwrap_or_default());
            }
            Ok(())
        }
    }
}
