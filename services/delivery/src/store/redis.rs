//! Deliveries in Redis, for running several delivery processes on one shared store.
//!
//! Key layout, every key under `PREFIX` (the URL's `prefix` parameter, default `fabrikam`). A
//! delivery's keys share the hash tag `{ID}`, so they land in one cluster slot:
//!
//! | key | type | holds |
//! |---|---|---|
//! | `PREFIX:delivery:{ID}` | hash | `body` (the delivery's JSON without its stage), `stage`, `created_at` and `updated_at` (Unix ms), `version` |
//! | `PREFIX:delivery:{ID}:tracking` | list | tracking events, oldest first: `{"stage","location","at","reason"?}` |
//! | `PREFIX:delivery:{ID}:notify` | list | notify-me requests: `{"email","sms","at"}` |
//! | `PREFIX:delivery:{ID}:confirmation` | string | `{"confirmation","at"}` |
//! | `PREFIX:delivery:{ID}:flight` | hash | `body` (the drone's flight JSON), `departed_at` and `observed_at` (Unix ms) |
//! | `PREFIX:delivery:{ID}:notifications` | list | the ids of its outbox records, oldest first |
//! | `PREFIX:delivery:{ID}:notification:NID` | hash | one outbox record: `body` (the notification's JSON), `status`, `attempts`, `last_error`, `created_at`, `updated_at`, `sent_at` (Unix ms) |
//! | `PREFIX:monthly:YYYY-MM:OWNER` | set | ids of the deliveries of user `OWNER` created that month, whatever their account |
//! | `PREFIX:monthly-account:YYYY-MM:LEN:ACCOUNT:OWNER` | set | ids of the deliveries of user `OWNER` of account `ACCOUNT` created that month (`LEN`: the length of `ACCOUNT` in bytes) |
//!
//! Every write is a Lua script, so it is atomic however many processes share the server. Stage
//! changes read the record, ask the stage rules in [`crate::domain`], then commit with a script
//! that applies only if `version` is still the one read (optimistic concurrency, retried on
//! conflict). WATCH/MULTI would do the same but needs a connection of its own per transaction;
//! a script works on the shared multiplexed connection.
//!
//! Once a delivery reaches a final stage (Completed, Cancelled or Failed) its keys expire
//! after the completed TTL, as in the reference implementation; a delivery a closure creates
//! directly in a final stage expires the same way from its creation. The flight key may exist
//! before the record (the drone is assigned before the delivery is created): until the record
//! exists it expires after the completed TTL too, so the flight of a delivery that is never
//! created goes away; creating a live delivery makes it permanent, and from then on it expires
//! (and stops expiring) with the record. Notifications are recorded once a delivery is finished,
//! so their keys take the record's remaining time to live when they are created and expire with
//! it (after the completed TTL when the record has none: a delivery reopened meanwhile keeps its
//! record, and the notifications about its earlier end still go). The monthly sets outlive them (400 days) so the monthly count does
//! not drop when a finished delivery expires. A delivery is in one set of each kind, both moved
//! together when its owner or account changes. Deliveries created before the per-account sets
//! existed are only in the per-owner one (until their owner or account changes), so a count
//! scoped to an account misses them. The set keys are per owner, not per delivery, so on a
//! Redis Cluster the scripts that create a delivery or change its owner span several slots (the
//! record's and both sets').

use std::time::Duration;

use ::redis::aio::{ConnectionManager, ConnectionManagerConfig};
use ::redis::{Client, ErrorKind, RedisError, Script};
use async_trait::async_trait;
use chrono::{DateTime, Datelike, Utc};
use contracts::delivery::{Confirmation, Delivery, DeliveryTrackingEvent, NotifyMeRequest, RescheduledDelivery};
use contracts::events::{DronePosition, Flight};
use contracts::{DeliveryStage, Location, UserAccount};
use platform::clock::{from_unix_millis, unix_millis};
use platform::query::Month;
use serde::{Deserialize, Serialize};

use super::{Changed, Closed, DeliveryStore, StoreError, Upserted, from_json, to_json};
use crate::domain::{self, Action, Transition};
use crate::notifications::{Notification, NotificationRecord, NotificationStatus, Outcome};

/// How long a finished (completed, cancelled or failed) delivery stays readable by default.
pub const DEFAULT_COMPLETED_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

/// A monthly set must outlive the year of reports that may ask for its month.
const MONTH_INDEX_TTL: Duration = Duration::from_secs(400 * 24 * 3600);

/// Conflicts only come from writers of the same delivery; this many in a row means something
/// is hammering it, and the caller is better off retrying later than spinning here.
const MAX_ATTEMPTS: u32 = 50;

const DEFAULT_PREFIX: &str = "fabrikam";

