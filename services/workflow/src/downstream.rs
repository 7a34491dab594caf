//! The workflow's calls to package, dronescheduler and delivery. Every call is an idempotent
//! PUT or DELETE by id (or a PATCH that sets absolute values), so a redelivered message can
//! repeat them safely.

use std::time::{Duration, Instant};

use contracts::delivery::{Delivery, RescheduledDelivery};
use contracts::drone::{DroneAssignment, DroneDeliveryRequest};
use contracts::package::PackageUpsert;
use http::StatusCode;
use platform::client::{CallError, encode_segment as encode, http_client};
use reqwest::{Method, Response};
use serde::Serialize;

/// Base URLs of the services the workflow calls.
#[derive(Debug, Clone)]
pub struct Endpoints {
    pub package: String,
    pub dronescheduler: String,
    pub delivery: String,
}

/// One pooled client per downstream, so one slow service cannot starve the others' connections.
#[derive(Clone)]
pub struct Downstreams {
    package: Api,
    drones: Api,
    deliveries: Api,
}

#[derive(Clone)]
struct Api {
    name: &'static str,
    base: String,
    client: reqwest::Client,
}

/// What the drone scheduler said to an assignment.
#[derive(Debug)]
pub enum Assigned {
    Drone(DroneAssignment),
    /// The delivery was cancelled and its drone released before this assignment: do not schedule.
    Cancelled,
}

/// What the delivery service said to a change.
#[derive(Debug, PartialEq, Eq)]
pub enum Changed {
    Applied,
    /// Not created yet (its creation may still be on the queue).
    NotFound,
    /// Completed or cancelled already: nothing left to change.
    Final,
}

impl Downstreams {
    pub fn new(endpoints: &Endpoints, timeout: Duration) -> Self {
        let api =
            |name, base: &str| Api { name, base: base.trim_end_matches('/').to_owned(), client: http_client(timeout) };
        Self {
            package: api("package", &endpoints.package),
            drones: api("dronescheduler", &endpoints.dronescheduler),
            deliveries: api("delivery", &endpoints.delivery),
        }
    }

    /// `PUT /api/packages/{id}`: 201 or 204 are both success.
    pub async fn upsert_package(&self, package_id: &str, body: &PackageUpsert) -> Result<(), CallError> {
        let path = format!("/api/packages/{}", encode(package_id));
        let response = self.package.call(Method::PUT, &path, Some(body)).await?;
        self.package.expect(response, &[StatusCode::CREATED, StatusCode::NO_CONTENT]).await.map(drop)
    }

    /// `PUT /api/dronedeliveries/{deliveryId}`.
    pub async fn assign_drone(&self, request: &DroneDeliveryRequest) -> Result<Assigned, CallError> {
        let path = format!("/api/dronedeliveries/{}", encode(&request.delivery_id));
        let response = self.drones.call(Method::PUT, &path, Some(request)).await?;
        if response.status() == StatusCode::CONFLICT {
            return Ok(Assigned::Cancelled);
        }
        let response = self.drones.expect(response, &[StatusCode::OK]).await?;
        let assignment = response.json::<DroneAssignment>().await.map_err(|e| CallError::Permanent {
            status: 200,
            reason: format!("dronescheduler sent an assignment we cannot read: {e}"),
        })?;
        Ok(Assigned::Drone(assignment))
    }

    /// `DELETE /api/dronedeliveries/{deliveryId}`: releases the drone; idempotent.
    pub async fn release_drone(&self, delivery_id: &str) -> Result<(), CallError> {
        let path = format!("/api/dronedeliveries/{}", encode(delivery_id));
        let response = self.drones.call::<()>(Method::DELETE, &path, None).await?;
        self.drones.expect(response, &[StatusCode::NO_CONTENT, StatusCode::OK]).await.map(drop)
    }

    /// `PUT /api/deliveries/{id}`: 201 or 204 are both success.
    pub async fn create_delivery(&self, delivery: &Delivery) -> Result<(), CallError> {
        let path = format!("/api/deliveries/{}", encode(&delivery.id));
        let response = self.deliveries.call(Method::PUT, &path, Some(delivery)).await?;
        self.deliveries.expect(response, &[StatusCode::CREATED, StatusCode::NO_CONTENT]).await.map(drop)
    }

    /// `PATCH /api/deliveries/{id}`.
    pub async fn reschedule_delivery(
        &self,
        delivery_id: &str,
        change: &RescheduledDelivery,
    ) -> Result<Changed, CallError> {
        let path = format!("/api/deliveries/{}", encode(delivery_id));
        let response = self.deliveries.call(Method::PATCH, &path, Some(change)).await?;
        self.deliveries.change_outcome(response).await
    }

    /// `DELETE /api/deliveries/{id}`.
    pub async fn cancel_delivery(&self, delivery_id: &str) -> Result<Changed, CallError> {
        let path = format!("/api/deliveries/{}", encode(delivery_id));
        let response = self.deliveries.call::<()>(Method::DELETE, &path, None).await?;
        self.deliveries.change_outcome(response).await
    }
}

impl Api {
    async fn call<B: Serialize>(&self, method: Method, path: &str, body: Option<&B>) -> Result<Response, CallError> {
        let started = Instant::now();
        let mut request = self.client.request(method.clone(), format!("{}{path}", self.base));
        if let Some(body) = body {
            request = request.json(body);
        }
        let result = request.send().await;
        let outcome = match &result {
            Ok(r) => r.status().as_u16().to_string(),
            Err(_) => "transport_error".to_owned(),
        };
        let labels = [("downstream", self.name.to_owned()), ("method", method.to_string()), ("outcome", outcome)];
        metrics::histogram!("workflow_downstream_call_duration_seconds", &labels)
            .record(started.elapsed().as_secs_f64());
        result.map_err(|e| CallError::from_transport(self.name, &e))
    }

    async fn expect(&self, response: Response, ok: &[StatusCode]) -> Result<Response, CallError> {
        if ok.contains(&response.status()) {
            return Ok(response);
        }
        Err(self.error(response).await)
    }

    async fn error(&self, response: Response) -> CallError {
        let status = response.status();
        let headers = response.headers().clone();
        let body = response.text().await.unwrap_or_default();
        CallError::from_response(self.name, status, &headers, &body)
    }

    async fn change_outcome(&self, response: Response) -> Result<Changed, CallError> {
        match response.status() {
            StatusCode::OK | StatusCode::NO_CONTENT => Ok(Changed::Applied),
            StatusCode::NOT_FOUND => Ok(Changed::NotFound),
            StatusCode::CONFLICT => Ok(Changed::Final),
            _ => Err(self.error(response).await),
        }
    }
}
