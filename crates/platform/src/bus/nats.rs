//! The distributed bus backend: NATS JetStream.
//!
//! A queue `NAME` is a work-queue stream `{prefix}-NAME` on subject `{prefix}.queue.NAME`, read
//! through one durable pull consumer `NAME-workers` with explicit acks, so each message goes to
//! one consumer and leaves the stream when acked. De-duplication is JetStream's own
//! (`Nats-Msg-Id` within the stream's duplicate window). A retry is a `NAK` with a delay.
//!
//! JetStream has no dead-letter queue: a message that used up its deliveries stays in the stream
//! and the server only emits an advisory. So the backend moves such messages itself to a
//! limits-retention stream `{prefix}-NAME-dead`, with its last error and attempt count in
//! headers: directly when a consumer gives up on it, and from the `MAX_DELIVERIES` advisory when
//! consumers crashed on it until the server stopped delivering it.
//!
//! Message ids: a message published normally carries its id only in `Nats-Msg-Id`, which the
//! stream de-duplicates on. A dead letter, and a dead letter put back on the queue by an operator,
//! carry it in `Fabrikam-Message-Id` instead and are de-duplicated on an id derived from a stream
//! sequence: the dead letter on the sequence of the message that died (two processes moving the
//! same message store it once, yet a replayed message that dies again is kept again), the replay
//! on the dead letter's sequence (two replays of one dead letter queue it once, yet a publish of
//! the original id within the window is still a duplicate). Consumers see the original id.
//!
//! Leases: the server does not refuse an ack that arrives after the message was redelivered, so
//! each received message carries its own lease deadline (ack wait after receipt or the last
//! in-progress ack, minus a margin for the time the message spent in flight) and refuses to
//! settle after it, as the embedded backend does.
//!
//! Settings come from the URL: `nats://HOST:PORT[,HOST:PORT…]?prefix=fabrikam&replicas=1&
//! storage=file&max_age_secs=0&max_bytes=-1&dead_max_age_secs=1209600`, so a three-node cluster
//! with replicated streams is a change of URL only.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, AckKind, consumer, context::Context, stream};
use async_nats::{HeaderMap, ServerAddr};
use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use serde::Deserialize;
use tokio::sync::{Mutex, OnceCell};
use tokio_util::sync::{CancellationToken, DropGuard};

use super::{
    BusError, DeadLetter, OutgoingMessage, Published, Queue, QueueOptions, ReceivedMessage, Retried, Settlement,
};

const ERROR_HEADER: &str = "Fabrikam-Error";
const ATTEMPTS_HEADER: &str = "Fabrikam-Attempts";
const ENQUEUED_HEADER: &str = "Fabrikam-Enqueued-At";
const MESSAGE_ID_HEADER: &str = "Nats-Msg-Id";
/// The message id of a dead letter or a replayed one, whose `Nats-Msg-Id` is a de-duplication key
/// of the backend's own (see the module docs).
const ORIGINAL_ID_HEADER: &str = "Fabrikam-Message-Id";

/// The message id of a stored message: the original id a dead letter or replay carries, else the
/// id it was published with, else one made from its stream sequence.
fn message_id(headers: Option<&HeaderMap>, sequence: u64) -> String {
    headers
        .and_then(|h| h.get(ORIGINAL_ID_HEADER).or_else(|| h.get(MESSAGE_ID_HEADER)))
        .map(|v| v.as_str().to_owned())
        .unwrap_or_else(|| format!("seq-{sequence}"))
}

/// A message of a dead-letter stream as a dead letter.
fn dead_letter_from(message: jetstream::message::StreamMessage) -> DeadLetter {
    let header = |name: &str| message.headers.get(name).map(|v| v.as_str().to_owned());
    let enqueued_nanos: i128 = header(ENQUEUED_HEADER).and_then(|v| v.parse().ok()).unwrap_or_default();
    DeadLetter {
        id: message_id(Some(&message.headers), message.sequence),
        attempts: header(ATTEMPTS_HEADER).and_then(|v| v.parse().ok()).unwrap_or_default(),
        last_error: header(ERROR_HEADER).unwrap_or_default(),
        enqueued_at: DateTime::<Utc>::from_timestamp_nanos(enqueued_nanos as i64),
        dead_lettered_at: DateTime::<Utc>::from_timestamp_nanos(message.time.unix_timestamp_nanos() as i64),
        payload: message.payload,
    }
}

/// How the backend lays out and sizes its streams; parsed from the bus URL.
#[derive(Debug, Clone, PartialEq)]
pub struct NatsSettings {
    /// Server addresses (a cluster's seed list).
    pub servers: Vec<String>,
    /// Prefix of stream names and subjects, so that several systems (or tests) share a server.
    pub prefix: String,
    /// Stream replicas (1 on a single server, 3 on a three-node cluster).
    pub replicas: usize,
    /// File storage survives a server restart; memory storage does not.
    pub memory_storage: bool,
    /// Oldest message kept (zero: no limit).
    pub max_age: Duration,
    /// Largest stream size in bytes (-1: no limit).
    pub max_bytes: i64,
    /// How long dead letters are kept.
    pub dead_max_age: Duration,
}