/// Creates the delivery unless its record exists. Leftovers of an expired earlier delivery with
/// the same id (a list that outlived its record by a few ms) must not leak into the new one.
/// ARGV[7] is the completed TTL when the delivery starts in a final stage (a closure), else 0.
/// The id goes in both monthly sets, per owner KEYS[5] and per account KEYS[7].
/// The flight (KEYS[6]) is not a leftover: it may have been recorded just before; it now
/// expires with the record, or not at all.
const CREATE: &str = r"
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('DEL', KEYS[2], KEYS[3], KEYS[4])
redis.call('HSET', KEYS[1], 'body', ARGV[1], 'stage', ARGV[2], 'created_at', ARGV[3], 'updated_at', ARGV[3], 'version', 1)
redis.call('RPUSH', KEYS[2], ARGV[4])
for _, i in ipairs({5, 7}) do
  redis.call('SADD', KEYS[i], ARGV[5])
  redis.call('PEXPIRE', KEYS[i], ARGV[6])
end
if ARGV[7] ~= '0' then
  for _, i in ipairs({1, 2, 6}) do redis.call('PEXPIRE', KEYS[i], ARGV[7]) end
else
  redis.call('PERSIST', KEYS[6])
end
return 1
";

/// Applies a change computed from the record at `version` ARGV[1], or returns 0 when the record
/// changed (or vanished) since it was read. Every write to the tracking list goes through here
/// or CREATE, so the version also vouches for a tracking list read after the record. The id
/// moves from the monthly sets of the owner read (KEYS[5] per owner, KEYS[8] per account) to
/// those of the owner written (KEYS[6], KEYS[9]) when they differ.
const COMMIT: &str = r"
if redis.call('HGET', KEYS[1], 'version') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'body', ARGV[2], 'updated_at', ARGV[4])
redis.call('HINCRBY', KEYS[1], 'version', 1)
if ARGV[3] ~= '' then redis.call('HSET', KEYS[1], 'stage', ARGV[3]) end
if ARGV[5] ~= '' then redis.call('RPUSH', KEYS[2], ARGV[5]) end
if ARGV[6] ~= '' then redis.call('SET', KEYS[3], ARGV[6]) end
for _, i in ipairs({5, 8}) do
  if KEYS[i] ~= KEYS[i + 1] then
    redis.call('SREM', KEYS[i], ARGV[8])
    redis.call('SADD', KEYS[i + 1], ARGV[8])
    redis.call('PEXPIRE', KEYS[i + 1], ARGV[9])
  end
end
if ARGV[7] == '-1' then
  for _, i in ipairs({1, 2, 3, 4, 7}) do redis.call('PERSIST', KEYS[i]) end
elseif ARGV[7] ~= '0' then
  for _, i in ipairs({1, 2, 3, 4, 7}) do redis.call('PEXPIRE', KEYS[i], ARGV[7]) end
end
return 1
";

/// Stores a flight (KEYS[2]) unless the stored one is newer: by departure ARGV[2], then by
/// the time it was observed ARGV[3] (Unix ms; exact as Lua numbers). It expires as the record
/// KEYS[1] does, or after ARGV[4] ms while there is no record.
const FLIGHT: &str = r"
local old = redis.call('HMGET', KEYS[2], 'departed_at', 'observed_at')
if old[1] then
  local departed, observed = tonumber(old[1]), tonumber(old[2])
  local new_departed, new_observed = tonumber(ARGV[2]), tonumber(ARGV[3])
  if departed > new_departed or (departed == new_departed and observed >= new_observed) then return 0 end
end
redis.call('HSET', KEYS[2], 'body', ARGV[1], 'departed_at', ARGV[2], 'observed_at', ARGV[3])
local ttl = redis.call('PTTL', KEYS[1])
if ttl == -2 then
  redis.call('PEXPIRE', KEYS[2], ARGV[4])
elseif ttl > 0 then
  redis.call('PEXPIRE', KEYS[2], ttl)
else
  redis.call('PERSIST', KEYS[2])
end
return 1
";

/// Stores the drone's position in the flight's hash (KEYS[2], so it expires with the flight)
/// unless the stored one is as new: by its time ARGV[2] (Unix ms). A hash it creates expires
/// as the record KEYS[1] does, or after ARGV[3] ms while there is no record.
const POSITION: &str = r"
local old = redis.call('HGET', KEYS[2], 'position_at')
if old and tonumber(old) >= tonumber(ARGV[2]) then return 0 end
local existed = redis.call('EXISTS', KEYS[2])
redis.call('HSET', KEYS[2], 'position', ARGV[1], 'position_at', ARGV[2])
if existed == 0 then
  local ttl = redis.call('PTTL', KEYS[1])
  if ttl == -2 then
    redis.call('PEXPIRE', KEYS[2], ARGV[3])
  elseif ttl > 0 then
    redis.call('PEXPIRE', KEYS[2], ttl)
  end
end
return 1
";

/// Adds a notify-me request to an existing delivery. On a finished delivery the list may be
/// new, so it takes the record's remaining time to live.
const NOTIFY: &str = r"
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('RPUSH', KEYS[2], ARGV[1])
local ttl = redis.call('PTTL', KEYS[1])
if ttl > 0 then redis.call('PEXPIRE', KEYS[2], ttl) end
return 1
";

