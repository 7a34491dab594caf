//! Drives load at a target: open loop (constant arrival rate) or closed loop (N connections,
//! each sending as soon as its previous answer arrives).

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::pacing;
use crate::stats::{Percentiles, Stats};
use crate::workload::{Operation, Workload};

/// Where delivery requests are posted, after the base URL.
pub const CREATE_PATH: &str = "/api/deliveryrequests";

/// The open loop's connections unless told otherwise: enough for 10,000 requests/s answered
/// within 50 ms, few enough that the generator does not turn a slow moment into a storm of new
/// connections (each request on its own connection) that the system then spends its time
/// accepting.
pub const OPEN_LOOP_CONNECTIONS: usize = 512;

/// How load is applied.
#[derive(Debug, Clone, Copy)]
pub enum Mode {
    /// Requests arrive at this rate per second, whether or not earlier ones were answered, over
    /// at most `connections` connections (as wrk2 does): a request due while every connection
    /// is busy waits for one, and that wait counts in its latency, which runs from its due time.
    Open { rate: f64, connections: usize },
    /// This many connections, each with one request outstanding.
    Closed { connections: usize },
}

impl Mode {
    /// An open loop at `rate` over the default number of connections.
    pub fn open(rate: f64) -> Self {
        Self::Open { rate, connections: OPEN_LOOP_CONNECTIONS }
    }
}

/// One run's settings.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Base URL of the gateway (or the bare server), e.g. `http://127.0.0.1:8080`.
    pub base: String,
    pub mode: Mode,
    pub duration: Duration,
    /// Follow one created delivery in this many until it is scheduled (0: none).
    pub sample_every: u64,
    /// Open loop: requests outstanding beyond this are not sent and counted as dropped.
    pub max_in_flight: usize,
    /// Print a progress line every second.
    pub progress: bool,
    /// Sent as `Authorization: Bearer …` on every request (the gateway requires a credential).
    pub bearer: Option<String>,
}

/// What a run saw.
#[derive(Debug)]
pub struct RunResult {
    pub stats: Stats,
    /// How long the load ran.
    pub elapsed: Duration,
    /// How long, after the load, the run waited for its followed deliveries to be scheduled:
    /// scheduling went on meanwhile, so a scheduling rate must count this time too.
    pub followed_for: Duration,
    pub sent: u64,
    pub dropped: u64,
}

struct Shared {
    client: reqwest::Client,
    base: String,
    workload: Workload,
    stats: Mutex<Stats>,
    sample_every: u64,
    created: AtomicU64,
    in_flight: AtomicUsize,
    samplers: Mutex<JoinSet<()>>,
}

/// Runs the load and waits (up to `drain`) for sampled deliveries to be scheduled.
pub async fn run(options: &RunOptions, workload: Workload, drain: Duration) -> RunResult {
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(token) = &options.bearer {
        let value = reqwest::header::HeaderValue::from_str(&format!("Bearer {token}")).expect("a header-safe token");
        headers.insert(reqwest::header::AUTHORIZATION, value);
    }
    let client = reqwest::Client::builder()
        .default_headers(headers)
        .pool_max_idle_per_host(4096)
        .tcp_nodelay(true)
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client builds");
    let shared = Arc::new(Shared {
        client,
        base: options.base.trim_end_matches('/').to_owned(),
        workload,
        stats: Mutex::new(Stats::default()),
        sample_every: options.sample_every,
        created: AtomicU64::new(0),
        in_flight: AtomicUsize::new(0),
        samplers: Mutex::new(JoinSet::new()),
    });
    let started = Instant::now();
    let progress = options.progress.then(|| tokio::spawn(report_progress(shared.clone(), started)));
    let (sent, dropped) = match options.mode {
        Mode::Open { rate, connections } => {
            open_loop(&shared, rate, connections, options.duration, options.max_in_flight).await
        }
        Mode::Closed { connections } => (closed_loop(&shared, connections, options.duration).await, 0),
    };
    let elapsed = started.elapsed();
    if let Some(progress) = progress {
        progress.abort();
    }
    let mut samplers = std::mem::take(&mut *shared.samplers.lock().expect("samplers lock"));
    let _ = tokio::time::timeout(drain, async { while samplers.join_next().await.is_some() {} }).await;
    samplers.abort_all();
    let followed_for = started.elapsed() - elapsed;
    let stats = shared.stats.lock().expect("stats lock").clone();
    RunResult { stats, elapsed, followed_for, sent, dropped }
}

