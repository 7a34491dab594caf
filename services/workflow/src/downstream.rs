//! The workflow's calls to package, dronescheduler and delivery. Every call is an idempotent
//! PUT or DELETE by id (or a PATCH that sets absolute values), so a redelivered message can
//! repeat them safely.

use std::sync::Arc;
use std::time::{Duration, Instant};

use contracts::DeliveryStage;
use contracts::delivery::{Delivery, DeliveryClosure, DeliveryRefusal, RescheduledDelivery};
use contracts::drone::{DroneAssignment, DroneDeliveryRequest, DroneReroute};
use contracts::package::PackageUpsert;
use http::StatusCode;
use platform::client::{CallError, InProcess, encode_segment as encode, http_client};
use platform::ttl_cache::TtlCache;
use reqwest::{Method, Response};
use serde::Serialize;

use crate::accounts::{AccountStanding, AccountView};
use crate::resilience::{Guard, GuardSettings};

/// Base URLs of the services the workflow calls.
#[derive(Debug, Clone)]
pub struct Endpoints {
    pub package: String,
    pub dronescheduler: String,
    pub delivery: String,
}

/// One pooled client per downstream, each behind its own [`Guard`] (bulkhead, breaker, retry
/// budget), so one slow or failing service cannot starve or trip the calls to the others.
#[derive(Clone)]
pub struct Downstreams {
    package: Api,
    drones: Api,
    deliveries: Api,
    /// The account service, when one is configured (`--account-url`).
    accounts: Option<Api>,
    /// Accounts the account service said were active, trusted for `--account-cache-ms`: one call
    /// per account every few seconds instead of one per delivery. A suspension therefore stops
    /// new deliveries within that time; refusals are never cached.
    active_accounts: Arc<TtlCache<String, ()>>,
}

/// Most accounts remembered as active at once.
const ACTIVE_ACCOUNTS_CACHED: usize = 10_000;

#[derive(Clone)]
struct Api {
    name: &'static str,
    base: String,
    client: reqwest::Client,
    timeout: Duration,
    /// The downstream's router when it runs in this process.
    in_process: Option<axum::Router>,
    guard: Arc<Guard>,
}

/// What the drone scheduler said to an assignment.
#[derive(Debug)]
pub enum Assigned {
    Drone(DroneAssignment),
    /// The delivery was cancelled and its drone released before this assignment: do not schedule.
    Cancelled,
}

/// What the drone scheduler said to a reroute.
#[derive(Debug, PartialEq, Eq)]
pub enum Rerouted {
    /// The drone flies to the new places (re-planned now, or earlier by a retry).
    Flying,
    /// No drone is assigned yet.
    NotAssigned,
    /// Too late for these places, and why (the package is on board, the drone is at the drop-off).
    Refused(String),
}

/// What the delivery service said to a change.
#[derive(Debug, PartialEq, Eq)]
pub enum Changed {
    Applied,
    /// Not created yet (its creation may still be on the queue).
    NotFound,
    /// Completed, cancelled or failed already, or past the point where this change is allowed.
    Final,
}

impl Downstreams {
    pub fn new(endpoints: &Endpoints, timeout: Duration, guards: &GuardSettings) -> Self {
        Self {
            package: Api::new("package", &endpoints.package, timeout, guards),
            drones: Api::new("dronescheduler", &endpoints.dronescheduler, timeout, guards),
            deliveries: Api::new("delivery", &endpoints.delivery, timeout, guards),
            accounts: None,
            active_accounts: Arc::new(TtlCache::new(Duration::ZERO, 1)),
        }
    }

    /// Checks accounts at `base` (the account service) before scheduling, behind its own guard,
    /// trusting an answer of "active" for `cache_for`.
    pub fn with_accounts(mut self, base: &str, timeout: Duration, guards: &GuardSettings, cache_for: Duration) -> Self {
        self.accounts = Some(Api::new("account", base, timeout, guards));
        self.active_accounts = Arc::new(TtlCache::new(cache_for, ACTIVE_ACCOUNTS_CACHED));
        self
    }

    /// Calls the downstreams that `routers` serves in this process (the all-in-one) directly
    /// instead of over their loopback ports; the guards apply as before.
    pub fn call_in_process(&mut self, routers: &InProcess) {
        let apis =
            [&mut self.package, &mut self.drones, &mut self.deliveries].into_iter().chain(self.accounts.as_mut());
        for api in apis {
            api.in_process = routers.get(&api.base);
        }
    }

    /// Whether an account service is configured, so accounts are checked.
    pub fn checks_accounts(&self) -> bool {
        self.accounts.is_some()
    }