/// Adds notification ARGV[1] (body ARGV[2]) to the outbox as pending unless its record KEYS[3]
/// exists, appending its id to the delivery's list KEYS[2]; both expire with the delivery's
/// record KEYS[1], or after ARGV[4] ms when it has no expiry (or is gone). Answers the record.
const RECORD_NOTIFICATION: &str = r"
if redis.call('EXISTS', KEYS[3]) == 0 then
  redis.call('HSET', KEYS[3], 'body', ARGV[2], 'status', 'pending', 'attempts', 0, 'created_at', ARGV[3], 'updated_at', ARGV[3])
  redis.call('RPUSH', KEYS[2], ARGV[1])
  local ttl = redis.call('PTTL', KEYS[1])
  if ttl <= 0 then ttl = tonumber(ARGV[4]) end
  redis.call('PEXPIRE', KEYS[2], ttl)
  redis.call('PEXPIRE', KEYS[3], ttl)
end
return redis.call('HMGET', KEYS[3], 'body', 'status', 'attempts', 'last_error', 'created_at', 'sent_at')
";

/// Records a try at sending notification KEYS[1] while it is still pending: status ARGV[1],
/// ARGV[2] more attempts, error ARGV[3] ('' keeps the last one), time ARGV[4], sent time ARGV[5]
/// ('' for none). 0 when it is not pending (or gone).
const MARK_NOTIFICATION: &str = r"
if redis.call('HGET', KEYS[1], 'status') ~= 'pending' then return 0 end
redis.call('HINCRBY', KEYS[1], 'attempts', ARGV[2])
redis.call('HSET', KEYS[1], 'status', ARGV[1], 'updated_at', ARGV[4])
if ARGV[3] ~= '' then redis.call('HSET', KEYS[1], 'last_error', ARGV[3]) end
if ARGV[5] ~= '' then redis.call('HSET', KEYS[1], 'sent_at', ARGV[5]) end
return 1
";

/// The fields of an outbox record, in the order [`decode_notification`] reads them.
const NOTIFICATION_FIELDS: [&str; 6] = ["body", "status", "attempts", "last_error", "created_at", "sent_at"];

/// Deliveries in Redis.
pub struct RedisDeliveryStore {
    conn: ConnectionManager,
    keys: Keys,
    completed_ttl_ms: u64,
    create: Script,
    commit: Script,
    notify: Script,
    flight: Script,
    position: Script,
    record_notification: Script,
    mark_notification: Script,
}