/// Open loop. A thread paces the requests, sleeping until each one is due: tokio's timer has a
/// 1 ms grain, which would add up to a millisecond of the generator's own lag to every latency
/// measured from the due time, while a thread's sleep is accurate to tens of microseconds.
async fn open_loop(
    shared: &Arc<Shared>,
    rate: f64,
    connections: usize,
    duration: Duration,
    max_in_flight: usize,
) -> (u64, u64) {
    let tasks = Arc::new(Mutex::new(JoinSet::new()));
    let pacer = {
        let (shared, tasks, runtime) = (shared.clone(), tasks.clone(), tokio::runtime::Handle::current());
        let pace = Pace { rate, duration, max_in_flight, connections: Arc::new(Semaphore::new(connections.max(1))) };
        tokio::task::spawn_blocking(move || pace.run(&shared, &tasks, &runtime))
    };
    let counts = pacer.await.expect("the pacer does not panic");
    let mut tasks = std::mem::take(&mut *tasks.lock().expect("tasks lock"));
    while tasks.join_next().await.is_some() {}
    counts
}

/// The open loop's schedule and limits.
struct Pace {
    rate: f64,
    duration: Duration,
    /// Requests outstanding (waiting for a connection or answered) beyond this are dropped.
    max_in_flight: usize,
    /// One permit per connection: a request holds one from sending until its answer is read,
    /// so the client's pool never opens more connections than this.
    connections: Arc<Semaphore>,
}

impl Pace {
    /// Starts each request of the run at its due time (at once when already late, so a stall
    /// is counted, not hidden); returns how many were sent and how many dropped as too many
    /// outstanding.
    fn run(&self, shared: &Arc<Shared>, tasks: &Mutex<JoinSet<()>>, runtime: &tokio::runtime::Handle) -> (u64, u64) {
        let start = Instant::now();
        let (mut sent, mut dropped) = (0u64, 0u64);
        for index in 0..pacing::in_run(self.duration, self.rate) {
            let intended = start + pacing::due_at(index, self.rate);
            if let Some(early) = intended.checked_duration_since(Instant::now()) {
                std::thread::sleep(early);
            }
            if shared.in_flight.load(Ordering::Relaxed) >= self.max_in_flight {
                dropped += 1;
                continue;
            }
            shared.in_flight.fetch_add(1, Ordering::Relaxed);
            let (shared, connections) = (shared.clone(), self.connections.clone());
            let mut tasks = tasks.lock().expect("tasks lock");
            tasks.spawn_on(
                async move {
                    if let Ok(_connection) = connections.acquire().await {
                        send(&shared, index, intended).await;
                    }
                    shared.in_flight.fetch_sub(1, Ordering::Relaxed);
                },
                runtime,
            );
            while tasks.try_join_next().is_some() {}
            sent += 1;
        }
        (sent, dropped)
    }
}

async fn closed_loop(shared: &Arc<Shared>, connections: usize, duration: Duration) -> u64 {
    let deadline = Instant::now() + duration;
    let counter = Arc::new(AtomicU64::new(0));
    let mut workers = JoinSet::new();
    for _ in 0..connections.max(1) {
        let (shared, counter) = (shared.clone(), counter.clone());
        workers.spawn(async move {
            while Instant::now() < deadline {
                let index = counter.fetch_add(1, Ordering::Relaxed);
                send(&shared, index, Instant::now()).await;
            }
        });
    }
    while workers.join_next().await.is_some() {}
    counter.load(Ordering::Relaxed)
}

/// Sends one operation; latency counts from `intended`, the moment it was due.
async fn send(shared: &Arc<Shared>, index: u64, intended: Instant) {
    let operation = shared.workload.next(index);
    let request = match &operation {
        Operation::Create(body) => shared.client.post(format!("{}{CREATE_PATH}", shared.base)).json(body),
        Operation::Reschedule { delivery_id, body } => {
            shared.client.patch(format!("{}/api/deliveryrequests/{delivery_id}", shared.base)).json(body)
        }
        Operation::Cancel { delivery_id } => {
            shared.client.delete(format!("{}/api/deliveryrequests/{delivery_id}", shared.base))
        }
    };
    let response = request.send().await;
    let answered = Instant::now();
    let response = match response {
        Ok(response) => response,
        Err(_) => {
            shared.stats.lock().expect("stats lock").record_transport_error();
            return;
        }
    };
    let status = response.status().as_u16();
    let body = response.bytes().await.unwrap_or_default();
    {
        let mut stats = shared.stats.lock().expect("stats lock");
        stats.record_answer(status, answered.saturating_duration_since(intended));
        if status == 202 {
            match operation {
                Operation::Create(_) => stats.created += 1,
                Operation::Reschedule { .. } => stats.rescheduled += 1,
                Operation::Cancel { .. } => stats.cancelled += 1,
            }
        }
    }
    if status != 202 || !matches!(operation, Operation::Create(_)) {
        return;
    }
    let Some(delivery_id) = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v["deliveryId"].as_str().map(str::to_owned))
    else {
        return;
    };
    let created = shared.created.fetch_add(1, Ordering::Relaxed) + 1;
    if shared.sample_every > 0 && created.is_multiple_of(shared.sample_every) {
        let follower = shared.clone();
        let id = delivery_id.clone();
        shared.samplers.lock().expect("samplers lock").spawn(async move { follow(&follower, &id, answered).await });
    }
    shared.workload.accepted(delivery_id);
}