    /// `GET /internal/accounts/{id}`: active, inactive (suspended) or unknown (404). Without an
    /// account service every account counts as active.
    pub async fn account_standing(&self, account_id: &str) -> Result<AccountStanding, CallError> {
        let Some(accounts) = &self.accounts else { return Ok(AccountStanding::Active) };
        if self.active_accounts.get(account_id).is_some() {
            return Ok(AccountStanding::Active);
        }
        let path = format!("/internal/accounts/{}", encode(account_id));
        let standing = accounts
            .run::<(), _, _, _>(Method::GET, &path, None, |response| async move {
                if response.status() == StatusCode::NOT_FOUND {
                    return Ok(AccountStanding::Unknown);
                }
                let response = expect(response, "account", &[StatusCode::OK]).await?;
                let view = response.json::<AccountView>().await.map_err(|e| CallError::Transient {
                    reason: format!("account sent an account we cannot read: {e}"),
                    retry_after: None,
                })?;
                Ok(AccountStanding::of(&view))
            })
            .await?;
        if standing == AccountStanding::Active {
            self.active_accounts.insert(account_id.to_owned(), ());
        }
        Ok(standing)
    }

    /// The longest time any downstream's breaker stays open; `None` when all let calls through.
    /// Every delivery needs all three services, so while one is open, taking messages only
    /// burns their attempts.
    pub fn open_for(&self) -> Option<Duration> {
        [&self.package, &self.drones, &self.deliveries]
            .into_iter()
            .chain(self.accounts.as_ref())
            .filter_map(|api| api.guard.open_for())
            .max()
    }

    /// `PUT /api/packages/{id}`: 201 or 204 are both success.
    pub async fn upsert_package(&self, package_id: &str, body: &PackageUpsert) -> Result<(), CallError> {
        let path = format!("/api/packages/{}", encode(package_id));
        self.package
            .run(Method::PUT, &path, Some(body), |r| {
                expect(r, "package", &[StatusCode::CREATED, StatusCode::NO_CONTENT])
            })
            .await
            .map(drop)
    }

    /// `PUT /api/dronedeliveries/{deliveryId}`.
    pub async fn assign_drone(&self, request: &DroneDeliveryRequest) -> Result<Assigned, CallError> {
        let path = format!("/api/dronedeliveries/{}", encode(&request.delivery_id));
        self.drones
            .run(Method::PUT, &path, Some(request), |response| async move {
                if response.status() == StatusCode::CONFLICT {
                    return Ok(Assigned::Cancelled);
                }
                let response = expect(response, "dronescheduler", &[StatusCode::OK]).await?;
                let assignment = response.json::<DroneAssignment>().await.map_err(|e| CallError::Permanent {
                    status: 200,
                    reason: format!("dronescheduler sent an assignment we cannot read: {e}"),
                })?;
                Ok(Assigned::Drone(assignment))
            })
            .await
    }

    /// `DELETE /api/dronedeliveries/{deliveryId}`: releases the drone; idempotent.
    pub async fn release_drone(&self, delivery_id: &str) -> Result<(), CallError> {
        let path = format!("/api/dronedeliveries/{}", encode(delivery_id));
        self.drones
            .run::<(), _, _, _>(Method::DELETE, &path, None, |r| {
                expect(r, "dronescheduler", &[StatusCode::NO_CONTENT, StatusCode::OK])
            })
            .await
            .map(drop)
    }

    /// `PATCH /api/dronedeliveries/{deliveryId}`: re-plans the drone's flight for the delivery's
    /// new places; the same places again change nothing.
    pub async fn reroute_drone(&self, delivery_id: &str, places: &DroneReroute) -> Result<Rerouted, CallError> {
        let path = format!("/api/dronedeliveries/{}", encode(delivery_id));
        self.drones
            .run(Method::PATCH, &path, Some(places), |response| async move {
                match response.status() {
                    StatusCode::OK => Ok(Rerouted::Flying),
                    StatusCode::NOT_FOUND => Ok(Rerouted::NotAssigned),
                    StatusCode::CONFLICT => Ok(Rerouted::Refused(problem_detail(response).await)),
                    _ => Err(error(response, "dronescheduler").await),
                }
            })
            .await
    }

    /// `POST /api/deliveries/{id}/refusals`: shows on the delivery why its reschedule was refused.
    pub async fn refuse_reschedule(&self, delivery_id: &str, reason: &str) -> Result<Changed, CallError> {
        let path = format!("/api/deliveries/{}/refusals", encode(delivery_id));
        let body = DeliveryRefusal { action: "reschedule".to_owned(), reason: reason.to_owned() };
        self.deliveries
            .run(Method::POST, &path, Some(&body), |response| async move {
                match response.status() {
                    StatusCode::NO_CONTENT | StatusCode::OK => Ok(Changed::Applied),
                    StatusCode::NOT_FOUND => Ok(Changed::NotFound),
                    _ => Err(error(response, "delivery").await),
                }
            })
            .await
    }

    /// `PUT /api/deliveries/{id}`: 201 or 204 are both success.
    pub async fn create_delivery(&self, delivery: &Delivery) -> Result<(), CallError> {
        let path = format!("/api/deliveries/{}", encode(&delivery.id));
        self.deliveries
            .run(Method::PUT, &path, Some(delivery), |r| {
                expect(r, "delivery", &[StatusCode::CREATED, StatusCode::NO_CONTENT])
            })
            .await
            .map(drop)
    }