impl NatsSettings {
    /// Parses `nats://host:port[,host:port]?key=value&…`.
    pub fn from_url(url: &str) -> Result<Self, BusError> {
        let rest = url
            .strip_prefix("nats://")
            .ok_or_else(|| BusError::Config(format!("a NATS URL starts with nats://, got {url:?}")))?;
        let (hosts, query) = rest.split_once('?').unwrap_or((rest, ""));
        let servers: Vec<String> = hosts.split(',').filter(|h| !h.is_empty()).map(|h| format!("nats://{h}")).collect();
        if servers.is_empty() {
            return Err(BusError::Config(format!("no server in NATS URL {url:?}")));
        }
        let mut settings = Self {
            servers,
            prefix: "fabrikam".to_owned(),
            replicas: 1,
            memory_storage: false,
            max_age: Duration::ZERO,
            max_bytes: -1,
            dead_max_age: Duration::from_secs(14 * 24 * 3600),
        };
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let bad = || BusError::Config(format!("bad value {value:?} for {key} in NATS URL"));
            match key {
                "prefix" if is_name_safe(value) => settings.prefix = value.to_owned(),
                "replicas" => settings.replicas = value.parse().map_err(|_| bad())?,
                "storage" => {
                    settings.memory_storage = match value {
                        "file" => false,
                        "memory" => true,
                        _ => return Err(bad()),
                    }
                }
                "max_age_secs" => settings.max_age = Duration::from_secs(value.parse().map_err(|_| bad())?),
                "max_bytes" => settings.max_bytes = value.parse().map_err(|_| bad())?,
                "dead_max_age_secs" => settings.dead_max_age = Duration::from_secs(value.parse().map_err(|_| bad())?),
                _ => {
                    return Err(BusError::Config(format!(
                        "unknown or invalid NATS URL parameter {pair:?} (known: prefix, replicas, storage, \
                         max_age_secs, max_bytes, dead_max_age_secs)"
                    )));
                }
            }
        }
        Ok(settings)
    }

    fn storage(&self) -> stream::StorageType {
        if self.memory_storage { stream::StorageType::Memory } else { stream::StorageType::File }
    }

    /// A queue's or event stream's own stream, sized by the URL's limits.
    fn stream_config(
        &self,
        name: &str,
        subject: &str,
        retention: stream::RetentionPolicy,
        dedup_window: Duration,
    ) -> stream::Config {
        stream::Config {
            name: name.to_owned(),
            subjects: vec![subject.to_owned()],
            retention,
            storage: self.storage(),
            num_replicas: self.replicas,
            max_age: self.max_age,
            max_bytes: self.max_bytes,
            duplicate_window: dedup_window,
            ..Default::default()
        }
    }

    /// A dead-letter stream: kept for `dead_max_age`, de-duplicated by message id.
    fn dead_letter_config(&self, name: &str, subject: &str, dedup_window: Duration) -> stream::Config {
        stream::Config {
            name: name.to_owned(),
            subjects: vec![subject.to_owned()],
            retention: stream::RetentionPolicy::Limits,
            storage: self.storage(),
            num_replicas: self.replicas,
            max_age: self.dead_max_age,
            duplicate_window: dedup_window,
            ..Default::default()
        }
    }

    /// A durable pull consumer with explicit acks and the consumer's lease and attempts.
    fn consumer_config(
        &self,
        durable: &str,
        subject: &str,
        deliver: consumer::DeliverPolicy,
        options: &QueueOptions,
    ) -> consumer::pull::Config {
        consumer::pull::Config {
            durable_name: Some(durable.to_owned()),
            deliver_policy: deliver,
            ack_policy: consumer::AckPolicy::Explicit,
            ack_wait: options.ack_wait,
            max_deliver: i64::from(options.max_attempts.max(1)),
            max_ack_pending: 10_000,
            filter_subject: subject.to_owned(),
            num_replicas: self.replicas,
            ..Default::default()
        }
    }
}

