//! The operator API on the workflow's internal port: dead letters (list, inspect, replay one or
//! all, purge one or all) and each delivery's workflow state. `fabrikam deadletters` is its CLI.
//!
//! A replayed message keeps its message id, so replaying the same dead letter twice queues it
//! once, and the workflow carries it out again from where its recorded state stands.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use platform::Problem;
use platform::bus::{BusError, DeadLetter, Queue};
use serde_json::{Value, json};

use crate::store::WorkflowStore;

#[derive(Clone)]
struct Admin {
    queue: Arc<dyn Queue>,
    store: Arc<dyn WorkflowStore>,
}

pub fn routes(queue: Arc<dyn Queue>, store: Arc<dyn WorkflowStore>) -> Router {
    Router::new()
        .route("/api/deadletters", get(list).delete(purge_all))
        .route("/api/deadletters/replay", post(replay_all))
        .route("/api/deadletters/{id}", get(inspect).delete(purge_one))
        .route("/api/deadletters/{id}/replay", post(replay_one))
        .route("/api/workflows/summary", get(summary))
        .route("/api/workflows/{delivery_id}", get(workflow))
        .with_state(Admin { queue, store })
}

type Params = Query<HashMap<String, String>>;

fn limit(params: &HashMap<String, String>, default: usize) -> Result<usize, Problem> {
    match params.get("limit") {
        None => Ok(default),
        Some(text) => text
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=1000).contains(n))
            .ok_or_else(|| Problem::invalid_field("limit", "must be a number from 1 to 1000")),
    }
}

fn unavailable(err: BusError) -> Problem {
    Problem::unavailable(err.to_string(), 1)
}

fn not_found(id: &str) -> Problem {
    Problem::not_found(format!("no dead letter with message id {id:?}"))
}

fn describe(d: DeadLetter) -> Value {
    // The payload is shown as JSON when it is JSON, as text otherwise.
    let message = serde_json::from_slice::<Value>(&d.payload)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&d.payload).into_owned()));
    json!({
        "messageId": d.id,
        "attempts": d.attempts,
        "lastError": d.last_error,
        "enqueuedAt": d.enqueued_at,
        "deadLetteredAt": d.dead_lettered_at,
        "message": message,
    })
}

/// Dead letters, oldest first (`?limit=`, default 100).
async fn list(State(admin): State<Admin>, Query(params): Params) -> Result<Json<Value>, Problem> {
    let letters = admin.queue.dead_letters(limit(&params, 100)?).await.map_err(unavailable)?;
    Ok(Json(json!({ "items": letters.into_iter().map(describe).collect::<Vec<_>>() })))
}

async fn inspect(State(admin): State<Admin>, Path(id): Path<String>) -> Result<Json<Value>, Problem> {
    match admin.queue.find_dead_letter(&id).await.map_err(unavailable)? {
        Some(letter) => Ok(Json(describe(letter))),
        None => Err(not_found(&id)),
    }
}

async fn replay_one(State(admin): State<Admin>, Path(id): Path<String>) -> Result<Response, Problem> {
    if !admin.queue.replay_dead_letter(&id).await.map_err(unavailable)? {
        return Err(not_found(&id));
    }
    tracing::info!(message_id = %id, "dead letter replayed by an operator");
    Ok((StatusCode::ACCEPTED, Json(json!({ "replayed": [id] }))).into_response())
}

/// Replays the oldest dead letters (`?limit=`, default 1000); answers with their ids.
async fn replay_all(State(admin): State<Admin>, Query(params): Params) -> Result<Response, Problem> {
    let letters = admin.queue.dead_letters(limit(&params, 1000)?).await.map_err(unavailable)?;
    let mut replayed = Vec::with_capacity(letters.len());
    for letter in letters {
        if admin.queue.replay_dead_letter(&letter.id).await.map_err(unavailable)? {
            replayed.push(letter.id);
        }
    }
    tracing::info!(count = replayed.len(), "dead letters replayed by an operator");
    Ok((StatusCode::ACCEPTED, Json(json!({ "replayed": replayed }))).into_response())
}

async fn purge_one(State(admin): State<Admin>, Path(id): Path<String>) -> Result<StatusCode, Problem> {
    if !admin.queue.purge_dead_letter(&id).await.map_err(unavailable)? {
        return Err(not_found(&id));
    }
    tracing::warn!(message_id = %id, "dead letter purged by an operator");
    Ok(StatusCode::NO_CONTENT)
}

async fn purge_all(State(admin): State<Admin>) -> Result<Json<Value>, Problem> {
    let purged = admin.queue.purge_dead_letters().await.map_err(unavailable)?;
    tracing::warn!(count = purged, "all dead letters purged by an operator");
    Ok(Json(json!({ "purged": purged })))
}

/// A delivery's workflow: status, steps with attempts and last errors, reason, deadline.
async fn workflow(State(admin): State<Admin>, Path(delivery_id): Path<String>) -> Result<Json<Value>, Problem> {
    let record = admin.store.get(&delivery_id).await.map_err(|e| Problem::unavailable(e.to_string(), 1))?;
    match record {
        Some(record) => Ok(Json(serde_json::to_value(record).map_err(Problem::internal)?)),
        None => Err(Problem::not_found(format!("no workflow for delivery {delivery_id:?}"))),
    }
}

/// How many workflows are in each status.
async fn summary(State(admin): State<Admin>) -> Result<Json<Value>, Problem> {
    let counts = admin.store.counts().await.map_err(|e| Problem::unavailable(e.to_string(), 1))?;
    let counts: serde_json::Map<String, Value> =
        counts.into_iter().map(|(status, n)| (status.as_str().to_owned(), json!(n))).collect();
    Ok(Json(Value::Object(counts)))
}
