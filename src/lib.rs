//! The whole Fabrikam system in one process (embedded mode).
//!
//! Every service runs as in production — its own HTTP listener on a loopback port, talking
//! real HTTP to the others — with embedded storage: one SQLite file per service and one for
//! the bus, all under the data directory. Only the gateway's address is public.
//!
//! Without a configured `--identity-secret` the system makes a random one for this run and gives
//! it to every service, so the services always require the gateway's signed identity. The first
//! start on an empty data directory creates a demo account with one API key (see
//! [`account::bootstrap::first_run`]).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use contracts::messages::DELIVERY_REQUESTS_QUEUE;
use platform::bus::{Queue, SqliteQueue};
use platform::clock::SharedClock;
use platform::config::CommonArgs;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// What the all-in-one system needs to start.
#[derive(Debug, Clone)]
pub struct SystemOptions {
    /// The gateway's public address (port 0 picks a free one).
    pub listen: SocketAddr,
    /// Where every SQLite file lives.
    pub data_dir: PathBuf,
    pub ingestion: ingestion::Settings,
    pub workflow: workflow::Settings,
    /// The workflow's operator endpoint (dead letters, workflow state, its health and
    /// metrics); port 0 picks a free one.
    pub workflow_listen: SocketAddr,
    /// Where the delivery service POSTs a notification when a delivery someone asked to be told
    /// about finishes (none: notifications are only logged and recorded).
    pub webhook_url: Option<String>,
    pub fleet: dronescheduler::FleetConfig,
    pub gateway: gateway::GatewayOptions,
    pub common: CommonArgs,
}

impl SystemOptions {
    /// Defaults with the given gateway address and data directory.
    pub fn new(listen: SocketAddr, data_dir: impl Into<PathBuf>) -> Self {
        Self {
            listen,
            data_dir: data_dir.into(),
            ingestion: ingestion::Settings::default(),
            workflow: workflow::Settings::default(),
            workflow_listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            webhook_url: None,
            fleet: dronescheduler::FleetConfig::default(),
            gateway: gateway::GatewayOptions::default(),
            common: CommonArgs::default(),
        }
    }
}

/// Where each service listens.
#[derive(Debug, Clone, Copy)]
pub struct Addresses {
    pub gateway: SocketAddr,
    pub ingestion: SocketAddr,
    pub workflow: SocketAddr,
    pub package: SocketAddr,
    pub dronescheduler: SocketAddr,
    pub deliveryhistory: SocketAddr,
    pub delivery: SocketAddr,
    pub account: SocketAddr,
}

/// How often the drone scheduler publishes the flight events that have come due.
const FLIGHT_CLOCK_TICK: std::time::Duration = std::time::Duration::from_millis(200);

/// A running system.
pub struct System {
    pub addresses: Addresses,
    /// The delivery-requests queue, for inspection (depth, dead letters).
    pub queue: Arc<dyn Queue>,
    /// The demo account this start created, or where an earlier start left its credentials.
    pub first_run: account::bootstrap::FirstRun,
    shutdown: CancellationToken,
    tasks: JoinSet<anyhow::Result<()>>,
}