/// Stream names allow neither `.`, `*`, `>` nor whitespace; we also keep them to one case-safe set.
fn is_name_safe(name: &str) -> bool {
    !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

fn unavailable(context: &str, error: impl std::fmt::Display) -> BusError {
    BusError::Unavailable(format!("{context}: {error}"))
}

/// Connects to the servers; a server that is down now is retried in the background.
pub async fn connect(settings: &NatsSettings) -> Result<async_nats::Client, BusError> {
    let addrs: Vec<ServerAddr> = settings
        .servers
        .iter()
        .map(|s| s.parse::<ServerAddr>().map_err(|e| BusError::Config(format!("NATS server {s:?}: {e}"))))
        .collect::<Result<_, _>>()?;
    async_nats::ConnectOptions::new()
        .name("fabrikam")
        .retry_on_initial_connect()
        .connection_timeout(Duration::from_secs(3))
        .connect(addrs.as_slice())
        .await
        .map_err(|e| unavailable("connecting to NATS", e))
}

/// Runs `setup` until JetStream answers, backing off, for up to about a minute: a service
/// started before its NATS server waits for it instead of crash-looping.
async fn until_ready<T, F, Fut>(what: &str, mut setup: F) -> Result<T, BusError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, BusError>>,
{
    let mut delay = Duration::from_millis(100);
    let give_up = Instant::now() + Duration::from_secs(60);
    loop {
        match setup().await {
            Ok(value) => return Ok(value),
            Err(BusError::Unavailable(error)) if Instant::now() < give_up => {
                tracing::warn!(%error, what, retry_in_ms = delay.as_millis() as u64, "NATS not ready yet");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(3));
            }
            Err(error) => return Err(error),
        }
    }
}

/// A work queue on NATS JetStream (see the module docs).
pub struct NatsQueue {
    inner: Arc<Inner>,
    /// Stops the advisory listener when the queue is dropped.
    _listener: DropGuard,
}

struct Inner {
    name: String,
    context: Context,
    subject: String,
    stream_name: String,
    dead_stream_name: String,
    dead_subject: String,
    /// The consumer's settings (ack wait, max deliveries) belong to whoever consumes: a
    /// process that only publishes never creates or changes the consumer.
    consumer_config: consumer::pull::Config,
    consumer: OnceCell<consumer::PullConsumer>,
    /// Stops the advisory listener.
    stop: CancellationToken,
    options: QueueOptions,
    /// Serialises receives: two concurrent pull requests on one connection gain nothing and
    /// would split a small backlog unevenly.
    receiving: Mutex<()>,
}

impl NatsQueue {
    /// Opens queue `name`, creating its streams and consumer when missing.
    pub async fn open(url: &str, name: &str, options: QueueOptions) -> Result<Self, BusError> {
        let settings = NatsSettings::from_url(url)?;
        Self::open_with(&settings, connect(&settings).await?, name, options).await
    }

    /// Opens queue `name` on an existing connection.
    pub async fn open_with(
        settings: &NatsSettings,
        client: async_nats::Client,
        name: &str,
        options: QueueOptions,
    ) -> Result<Self, BusError> {
        if !is_name_safe(name) {
            return Err(BusError::Config(format!("queue name {name:?} must be letters, digits, '-' or '_'")));
        }
        let context = jetstream::new(client.clone());
        let prefix = &settings.prefix;
        let stream_name = format!("{prefix}-{name}");
        let subject = format!("{prefix}.queue.{name}");
        let dead_stream_name = format!("{prefix}-{name}-dead");
        let dead_subject = format!("{prefix}.dead.{name}");
        let stream_config =
            settings.stream_config(&stream_name, &subject, stream::RetentionPolicy::WorkQueue, options.dedup_window);
        let dead_config = settings.dead_letter_config(&dead_stream_name, &dead_subject, options.dedup_window);
        let consumer_config =
            settings.consumer_config(&format!("{name}-workers"), &subject, consumer::DeliverPolicy::All, &options);
        until_ready(&format!("opening queue {name}"), || {
            let (context, stream_config, dead_config) = (context.clone(), stream_config.clone(), dead_config.clone());
            async move {
                ensure_stream(&context, stream_config).await?;
                ensure_stream(&context, dead_config).await
            }
        })
        .await?;
        let (inner, listener) = Inner::new(
            name.to_owned(),
            context,
            Streams { stream_name, subject, dead_stream_name, dead_subject },
            consumer_config,
            options,
        );
        Ok(Self { inner, _listener: listener })
    }
}

/// Readiness: JetStream answers a lookup of `stream` within 2 s. A stream lookup, not an account
/// query: the account reply of older servers (2.9) does not parse in this client.
async fn ping_stream(context: &Context, stream: &str) -> Result<(), BusError> {
    tokio::time::timeout(Duration::from_secs(2), context.get_stream(stream))
        .await
        .map_err(|_| BusError::Unavailable("JetStream did not answer within 2 s".into()))?
        .map(|_| ())
        .map_err(|e| unavailable("JetStream", e))
}

/// Publishes with the message id as `Nats-Msg-Id` and waits for the stream's ack.
async fn publish(context: &Context, subject: &str, message: OutgoingMessage) -> Result<Published, BusError> {
    let publish = jetstream::message::PublishMessage::build().payload(message.payload).message_id(&message.id);
    let ack = context
        .send_publish(subject.to_owned(), publish)
        .await
        .map_err(|e| unavailable("publishing", e))?
        .await
        .map_err(|e| unavailable("storing a message", e))?;
    Ok(if ack.duplicate { Published::Duplicate } else { Published::Stored })
}

