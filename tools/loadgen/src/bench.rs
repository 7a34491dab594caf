//! The standard benchmark: a bare HTTP baseline, then the system under ingest-only and
//! end-to-end load, every figure taken in one sitting on this machine, written to BENCHMARKS.md.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::process::{Child, Command};

use crate::cleanup::Leftovers;
use crate::report::{Report, table_header};
use crate::runner::{Mode, OPEN_LOOP_CONNECTIONS, RunOptions};
use crate::workload::Mix;
use crate::{Observe, measure};

#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// The all-in-one binary to benchmark (build it with `cargo build --release`).
    #[arg(long, default_value = "target/release/fabrikam")]
    pub system: PathBuf,
    /// Where to write the markdown report.
    #[arg(long, default_value = "BENCHMARKS.md")]
    pub out: PathBuf,
    /// Where to write every report as JSON.
    #[arg(long, default_value = "target/bench.json")]
    pub json: PathBuf,
    /// Connections for the saturation (closed-loop) runs.
    #[arg(long, default_value_t = 64)]
    pub connections: usize,
    /// Seconds of each saturation run.
    #[arg(long, default_value_t = 10.0)]
    pub saturation_secs: f64,
    /// Open-loop rate of the ingest-only run (requests/s).
    #[arg(long, default_value_t = 3000.0)]
    pub ingest_rate: f64,
    #[arg(long, default_value_t = 30.0)]
    pub ingest_secs: f64,
    /// Open-loop rate of the end-to-end run (requests/s).
    #[arg(long, default_value_t = 1000.0)]
    pub e2e_rate: f64,
    #[arg(long, default_value_t = 60.0)]
    pub e2e_secs: f64,
    /// Drones in the benchmark fleet: plentiful, so the pipeline is measured, not the fleet.
    #[arg(long, default_value_t = 100_000)]
    pub fleet_size: u32,
    /// Time scale of the benchmark fleet: flights pass in milliseconds.
    #[arg(long, default_value_t = 1_000_000.0)]
    pub time_scale: f64,
    /// Also benchmark the distributed mode: every service its own process (`fabrikam SERVICE`)
    /// on the NATS, PostgreSQL and Redis servers named by FABRIKAM_NATS_URL,
    /// FABRIKAM_POSTGRES_URL (server URL with a database) and FABRIKAM_REDIS_URL
    /// (`scripts/bench.sh --distributed` sets them).
    #[arg(long)]
    pub distributed: bool,
    /// Open-loop rate of the distributed end-to-end run (requests/s).
    #[arg(long, default_value_t = 1500.0)]
    pub distributed_rate: f64,
    /// Run only these scenarios (comma-separated), e.g. `--only distributed` to study the
    /// distributed mode alone; rows whose baseline was not measured carry no ratio.
    #[arg(long, value_enum, value_delimiter = ',')]
    pub only: Vec<Scenario>,
}

/// The groups of runs a benchmark is made of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Scenario {
    /// The bare HTTP server, saturated.
    Baseline,
    /// The embedded system with its workflow paused: saturated, then paced.
    Ingest,
    /// The embedded system end to end: paced with reschedules and cancels, then saturated.
    EndToEnd,
    /// Every service its own process on NATS, PostgreSQL and Redis: paced, then saturated.
    Distributed,
}

impl BenchArgs {
    /// Whether this run includes `scenario`: all but the distributed one by default, the
    /// distributed one too with `--distributed`, exactly the listed ones with `--only`.
    pub fn includes(&self, scenario: Scenario) -> bool {
        if self.only.is_empty() {
            scenario != Scenario::Distributed || self.distributed
        } else {
            self.only.contains(&scenario)
        }
    }
}

/// The system under test: one process (embedded) or one per service (distributed).
struct Running {
    children: Vec<Child>,
    /// The gateway.
    base: String,
    /// Every process's `/metrics` (the all-in-one has one, shared by every service).
    metrics: Vec<String>,
    started_in: Duration,
    /// The API key the load sends (none for the bare server).
    bearer: Option<String>,
    /// What the run stores on shared servers, removed when it stops (distributed only).
    leftovers: Option<Leftovers>,
}

