//! HTTP handlers of the package service.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{FromRef, Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use axum::{Json, Router};
use contracts::package::{Package, PackagePatch, PackageSummary, PackageUpsert};
use platform::Problem;
use platform::identity::IdentityPolicy;
use platform::identity_http::Caller;
use platform::json::JsonBody;

use crate::domain;
use crate::store::{PackageStore, Upserted};

type Store = Arc<dyn PackageStore>;

/// Whether the public route (the summary) requires the gateway's identity, which scopes it to
/// the caller's account. The handlers that only need the store extract it from this state.
#[derive(Clone)]
pub struct PackageState {
    pub store: Store,
    pub identity: IdentityPolicy,
}

impl FromRef<PackageState> for Store {
    fn from_ref(state: &PackageState) -> Self {
        state.store.clone()
    }
}

impl FromRef<PackageState> for IdentityPolicy {
    fn from_ref(state: &PackageState) -> Self {
        state.identity.clone()
    }
}

pub fn routes(store: Store, identity: IdentityPolicy) -> Router {
    Router::new()
        .route("/api/packages", put(create_with_new_id))
        .route("/api/packages/{id}", put(upsert).get(fetch).patch(update))
        .route("/api/packages/summary/{owner_id}", get(summary))
        .with_state(PackageState { store, identity })
}

/// `PUT /api/packages/{id}`: 201 with the package when new, 204 when it existed.
async fn upsert(
    State(store): State<Store>,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<PackageUpsert>,
) -> Result<Response, Problem> {
    if let Some(owner) = &body.owner_id {
        platform::telemetry::record_owner_id(owner);
    }
    let package = domain::validate_upsert(&id, body)?;
    let stored = stored_view(&package);
    match store.upsert(package).await? {
        Upserted::Created => Ok(created(stored)),
        Upserted::Updated => Ok(StatusCode::NO_CONTENT.into_response()),
    }
}

/// `PUT /api/packages`: stores a package under a new id.
async fn create_with_new_id(
    State(store): State<Store>,
    JsonBody(body): JsonBody<PackageUpsert>,
) -> Result<Response, Problem> {
    let id = uuid::Uuid::new_v4().to_string();
    let package = domain::validate_upsert(&id, body)?;
    let stored = stored_view(&package);
    store.upsert(package).await?;
    Ok(created(stored))
}

async fn fetch(State(store): State<Store>, Path(id): Path<String>) -> Result<Json<Package>, Problem> {
    store.get(&id).await?.map(Json).ok_or_else(|| Problem::not_found(format!("no package {id}")))
}

/// `PATCH /api/packages/{id}`: 204, or 404 when missing.
async fn update(
    State(store): State<Store>,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<PackagePatch>,
) -> Result<StatusCode, Problem> {
    let changes = domain::validate_patch(body)?;
    if store.update(&id, changes).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(Problem::not_found(format!("no package {id}")))
    }
}

/// `GET /api/packages/summary/{ownerId}?year=&month=`: with an identity, only the caller's
/// account's packages count.
async fn summary(
    State(store): State<Store>,
    caller: Caller,
    Path(owner_id): Path<String>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<PackageSummary>, Problem> {
    let month = platform::query::month(&params)?;
    let total_weight = store.total_weight(owner_id.trim(), caller.account(), month).await?;
    Ok(Json(PackageSummary { total_weight }))
}

fn stored_view(p: &domain::NewPackage) -> Package {
    Package {
        id: p.id.clone(),
        size: p.size.to_owned(),
        weight: p.weight,
        tag: p.tag.clone(),
        owner_id: p.owner_id.clone(),
    }
}

fn created(package: Package) -> Response {
    let location = format!("/api/packages/{}", package.id);
    (StatusCode::CREATED, [(header::LOCATION, location)], Json(package)).into_response()
}