/// Creates the stream, or brings an existing one's limits in line with `config`.
async fn ensure_stream(context: &Context, config: stream::Config) -> Result<(), BusError> {
    let name = config.name.clone();
    match context.get_stream(&name).await {
        Ok(mut existing) => {
            let current = existing.info().await.map_err(|e| unavailable("reading stream info", e))?.config.clone();
            let wanted = config;
            if current.num_replicas != wanted.num_replicas
                || current.max_age != wanted.max_age
                || current.max_bytes != wanted.max_bytes
                || current.duplicate_window != wanted.duplicate_window
            {
                context.update_stream(&wanted).await.map_err(|e| unavailable(&format!("updating stream {name}"), e))?;
            }
            Ok(())
        }
        Err(error)
            if matches!(error.kind(), jetstream::context::GetStreamErrorKind::JetStream(e)
                if e.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND) =>
        {
            context.create_stream(config).await.map_err(|e| unavailable(&format!("creating stream {name}"), e))?;
            Ok(())
        }
        Err(error) => Err(unavailable(&format!("looking up stream {name}"), error)),
    }
}

/// Creates the durable consumer, or updates its ack wait and delivery limit.
async fn ensure_consumer(
    context: &Context,
    stream_name: &str,
    config: consumer::pull::Config,
) -> Result<consumer::PullConsumer, BusError> {
    let stream = context.get_stream(stream_name).await.map_err(|e| unavailable("looking up stream", e))?;
    let durable = config.durable_name.clone().unwrap_or_default();
    match stream.get_consumer::<consumer::pull::Config>(&durable).await {
        Ok(mut existing) => {
            let current = existing.info().await.map_err(|e| unavailable("reading consumer info", e))?.config.clone();
            if current.ack_wait != config.ack_wait || current.max_deliver != config.max_deliver {
                return stream.update_consumer(config).await.map_err(|e| unavailable("updating consumer", e));
            }
            Ok(existing)
        }
        Err(_) => stream.create_consumer(config).await.map_err(|e| unavailable("creating consumer", e)),
    }
}

/// The server's notice that a message used up its deliveries without being settled.
#[derive(Deserialize)]
struct MaxDeliveriesAdvisory {
    stream_seq: u64,
    deliveries: u64,
}

/// Moves each message named by a `MAX_DELIVERIES` advisory to the dead letters.
async fn move_exhausted_messages(
    inner: std::sync::Weak<Inner>,
    mut advisories: async_nats::Subscriber,
    stop: CancellationToken,
) {
    loop {
        let advisory = tokio::select! {
            _ = stop.cancelled() => return,
            next = advisories.next() => match next { Some(message) => message, None => return },
        };
        let Some(inner) = inner.upgrade() else { return };
        let Ok(notice) = serde_json::from_slice::<MaxDeliveriesAdvisory>(&advisory.payload) else { continue };
        if let Err(error) = inner.move_to_dead_letters(notice.stream_seq, notice.deliveries).await {
            tracing::warn!(queue = %inner.name, seq = notice.stream_seq, %error, "could not dead-letter an exhausted message");
        }
    }
}

/// Names of the streams one consumer reads and dead-letters to.
struct Streams {
    stream_name: String,
    subject: String,
    dead_stream_name: String,
    dead_subject: String,
}

impl Inner {
    /// The consuming side; dropping the guard stops its advisory listener.
    fn new(
        name: String,
        context: Context,
        streams: Streams,
        consumer_config: consumer::pull::Config,
        options: QueueOptions,
    ) -> (Arc<Self>, DropGuard) {
        let stop = CancellationToken::new();
        let Streams { stream_name, subject, dead_stream_name, dead_subject } = streams;
        let inner = Arc::new(Self {
            name,
            context,
            subject,
            stream_name,
            dead_stream_name,
            dead_subject,
            consumer_config,
            consumer: OnceCell::new(),
            stop: stop.clone(),
            options,
            receiving: Mutex::new(()),
        });
        (inner, stop.drop_guard())
    }

    async fn move_to_dead_letters(&self, sequence: u64, deliveries: u64) -> Result<(), BusError> {
        let stream =
            self.context.get_stream(&self.stream_name).await.map_err(|e| unavailable("looking up stream", e))?;
        // Another process may have moved it already: nothing to do then.
        let Ok(message) = stream.get_raw_message(sequence).await else { return Ok(()) };
        let id = message_id(Some(&message.headers), sequence);
        let error = format!("not settled after {deliveries} deliveries (consumers crashed or timed out)");
        let enqueued_nanos = message.time.unix_timestamp_nanos();
        self.publish_dead(&id, sequence, message.payload, deliveries as u32, &error, enqueued_nanos).await?;
        stream.delete_message(sequence).await.map_err(|e| unavailable("removing a dead message", e))?;
        Ok(())
    }

