//! HTTP handlers of the delivery history service.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::routing::get;
use axum::{Json, Router};
use contracts::events::FinishedDelivery;
use platform::Problem;
use serde::{Deserialize, Serialize};

use crate::params;
use crate::store::HistoryStore;

type Store = Arc<dyn HistoryStore>;

/// `GET /api/deliveryhistory`: one page of an owner's finished deliveries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryPage {
    /// Oldest finish first; deliveries that finished in the same millisecond by id.
    pub items: Vec<FinishedDelivery>,
    /// Pass as `after` for the next page; `null` on the last one.
    pub next: Option<String>,
}

pub fn routes(store: Store) -> Router {
    Router::new()
        .route("/api/deliveryhistory", get(list))
        .route("/api/deliveryhistory/{delivery_id}", get(fetch))
        .with_state(store)
}

/// `GET /api/deliveryhistory/{deliveryId}`: the finished delivery, or 404.
async fn fetch(State(store): State<Store>, Path(delivery_id): Path<String>) -> Result<Json<FinishedDelivery>, Problem> {
    platform::telemetry::record_delivery_id(delivery_id.as_str());
    store
        .get(&delivery_id)
        .await?
        .map(Json)
        .ok_or_else(|| Problem::not_found(format!("no finished delivery {delivery_id}")))
}

/// `GET /api/deliveryhistory?ownerId=&from=&to=&limit=&after=` (see [`params`]).
async fn list(
    State(store): State<Store>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<HistoryPage>, Problem> {
    let query = params::history_query(&params)?;
    let page = store.list(&query).await?;
    Ok(Json(HistoryPage { items: page.items, next: page.next.map(|cursor| cursor.encode()) }))
}