/// Polls the delivery until it exists, recording accept-to-scheduled latency. The poll interval
/// grows with the wait (a tenth of it, 5 to 250 ms): the error stays near 10% while a backlog of
/// followed deliveries does not turn into a flood of reads that slows the system it measures.
async fn follow(shared: &Shared, delivery_id: &str, accepted_at: Instant) {
    let url = format!("{}/api/deliveries/{delivery_id}", shared.base);
    let give_up = accepted_at + Duration::from_secs(60);
    while Instant::now() < give_up {
        if let Ok(response) = shared.client.get(&url).send().await
            && response.status().is_success()
        {
            let waited = accepted_at.elapsed();
            shared.stats.lock().expect("stats lock").record_scheduled(waited);
            return;
        }
        let interval = (accepted_at.elapsed() / 10).clamp(Duration::from_millis(5), Duration::from_millis(250));
        tokio::time::sleep(interval).await;
    }
}

async fn report_progress(shared: Arc<Shared>, started: Instant) {
    let mut every = tokio::time::interval(Duration::from_secs(1));
    every.tick().await;
    let mut last_ok = 0;
    loop {
        every.tick().await;
        let stats = shared.stats.lock().expect("stats lock").clone();
        let p = Percentiles::of(&stats.accept_latency);
        let ok = stats.ok();
        eprintln!(
            "[{:>5.1}s] {:>7} ok/s  total ok {:>8}  errors {:>6}  in flight {:>5}  p50 {:>7.2} ms  p99 {:>8.2} ms",
            started.elapsed().as_secs_f64(),
            ok - last_ok,
            ok,
            stats.errors(),
            shared.in_flight.load(Ordering::Relaxed),
            p.p50_ms,
            p.p99_ms
        );
        last_ok = ok;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workload::Mix;

    /// An open loop of creates only at `base`, quietly, following nothing.
    async fn open_loop_of_creates(base: String, rate: f64, connections: usize, duration: Duration) -> RunResult {
        let options = RunOptions {
            base,
            mode: Mode::Open { rate, connections },
            duration,
            sample_every: 0,
            max_in_flight: 1000,
            progress: false,
            bearer: None,
        };
        let creates = Workload::new(Mix { reschedule: 0.0, cancel: 0.0, owners: 3 }, 1);
        run(&options, creates, Duration::ZERO).await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_open_loop_sends_every_request_of_the_run_on_time() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let server = tokio::spawn(crate::baseline::serve(listener));
        let result = open_loop_of_creates(base, 500.0, 64, Duration::from_millis(500)).await;
        server.abort();
        assert_eq!((result.sent, result.dropped), (250, 0));
        assert_eq!(result.stats.ok(), 250, "{:?}", result.stats.by_status);
        // The last request is due 498 ms after the start: the run is paced, not a burst.
        assert!(result.elapsed >= Duration::from_millis(498), "{:?}", result.elapsed);
    }

    /// An open loop faster than the server over few connections: the requests queue in the
    /// client (their latency counts the wait) and the server never sees more connections.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_open_loop_opens_no_more_connections_than_allowed() {
        use std::convert::Infallible;
        use std::sync::atomic::AtomicUsize;

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let accepted = Arc::new(AtomicUsize::new(0));
        let server = {
            let accepted = accepted.clone();
            tokio::spawn(async move {
                loop {
                    let Ok((stream, _)) = listener.accept().await else { continue };
                    accepted.fetch_add(1, Ordering::SeqCst);
                    tokio::spawn(async move {
                        let slow = hyper::service::service_fn(|_request| async {
                            tokio::time::sleep(Duration::from_millis(20)).await;
                            let mut response = hyper::Response::new(http_body_util::Full::new(bytes::Bytes::new()));
                            *response.status_mut() = hyper::StatusCode::ACCEPTED;
                            Ok::<_, Infallible>(response)
                        });
                        let io = hyper_util::rt::TokioIo::new(stream);
                        let _ = hyper::server::conn::http1::Builder::new().serve_connection(io, slow).await;
                    });
                }
            })
        };
        let result = open_loop_of_creates(base, 400.0, 3, Duration::from_millis(250)).await;
        server.abort();
        assert_eq!(result.stats.ok(), 100, "{:?}", result.stats.by_status);
        assert!(accepted.load(Ordering::SeqCst) <= 3, "{} connections", accepted.load(Ordering::SeqCst));
        // 100 requests of 20 ms over 3 connections take at least 660 ms: the queue was counted.
        assert!(result.elapsed >= Duration::from_millis(660), "{:?}", result.elapsed);
    }
}