    /// Stores a dead letter for the message `id` at `sequence` in the consumed stream.
    async fn publish_dead(
        &self,
        id: &str,
        sequence: u64,
        payload: Bytes,
        attempts: u32,
        error: &str,
        enqueued_nanos: i128,
    ) -> Result<(), BusError> {
        let mut headers = HeaderMap::new();
        headers.insert(MESSAGE_ID_HEADER, format!("{id}#dead-{sequence}").as_str());
        headers.insert(ORIGINAL_ID_HEADER, id);
        headers.insert(ATTEMPTS_HEADER, attempts.to_string().as_str());
        // Header values are one line.
        headers.insert(ERROR_HEADER, error.replace(['\r', '\n'], " ").as_str());
        headers.insert(ENQUEUED_HEADER, enqueued_nanos.to_string().as_str());
        self.context
            .publish_with_headers(self.dead_subject.clone(), headers, payload)
            .await
            .map_err(|e| unavailable("publishing a dead letter", e))?
            .await
            .map_err(|e| unavailable("storing a dead letter", e))?;
        Ok(())
    }

    pub(super) async fn receive(
        self: &Arc<Self>,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<ReceivedMessage>, BusError> {
        let max = max.max(1);
        let _one = self.receiving.lock().await;
        // What is there now; else wait for one message, then take what else arrived with it.
        let mut pulled = self.pull(max, None).await?;
        if pulled.is_empty() && !wait.is_zero() {
            pulled = self.pull(1, Some(wait.max(Duration::from_millis(10)))).await?;
            if !pulled.is_empty() && max > 1 {
                pulled.extend(self.pull(max - 1, None).await?);
            }
        }
        let received_at = Instant::now();
        Ok(pulled.into_iter().filter_map(|message| self.wrap(message, received_at)).collect())
    }

    pub(super) async fn dead_letters(&self, limit: usize) -> Result<Vec<DeadLetter>, BusError> {
        let dead = self.dead_stream().await?;
        let mut out = Vec::new();
        let mut from = 1;
        while out.len() < limit {
            let Some((sequence, letter)) = self.next_dead_letter(&dead, from).await? else { break };
            out.push(letter);
            from = sequence + 1;
        }
        Ok(out)
    }

    /// The dead letter `id` and its sequence in the dead-letter stream; the oldest, should a
    /// message have died twice. A scan of the dead-letter stream, one request per dead letter:
    /// dead letters are few and looked up by an operator, so a subject per message id (to ask the
    /// server for one directly) is not worth its cost on every dead-lettering.
    async fn locate_dead_letter(
        &self,
        dead: &stream::Stream<()>,
        id: &str,
    ) -> Result<Option<(u64, DeadLetter)>, BusError> {
        let mut from = 1;
        while let Some((sequence, letter)) = self.next_dead_letter(dead, from).await? {
            if letter.id == id {
                return Ok(Some((sequence, letter)));
            }
            from = sequence + 1;
        }
        Ok(None)
    }

    pub(super) async fn dead_letter(&self, id: &str) -> Result<Option<DeadLetter>, BusError> {
        let dead = self.dead_stream().await?;
        Ok(self.locate_dead_letter(&dead, id).await?.map(|(_, letter)| letter))
    }

    /// Puts the dead letter `id` back on the consumed subject. For a queue only: on an event
    /// stream it would reach every group, not just the one it died in.
    pub(super) async fn replay_dead_letter(&self, id: &str) -> Result<bool, BusError> {
        let dead = self.dead_stream().await?;
        let Some((sequence, letter)) = self.locate_dead_letter(&dead, id).await? else { return Ok(false) };
        // De-duplicated on the dead letter's sequence, so replays of this dead letter racing each
        // other, or repeated after a crash before the delete below, queue it once within the
        // window; the consumer is handed the original id from its own header.
        let mut headers = HeaderMap::new();
        headers.insert(MESSAGE_ID_HEADER, format!("{id}#replay-{sequence}").as_str());
        headers.insert(ORIGINAL_ID_HEADER, id);
        self.context
            .publish_with_headers(self.subject.clone(), headers, letter.payload)
            .await
            .map_err(|e| unavailable("replaying a dead letter", e))?
            .await
            .map_err(|e| unavailable("storing a replayed dead letter", e))?;
        // Only once the replay is stored: a crash before this leaves the dead letter, not a loss.
        self.delete_dead_letter(&dead, sequence).await
    }

    /// Deletes every dead letter with message id `id`.
    pub(super) async fn purge_dead_letter(&self, id: &str) -> Result<bool, BusError> {
        let dead = self.dead_stream().await?;
        let mut purged = false;
        let mut from = 1;
        while let Some((sequence, letter)) = self.next_dead_letter(&dead, from).await? {
            if letter.id == id {
                purged |= self.delete_dead_letter(&dead, sequence).await?;
            }
            from = sequence + 1;
        }
        Ok(purged)
    }

    pub(super) async fn purge_dead_letters(&self) -> Result<u64, BusError> {
        let dead = self.dead_stream().await?;
        let purged = dead.purge().await.map_err(|e| unavailable("purging the dead letters", e))?;
        Ok(purged.purged)
    }

    /// The dead-letter stream, without asking the server about it: the calls on it fail if it is gone.
    async fn dead_stream(&self) -> Result<stream::Stream<()>, BusError> {
        self.context
            .get_stream_no_info(&self.dead_stream_name)
            .await
            .map_err(|e| unavailable("looking up the dead letters", e))
    }

    /// The first dead letter at or after sequence `from`, with its sequence.
    async fn next_dead_letter(
        &self,
        dead: &stream::Stream<()>,
        from: u64,
    ) -> Result<Option<(u64, DeadLetter)>, BusError> {
        match dead.get_first_raw_message_by_subject(&self.dead_subject, from).await {
            Ok(message) => Ok(Some((message.sequence, dead_letter_from(message)))),
            Err(error) if error.kind() == stream::RawMessageErrorKind::NoMessageFound => Ok(None),
            Err(error) => Err(unavailable("reading the dead letters", error)),
        }
    }

    /// Deletes the dead letter at `sequence`; `false` when it was already gone (another operator
    /// or process deleted it first).
    async fn delete_dead_letter(&self, dead: &stream::Stream<()>, sequence: u64) -> Result<bool, BusError> {
        match dead.delete_message(sequence).await {
            Ok(deleted) => Ok(deleted),
            Err(error) => match dead.get_raw_message(sequence).await {
                Err(gone) if gone.kind() == stream::RawMessageErrorKind::NoMessageFound => Ok(false),
                _ => Err(unavailable("deleting a dead letter", error)),
            },
        }
    }

    fn wrap(self: &Arc<Self>, message: jetstream::Message, received_at: Instant) -> Option<ReceivedMessage> {
        let (attempt, enqueued_at, sequence) = match message.info() {
            Ok(info) => (
                info.delivered.max(1) as u32,
                DateTime::<Utc>::from_timestamp_nanos(info.published.unix_timestamp_nanos() as i64),
                info.stream_sequence,
            ),
            Err(error) => {
                tracing::warn!(queue = %self.name, %error, "received a message without JetStream metadata");
                return None;
            }
        };
        let id = message_id(message.headers.as_ref(), sequence);
        let payload = message.payload.clone();
        let settlement = NatsSettlement {
            inner: self.clone(),
            lease_until: std::sync::Mutex::new(lease_deadline(received_at, self.options.ack_wait)),
            message,
            id: id.clone(),
            sequence,
            attempt,
            enqueued_nanos: enqueued_at.timestamp_nanos_opt().unwrap_or_default() as i128,
        };
        Some(
            ReceivedMessage::new(id, payload, attempt, enqueued_at, Box::new(settlement))
                .from_system(super::NATS_SYSTEM),
        )
    }

    /// The durable consumer, created or updated on first use; the advisory listener starts with it.
    async fn consumer(self: &Arc<Self>) -> Result<&consumer::PullConsumer, BusError> {
        self.consumer
            .get_or_try_init(|| async {
                let consumer = ensure_consumer(&self.context, &self.stream_name, self.consumer_config.clone()).await?;
                let durable = self.consumer_config.durable_name.clone().unwrap_or_default();
                let advisories = format!("$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{}.{durable}", self.stream_name);
                let subscriber = self
                    .context
                    .client()
                    .subscribe(advisories)
                    .await
                    .map_err(|e| unavailable("subscribing to advisories", e))?;
                tokio::spawn(move_exhausted_messages(Arc::downgrade(self), subscriber, self.stop.clone()));
                Ok(consumer)
            })
            .await
    }

    async fn pull(self: &Arc<Self>, max: usize, wait: Option<Duration>) -> Result<Vec<jetstream::Message>, BusError> {
        let consumer = self.consumer().await?;
        let mut messages = match wait {
            None => consumer.fetch().max_messages(max).messages().await,
            Some(wait) => consumer.batch().max_messages(max).expires(wait).messages().await,
        }
        .map_err(|e| unavailable("pulling messages", e))?;
        let mut out = Vec::with_capacity(max);
        while let Some(next) = messages.next().await {
            match next {
                Ok(message) => out.push(message),
                Err(error) if out.is_empty() => return Err(unavailable("receiving messages", error)),
                Err(_) => break,
            }
        }
        Ok(out)
    }
}

#[async_trait]
impl Queue for NatsQueue {
    fn name(&self) -> &str {
        &self.inner.name
    }

