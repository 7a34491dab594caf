//! `cargo run --release`: every Fabrikam service in one process, the gateway on 127.0.0.1:8080.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use clap::Parser;
use fabrikam::{System, SystemOptions};
use platform::clock::SystemClock;
use platform::config::CommonArgs;

// A request allocates and frees many small buffers on one thread and hands some to another
// (the store writers); mimalloc's per-thread pages serve that pattern faster than glibc's arenas.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Fabrikam Drone Delivery, all services in one process (embedded mode).
///
/// Starts the gateway, ingestion, workflow, package, dronescheduler, delivery and account services,
/// each on its own loopback port talking HTTP to the others, with SQLite storage and an
/// embedded durable queue under the data directory. Stop it with Ctrl-C; start it again on
/// the same data directory and unfinished work resumes.
#[derive(Debug, Parser)]
///
/// `fabrikam SERVICE [FLAGS]` runs one service alone instead (distributed mode: see
/// `fabrikam SERVICE --help`); it is the same code as the per-service binaries.
#[command(name = "fabrikam", version)]
struct Cli {
    #[command(subcommand)]
    service: Option<Service>,

    /// Public address of the gateway.
    #[arg(long, env = "FABRIKAM_LISTEN", default_value = "127.0.0.1:8080", value_parser = platform::config::parse_addr)]
    listen: SocketAddr,

    /// Directory holding every service's data and the queue.
    #[arg(long, env = "FABRIKAM_DATA_DIR", default_value = "./data")]
    data_dir: PathBuf,

    #[command(flatten)]
    ingestion: ingestion::Settings,

    #[command(flatten)]
    workflow: workflow::Settings,

    /// The workflow's operator endpoint: dead letters (`fabrikam deadletters`), workflow state,
    /// its health and metrics. Port 0 picks a free one.
    #[arg(long, env = "FABRIKAM_WORKFLOW_LISTEN", default_value = "127.0.0.1:8085", value_parser = platform::config::parse_addr)]
    workflow_listen: SocketAddr,

    /// Where to POST a JSON notification (with an Idempotency-Key header) when a delivery that
    /// has notify-me requests completes, is cancelled or fails. Without it notifications are
    /// logged and recorded (`GET /api/deliveries/{id}/notifications` on the delivery service).
    #[arg(long, env = "FABRIKAM_DELIVERY_WEBHOOK_URL")]
    webhook_url: Option<String>,

    #[command(flatten)]
    fleet: dronescheduler::FleetArgs,

    #[command(flatten)]
    gateway: gateway::GatewayOptions,

    #[command(flatten)]
    common: CommonArgs,
}

/// One service, run alone.
#[derive(Debug, clap::Subcommand)]
enum Service {
    /// The public entry point: routes, limits and forwards to the services.
    // Boxed: its many options make it far larger than the other variants.
    Gateway(Box<gateway::Config>),
    /// Accepts delivery requests and queues them durably.
    Ingestion(ingestion::Config),
    /// Consumes the queue and drives package, drone and delivery.
    Workflow(workflow::Config),
    /// Gives up overdue deliveries and finishes their compensation (the workflow runs one too).
    Supervisor(workflow::SupervisorConfig),
    /// Stores packages.
    Package(package::Config),
    /// Assigns drones from the fleet.
    Dronescheduler(dronescheduler::Config),
    /// Keeps deliveries, their stage and tracking.
    Delivery(delivery::Config),
    /// Keeps finished deliveries with their tracking, from the delivery-events stream.
    Deliveryhistory(deliveryhistory::Config),
    /// Accounts, users and API keys; `fabrikam account bootstrap-operator` makes the first
    /// operator token.
    Account(account::Config),
    /// Operator tool: list, inspect, replay and purge dead letters through the workflow.
    Deadletters(workflow::cli::DeadLettersArgs),
}

