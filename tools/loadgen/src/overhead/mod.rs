//! `loadgen overhead`: what the gateway adds to each request. The same open-loop load goes to
//! the bare server directly, then through the gateway on a route without authentication, then
//! on a route that verifies a JWT; the differences are the gateway's routing and proxying, and
//! its authentication.

pub mod figures;
pub mod gateway;

use std::path::PathBuf;
use std::time::Duration;

use tokio::net::TcpListener;

use crate::runner::{self, CREATE_PATH, Mode, RunOptions};
use crate::workload::{Mix, Operation, Workload};
use crate::{Observe, baseline, measure};
use figures::{Leg, OverheadReport};
use gateway::{Gateway, OPEN_PREFIX};

#[derive(Debug, Clone, clap::Args)]
pub struct OverheadArgs {
    /// The gateway binary (`cargo build --release -p gateway` makes target/release/fabrikam-gateway).
    #[arg(long)]
    pub gateway: PathBuf,
    /// Open-loop rate of every path (requests/s).
    #[arg(long, default_value_t = 2000.0)]
    pub rate: f64,
    /// Seconds measured per path.
    #[arg(long, default_value_t = 10.0)]
    pub secs: f64,
    /// Seconds of the same load before each measurement, not counted.
    #[arg(long, default_value_t = 2.0)]
    pub warmup_secs: f64,
    /// Also write the figures as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// Delivery requests only: the gateway routes nothing else to the bare server.
const CREATES_ONLY: Mix = Mix { reschedule: 0.0, cancel: 0.0, owners: 100 };

/// One of the three paths the load takes.
struct Target {
    name: &'static str,
    /// Base URL; the runner posts to `{base}{CREATE_PATH}`.
    base: String,
    bearer: Option<String>,
    /// The gateway's process, when the path goes through it, for its CPU time.
    gateway_pid: Option<u32>,
}

/// Measures the three paths one after the other and prints (and optionally writes) the figures.
pub async fn run(args: OverheadArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.gateway.exists(),
        "{} does not exist: run `cargo build --release -p gateway` first",
        args.gateway.display()
    );
    anyhow::ensure!(args.rate > 0.0 && args.secs > 0.0, "--rate and --secs must be positive");
    let (bare_base, bare_server) = start_bare_server().await?;
    let gateway = Gateway::start(&args.gateway, &bare_base).await?;
    let token = gateway::mint_jwt(&gateway.secrets.jwt_hs256, chrono::Utc::now().timestamp())?;
    let targets = [
        Target { name: "direct to the bare server", base: bare_base, bearer: None, gateway_pid: None },
        Target {
            name: "gateway, no auth",
            base: format!("{}{OPEN_PREFIX}", gateway.base),
            bearer: None,
            gateway_pid: gateway.pid(),
        },
        Target { name: "gateway + JWT", base: gateway.base.clone(), bearer: Some(token), gateway_pid: gateway.pid() },
    ];
    let measured = measure_all(&args, &targets, &gateway).await;
    gateway.stop().await;
    bare_server.abort();
    let [direct, no_auth, jwt]: [Leg; 3] =
        measured?.try_into().map_err(|_| anyhow::anyhow!("three paths give three legs"))?;
    let report = OverheadReport::new(args.rate, args.secs, args.warmup_secs, direct, no_auth, jwt);
    print!("{}", report.text());
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&report)?)?;
    }
    Ok(())
}

/// The bare server on an ephemeral port of this process.
async fn start_bare_server() -> anyhow::Result<(String, tokio::task::JoinHandle<()>)> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    Ok((base, tokio::spawn(baseline::serve(listener))))
}

async fn measure_all(args: &OverheadArgs, targets: &[Target], gateway: &Gateway) -> anyhow::Result<Vec<Leg>> {
    // A wrong route or a refused token must stop the run before it produces figures of 404s or 401s.
    for target in targets {
        probe(target).await.map_err(|e| anyhow::anyhow!("{e}; gateway log:\n{}", gateway::read_log(&gateway.log())))?;
    }
    let mut legs = Vec::new();
    for target in targets {
        eprintln!(
            "== {}: {:.0} s warm-up, then {:.0} s at {:.0}/s",
            target.name, args.warmup_secs, args.secs, args.rate
        );
        legs.push(measure_target(args, target).await?);
    }
    Ok(legs)
}

/// One delivery request, which must be accepted.
async fn probe(target: &Target) -> anyhow::Result<()> {
    let url = format!("{}{CREATE_PATH}", target.base);
    let Operation::Create(body) = Workload::new(CREATES_ONLY, 1).next(0) else {
        unreachable!("a workload without reschedules or cancels only creates")
    };
    let mut request = reqwest::Client::new().post(&url).json(&body);
    if let Some(token) = &target.bearer {
        request = request.bearer_auth(token);
    }
    let response = request.send().await?;
    let status = response.status();
    anyhow::ensure!(
        status.is_success(),
        "{}: the probe request to {url} got {status}: {}",
        target.name,
        response.text().await.unwrap_or_default()
    );
    Ok(())
}

/// Warm-up (discarded), then the measured run.
async fn measure_target(args: &OverheadArgs, target: &Target) -> anyhow::Result<Leg> {
    if args.warmup_secs > 0.0 {
        let warmup = options(target, args.rate, Duration::from_secs_f64(args.warmup_secs), false);
        runner::run(&warmup, Workload::new(CREATES_ONLY, 0x3a5e), Duration::ZERO).await;
    }
    let observe = Observe {
        metrics_urls: Vec::new(),
        pids: target.gateway_pid.into_iter().collect(),
        drain_stall: Duration::ZERO,
    };
    let options = options(target, args.rate, Duration::from_secs_f64(args.secs), true);
    let report = measure(target.name, &options, CREATES_ONLY, &observe).await?;
    Ok(Leg::from_report(target.name, &format!("{}{CREATE_PATH}", target.base), &report))
}

/// The same client settings for every target; only the target and the credential differ.
fn options(target: &Target, rate: f64, duration: Duration, progress: bool) -> RunOptions {
    RunOptions {
        base: target.base.clone(),
        mode: Mode::open(rate),
        duration,
        sample_every: 0,
        max_in_flight: 20_000,
        progress,
        bearer: target.bearer.clone(),
    }
}