impl RedisDeliveryStore {
    /// Connects to `redis://HOST:PORT/DB[?prefix=NAME]`. The connection is made
    /// on first use and remade whenever it drops, so a service may start before its Redis.
    pub async fn open(url: &str, completed_ttl: Duration) -> Result<Self, StoreError> {
        let (url, prefix) = split_prefix(url)?;
        let client = Client::open(url.as_str())?;
        // Under load a script can take longer than the default 500 ms answer timeout, and a
        // timed-out write leaves the caller unsure whether it happened. Few reconnection retries:
        // while Redis is down a request should fail with 503 within a second, not hang for the
        // default six retries; the next request tries again.
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(Duration::from_secs(5)))
            .set_number_of_retries(3)
            .set_max_delay(Duration::from_secs(1));
        let conn = ConnectionManager::new_lazy_with_config(client, config)?;
        Ok(Self {
            conn,
            keys: Keys { prefix },
            // EXPIRE 0 would delete at once; a sub-millisecond TTL means "as soon as possible".
            completed_ttl_ms: u64::try_from(completed_ttl.as_millis()).unwrap_or(u64::MAX).max(1),
            create: Script::new(CREATE),
            commit: Script::new(COMMIT),
            notify: Script::new(NOTIFY),
            flight: Script::new(FLIGHT),
            position: Script::new(POSITION),
            record_notification: Script::new(RECORD_NOTIFICATION),
            mark_notification: Script::new(MARK_NOTIFICATION),
        })
    }

    async fn load(&self, id: &str) -> Result<Option<Stored>, StoreError> {
        let fields: Vec<Option<String>> = ::redis::cmd("HMGET")
            .arg(self.keys.record(id))
            .arg(&["body", "stage", "created_at", "version"])
            .query_async(&mut self.conn.clone())
            .await?;
        let [Some(body), stage, created_at, Some(version)] = <[Option<String>; 4]>::try_from(fields)
            .map_err(|f| decode_error(format!("HMGET answered {} fields, not 4", f.len())))?
        else {
            return Ok(None);
        };
        let mut delivery: Delivery = from_json(&body)?;
        delivery.stage = stage.and_then(|s| s.parse().ok());
        let created_at = created_at
            .and_then(|c| c.parse::<i64>().ok())
            .ok_or_else(|| decode_error(format!("delivery {id} has no creation time")))?;
        Ok(Some(Stored { delivery, created_at: from_unix_millis(created_at), version }))
    }

    /// Creates `delivery` in `stage` with its first event, `false` when its record exists. A
    /// delivery created in a final stage expires like one that reached it.
    async fn create(
        &self,
        delivery: &Delivery,
        stage: DeliveryStage,
        event: &str,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let id = &delivery.id;
        let ttl_ms = if domain::is_final(stage) { self.completed_ttl_ms } else { 0 };
        let created: i64 = self
            .create
            .key(self.keys.record(id))
            .key(self.keys.tracking(id))
            .key(self.keys.confirmation(id))
            .key(self.keys.notify(id))
            .key(self.keys.month(&delivery.owner.user_id, now))
            .key(self.keys.flight(id))
            .key(self.keys.account_month(&delivery.owner, now))
            .arg(to_json(&without_stage(delivery))?)
            .arg(stage.as_str())
            .arg(unix_millis(now))
            .arg(event)
            .arg(id)
            .arg(millis(MONTH_INDEX_TTL))
            .arg(ttl_ms)
            .invoke_async(&mut self.conn.clone())
            .await?;
        Ok(created == 1)
    }

    /// Writes `body` (and the rest) over the record as it was when `stored` was read; `false`
    /// when another writer got there first.
    async fn commit(&self, stored: &Stored, body: &Delivery, write: Write<'_>) -> Result<bool, StoreError> {
        let id = &stored.delivery.id;
        let stage = write.stage.map(|s| s.as_str()).unwrap_or_default();
        // The TTL argument: a final stage expires, a stage moving back from a final one stops
        // expiring (-1), anything else leaves expiry alone (0).
        let was_final = stored.delivery.stage.is_some_and(domain::is_final);
        let ttl_ms: i64 = match write.stage {
            Some(stage) if domain::is_final(stage) => i64::try_from(self.completed_ttl_ms).unwrap_or(i64::MAX),
            Some(_) if was_final => -1,
            _ => 0,
        };
        let applied: i64 = self
            .commit
            .key(self.keys.record(id))
            .key(self.keys.tracking(id))
            .key(self.keys.confirmation(id))
            .key(self.keys.notify(id))
            .key(self.keys.month(&stored.delivery.owner.user_id, stored.created_at))
            .key(self.keys.month(&body.owner.user_id, stored.created_at))
            .key(self.keys.flight(id))
            .key(self.keys.account_month(&stored.delivery.owner, stored.created_at))
            .key(self.keys.account_month(&body.owner, stored.created_at))
            .arg(&stored.version)
            .arg(to_json(&without_stage(body))?)
            .arg(stage)
            .arg(unix_millis(write.now))
            .arg(write.event.unwrap_or_default())
            .arg(write.confirmation.unwrap_or_default())
            .arg(ttl_ms)
            .arg(id)
            .arg(millis(MONTH_INDEX_TTL))
            .invoke_async(&mut self.conn.clone())
            .await?;
        Ok(applied == 1)
    }

    /// Applies `action` if the stage rules allow it, retrying when a concurrent writer changed
    /// the delivery between the read and the write.
    async fn change(
        &self,
        id: &str,
        action: Action,
        now: DateTime<Utc>,
        update: impl Fn(Delivery) -> (Delivery, Option<Location>) + Send + Sync,
        confirmation: Option<&str>,
    ) -> Result<Changed, StoreError> {
        for attempt in 0..MAX_ATTEMPTS {
            let Some(stored) = self.load(id).await? else { return Ok(Changed::NotFound) };
            let stage = self.tracked(&stored).await?;
            let next = match domain::transition(stage, action) {
                Transition::AlreadyDone => return Ok(Changed::Done(Box::new(stored.delivery))),
                Transition::Refused(reason) => return Ok(Changed::Refused(reason)),
                Transition::To(next) => next,
            };
            let (mut updated, location) = update(stored.delivery.clone());
            let event = event_json(next, location, None, now)?;
            let write = Write { now, stage: Some(next), event: Some(&event), confirmation };
            if self.commit(&stored, &updated, write).await? {
                updated.stage = Some(next);
                return Ok(Changed::Done(Box::new(updated)));
            }
            back_off(attempt).await;
        }
        Err(StoreError::Contended(id.to_owned()))
    }

    /// The stage the rules judge `stored` by ([`domain::tracked_stage`]), reading its history only
    /// when that matters. A history read after the record belongs to it or to a later version,
    /// which the version-checked commit then refuses.
    async fn tracked(&self, stored: &Stored) -> Result<DeliveryStage, StoreError> {
        let stage = stored.delivery.stage.unwrap_or(DeliveryStage::Created);
        if !domain::needs_history(stage) {
            return Ok(stage);
        }
        let history: Vec<DeliveryStage> =
            self.tracking(&stored.delivery.id).await?.into_iter().map(|e| e.stage).collect();
        Ok(domain::tracked_stage(stage, &history))
    }
}

/// What a commit writes besides the body.
struct Write<'a> {
    now: DateTime<Utc>,
    /// The new stage; `None` keeps it.
    stage: Option<DeliveryStage>,
    event: Option<&'a str>,
    confirmation: Option<&'a str>,
}

/// A record as read, with what a conditional write needs.
struct Stored {
    delivery: Delivery,
    created_at: DateTime<Utc>,
    version: String,
}

#[derive(Serialize, Deserialize)]
struct StoredEvent {
    stage: DeliveryStage,
    location: Option<Location>,
    at: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
}

#[derive(Serialize)]
struct StoredNotify<'a> {
    email: Option<&'a str>,
    sms: Option<&'a str>,
    at: i64,
}