    fn system(&self) -> &'static str {
        super::NATS_SYSTEM
    }

    async fn publish(&self, message: OutgoingMessage) -> Result<Published, BusError> {
        publish(&self.inner.context, &self.inner.subject, message).await
    }

    async fn receive(&self, max: usize, wait: Duration) -> Result<Vec<ReceivedMessage>, BusError> {
        self.inner.receive(max, wait).await
    }

    async fn dead_letters(&self, limit: usize) -> Result<Vec<DeadLetter>, BusError> {
        self.inner.dead_letters(limit).await
    }

    async fn find_dead_letter(&self, id: &str) -> Result<Option<DeadLetter>, BusError> {
        self.inner.dead_letter(id).await
    }

    async fn replay_dead_letter(&self, id: &str) -> Result<bool, BusError> {
        self.inner.replay_dead_letter(id).await
    }

    async fn purge_dead_letter(&self, id: &str) -> Result<bool, BusError> {
        self.inner.purge_dead_letter(id).await
    }

    async fn purge_dead_letters(&self) -> Result<u64, BusError> {
        self.inner.purge_dead_letters().await
    }

    async fn depth(&self) -> Result<u64, BusError> {
        let mut stream = self
            .inner
            .context
            .get_stream(&self.inner.stream_name)
            .await
            .map_err(|e| unavailable("looking up the queue", e))?;
        Ok(stream.info().await.map_err(|e| unavailable("reading the queue", e))?.state.messages)
    }

