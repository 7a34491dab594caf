//! HTTP handlers of the delivery history service.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{FromRef, Path, Query, State};
use axum::routing::get;
use axum::{Json, Router};
use contracts::events::FinishedDelivery;
use platform::Problem;
use platform::identity::IdentityPolicy;
use platform::identity_http::Caller;
use serde::{Deserialize, Serialize};

use crate::params;
use crate::store::HistoryStore;

type Store = Arc<dyn HistoryStore>;

/// What the handlers share: the store, and whether callers must carry the gateway's identity
/// (which scopes them to their account).
#[derive(Clone)]
pub struct HistoryState {
    pub store: Store,
    pub identity: IdentityPolicy,
}

impl FromRef<HistoryState> for IdentityPolicy {
    fn from_ref(state: &HistoryState) -> Self {
        state.identity.clone()
    }
}

/// `GET /api/deliveryhistory`: one page of an owner's finished deliveries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryPage {
    /// Oldest finish first; deliveries that finished in the same millisecond by id.
    pub items: Vec<FinishedDelivery>,
    /// Pass as `after` for the next page; `null` on the last one.
    pub next: Option<String>,
}

pub fn routes(store: Store, identity: IdentityPolicy) -> Router {
    Router::new()
        .route("/api/deliveryhistory", get(list))
        .route("/api/deliveryhistory/{delivery_id}", get(fetch))
        .with_state(HistoryState { store, identity })
}

/// `GET /api/deliveryhistory/{deliveryId}`: the finished delivery, or 404 (also for another
/// account's, so ids cannot be probed).
async fn fetch(
    State(state): State<HistoryState>,
    caller: Caller,
    Path(delivery_id): Path<String>,
) -> Result<Json<FinishedDelivery>, Problem> {
    platform::telemetry::record_delivery_id(delivery_id.as_str());
    state
        .store
        .get(&delivery_id)
        .await?
        .filter(|finished| caller.may_see(&finished.delivery.owner.account_id))
        .map(Json)
        .ok_or_else(|| Problem::not_found(format!("no finished delivery {delivery_id}")))
}

/// `GET /api/deliveryhistory?ownerId=&from=&to=&limit=&after=` (see [`params`]).
async fn list(
    State(state): State<HistoryState>,
    caller: Caller,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<HistoryPage>, Problem> {
    let mut query = params::history_query(&params)?;
    query.account_id = caller.account().map(str::to_owned);
    let page = state.store.list(&query).await?;
    Ok(Json(HistoryPage { items: page.items, next: page.next.map(|cursor| cursor.encode()) }))
}