impl System {
    /// Opens the stores and the bus under `options.data_dir`, binds every listener and starts
    /// every service. Unfinished work left on the queue by an earlier run resumes.
    pub async fn start(options: SystemOptions, clock: SharedClock) -> anyhow::Result<System> {
        let shutdown = CancellationToken::new();
        let data = options.data_dir.as_path();
        std::fs::create_dir_all(data).with_context(|| format!("creating data directory {}", data.display()))?;
        let url = |file: &str| format!("sqlite://{}", data.join(file).display());
        let common = &with_identity_secret(&options.common);
        let clock_for_workflow = clock.clone();
        let grace = common.shutdown_grace();
        // Ingestion must not accept a package no drone of this fleet can carry.
        let mut ingestion_settings = options.ingestion.clone();
        ingestion_settings.max_package_weight = ingestion_settings.max_package_weight.min(options.fleet.max_payload());

        let queue: Arc<dyn Queue> = platform::bus::meter::metered_queue(Arc::new(
            SqliteQueue::open(&data.join("bus.db"), DELIVERY_REQUESTS_QUEUE, options.workflow.queue_options())
                .await
                .with_context(|| format!("opening the bus in {}", data.display()))?,
        ));
        let package_store = package::open_store(&url("package.db"), clock.clone()).await?;
        let delivery_store = delivery::open_store(&url("delivery.db")).await?;
        let drone_store = dronescheduler::open_store(&url("dronescheduler.db"), &options.fleet).await?;
        let ingestion_store = ingestion::open_store(&url("ingestion.db")).await?;
        let workflow_store = workflow::open_store(&url("workflow.db")).await?;
        let history_store = deliveryhistory::open_store(&url("deliveryhistory.db")).await?;
        let account_store = account::open_store(&url("account.db")).await?;
        let first_run = account::bootstrap::first_run(&*account_store, clock.clone(), data).await?;
        // The event streams live in their own file: the queue's writer then never waits for them.
        let delivery_events = deliveryhistory::open_events(&url("events.db")).await?;
        let history_subscription =
            deliveryhistory::subscribe(&*delivery_events, &deliveryhistory::Settings::default()).await?;

        let loopback = |_| async { TcpListener::bind("127.0.0.1:0").await };
        let (package_l, delivery_l, drones_l, ingestion_l, history_l, account_l) = (
            loopback(0).await?,
            loopback(0).await?,
            loopback(0).await?,
            loopback(0).await?,
            loopback(0).await?,
            loopback(0).await?,
        );
        let workflow_l = TcpListener::bind(options.workflow_listen)
            .await
            .with_context(|| format!("binding the workflow's operator endpoint to {}", options.workflow_listen))?;
        let gateway_l = TcpListener::bind(options.listen)
            .await
            .with_context(|| format!("binding the gateway to {}", options.listen))?;
        let addresses = Addresses {
            gateway: gateway_l.local_addr()?,
            ingestion: ingestion_l.local_addr()?,
            workflow: workflow_l.local_addr()?,
            package: package_l.local_addr()?,
            dronescheduler: drones_l.local_addr()?,
            deliveryhistory: history_l.local_addr()?,
            delivery: delivery_l.local_addr()?,
            account: account_l.local_addr()?,
        };
        let http = |addr: SocketAddr| format!("http://{addr}");

        let mut tasks = JoinSet::new();
        let mut serve = |listener: TcpListener, router: axum::Router| {
            let shutdown = shutdown.clone();
            tasks.spawn(async move { Ok(platform::http::serve(listener, router, shutdown, grace).await?) });
        };
        // The gateway and the workflow call these routers directly (platform::client::InProcess);
        // the ports stay for the gateway's credential checks, the CLI and operators.
        let package_router = package::router(package_store, common);
        serve(package_l, package_router.clone());
        let account_router = account::router(account_store, clock.clone(), common);
        serve(account_l, account_router.clone());
        let delivery_router = delivery::router(delivery_store.clone(), delivery_events.clone(), clock.clone(), common);
        serve(delivery_l, delivery_router.clone());
        let drone_events = dronescheduler::open_events(&url("events.db")).await?;
        let tracking_subscription =
            delivery::tracking::subscribe(&*drone_events, delivery::tracking::DEFAULT_GROUP).await?;
        let notification_subscription =
            delivery::notifications::subscribe(&*delivery_events, delivery::notifications::DEFAULT_GROUP).await?;
        let flight_clock = dronescheduler::flight_clock(
            drone_store.clone(),
            drone_events.clone(),
            clock.clone(),
            FLIGHT_CLOCK_TICK,
            shutdown.clone(),
        );
        let fleet_gauge = dronescheduler::fleet_gauge::run(
            drone_store.clone(),
            clock.clone(),
            dronescheduler::fleet_gauge::REFRESH_EVERY,
            shutdown.clone(),
        );
        let drones_router =
            dronescheduler::router_with_stream(drone_store, drone_events, &options.fleet, clock.clone(), common);
        serve(drones_l, drones_router.clone());
        let ingestion_router =
            ingestion::router(queue.clone(), ingestion_store, clock, &ingestion_settings, common, shutdown.clone());
        serve(ingestion_l, ingestion_router.clone());
        serve(workflow_l, workflow::router(queue.clone(), workflow_store.clone(), common));
        let history_router =
            deliveryhistory::router_with_stream(history_store.clone(), delivery_events.clone(), common);
        serve(history_l, history_router.clone());
        let upstreams = gateway::UpstreamUrls {
            ingestion_url: http(addresses.ingestion),
            delivery_url: http(addresses.delivery),
            package_url: http(addresses.package),
            dronescheduler_url: http(addresses.dronescheduler),
            deliveryhistory_url: http(addresses.deliveryhistory),
            account_url: http(addresses.account),
        };
        // The gateway signs callers' identities with the secret every service here checks.
        let secret = common.identity_secret.as_deref().context("the identity secret is set above")?;
        let identity = platform::identity::IdentityKey::new(secret).map_err(anyhow::Error::msg)?;
        let in_process = platform::client::InProcess::default()
            .with(&upstreams.ingestion_url, ingestion_router)
            .with(&upstreams.delivery_url, delivery_router)
            .with(&upstreams.package_url, package_router)
            .with(&upstreams.dronescheduler_url, drones_router)
            .with(&upstreams.deliveryhistory_url, history_router)
            .with(&upstreams.account_url, account_router);
        let gateway = gateway::build_with_in_process(
            upstreams,
            in_process.clone(),
            &options.gateway,
            common,
            identity,
            &shutdown,
        )?;
        if let (Some(addr), Some(internal)) = (options.gateway.internal_listen, gateway.internal) {
            let internal_l = TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding the gateway's internal port to {addr}"))?;
            serve(internal_l, internal);
        }
        match (&options.gateway.tls.tls_cert, &options.gateway.tls.tls_key) {
            (Some(cert), Some(key)) => {
                let files = gateway::tls::TlsFiles { cert: cert.clone(), key: key.clone() };
                let every = std::time::Duration::from_millis(options.gateway.reload_poll_ms.max(100));
                let stop = shutdown.clone();
                tasks.spawn(gateway::tls::serve(gateway_l, gateway.public, files, every, stop, grace));
            }
            _ => serve(gateway_l, gateway.public),
        }

        let endpoints = workflow::Endpoints {
            package: http(addresses.package),
            dronescheduler: http(addresses.dronescheduler),
            delivery: http(addresses.delivery),
        };
        tasks.spawn(async move {
            flight_clock.await;
            Ok(())
        });
        tasks.spawn(async move {
            fleet_gauge.await;
            Ok(())
        });
        let webhook = options
            .webhook_url
            .as_deref()
            .map(|url| delivery::notifications::WebhookNotifier::new(url, std::time::Duration::from_secs(5)))
            .transpose()
            .map_err(|e| anyhow::anyhow!("--webhook-url: {e}"))?;
        let notifiers = delivery::notifications::Notifiers::new(webhook);
        let notifications = delivery::notifications::run(
            notification_subscription,
            delivery_store.clone(),
            notifiers,
            clock_for_workflow.clone(),
            delivery::notifications::NotificationOptions { drain: grace, ..Default::default() },
            shutdown.clone(),
        );
        tasks.spawn(async move {
            notifications.await;
            Ok(())
        });
        let tracking = delivery::tracking::run(
            tracking_subscription,
            delivery_store,
            delivery_events.clone(),
            clock_for_workflow.clone(),
            delivery::tracking::TrackingOptions { drain: grace, ..Default::default() },
            shutdown.clone(),
        );
        tasks.spawn(async move {
            tracking.await;
            Ok(())
        });
        let history_options = deliveryhistory::Settings::default().consumer_options(grace);
        let history_shutdown = shutdown.clone();
        tasks.spawn(async move {
            deliveryhistory::consumer::run(history_subscription, history_store, history_options, history_shutdown)
                .await;
            Ok(())
        });
        // The workflow checks that an account is active before scheduling for it.
        let mut workflow_settings = options.workflow.clone();
        workflow_settings.account_url.get_or_insert_with(|| http(addresses.account));
        let mut processor = workflow::processor(&endpoints, &workflow_settings, workflow_store, clock_for_workflow);
        processor.downstreams.call_in_process(&in_process);
        if let Some(supervision) = options.workflow.supervisor_options() {
            let supervisor = workflow::supervisor(&processor, supervision);
            let supervisor_shutdown = shutdown.clone();
            tasks.spawn(async move {
                supervisor.run(supervisor_shutdown).await;
                Ok(())
            });
        }
        let consumer_options = options.workflow.consumer_options(grace);
        let consumer_shutdown = shutdown.clone();
        if options.workflow.paused {
            tracing::warn!("the workflow is paused: requests stay queued until it runs unpaused");
        } else {
            let consumer_queue = queue.clone();
            tasks.spawn(async move {
                workflow::consumer::run(consumer_queue, processor, consumer_options, consumer_shutdown).await;
                Ok(())
            });
        }
        Ok(System { addresses, queue, first_run, shutdown, tasks })
    }

