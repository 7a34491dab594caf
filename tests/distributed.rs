//! The distributed mode end to end: every service its own OS process (`fabrikam SERVICE`, the
//! same code as the per-service binaries) on loopback, with the queue on NATS JetStream, the
//! package, drone and ingestion stores on PostgreSQL and deliveries on Redis.
//!
//! Runs when `FABRIKAM_TEST_NATS_URL`, `FABRIKAM_TEST_POSTGRES_URL` and `FABRIKAM_TEST_REDIS_URL`
//! are all set (CI sets them); skipped, with a note, otherwise. Each run uses its own schemas,
//! stream prefix and key prefix, so runs never see each other's data, and removes them when it
//! ends, passing or not.
//!
//! `chaos_under_load` is not in the default run (it takes minutes): sustained load while
//! services are killed -9 and restarted at random, then an account of every accepted request.
//! Run it with the backends' variables set (see `.ci/run`) and
//! `cargo test --test distributed -- --ignored --nocapture chaos`; `FABRIKAM_CHAOS_SECS` (default
//! 60) sets how long the load and the kills go on, `FABRIKAM_CHAOS_RATE` (default 40) the
//! requests per second, `FABRIKAM_CHAOS_SEED` makes the kills repeatable.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

mod common;

use common::Client;
use platform::bus::{NatsQueue, Queue, QueueOptions};
use platform::testenv;
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::process::{Child, Command};

const SERVICES: [&str; 8] =
    ["account", "package", "dronescheduler", "delivery", "ingestion", "workflow", "deliveryhistory", "gateway"];
/// The workflow's lease: short, so work the crash interrupted comes back quickly.
const ACK_WAIT_SECS: u64 = 2;

struct Backends {
    nats: String,
    postgres: String,
    redis: String,
}

fn backends() -> Option<Backends> {
    let nats = testenv::server_url(testenv::NATS_URL, "distributed end-to-end test");
    let postgres = testenv::server_url(testenv::POSTGRES_URL, "distributed end-to-end test");
    let redis = testenv::server_url(testenv::REDIS_URL, "distributed end-to-end test");
    Some(Backends { nats: nats?, postgres: postgres?, redis: redis? })
}

fn free_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
}

/// The whole system as separate processes.
struct Cluster {
    logs: PathBuf,
    addresses: std::collections::HashMap<&'static str, SocketAddr>,
    args: std::collections::HashMap<&'static str, Vec<String>>,
    children: std::collections::HashMap<&'static str, Child>,
    bus_url: String,
    /// An API key of an account made through the admin API, for the gateway's clients.
    api_key: String,
    /// The run's schemas, streams and keys. Last, so that it is dropped after [`Cluster::drop`]
    /// has stopped the processes: a service still running would make its streams again.
    _cleanup: testenv::Cleanup,
}