/// [`StoredNotify`] as read back.
#[derive(Deserialize)]
struct ReadNotify {
    email: Option<String>,
    sms: Option<String>,
}

#[derive(Serialize)]
struct StoredConfirmation<'a> {
    confirmation: &'a Confirmation,
    at: i64,
}

/// [`StoredConfirmation`] as read back.
#[derive(Deserialize)]
struct ReadConfirmation {
    confirmation: Confirmation,
}

/// Key names; see the module documentation.
struct Keys {
    prefix: String,
}

impl Keys {
    fn record(&self, id: &str) -> String {
        format!("{}:delivery:{{{id}}}", self.prefix)
    }

    fn tracking(&self, id: &str) -> String {
        format!("{}:delivery:{{{id}}}:tracking", self.prefix)
    }

    fn notify(&self, id: &str) -> String {
        format!("{}:delivery:{{{id}}}:notify", self.prefix)
    }

    fn confirmation(&self, id: &str) -> String {
        format!("{}:delivery:{{{id}}}:confirmation", self.prefix)
    }

    fn flight(&self, id: &str) -> String {
        format!("{}:delivery:{{{id}}}:flight", self.prefix)
    }

    fn notifications(&self, id: &str) -> String {
        format!("{}:delivery:{{{id}}}:notifications", self.prefix)
    }

    fn notification(&self, id: &str, notification_id: &str) -> String {
        format!("{}:delivery:{{{id}}}:notification:{notification_id}", self.prefix)
    }

    /// The month comes first: it has a fixed width, so any owner id reads back unambiguously.
    fn month(&self, owner: &str, created_at: DateTime<Utc>) -> String {
        self.month_of(owner, month_of(created_at))
    }

    fn month_of(&self, owner: &str, month: Month) -> String {
        format!("{}:monthly:{:04}-{:02}:{owner}", self.prefix, month.year, month.month)
    }

    fn account_month(&self, owner: &UserAccount, created_at: DateTime<Utc>) -> String {
        self.account_month_of(&owner.account_id, &owner.user_id, month_of(created_at))
    }

    /// Like [`Keys::month_of`], with the account's length before it: ids may contain `:`, and
    /// without the length account `a:b` of owner `c` would share a key with account `a` of
    /// owner `b:c`.
    fn account_month_of(&self, account: &str, owner: &str, month: Month) -> String {
        let (year, month) = (month.year, month.month);
        format!("{}:monthly-account:{year:04}-{month:02}:{}:{account}:{owner}", self.prefix, account.len())
    }
}

/// The month (UTC) of `at`.
fn month_of(at: DateTime<Utc>) -> Month {
    Month { year: at.year(), month: at.month() }
}

/// Splits the `prefix` parameter off `url`, leaving a URL for the redis crate.
fn split_prefix(url: &str) -> Result<(String, String), StoreError> {
    let (rest, fragment) = match url.split_once('#') {
        Some((rest, fragment)) => (rest, Some(fragment)),
        None => (url, None),
    };
    let (base, query) = rest.split_once('?').unwrap_or((rest, ""));
    let mut prefix = DEFAULT_PREFIX.to_owned();
    let mut kept = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=').unwrap_or((pair, "")) {
            ("prefix", value) if is_prefix_safe(value) => value.clone_into(&mut prefix),
            ("prefix", value) => {
                return Err(config_error(format!(
                    "bad prefix {value:?} in the Redis URL: use letters, digits, '-' and '_'"
                )));
            }
            _ => kept.push(pair),
        }
    }
    let mut url = base.to_owned();
    if !kept.is_empty() {
        url.push('?');
        url.push_str(&kept.join("&"));
    }
    if let Some(fragment) = fragment {
        url.push('#');
        url.push_str(fragment);
    }
    Ok((url, prefix))
}