    async fn ping(&self) -> Result<(), BusError> {
        ping_stream(&self.inner.context, &self.inner.stream_name).await
    }
}

/// When a lease taken at `from` should be treated as lost: the server's clock started a little
/// before the message reached us, so keep a margin.
fn lease_deadline(from: Instant, ack_wait: Duration) -> Instant {
    let margin = (ack_wait / 10).min(Duration::from_secs(1));
    from + ack_wait - margin
}

struct NatsSettlement {
    inner: Arc<Inner>,
    message: jetstream::Message,
    lease_until: std::sync::Mutex<Instant>,
    id: String,
    /// Its sequence in the consumed stream.
    sequence: u64,
    attempt: u32,
    enqueued_nanos: i128,
}

impl NatsSettlement {
    fn check_lease(&self) -> Result<(), BusError> {
        let until = *self.lease_until.lock().unwrap_or_else(|e| e.into_inner());
        if Instant::now() >= until { Err(BusError::LeaseLost(self.id.clone())) } else { Ok(()) }
    }

    async fn settle(&self, kind: AckKind) -> Result<(), BusError> {
        self.check_lease()?;
        self.message.double_ack_with(kind).await.map_err(|e| unavailable("settling a message", e))
    }
}

#[async_trait]
impl Settlement for NatsSettlement {
    async fn ack(self: Box<Self>) -> Result<(), BusError> {
        self.settle(AckKind::Ack).await
    }

    async fn retry_after(self: Box<Self>, delay: Duration, error: &str) -> Result<Retried, BusError> {
        if self.attempt >= self.inner.options.max_attempts {
            self.dead_letter(error).await?;
            return Ok(Retried::DeadLettered);
        }
        let delay = if delay.is_zero() { None } else { Some(delay) };
        self.settle(AckKind::Nak(delay)).await?;
        Ok(Retried::Scheduled)
    }

    async fn dead_letter(self: Box<Self>, error: &str) -> Result<(), BusError> {
        self.check_lease()?;
        self.inner
            .publish_dead(
                &self.id,
                self.sequence,
                self.message.payload.clone(),
                self.attempt,
                error,
                self.enqueued_nanos,
            )
            .await?;
        self.settle(AckKind::Term).await
    }

    async fn in_progress(&self) -> Result<(), BusError> {
        self.check_lease()?;
        self.message.ack_with(AckKind::Progress).await.map_err(|e| unavailable("extending a lease", e))?;
        *self.lease_until.lock().unwrap_or_else(|e| e.into_inner()) =
            lease_deadline(Instant::now(), self.inner.options.ack_wait);
        Ok(())
    }
}

/// An event stream on NATS JetStream: a limits-retention stream `{prefix}-NAME` on subject
/// `{prefix}.events.NAME`, one durable pull consumer per group, and per group a dead-letter
/// stream `{prefix}-NAME-GROUP-dead`.
pub struct NatsEventStream {
    name: String,
    context: Context,
    settings: NatsSettings,
    stream_name: String,
    subject: String,
    dedup_window: Duration,
}

impl NatsEventStream {
    /// Opens stream `name`, creating it when missing.
    pub async fn open(url: &str, name: &str, dedup_window: Duration) -> Result<Self, BusError> {
        let settings = NatsSettings::from_url(url)?;
        if !is_name_safe(name) {
            return Err(BusError::Config(format!("stream name {name:?} must be letters, digits, '-' or '_'")));
        }
        let context = jetstream::new(connect(&settings).await?);
        let prefix = &settings.prefix;
        let stream_name = format!("{prefix}-{name}");
        let subject = format!("{prefix}.events.{name}");
        let config = settings.stream_config(&stream_name, &subject, stream::RetentionPolicy::Limits, dedup_window);
        until_ready(&format!("opening stream {name}"), || ensure_stream(&context, config.clone())).await?;
        Ok(Self { name: name.to_owned(), context, settings, stream_name, subject, dedup_window })
    }
}

#[async_trait]
impl super::stream::EventStream for NatsEventStream {
    fn name(&self) -> &str {
        &self.name
    }