    /// A token that stops the system when cancelled.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Runs until the shutdown token is cancelled or a service fails, then stops the rest.
    pub async fn wait(mut self) -> anyhow::Result<()> {
        let mut first_error = None;
        while let Some(joined) = self.tasks.join_next().await {
            let result = joined.map_err(anyhow::Error::from).and_then(|r| r);
            if let Err(err) = result {
                tracing::error!(error = %err, "a service stopped with an error; stopping the system");
                first_error.get_or_insert(err);
                self.shutdown.cancel();
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Graceful stop: no new work, in-flight requests and messages finish.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        self.wait().await
    }

    /// Abrupt stop, as if the process died: tasks are dropped wherever they are, and
    /// unacknowledged messages are left for redelivery.
    pub async fn kill(mut self) {
        self.shutdown.cancel();
        self.tasks.abort_all();
        while self.tasks.join_next().await.is_some() {}
    }
}

/// `common` with an identity secret: the configured one, or a random one (hex of 32 random bytes)
/// for this run. Every service of this process gets the same one, so they require the gateway's
/// signed identity; nothing outside the process needs it, so it need not survive a restart.
fn with_identity_secret(common: &CommonArgs) -> CommonArgs {
    let mut common = common.clone();
    if common.identity_secret.is_none() {
        common.identity_secret = Some(hex::encode(rand::random::<[u8; 32]>()));
    }
    common
}

/// The default data directory, relative to where the process runs.
pub fn default_data_dir() -> &'static Path {
    Path::new("./data")
}