    /// `PATCH /api/deliveries/{id}`.
    pub async fn reschedule_delivery(
        &self,
        delivery_id: &str,
        change: &RescheduledDelivery,
    ) -> Result<Changed, CallError> {
        let path = format!("/api/deliveries/{}", encode(delivery_id));
        self.deliveries.run(Method::PATCH, &path, Some(change), change_outcome).await
    }

    /// `DELETE /api/deliveries/{id}`.
    pub async fn cancel_delivery(&self, delivery_id: &str) -> Result<Changed, CallError> {
        let path = format!("/api/deliveries/{}", encode(delivery_id));
        self.deliveries.run::<(), _, _, _>(Method::DELETE, &path, None, change_outcome).await
    }

    /// `PUT /api/deliveries/{id}/closure`: records that the delivery will never fly (stage
    /// `Failed` or `Cancelled`, with the reason the customer sees), creating it when needed.
    pub async fn close_delivery(
        &self,
        delivery: &Delivery,
        stage: DeliveryStage,
        reason: &str,
    ) -> Result<Changed, CallError> {
        let path = format!("/api/deliveries/{}/closure", encode(&delivery.id));
        let body = DeliveryClosure { delivery: delivery.clone(), stage, reason: reason.chars().take(500).collect() };
        self.deliveries
            .run(Method::PUT, &path, Some(&body), |response| async move {
                match response.status() {
                    StatusCode::OK | StatusCode::CREATED | StatusCode::NO_CONTENT => Ok(Changed::Applied),
                    StatusCode::CONFLICT => Ok(Changed::Final),
                    _ => Err(error(response, "delivery").await),
                }
            })
            .await
    }
}

impl Api {
    fn new(name: &'static str, base: &str, timeout: Duration, guards: &GuardSettings) -> Self {
        Self {
            name,
            base: base.trim_end_matches('/').to_owned(),
            client: http_client(timeout),
            timeout,
            in_process: None,
            guard: Arc::new(Guard::new(name, guards.clone())),
        }
    }

    /// One guarded call: send, then `settle` the response into a result.
    async fn run<B, T, S, Fut>(&self, method: Method, path: &str, body: Option<&B>, settle: S) -> Result<T, CallError>
    where
        B: Serialize,
        S: Fn(Response) -> Fut,
        Fut: Future<Output = Result<T, CallError>>,
    {
        let (method, settle) = (&method, &settle);
        self.guard
            .run(|| async move {
                let response = self.send(method.clone(), path, body).await?;
                settle(response).await
            })
            .await
    }

    async fn send<B: Serialize>(&self, method: Method, path: &str, body: Option<&B>) -> Result<Response, CallError> {
        let started = Instant::now();
        let mut request = self.client.request(method.clone(), format!("{}{path}", self.base));
        if let Some(body) = body {
            request = request.json(body);
        }
        let result = match &self.in_process {
            Some(router) => platform::client::send_in_process(router, request, self.timeout).await.map_err(|reason| {
                CallError::Transient { reason: format!("{}: {reason}", self.name), retry_after: None }
            }),
            None => platform::client::send(request).await.map_err(|e| CallError::from_transport(self.name, &e)),
        };
        let outcome = match &result {
            Ok(r) => platform::metrics::status_class(r.status().as_u16()),
            Err(_) => "transport_error",
        };
        let labels = [
            ("service", crate::SERVICE.to_owned()),
            ("downstream", self.name.to_owned()),
            ("method", method.to_string()),
            ("outcome", outcome.to_owned()),
        ];
        metrics::histogram!("downstream_call_duration_seconds", &labels).record(started.elapsed().as_secs_f64());
        result
    }
}

async fn expect(response: Response, service: &str, ok: &[StatusCode]) -> Result<Response, CallError> {
    if ok.contains(&response.status()) {
        return Ok(response);
    }
    Err(error(response, service).await)
}

async fn error(response: Response, service: &str) -> CallError {
    let status = response.status();
    let headers = response.headers().clone();
    let body = response.text().await.unwrap_or_default();
    CallError::from_response(service, status, &headers, &body)
}

/// The `detail` of a problem+json answer, or its body as text when it is not one.
async fn problem_detail(response: Response) -> String {
    let body = response.text().await.unwrap_or_default();
    serde_json::from_str::<serde_json::Value>(&body)
        .ok()
        .and_then(|problem| problem["detail"].as_str().map(str::to_owned))
        .unwrap_or(body)
        .chars()
        .take(500)
        .collect()
}

async fn change_outcome(response: Response) -> Result<Changed, CallError> {
    match response.status() {
        StatusCode::OK | StatusCode::NO_CONTENT => Ok(Changed::Applied),
        StatusCode::NOT_FOUND => Ok(Changed::NotFound),
        StatusCode::CONFLICT => Ok(Changed::Final),
        _ => Err(error(response, "delivery").await),
    }
}