impl Cluster {
    async fn start(backends: &Backends, logs: &Path, fleet_size: usize) -> Self {
        let run = testenv::unique_name("e2e");
        let with_prefix = |url: &str| format!("{url}{}prefix={run}", if url.contains('?') { '&' } else { '?' });
        let bus_url = with_prefix(&backends.nats);
        let cleanup = testenv::Cleanup::new();
        cleanup.nats_streams(&backends.nats, &run);
        cleanup.redis_keys(&backends.redis, &run);
        let mut addresses = std::collections::HashMap::new();
        for service in SERVICES {
            addresses.insert(service, free_port());
        }
        let url = |service: &str| format!("http://{}", addresses[service]);
        let mut args = std::collections::HashMap::new();
        let account_db = cleanup.fresh_postgres_schema(&backends.postgres).await;
        args.insert("account", vec!["--database-url".into(), account_db.clone()]);
        args.insert("package", vec!["--database-url".into(), cleanup.fresh_postgres_schema(&backends.postgres).await]);
        args.insert(
            "dronescheduler",
            vec![
                "--database-url".into(),
                cleanup.fresh_postgres_schema(&backends.postgres).await,
                // Real-time flights: every drone is still out when the test counts them.
                "--time-scale".into(),
                "1".into(),
                "--fleet-size".into(),
                fleet_size.to_string(),
                "--bus-url".into(),
                bus_url.clone(),
            ],
        );
        args.insert(
            "delivery",
            vec!["--database-url".into(), with_prefix(&backends.redis), "--bus-url".into(), bus_url.clone()],
        );
        args.insert(
            "ingestion",
            vec![
                "--database-url".into(),
                cleanup.fresh_postgres_schema(&backends.postgres).await,
                "--bus-url".into(),
                bus_url.clone(),
            ],
        );
        args.insert(
            "workflow",
            vec![
                "--bus-url".into(),
                bus_url.clone(),
                "--store-url".into(),
                cleanup.fresh_postgres_schema(&backends.postgres).await,
                "--package-url".into(),
                url("package"),
                "--dronescheduler-url".into(),
                url("dronescheduler"),
                "--delivery-url".into(),
                url("delivery"),
                "--account-url".into(),
                url("account"),
                "--ack-wait-secs".into(),
                ACK_WAIT_SECS.to_string(),
                "--backoff-base-ms".into(),
                "50".into(),
                "--backoff-max-secs".into(),
                "1".into(),
            ],
        );
        args.insert(
            "deliveryhistory",
            vec![
                "--database-url".into(),
                cleanup.fresh_postgres_schema(&backends.postgres).await,
                "--bus-url".into(),
                bus_url.clone(),
            ],
        );
        args.insert(
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
            ],
        );
        // One identity secret for the run: the gateway signs callers with it, the services check it.
        let secret = uuid::Uuid::new_v4().simple().to_string();
        for service_args in args.values_mut() {
            service_args.extend(["--identity-secret".to_owned(), secret.clone()]);
        }
        let mut cluster = Self {
            logs: logs.to_owned(),
            addresses,
            args,
            children: std::collections::HashMap::new(),
            bus_url,
            api_key: String::new(),
            _cleanup: cleanup,
        };
        for service in SERVICES {
            cluster.spawn(service);
        }
        for service in SERVICES {
            cluster.wait_ready(service).await;
        }
        cluster.api_key = first_api_key(&account_db, cluster.addresses["gateway"]).await;
        cluster
    }

    fn spawn(&mut self, service: &'static str) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.logs.join(format!("{service}.log")))
            .unwrap();
        let mut command = Command::new(env!("CARGO_BIN_EXE_fabrikam"));
        command
            .arg(service)
            .arg("--listen")
            .arg(self.addresses[service].to_string())
            .args(&self.args[service])
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .kill_on_drop(true);
        // Settings from the environment of whoever runs the tests must not leak in.
        for (key, _) in std::env::vars().filter(|(k, _)| k.starts_with("FABRIKAM_") && !k.starts_with("FABRIKAM_TEST_"))
        {
            command.env_remove(key);
        }
        self.children.insert(service, command.spawn().expect("start a service process"));
    }

    async fn wait_ready(&mut self, service: &'static str) {
        let url = format!("http://{}/healthz/ready", self.addresses[service]);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(response) = reqwest::get(&url).await
                && response.status() == StatusCode::OK
            {
                return;
            }
            if let Ok(Some(exit)) = self.children.get_mut(service).unwrap().try_wait() {
                panic!("{service} exited with {exit} before it was ready; see {}", self.log_of(service));
            }
            assert!(Instant::now() < deadline, "{service} not ready within 60 s; see {}", self.log_of(service));
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn log_of(&self, service: &str) -> String {
        let path = self.logs.join(format!("{service}.log"));
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(20).collect();
        format!("{}:\n{}", path.display(), tail.into_iter().rev().collect::<Vec<_>>().join("\n"))
    }

    /// SIGKILL: no shutdown hook runs, in-flight work is abandoned mid-way.
    async fn kill(&mut self, service: &'static str) {
        let mut child = self.children.remove(service).unwrap();
        child.start_kill().unwrap();
        child.wait().await.unwrap();
    }

    fn client(&self, service: &str) -> Client {
        Client::new(self.addresses[service])
    }

    /// The gateway as the test's account calls it.
    fn gateway(&self) -> Client {
        Client::with_bearer(self.addresses["gateway"], &self.api_key)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // `kill_on_drop` only sends the signal; waiting here makes sure no process is left to
        // write to the schemas, streams and keys the cleanup is about to remove.
        for child in self.children.values_mut() {
            let _ = child.start_kill();
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        for child in self.children.values_mut() {
            while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
}

/// As an operator would on a new deployment: bootstraps the operator token on the account store,
/// then makes an account and an API key through the gateway's admin routes.
async fn first_api_key(account_db: &str, gateway: SocketAddr) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_fabrikam"))
        .args(["account", "bootstrap-operator", "--database-url", account_db])
        .env("RUST_LOG", "warn")
        .output()
        .await
        .expect("run bootstrap-operator");
    assert!(output.status.success(), "bootstrap-operator: {}", String::from_utf8_lossy(&output.stderr));
    let operator = String::from_utf8(output.stdout).unwrap().trim().to_owned();
    let admin = Client::with_bearer(gateway, &operator);
    let (status, account) =
        admin.send(reqwest::Method::POST, "/api/admin/accounts", Some(json!({ "name": "Contoso" }))).await;
    assert_eq!(status, StatusCode::CREATED, "{account}");
    let keys = format!("/api/admin/accounts/{}/keys", account["id"].as_str().unwrap());
    let (status, key) = admin.send(reqwest::Method::POST, &keys, Some(json!({ "name": "e2e" }))).await;
    assert_eq!(status, StatusCode::CREATED, "{key}");
    key["apiKey"].as_str().unwrap().to_owned()
}

fn request(i: usize) -> Value {
    let mut request = contracts::requests::reference_validation_request();
    request["ownerId"] = json!(format!("owner-{}", i % 7));
    request["packageInfo"]["packageId"] = json!(format!("package-{i}"));
    request["pickupLocation"] = json!(format!("warehouse {i}"));
    request
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_service_in_its_own_process_on_nats_postgres_and_redis_survives_killed_processes() {
    let Some(backends) = backends() else { return };
    let started = Instant::now();
    let logs = tempfile::tempdir().unwrap();
    let mut cluster = Cluster::start(&backends, logs.path(), 400).await;
    eprintln!("seven processes ready in {:?}", started.elapsed());
    let gateway = cluster.gateway();

    // The reference's own validation request goes all the way through.
    let (status, accepted) = gateway.send(reqwest::Method::POST, "/api/deliveryrequests", Some(request(0))).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{accepted}");
    let first = accepted["deliveryId"].as_str().unwrap().to_owned();
    let delivery = gateway.eventually(&format!("/api/deliveries/{first}"), Duration::from_secs(30), |_| true).await;
    assert!(delivery["droneId"].as_str().unwrap().starts_with("drone-"), "{delivery}");
    eprintln!("first delivery scheduled {:?} after start", started.elapsed());

    // A batch, with the workflow killed -9 while it works through it.
    let total = 200;
    let batch_started = Instant::now();
    let posts = (1..=total).map(|i| {
        let gateway = &gateway;
        async move { gateway.send(reqwest::Method::POST, "/api/deliveryrequests", Some(request(i))).await }
    });
    let mut accepted = vec![first];
    for (status, body) in futures::future::join_all(posts).await {
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
        accepted.push(body["deliveryId"].as_str().unwrap().to_owned());
    }
    let queue =
        NatsQueue::open(&cluster.bus_url, contracts::messages::DELIVERY_REQUESTS_QUEUE, QueueOptions::default())
            .await
            .unwrap();
    let unfinished = queue.depth().await.unwrap();
    eprintln!("killing the workflow with {unfinished} of {total} requests unfinished");
    assert!(unfinished > 0, "the workflow finished everything before the kill; the test proves nothing");
    cluster.kill("workflow").await;
    cluster.spawn("workflow");
    cluster.wait_ready("workflow").await;

    let mut drones = Vec::new();
    for id in &accepted {
        let delivery = gateway.eventually(&format!("/api/deliveries/{id}"), Duration::from_secs(60), |_| true).await;
        drones.push(delivery["droneId"].as_str().unwrap().to_owned());
    }
    let elapsed = batch_started.elapsed();
    eprintln!(
        "{total} requests scheduled in {elapsed:?} across the kill ({:.0}/s)",
        total as f64 / elapsed.as_secs_f64()
    );
    drones.sort();
    drones.dedup();
    assert_eq!(drones.len(), accepted.len(), "two deliveries share a drone");
    let (_, fleet) = cluster.client("dronescheduler").get("/api/drones").await;
    let busy = fleet.as_array().unwrap().iter().filter(|d| d["status"] != "idle").count();
    assert_eq!(busy, accepted.len(), "each delivery holds exactly one drone");
    assert!(queue.dead_letters(10).await.unwrap().is_empty(), "{:?}", queue.dead_letters(10).await);
    assert_eq!(queue.depth().await.unwrap(), 0);

    // A downstream killed -9 and down for a while: requests wait (the workflow's breaker opens
    // and it stops taking messages), nothing is dead-lettered, all complete once it is back.
    cluster.kill("delivery").await;
    let during = 50;
    let posts = (total + 1..=total + during).map(|i| {
        let gateway = &gateway;
        async move { gateway.send(reqwest::Method::POST, "/api/deliveryrequests", Some(request(i))).await }
    });
    let mut waiting = Vec::new();
    for (status, body) in futures::future::join_all(posts).await {
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
        waiting.push(body["deliveryId"].as_str().unwrap().to_owned());
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(queue.depth().await.unwrap() > 0, "requests wait while the delivery service is down");
    cluster.spawn("delivery");
    cluster.wait_ready("delivery").await;
    for id in &waiting {
        gateway.eventually(&format!("/api/deliveries/{id}"), Duration::from_secs(60), |_| true).await;
    }
    assert!(queue.dead_letters(10).await.unwrap().is_empty(), "{:?}", queue.dead_letters(10).await);
    let (_, fleet) = cluster.client("dronescheduler").get("/api/drones").await;
    let busy = fleet.as_array().unwrap().iter().filter(|d| d["status"] != "idle").count();
    assert_eq!(busy, accepted.len() + waiting.len(), "each delivery holds exactly one drone");

    // Events cross processes: the scheduler's drone-events move the delivery service's stage
    // (over NATS), and a cancelled delivery's delivery-events reach the history service.
    gateway
        .eventually(&format!("/api/deliveries/{}/status", accepted[0]), Duration::from_secs(30), |s| {
            s["stage"] == "HeadedToPickup" && !s["pickupETA"].is_null()
        })
        .await;
    let cancelled = &waiting[0];
    let (status, _) = gateway.send(reqwest::Method::DELETE, &format!("/api/deliveryrequests/{cancelled}"), None).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let history =
        gateway.eventually(&format!("/api/deliveryhistory/{cancelled}"), Duration::from_secs(30), |_| true).await;
    assert_eq!(history["delivery"]["stage"], "Cancelled", "{history}");
    eprintln!("distributed end-to-end test took {:?}", started.elapsed());
}

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Where one accepted request ended.
#[derive(Debug, Default)]
struct Tally {
    scheduled: usize,
    cancelled: usize,
    failed_with_reason: usize,
    dead_lettered_with_reason: usize,
    lost: Vec<String>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "minutes long; run on demand: cargo test --test distributed -- --ignored chaos"]
async fn chaos_under_load() {
    use rand::{Rng, SeedableRng};
    let Some(backends) = backends() else { return };
    let seconds = env_number("FABRIKAM_CHAOS_SECS", 60);
    let rate = env_number("FABRIKAM_CHAOS_RATE", 40).max(1);
    let seed = env_number("FABRIKAM_CHAOS_SEED", rand::random());
    eprintln!("chaos: {seconds} s at {rate}/s, seed {seed}");
    let logs = tempfile::tempdir().unwrap();
    // Enough drones that none is reused during the run: a drone holding two deliveries is a bug.
    let fleet = (seconds * rate * 2) as usize + 100;
    let cluster = std::sync::Arc::new(tokio::sync::Mutex::new(Cluster::start(&backends, logs.path(), fleet).await));
    let gateway = cluster.lock().await.gateway();
    let workflow = cluster.lock().await.client("workflow");
    let stop = tokio_util::sync::CancellationToken::new();

    // The chaos: kill -9 one service at random, leave it down a while, start it again.
    let chaos = {
        let cluster = cluster.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            let mut kills = Vec::new();
            while !stop.is_cancelled() {
                tokio::time::sleep(Duration::from_millis(rng.random_range(2000..5000))).await;
                let victim = ["workflow", "package", "dronescheduler", "delivery", "ingestion"][rng.random_range(0..5)];
                let down_for = Duration::from_millis(rng.random_range(300..3000));
                let mut cluster = cluster.lock().await;
                cluster.kill(victim).await;
                tokio::time::sleep(down_for).await;
                cluster.spawn(victim);
                cluster.wait_ready(victim).await;
                kills.push(victim);
            }
            kills
        })
    };

    // The load: open loop, one request every 1/rate s; one in ten is cancelled right after.
    let started = Instant::now();
    let mut ticks = tokio::time::interval(Duration::from_secs(1) / rate as u32);
    let mut inflight = tokio::task::JoinSet::new();
    let mut i = 0usize;
    while started.elapsed() < Duration::from_secs(seconds) {
        ticks.tick().await;
        i += 1;
        let gateway = Client { http: gateway.http.clone(), base: gateway.base.clone() };
        inflight.spawn(async move {
            let (status, body) = gateway.send(reqwest::Method::POST, "/api/deliveryrequests", Some(request(i))).await;
            if status != StatusCode::ACCEPTED {
                return None; // Refused (a service was down): not accepted, nothing owed.
            }
            let id = body["deliveryId"].as_str().unwrap().to_owned();
            let cancel = i.is_multiple_of(10)
                && gateway.send(reqwest::Method::DELETE, &format!("/api/deliveryrequests/{id}"), None).await.0
                    == StatusCode::ACCEPTED;
            Some((id, cancel))
        });
    }
    stop.cancel();
    let kills = chaos.await.unwrap();
    let accepted: Vec<(String, bool)> = inflight.join_all().await.into_iter().flatten().collect();
    eprintln!("chaos: {} sent, {} accepted, kills: {kills:?}", i, accepted.len());

    // Settle: the queue empties and no workflow is still running or compensating.
    let queue = NatsQueue::open(
        &cluster.lock().await.bus_url,
        contracts::messages::DELIVERY_REQUESTS_QUEUE,
        QueueOptions::default(),
    )
    .await
    .unwrap();
    // A slow machine (a debug build beside other work) drains slowly: what fails the test is a
    // backlog that stops shrinking, not one that takes long.
    let stuck_after = Duration::from_secs(180);
    let (mut least_left, mut last_progress) = (u64::MAX, Instant::now());
    loop {
        let depth = queue.depth().await.unwrap();
        let (_, summary) = workflow.get("/api/workflows/summary").await;
        let busy = summary["running"].as_u64().unwrap_or(0) + summary["compensating"].as_u64().unwrap_or(0);
        if depth == 0 && busy == 0 {
            break;
        }
        if depth + busy < least_left {
            (least_left, last_progress) = (depth + busy, Instant::now());
        }
        assert!(last_progress.elapsed() < stuck_after, "not settling: depth {depth}, workflows {summary}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    eprintln!("chaos: settled {:.0} s after the load stopped", started.elapsed().as_secs_f64() - seconds as f64);

    let dead = queue.dead_letters(1000).await.unwrap();
    let mut tally = Tally::default();
    let mut drones = Vec::new();
    for (id, cancel_asked) in &accepted {
        let (status, delivery) = gateway.get(&format!("/api/deliveries/{id}")).await;
        let stage = delivery["stage"].as_str().unwrap_or("");
        match (status, stage) {
            (StatusCode::OK, "Cancelled") => tally.cancelled += 1,
            (StatusCode::OK, "Failed") => {
                let (_, progress) = gateway.get(&format!("/api/deliveries/{id}/status")).await;
                assert!(progress["reason"].as_str().is_some_and(|r| !r.is_empty()), "{id} failed without a reason");
                tally.failed_with_reason += 1;
            }
            (StatusCode::OK, _) => {
                assert!(!cancel_asked, "{id} was cancelled before pickup but is {stage}");
                drones.push(delivery["droneId"].as_str().unwrap().to_owned());
                tally.scheduled += 1;
            }
            _ if dead.iter().any(|d| d.id.ends_with(id.as_str()) && !d.last_error.is_empty()) => {
                tally.dead_lettered_with_reason += 1;
            }
            _ => tally.lost.push(id.clone()),
        }
    }
    eprintln!("chaos: {tally:?}; dead letters: {}", dead.len());
    for letter in dead.iter().take(5) {
        eprintln!("  dead letter {}: {}", letter.id, letter.last_error);
    }
    assert!(tally.lost.is_empty(), "accepted and never accounted for: {:?}", tally.lost);
    assert_eq!(
        accepted.len(),
        tally.scheduled + tally.cancelled + tally.failed_with_reason + tally.dead_lettered_with_reason
    );
    let distinct: std::collections::HashSet<&String> = drones.iter().collect();
    assert_eq!(distinct.len(), drones.len(), "a drone was assigned to two deliveries");
    let (_, fleet) = cluster.lock().await.client("dronescheduler").get("/api/drones").await;
    // Drones of cancelled deliveries fly home ("returning"); the others still fly their delivery.
    let busy = fleet
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["status"] == "flying-to-pickup" || d["status"] == "flying-to-dropoff")
        .count();
    assert_eq!(busy, tally.scheduled, "each scheduled delivery holds exactly one drone, nothing else holds one");
}