/// A port free right now on the loopback address, for a child process to bind.
pub(crate) fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Polls `url` until it answers 2xx; how long that took.
pub(crate) async fn wait_ready(url: &str, within: Duration) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let client = reqwest::Client::new();
    while started.elapsed() < within {
        if let Ok(r) = client.get(url).send().await
            && r.status().is_success()
        {
            return Ok(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    anyhow::bail!("{url} not ready within {within:?}")
}

async fn start_baseline() -> anyhow::Result<Running> {
    let port = free_port()?;
    let started = Instant::now();
    let child = Command::new(std::env::current_exe()?)
        .args(["baseline-server", "--listen", &format!("127.0.0.1:{port}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    let base = format!("http://127.0.0.1:{port}");
    // The bare server answers every path, readiness included.
    let _ = wait_ready(&format!("{base}/ready"), Duration::from_secs(10)).await;
    Ok(Running {
        children: vec![child],
        metrics: vec![format!("{base}/metrics")],
        base,
        started_in: started.elapsed(),
        bearer: None,
        leftovers: None,
    })
}

/// The gateway's rate limits off: the benchmark is one client on one address sending far more
/// than a tenant would be allowed to.
pub(crate) const NO_RATE_LIMITS: [&str; 4] = ["--rate-limit-per-credential", "0", "--rate-limit-per-ip", "0"];

async fn start_system(args: &BenchArgs, data: &Path, paused: bool) -> anyhow::Result<Running> {
    let port = free_port()?;
    let mut command = Command::new(&args.system);
    command
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .arg("--data-dir")
        .arg(data)
        .args(["--fleet-size", &args.fleet_size.to_string(), "--time-scale", &args.time_scale.to_string()])
        .args(NO_RATE_LIMITS)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true);
    if paused {
        command.arg("--paused");
    }
    let started = Instant::now();
    let child = command.spawn().map_err(|e| anyhow::anyhow!("starting {}: {e}", args.system.display()))?;
    let base = format!("http://127.0.0.1:{port}");
    wait_ready(&format!("{base}/healthz/ready"), Duration::from_secs(120)).await?;
    // The first start on the empty data directory made the demo account and wrote its key.
    let key = std::fs::read_to_string(data.join("demo-api-key"))
        .map_err(|e| anyhow::anyhow!("reading the demo account's API key in {}: {e}", data.display()))?;
    let bearer = Some(key.trim().to_owned());
    Ok(Running {
        children: vec![child],
        metrics: vec![format!("{base}/metrics")],
        base,
        started_in: started.elapsed(),
        bearer,
        leftovers: None,
    })
}

fn env_url(name: &str) -> anyhow::Result<String> {
    std::env::var(name).map_err(|_| anyhow::anyhow!("--distributed needs {name} (source scripts/backends.sh)"))
}

/// The schema of service `name`'s tables in this run.
fn schema_name(name: &str) -> String {
    format!("bench_{name}_{}", std::process::id())
}

/// The services with tables on PostgreSQL, each in a schema of its own.
const POSTGRES_SERVICES: [&str; 6] =
    ["account", "package", "dronescheduler", "ingestion", "workflow", "deliveryhistory"];

/// A fresh PostgreSQL schema for one service's tables, made with `psql`; returns the URL
/// whose connections use it.
fn fresh_schema(postgres: &str, name: &str) -> anyhow::Result<String> {
    let schema = schema_name(name);
    let status = std::process::Command::new("psql")
        .args([
            postgres,
            "-qc",
            &format!(
                "SET client_min_messages = warning; DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}"
            ),
        ])
        .stdout(Stdio::null())
        .status()?;
    anyhow::ensure!(status.success(), "psql could not create schema {schema} on {postgres}");
    let separator = if postgres.contains('?') { '&' } else { '?' };
    Ok(format!("{postgres}{separator}options=-c%20search_path%3D{schema}"))
}

/// Every service its own process on NATS, PostgreSQL and Redis.
///
/// A start that fails part way stops what it started and removes what it stored, as a finished
/// run does, so the servers keep no schemas or streams of a run that never ran.
async fn start_distributed(args: &BenchArgs) -> anyhow::Result<Running> {
    let (nats, postgres, redis) =
        (env_url("FABRIKAM_NATS_URL")?, env_url("FABRIKAM_POSTGRES_URL")?, env_url("FABRIKAM_REDIS_URL")?);
    let run = format!("bench{}", std::process::id());
    let leftovers = Leftovers {
        schemas: POSTGRES_SERVICES.map(schema_name).into(),
        postgres: postgres.clone(),
        nats: nats.clone(),
        stream_prefix: format!("{run}-"),
        redis: redis.clone(),
        key_prefix: run.clone(),
    };
    let mut running = Running {
        children: Vec::new(),
        base: String::new(),
        metrics: Vec::new(),
        started_in: Duration::ZERO,
        bearer: None,
        leftovers: Some(leftovers),
    };
    match launch_distributed(args, &run, [&nats, &postgres, &redis], &mut running).await {
        Ok(()) => Ok(running),
        Err(e) => {
            stop(running).await;
            Err(e)
        }
    }
}

/// Starts every service of a distributed run into `running`, one after another.
async fn launch_distributed(
    args: &BenchArgs,
    run: &str,
    [nats, postgres, redis]: [&str; 3],
    running: &mut Running,
) -> anyhow::Result<()> {
    let bus = format!("{nats}{}prefix={run}", if nats.contains('?') { '&' } else { '?' });
    let mut ports = std::collections::HashMap::new();
    for service in
        ["account", "gateway", "ingestion", "workflow", "package", "dronescheduler", "delivery", "deliveryhistory"]
    {
        ports.insert(service, free_port()?);
    }
    let url = |s: &str| format!("http://127.0.0.1:{}", ports[s]);
    let account_db = fresh_schema(postgres, "account")?;
    let mut plan: Vec<(&str, Vec<String>)> = vec![
        ("account", vec!["--database-url".into(), account_db.clone()]),
        ("package", vec!["--database-url".into(), fresh_schema(postgres, "package")?]),
        (
            "dronescheduler",
            vec![
                "--database-url".into(),
                fresh_schema(postgres, "dronescheduler")?,
                "--fleet-size".into(),
                args.fleet_size.to_string(),
                "--time-scale".into(),
                args.time_scale.to_string(),
                "--bus-url".into(),
                bus.clone(),
            ],
        ),
        ("delivery", vec!["--database-url".into(), format!("{redis}/0?prefix={run}"), "--bus-url".into(), bus.clone()]),
        (
            "ingestion",
            vec!["--database-url".into(), fresh_schema(postgres, "ingestion")?, "--bus-url".into(), bus.clone()],
        ),
        (
            "workflow",
            vec![
                "--bus-url".into(),
                bus.clone(),
                "--store-url".into(),
                fresh_schema(postgres, "workflow")?,
                "--package-url".into(),
                url("package"),
                "--dronescheduler-url".into(),
                url("dronescheduler"),
                "--delivery-url".into(),
                url("delivery"),
                "--account-url".into(),
                url("account"),
            ],
        ),
        (
            "deliveryhistory",
            vec!["--database-url".into(), fresh_schema(postgres, "deliveryhistory")?, "--bus-url".into(), bus.clone()],
        ),
        (
            "gateway",
            vec![
                "--ingestion-url".into(),
                url("ingestion"),
                "--delivery-url".into(),
                url("delivery"),
                "--package-url".into(),
                url("package"),
                "--dronescheduler-url".into(),
                url("dronescheduler"),
                "--deliveryhistory-url".into(),
                url("deliveryhistory"),
                "--account-url".into(),
                url("account"),
            ]
            .into_iter()
            .chain(NO_RATE_LIMITS.map(String::from))
            .collect(),
        ),
    ];
    // One identity secret for the run: the gateway signs callers with it, the services check it.
    let secret = format!("bench-identity-{run}-{}", rand::random::<u64>());
    for (_, service_args) in &mut plan {
        service_args.extend(["--identity-secret".to_owned(), secret.clone()]);
    }
    let started = Instant::now();
    for (service, service_args) in plan {
        let child = Command::new(&args.system)
            .arg(service)
            .args(["--listen", &format!("127.0.0.1:{}", ports[service])])
            .args(&service_args)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| anyhow::anyhow!("starting {} {service}: {e}", args.system.display()))?;
        running.children.push(child);
        wait_ready(&format!("{}/healthz/ready", url(service)), Duration::from_secs(120)).await?;
    }
    running.base = url("gateway");
    running.metrics = ports.keys().map(|service| format!("{}/metrics", url(service))).collect();
    running.started_in = started.elapsed();
    running.bearer = Some(first_api_key(&args.system, &account_db, &url("gateway")).await?);
    Ok(())
}

/// As an operator of a new deployment: the first operator token on the account store, then an
/// account and its API key through the gateway's admin routes.
async fn first_api_key(system: &Path, account_db: &str, gateway: &str) -> anyhow::Result<String> {
    let output = Command::new(system)
        .args(["account", "bootstrap-operator", "--database-url", account_db])
        .env("RUST_LOG", "warn")
        .output()
        .await?;
    anyhow::ensure!(output.status.success(), "bootstrap-operator: {}", String::from_utf8_lossy(&output.stderr));
    let operator = String::from_utf8(output.stdout)?.trim().to_owned();
    let client = reqwest::Client::new();
    let post = |path: String, body: serde_json::Value| {
        client.post(format!("{gateway}{path}")).bearer_auth(&operator).json(&body).send()
    };
    let account: serde_json::Value = post("/api/admin/accounts".into(), serde_json::json!({ "name": "Benchmark" }))
        .await?
        .error_for_status()?
        .json()
        .await?;
    let id = account["id"].as_str().ok_or_else(|| anyhow::anyhow!("no account id in {account}"))?;
    let key: serde_json::Value = post(format!("/api/admin/accounts/{id}/keys"), serde_json::json!({ "name": "bench" }))
        .await?
        .error_for_status()?
        .json()
        .await?;
    key["apiKey"].as_str().map(str::to_owned).ok_or_else(|| anyhow::anyhow!("no API key in {key}"))
}

async fn stop(mut running: Running) {
    terminate(&mut running.children).await;
    if let Some(leftovers) = running.leftovers {
        match leftovers.remove().await {
            Ok(removed) => eprintln!(
                "removed the run's {} schemas, {} streams and {} Redis keys",
                removed.schemas, removed.streams, removed.keys
            ),
            Err(e) => eprintln!("could not remove all the run's data from the servers: {e:#}"),
        }
    }
}

/// Asks our children to shut down (SIGTERM), waits up to 30 s for each, then kills what is left.
pub(crate) async fn terminate(children: &mut [Child]) {
    for child in children.iter() {
        if let Some(pid) = child.id() {
            // SAFETY: sending SIGTERM to our own child.
            unsafe {
                libc::kill(pid as i32, libc::SIGTERM);
            }
        }
    }
    for child in children.iter_mut() {
        let _ = tokio::time::timeout(Duration::from_secs(30), child.wait()).await;
        let _ = child.kill().await;
    }
}

fn options(running: &Running, mode: Mode, secs: f64, sample_every: u64) -> RunOptions {
    RunOptions {
        base: running.base.clone(),
        mode,
        duration: Duration::from_secs_f64(secs),
        sample_every,
        max_in_flight: 20_000,
        progress: true,
        bearer: running.bearer.clone(),
    }
}

fn observe(running: &Running, metrics: bool) -> Observe {
    Observe {
        metrics_urls: if metrics { running.metrics.clone() } else { Vec::new() },
        pids: running.children.iter().filter_map(|c| c.id()).collect(),
        drain_stall: Duration::from_secs(15),
    }
}

/// New deliveries only: what ingest and saturation runs send.
const CREATES_ONLY: Mix = Mix { reschedule: 0.0, cancel: 0.0, owners: 100 };
/// The end-to-end mix: some deliveries are rescheduled or cancelled after they are accepted.
const REALISTIC: Mix = Mix { reschedule: 0.05, cancel: 0.02, owners: 100 };

/// Adds a row; its ratio divides by the baseline measured in this sitting, when there is one.
fn push(mut report: Report, reports: &mut Vec<Report>, bare_rate: Option<f64>) {
    report.ratio_to_baseline = bare_rate.map(|bare| report.accepted_per_s / bare);
    reports.push(report);
}

/// The two end-to-end rows of a running system: paced at `rate` with the realistic mix, then
/// saturated with creates only.
async fn end_to_end(system: &Running, label: &str, rate: f64, args: &BenchArgs) -> anyhow::Result<[Report; 2]> {
    let paced = measure(
        &format!("{label} (5% reschedule, 2% cancel)"),
        &options(system, Mode::open(rate), args.e2e_secs, 200),
        REALISTIC,
        &observe(system, true),
    )
    .await?;
    let saturated = measure(
        &format!("{label}, saturated"),
        &options(system, Mode::Closed { connections: args.connections }, args.saturation_secs, 200),
        CREATES_ONLY,
        &observe(system, true),
    )
    .await?;
    Ok([paced, saturated])
}

/// Runs every scenario and writes the report.
pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.system.exists(),
        "{} does not exist: run `cargo build --release` first",
        args.system.display()
    );
    let saturate = Mode::Closed { connections: args.connections };
    let mut reports = Vec::new();
    let mut bare_rate = None;

    if args.includes(Scenario::Baseline) {
        eprintln!("== bare HTTP baseline");
        let bare = start_baseline().await?;
        let baseline = measure(
            "bare HTTP server (baseline)",
            &options(&bare, saturate, args.saturation_secs, 0),
            CREATES_ONLY,
            &observe(&bare, false),
        )
        .await?;
        stop(bare).await;
        bare_rate = Some(baseline.accepted_per_s);
        push(baseline, &mut reports, bare_rate);
    }

    let mut startup = None;
    if args.includes(Scenario::Ingest) {
        eprintln!("== ingest only (workflow paused)");
        let data = tempfile::tempdir()?;
        let system = start_system(&args, data.path(), true).await?;
        startup = Some(system.started_in);
        let saturated = measure(
            "ingest only, saturated",
            &options(&system, saturate, args.saturation_secs, 0),
            CREATES_ONLY,
            &observe(&system, false),
        )
        .await?;
        push(saturated, &mut reports, bare_rate);
        let paced = measure(
            "ingest only, paced",
            &options(&system, Mode::open(args.ingest_rate), args.ingest_secs, 0),
            CREATES_ONLY,
            &observe(&system, false),
        )
        .await?;
        push(paced, &mut reports, bare_rate);
        stop(system).await;
    }

    if args.includes(Scenario::EndToEnd) {
        eprintln!("== end to end");
        let data = tempfile::tempdir()?;
        let system = start_system(&args, data.path(), false).await?;
        startup = startup.or(Some(system.started_in));
        for report in end_to_end(&system, "end to end", args.e2e_rate, &args).await? {
            push(report, &mut reports, bare_rate);
        }
        stop(system).await;
    }

    if args.includes(Scenario::Distributed) {
        eprintln!("== distributed end to end (NATS JetStream, PostgreSQL, Redis; one process per service)");
        let system = start_distributed(&args).await?;
        for report in end_to_end(&system, "distributed, end to end", args.distributed_rate, &args).await? {
            push(report, &mut reports, bare_rate);
        }
        stop(system).await;
    }

    if let Some(parent) = args.json.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&args.json, serde_json::to_string_pretty(&reports)?)?;
    let markdown = render(&args, &reports, startup);
    std::fs::write(&args.out, &markdown)?;
    println!("{markdown}");
    Ok(())
}

fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo.lines().find(|l| l.starts_with("model name")).and_then(|l| l.split(':').nth(1)).unwrap_or("?");
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_gib = meminfo
        .lines()
        .find(|l| l.starts_with("MemTotal"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kib| kib.parse::<f64>().ok())
        .map_or(0.0, |kib| kib / 1024.0 / 1024.0);
    format!("{cores} cores ({}), {mem_gib:.0} GiB; load generator, system and baseline share the machine", model.trim())
}

/// The arguments this bench was given, as `scripts/bench.sh` would take them (it passes
/// `--system` itself).
fn invocation(args: impl Iterator<Item = String>) -> String {
    let mut shown = String::new();
    let mut args = args.peekable();
    while let Some(arg) = args.next() {
        if arg == "--system" {
            args.next();
        } else if !arg.starts_with("--system=") {
            shown.push(' ');
            shown.push_str(&arg);
        }
    }
    shown
}

fn render(args: &BenchArgs, reports: &[Report], startup: Option<Duration>) -> String {
    let mut out = String::new();
    let revision = std::process::Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    let _ = writeln!(out, "# Benchmarks\n");
    let _ = writeln!(
        out,
        "Measured {} at revision `{revision}` with `scripts/bench.sh{}` (release build).\n\n\
         - Machine: {}.\n\
         - Fleet: {} drones, time scale {} (flights pass in milliseconds, so the pipeline is measured, not the fleet).\n\
         - Load: `loadgen`; open loop means a constant arrival rate over at most {OPEN_LOOP_CONNECTIONS} connections, \
         with latency counted from each request's due time (no coordinated omission); closed loop means {} connections each with one request outstanding.\n\
         - The ratio divides our accepted rate by the bare HTTP server's (hyper, answers 202, no work) measured with the \
         same client in the same sitting: compare ratios across runs, not absolute numbers.\n\
         - Start-up of the embedded system (process start to `/healthz/ready`): {}.\n\
         - Distributed rows (when present): every service its own process (`fabrikam SERVICE`) on loopback, queue on \
         NATS JetStream, package/drone/ingestion stores on PostgreSQL, deliveries on Redis, all servers on this same \
         machine and counted in neither CPU nor memory (only our processes are).\n",
        chrono::Utc::now().format("%Y-%m-%d %H:%M UTC"),
        invocation(std::env::args().skip_while(|a| a != "bench").skip(1)),
        machine(),
        args.fleet_size,
        args.time_scale,
        args.connections,
        startup.map_or("not measured in this run".to_owned(), |s| format!("{:.0} ms", s.as_secs_f64() * 1000.0))
    );
    let _ = writeln!(out, "{}", table_header());
    for report in reports {
        let _ = writeln!(out, "{}", report.row());
    }
    let _ = writeln!(
        out,
        "\n\"lost\" counts accepted delivery requests that the workflow's own counters never saw scheduled, \
         cancelled before scheduling, or dead-lettered once the load stopped and the queue drained.\n\n\
         ## The reference implementation's published figures\n\n\
         | what | reference (cluster: 10 ingestion, 35 workflow, 150 backend pods) | guide's target |\n\
         |---|---|---|\n\
         | ingestion accepted | 1,275/s average, 1,710/s peak; p99 2,540 ms | 10,000/s sustained, p99 < 500 ms |\n\
         | workflow completed | 1,100/s average, 1,322/s peak; p99 2,540 ms | |\n\n\
         Our targets on one 2-core machine: ingest only ≥ 10,000/s with accept p99 ≤ 50 ms; end to end ≥ 3,000 \
         scheduled/s with accept-to-scheduled p99 ≤ 1 s and nothing lost; ≤ 200 MB RSS; start-up ≤ 1 s.\n"
    );
    out
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        bench: BenchArgs,
    }

    fn bench(args: &[&str]) -> BenchArgs {
        Cli::parse_from(std::iter::once("bench").chain(args.iter().copied())).bench
    }

    #[test]
    fn the_default_bench_is_embedded_only_and_distributed_adds_its_scenario() {
        let embedded = bench(&[]);
        assert!(embedded.includes(Scenario::Baseline) && embedded.includes(Scenario::EndToEnd));
        assert!(!embedded.includes(Scenario::Distributed));
        assert!(bench(&["--distributed"]).includes(Scenario::Distributed));
    }

    #[test]
    fn only_runs_exactly_the_listed_scenarios() {
        let only = bench(&["--only", "baseline,distributed"]);
        assert!(only.includes(Scenario::Baseline) && only.includes(Scenario::Distributed));
        assert!(!only.includes(Scenario::Ingest) && !only.includes(Scenario::EndToEnd));
    }

    #[test]
    fn the_report_names_the_arguments_but_not_the_binary_the_script_passes() {
        let args = ["--system", "target/release/fabrikam", "--distributed", "--e2e-secs", "30"].map(String::from);
        assert_eq!(invocation(args.into_iter()), " --distributed --e2e-secs 30");
    }
}