    fn system(&self) -> &'static str {
        super::NATS_SYSTEM
    }

    async fn publish(&self, event: OutgoingMessage) -> Result<Published, BusError> {
        publish(&self.context, &self.subject, event).await
    }

    /// Sends every message before awaiting the first acknowledgement: one connection keeps
    /// them in order, and the stream's acknowledgements overlap instead of adding up.
    async fn publish_all(&self, events: Vec<OutgoingMessage>) -> Result<Vec<Published>, BusError> {
        let mut acks = Vec::with_capacity(events.len());
        for event in events {
            let publish = jetstream::message::PublishMessage::build().payload(event.payload).message_id(&event.id);
            acks.push(
                self.context
                    .send_publish(self.subject.clone(), publish)
                    .await
                    .map_err(|e| unavailable("publishing", e))?,
            );
        }
        let mut outcomes = Vec::with_capacity(acks.len());
        for ack in acks {
            let ack = ack.await.map_err(|e| unavailable("storing a message", e))?;
            outcomes.push(if ack.duplicate { Published::Duplicate } else { Published::Stored });
        }
        Ok(outcomes)
    }

    async fn subscribe(
        &self,
        group: &str,
        start: super::stream::StartAt,
        options: QueueOptions,
    ) -> Result<Arc<dyn super::stream::Subscription>, BusError> {
        if !is_name_safe(group) {
            return Err(BusError::Config(format!("group name {group:?} must be letters, digits, '-' or '_'")));
        }
        let prefix = &self.settings.prefix;
        let dead_stream_name = format!("{prefix}-{}-{group}-dead", self.name);
        let dead_subject = format!("{prefix}.dead.{}.{group}", self.name);
        let dead_config = self.settings.dead_letter_config(&dead_stream_name, &dead_subject, self.dedup_window);
        ensure_stream(&self.context, dead_config).await?;
        let deliver = match start {
            super::stream::StartAt::Beginning => consumer::DeliverPolicy::All,
            super::stream::StartAt::New => consumer::DeliverPolicy::New,
        };
        let consumer_config = self.settings.consumer_config(group, &self.subject, deliver, &options);
        let streams = Streams {
            stream_name: self.stream_name.clone(),
            subject: self.subject.clone(),
            dead_stream_name,
            dead_subject,
        };
        let (inner, listener) =
            Inner::new(format!("{}#{group}", self.name), self.context.clone(), streams, consumer_config, options);
        // Create the consumer now, so a group starting at new events starts at subscription time.
        inner.consumer().await?;
        Ok(Arc::new(NatsSubscription {
            stream: self.name.clone(),
            group: group.to_owned(),
            inner,
            _listener: listener,
        }))
    }

    async fn ping(&self) -> Result<(), BusError> {
        ping_stream(&self.context, &self.stream_name).await
    }
}

/// One member of a consumer group on a NATS event stream.
struct NatsSubscription {
    stream: String,
    group: String,
    inner: Arc<Inner>,
    _listener: DropGuard,
}

#[async_trait]
impl super::stream::Subscription for NatsSubscription {
    fn stream(&self) -> &str {
        &self.stream
    }

    fn group(&self) -> &str {
        &self.group
    }

    async fn receive(&self, max: usize, wait: Duration) -> Result<Vec<ReceivedMessage>, BusError> {
        self.inner.receive(max, wait).await
    }

    async fn dead_letters(&self, limit: usize) -> Result<Vec<DeadLetter>, BusError> {
        self.inner.dead_letters(limit).await
    }

    async fn pending(&self) -> Result<u64, BusError> {
        let mut consumer = self.inner.consumer().await?.clone();
        let info = consumer.info().await.map_err(|e| unavailable("reading the group's position", e))?;
        Ok(info.num_pending + info.num_ack_pending as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_settings_parse_with_defaults() {
        let s = NatsSettings::from_url("nats://127.0.0.1:4222").unwrap();
        assert_eq!(s.servers, ["nats://127.0.0.1:4222"]);
        assert_eq!((s.prefix.as_str(), s.replicas, s.memory_storage), ("fabrikam", 1, false));
    }

    #[test]
    fn url_settings_take_a_cluster_and_options() {
        let s =
            NatsSettings::from_url("nats://a:4222,b:4222,c:4222?replicas=3&prefix=prod&storage=memory&max_age_secs=60")
                .unwrap();
        assert_eq!(s.servers.len(), 3);
        assert_eq!((s.prefix.as_str(), s.replicas, s.memory_storage), ("prod", 3, true));
        assert_eq!(s.max_age, Duration::from_secs(60));
    }

    #[test]
    fn url_settings_refuse_unknown_or_bad_values() {
        for url in ["nats://a?replicas=x", "nats://a?colour=red", "nats://a?prefix=a.b", "http://a", "nats://"] {
            assert!(NatsSettings::from_url(url).is_err(), "{url}");
        }
    }

    #[test]
    fn a_lease_ends_before_the_servers_ack_wait() {
        let now = Instant::now();
        assert_eq!(lease_deadline(now, Duration::from_secs(30)), now + Duration::from_secs(29));
        assert_eq!(lease_deadline(now, Duration::from_millis(300)), now + Duration::from_millis(270));
    }
}