/// Key prefixes stay plain so that `PREFIX:*` patterns and hash tags work as expected.
fn is_prefix_safe(prefix: &str) -> bool {
    !prefix.is_empty() && prefix.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

fn config_error(detail: String) -> StoreError {
    StoreError::Redis(RedisError::from((ErrorKind::InvalidClientConfig, "invalid Redis URL", detail)))
}

fn decode_error(detail: String) -> StoreError {
    StoreError::Decode(detail.into())
}

/// The stage lives in its own field; the body never carries one.
fn without_stage(delivery: &Delivery) -> Delivery {
    Delivery { stage: None, ..delivery.clone() }
}

fn event_json(
    stage: DeliveryStage,
    location: Option<Location>,
    reason: Option<&str>,
    at: DateTime<Utc>,
) -> Result<String, StoreError> {
    to_json(&StoredEvent { stage, location, at: unix_millis(at), reason: reason.map(str::to_owned) })
}

/// An outbox record from its [`NOTIFICATION_FIELDS`]; `None` when it does not exist.
fn decode_notification(fields: Vec<Option<String>>) -> Result<Option<NotificationRecord>, StoreError> {
    let [body, status, attempts, last_error, created_at, sent_at] = <[Option<String>; 6]>::try_from(fields)
        .map_err(|f| decode_error(format!("HMGET answered {} fields, not 6", f.len())))?;
    let Some(body) = body else { return Ok(None) };
    let millis = |text: Option<String>| text.and_then(|t| t.parse::<i64>().ok()).map(from_unix_millis);
    let status = status.unwrap_or_default();
    Ok(Some(NotificationRecord {
        notification: from_json(&body)?,
        status: NotificationStatus::parse(&status)
            .ok_or_else(|| decode_error(format!("unknown notification status {status:?}")))?,
        attempts: attempts.and_then(|a| a.parse().ok()).unwrap_or(0),
        last_error,
        created_at: millis(created_at).ok_or_else(|| decode_error("a notification has no creation time".into()))?,
        sent_at: millis(sent_at),
    }))
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// Lets the winning writer finish before trying again; the jitter keeps a crowd of losers from
/// colliding in lock step.
async fn back_off(attempt: u32) {
    if attempt < 2 {
        tokio::task::yield_now().await;
    } else {
        let ceiling = u64::from(attempt.min(20));
        tokio::time::sleep(Duration::from_millis(rand::random_range(1..=ceiling))).await;
    }
}

#[async_trait]
impl DeliveryStore for RedisDeliveryStore {
    async fn upsert(&self, delivery: Delivery, now: DateTime<Utc>) -> Result<Upserted, StoreError> {
        let delivery = without_stage(&delivery);
        let id = &delivery.id;
        for attempt in 0..MAX_ATTEMPTS {
            let applied = match self.load(id).await? {
                None => {
                    let event = event_json(DeliveryStage::Created, Some(delivery.pickup), None, now)?;
                    if self.create(&delivery, DeliveryStage::Created, &event, now).await? {
                        let created = Delivery { stage: Some(DeliveryStage::Created), ..delivery };
                        return Ok(Upserted::Created(Box::new(created)));
                    }
                    false
                }
                // A failed delivery put again (the workflow runs its replayed request) is
                // reopened, and no longer expires.
                Some(stored) if stored.delivery.stage == Some(DeliveryStage::Failed) => {
                    let event = event_json(DeliveryStage::Created, Some(delivery.pickup), None, now)?;
                    let write =
                        Write { now, stage: Some(DeliveryStage::Created), event: Some(&event), confirmation: None };
                    self.commit(&stored, &delivery, write).await?
                }
                Some(stored) => {
                    let write = Write { now, stage: None, event: None, confirmation: None };
                    self.commit(&stored, &delivery, write).await?
                }
            };
            if applied {
                return Ok(Upserted::Updated);
            }
            back_off(attempt).await;
        }
        Err(StoreError::Contended(id.clone()))
    }

    async fn get(&self, id: &str) -> Result<Option<Delivery>, StoreError> {
        Ok(self.load(id).await?.map(|s| s.delivery))
    }

    async fn tracking(&self, id: &str) -> Result<Vec<DeliveryTrackingEvent>, StoreError> {
        let events: Vec<String> = ::redis::cmd("LRANGE")
            .arg(self.keys.tracking(id))
            .arg(0)
            .arg(-1)
            .query_async(&mut self.conn.clone())
            .await?;
        events
            .iter()
            .map(|text| {
                let event: StoredEvent = from_json(text)?;
                Ok(DeliveryTrackingEvent {
                    delivery_id: id.to_owned(),
                    stage: event.stage,
                    location: event.location,
                    at: from_unix_millis(event.at),
                    reason: event.reason,
                })
            })
            .collect()
    }

    async fn reschedule(
        &self,
        id: &str,
        change: &RescheduledDelivery,
        now: DateTime<Utc>,
    ) -> Result<Changed, StoreError> {
        self.change(id, Action::Reschedule, now, |d| (domain::rescheduled(d, change), change.pickup), None).await
    }

    async fn cancel(&self, id: &str, now: DateTime<Utc>) -> Result<Changed, StoreError> {
        self.change(id, Action::Cancel, now, |d| (d, None), None).await
    }

    async fn confirm(&self, id: &str, confirmation: &Confirmation, now: DateTime<Utc>) -> Result<Changed, StoreError> {
        let body = to_json(&StoredConfirmation { confirmation, at: unix_millis(now) })?;
        let location = Some(confirmation.geo_coordinates);
        self.change(id, Action::Complete, now, |d| (d, location), Some(body.as_str())).await
    }

    async fn close(
        &self,
        delivery: Delivery,
        stage: DeliveryStage,
        reason: &str,
        now: DateTime<Utc>,
    ) -> Result<Closed, StoreError> {
        let delivery = without_stage(&delivery);
        let id = &delivery.id;
        for attempt in 0..MAX_ATTEMPTS {
            let stored = self.load(id).await?;
            let current = match &stored {
                Some(stored) => Some(self.tracked(stored).await?),
                None => None,
            };
            let next = match domain::close(current, stage) {
                Transition::To(next) => next,
                // Only a delivery that exists can be already closed.
                Transition::AlreadyDone => {
                    return Ok(Closed::Done(Box::new(stored.map_or(delivery, |s| s.delivery))));
                }
                Transition::Refused(reason) => return Ok(Closed::Refused(reason)),
            };
            match stored {
                None => {
                    let event = event_json(next, Some(delivery.pickup), Some(reason), now)?;
                    if self.create(&delivery, next, &event, now).await? {
                        return Ok(Closed::Created(Box::new(Delivery { stage: Some(next), ..delivery })));
                    }
                }
                Some(stored) => {
                    let event = event_json(next, None, Some(reason), now)?;
                    let write = Write { now, stage: Some(next), event: Some(&event), confirmation: None };
                    if self.commit(&stored, &stored.delivery, write).await? {
                        return Ok(Closed::Done(Box::new(Delivery { stage: Some(next), ..stored.delivery })));
                    }
                }
            }
            back_off(attempt).await;
        }
        Err(StoreError::Contended(id.clone()))
    }

    async fn advance(
        &self,
        id: &str,
        action: Action,
        location: Location,
        at: DateTime<Utc>,
    ) -> Result<Changed, StoreError> {
        self.change(id, action, at, |d| (d, Some(location)), None).await
    }

    async fn record_refusal(
        &self,
        id: &str,
        action: Action,
        reason: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        for attempt in 0..MAX_ATTEMPTS {
            let Some(stored) = self.load(id).await? else { return Ok(false) };
            let Some(note) = domain::refusal_note(self.tracked(&stored).await?, action, reason) else {
                return Ok(false);
            };
            if domain::already_noted(&self.tracking(id).await?, &note) {
                return Ok(false);
            }
            let stage = stored.delivery.stage.unwrap_or(DeliveryStage::Created);
            let event = event_json(stage, None, Some(&note), now)?;
            // No stage: the delivery stays where it is; the version check makes the note once only
            // when two refused calls race.
            let write = Write { now, stage: None, event: Some(&event), confirmation: None };
            if self.commit(&stored, &stored.delivery, write).await? {
                return Ok(true);
            }
            back_off(attempt).await;
        }
        Err(StoreError::Contended(id.to_owned()))
    }

    async fn confirmation(&self, id: &str) -> Result<Option<Confirmation>, StoreError> {
        let stored: Option<String> =
            ::redis::cmd("GET").arg(self.keys.confirmation(id)).query_async(&mut self.conn.clone()).await?;
        Ok(stored.as_deref().map(from_json::<ReadConfirmation>).transpose()?.map(|c| c.confirmation))
    }

    async fn record_flight(&self, id: &str, flight: &Flight, observed_at: DateTime<Utc>) -> Result<bool, StoreError> {
        let stored: i64 = self
            .flight
            .key(self.keys.record(id))
            .key(self.keys.flight(id))
            .arg(to_json(flight)?)
            .arg(unix_millis(flight.departed_at))
            .arg(unix_millis(observed_at))
            .arg(self.completed_ttl_ms)
            .invoke_async(&mut self.conn.clone())
            .await?;
        Ok(stored == 1)
    }

    async fn flight(&self, id: &str) -> Result<Option<Flight>, StoreError> {
        let body: Option<String> =
            ::redis::cmd("HGET").arg(self.keys.flight(id)).arg("body").query_async(&mut self.conn.clone()).await?;
        body.as_deref().map(from_json).transpose()
    }

    async fn record_position(&self, id: &str, position: &DronePosition) -> Result<bool, StoreError> {
        let stored: i64 = self
            .position
            .key(self.keys.record(id))
            .key(self.keys.flight(id))
            .arg(to_json(position)?)
            .arg(unix_millis(position.at))
            .arg(self.completed_ttl_ms)
            .invoke_async(&mut self.conn.clone())
            .await?;
        Ok(stored == 1)
    }

    async fn position(&self, id: &str) -> Result<Option<DronePosition>, StoreError> {
        let body: Option<String> =
            ::redis::cmd("HGET").arg(self.keys.flight(id)).arg("position").query_async(&mut self.conn.clone()).await?;
        body.as_deref().map(from_json).transpose()
    }

    async fn add_notify_request(
        &self,
        id: &str,
        request: &NotifyMeRequest,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let entry = to_json(&StoredNotify {
            email: request.email_address.as_deref(),
            sms: request.sms.as_deref(),
            at: unix_millis(now),
        })?;
        let added: i64 = self
            .notify
            .key(self.keys.record(id))
            .key(self.keys.notify(id))
            .arg(entry)
            .invoke_async(&mut self.conn.clone())
            .await?;
        Ok(added == 1)
    }

    async fn notify_requests(&self, id: &str) -> Result<Vec<NotifyMeRequest>, StoreError> {
        let entries: Vec<String> =
            ::redis::cmd("LRANGE").arg(self.keys.notify(id)).arg(0).arg(-1).query_async(&mut self.conn.clone()).await?;
        entries
            .iter()
            .map(|text| {
                let stored: ReadNotify = from_json(text)?;
                Ok(NotifyMeRequest { email_address: stored.email, sms: stored.sms })
            })
            .collect()
    }

    async fn record_notification(
        &self,
        notification: &Notification,
        now: DateTime<Utc>,
    ) -> Result<NotificationRecord, StoreError> {
        let id = &notification.delivery_id;
        let fields: Vec<Option<String>> = self
            .record_notification
            .key(self.keys.record(id))
            .key(self.keys.notifications(id))
            .key(self.keys.notification(id, &notification.id))
            .arg(&notification.id)
            .arg(to_json(notification)?)
            .arg(unix_millis(now))
            .arg(self.completed_ttl_ms)
            .invoke_async(&mut self.conn.clone())
            .await?;
        decode_notification(fields)?
            .ok_or_else(|| decode_error(format!("notification {} vanished as it was recorded", notification.id)))
    }

    async fn mark_notification(
        &self,
        delivery_id: &str,
        id: &str,
        outcome: &Outcome,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let status = outcome.status();
        let sent_at = if status == NotificationStatus::Sent { unix_millis(now).to_string() } else { String::new() };
        let marked: i64 = self
            .mark_notification
            .key(self.keys.notification(delivery_id, id))
            .arg(status.as_str())
            .arg(i64::from(outcome.is_attempt()))
            .arg(outcome.error().unwrap_or_default())
            .arg(unix_millis(now))
            .arg(sent_at)
            .invoke_async(&mut self.conn.clone())
            .await?;
        Ok(marked == 1)
    }

    async fn notifications(&self, delivery_id: &str) -> Result<Vec<NotificationRecord>, StoreError> {
        let mut conn = self.conn.clone();
        let ids: Vec<String> = ::redis::cmd("LRANGE")
            .arg(self.keys.notifications(delivery_id))
            .arg(0)
            .arg(-1)
            .query_async(&mut conn)
            .await?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = ::redis::pipe();
        for id in &ids {
            pipe.cmd("HMGET").arg(self.keys.notification(delivery_id, id)).arg(&NOTIFICATION_FIELDS);
        }
        let rows: Vec<Vec<Option<String>>> = pipe.query_async(&mut conn).await?;
        // A record may expire a moment before the list that names it: skip it.
        let records: Result<Vec<_>, _> = rows.into_iter().map(decode_notification).collect();
        Ok(records?.into_iter().flatten().collect())
    }

    async fn count(&self, account_id: Option<&str>, owner_user_id: &str, month: Month) -> Result<u64, StoreError> {
        let key = match account_id {
            None => self.keys.month_of(owner_user_id, month),
            Some(account_id) => self.keys.account_month_of(account_id, owner_user_id, month),
        };
        let count: u64 = ::redis::cmd("SCARD").arg(key).query_async(&mut self.conn.clone()).await?;
        Ok(count)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let _: String = ::redis::cmd("PING").query_async(&mut self.conn.clone()).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_prefix_is_taken_off_the_url() {
        let split = |url: &str| split_prefix(url).unwrap();
        assert_eq!(split("redis://127.0.0.1:6379/0"), ("redis://127.0.0.1:6379/0".to_owned(), "fabrikam".to_owned()));
        assert_eq!(split("redis://h:6379/2?prefix=t_1"), ("redis://h:6379/2".to_owned(), "t_1".to_owned()));
        assert_eq!(
            split("rediss://h/1?protocol=resp3&prefix=prod-a&x=1#insecure"),
            ("rediss://h/1?protocol=resp3&x=1#insecure".to_owned(), "prod-a".to_owned())
        );
        for bad in ["redis://h?prefix=", "redis://h?prefix=a:b", "redis://h?prefix=a%20b", "redis://h?prefix"] {
            assert!(split_prefix(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_deliverys_keys_share_one_hash_tag() {
        let keys = Keys { prefix: "p".to_owned() };
        assert_eq!(keys.record("d1"), "p:delivery:{d1}");
        assert_eq!(keys.tracking("d1"), "p:delivery:{d1}:tracking");
        assert_eq!(keys.notify("d1"), "p:delivery:{d1}:notify");
        assert_eq!(keys.confirmation("d1"), "p:delivery:{d1}:confirmation");
        assert_eq!(keys.flight("d1"), "p:delivery:{d1}:flight");
        assert_eq!(keys.notifications("d1"), "p:delivery:{d1}:notifications");
        assert_eq!(
            keys.notification("d1", "d1:DeliveryCompleted:sms:0"),
            "p:delivery:{d1}:notification:d1:DeliveryCompleted:sms:0"
        );
        let at = chrono::DateTime::parse_from_rfc3339("2026-03-31T23:59:59Z").unwrap().to_utc();
        assert_eq!(keys.month("u:1", at), "p:monthly:2026-03:u:1");
        let owner =
            |user: &str, account: &str| UserAccount { user_id: user.to_owned(), account_id: account.to_owned() };
        assert_eq!(keys.account_month(&owner("u:1", "acc-7"), at), "p:monthly-account:2026-03:5:acc-7:u:1");
        assert_ne!(
            keys.account_month(&owner("c", "a:b"), at),
            keys.account_month(&owner("b:c", "a"), at),
            "the length keeps ids with ':' apart"
        );
        assert_eq!(keys.account_month(&owner("ü", "ä"), at), "p:monthly-account:2026-03:2:ä:ü", "bytes, not chars");
    }
}