async fn run_alone(service: Service) -> anyhow::Result<()> {
    use tokio::net::TcpListener;
    let shutdown = platform::shutdown::token_on_signal();
    let clock = Arc::new(SystemClock);
    match service {
        Service::Gateway(c) => {
            platform::telemetry::init("gateway", c.common.log_format);
            gateway::run(*c.clone(), TcpListener::bind(c.listen).await?, shutdown).await
        }
        Service::Ingestion(c) => {
            platform::telemetry::init("ingestion", c.common.log_format);
            ingestion::run(c.clone(), TcpListener::bind(c.listen).await?, clock, shutdown).await
        }
        Service::Workflow(c) => {
            platform::telemetry::init("workflow", c.common.log_format);
            workflow::run(c.clone(), TcpListener::bind(c.listen).await?, shutdown).await
        }
        Service::Supervisor(c) => {
            platform::telemetry::init("workflow-supervisor", c.common.log_format);
            workflow::run_supervisor(c.clone(), TcpListener::bind(c.listen).await?, shutdown).await
        }
        Service::Deliveryhistory(c) => {
            platform::telemetry::init("deliveryhistory", c.common.log_format);
            deliveryhistory::run(c.clone(), TcpListener::bind(c.listen).await?, shutdown).await
        }
        Service::Account(c) => {
            let is_command = c.command.is_some();
            let result = account::main_with(c, clock, shutdown).await;
            if let (true, Err(err)) = (is_command, &result) {
                // An operator's command: a one-line error and a failing exit code, no backtrace.
                eprintln!("error: {err:#}");
                std::process::exit(1);
            }
            result
        }
        Service::Deadletters(args) => {
            // An operator's command: a one-line error and a failing exit code, no backtrace.
            if let Err(err) = workflow::cli::run(args).await {
                eprintln!("error: {err:#}");
                std::process::exit(1);
            }
            Ok(())
        }
        Service::Package(c) => {
            platform::telemetry::init("package", c.common.log_format);
            package::run(c.clone(), TcpListener::bind(c.listen).await?, clock, shutdown).await
        }
        Service::Dronescheduler(c) => {
            platform::telemetry::init("dronescheduler", c.common.log_format);
            dronescheduler::run(c.clone(), TcpListener::bind(c.listen).await?, clock, shutdown).await
        }
        Service::Delivery(c) => {
            platform::telemetry::init("delivery", c.common.log_format);
            delivery::run(c.clone(), TcpListener::bind(c.listen).await?, clock, shutdown).await
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut cli = Cli::parse();
    if let Some(service) = cli.service.take() {
        let result = run_alone(service).await;
        platform::telemetry::shutdown();
        return result;
    }
    platform::telemetry::init("fabrikam", cli.common.log_format);
    let options = SystemOptions {
        listen: cli.listen,
        data_dir: cli.data_dir.clone(),
        ingestion: cli.ingestion,
        workflow: cli.workflow,
        workflow_listen: cli.workflow_listen,
        webhook_url: cli.webhook_url,
        fleet: cli.fleet.into(),
        gateway: cli.gateway,
        common: cli.common,
    };
    let system = System::start(options, Arc::new(SystemClock)).await?;
    let stop = system.shutdown_token();
    tokio::spawn(async move {
        platform::shutdown::signal().await;
        tracing::info!("shutdown signal received; finishing in-flight work");
        stop.cancel();
    });
    let a = system.addresses;
    let gateway = a.gateway;
    tracing::info!(
        gateway = %gateway,
        ingestion = %a.ingestion,
        workflow = %a.workflow,
        package = %a.package,
        dronescheduler = %a.dronescheduler,
        deliveryhistory = %a.deliveryhistory,
        delivery = %a.delivery,
        account = %a.account,
        data_dir = %cli.data_dir.display(),
        "Fabrikam Drone Delivery is up"
    );
    // On stdout, once: the demo key is shown only on the start that created it.
    println!("{}", system.first_run.announcement());
    eprintln!("Fabrikam Drone Delivery is listening on http://{gateway} (data in {})", cli.data_dir.display());
    let result = system.wait().await;
    // The last spans reach the collector, or are given up after a short wait.
    platform::telemetry::shutdown();
    result
}

#[cfg(test)]
mod cli_tests {
    #[test]
    fn the_command_line_is_well_formed() {
        <super::Cli as clap::CommandFactory>::command().debug_assert();
    }
}
