//! The live route table: the current table compiled into a router, swapped atomically when
//! the routes file changes. A request runs to its end on the router it started with, so a
//! reload never fails a request in flight; a file that does not parse or compile is logged and
//! the table in use kept.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use arc_swap::ArcSwap;
use axum::Router;
use axum::extract::{Path, Request};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodFilter, on};
use axum::{Json, RequestExt};
use platform::Problem;
use platform::client::InProcess;
use platform::config::CommonArgs;
use platform::http::{HttpOptions, ServiceRouter};
use platform::identity::IdentityKey;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use crate::admission::Admission;
use crate::auth::{ApiKeys, Authenticator, JwtSettings, JwtVerifier};
use crate::invoice::{PriceList, Sources};
use crate::limits::{AccessList, KeyedLimit};
use crate::options::{GatewayOptions, UpstreamUrls};
use crate::routes::{Action, AuthPolicy, Route, RouteTable};
use crate::{SERVICE, proxy};

/// What every route shares, whatever the table.
struct Shared {
    client: reqwest::Client,
    identity: IdentityKey,
    auth: Authenticator,
    credential_limit: KeyedLimit,
    ip_limit: KeyedLimit,
    trust_forwarded_for: bool,
    max_header_bytes: usize,
    admission: Admission,
    body_limit: usize,
    default_timeout: Duration,
    prices: PriceList,
    /// The `--*-url` upstreams; a table may add or override names.
    upstreams: BTreeMap<String, String>,
    /// Routers of upstreams that run in this process, by base URL; a routes file that points a
    /// name elsewhere goes over HTTP as usual.
    in_process: InProcess,
    /// The `--allow-ips` / `--deny-ips` lists; a table's lists add to them.
    access: AccessList,
    http: HttpOptions,
}

/// The table being served, and how to replace it.
pub struct Live {
    shared: Arc<Shared>,
    current: Arc<ArcSwap<Router>>,
}

impl Live {
    /// Compiles the built-in table or `--routes-file`, and watches the file until `shutdown`.
    pub fn start(
        upstreams: UpstreamUrls,
        in_process: InProcess,
        options: &GatewayOptions,
        common: &CommonArgs,
        identity: IdentityKey,
        shutdown: &CancellationToken,
    ) -> anyhow::Result<Self> {
        let timeout = Duration::from_millis(options.timeout_ms.max(1));
        // Up to --max-in-flight requests go upstream at once; keeping that many connections
        // means a burst reuses them instead of opening and closing hundreds.
        let client = platform::client::http_client_keeping(timeout, options.max_in_flight.max(1));
        let auth_options = &options.auth;
        let jwt = JwtVerifier::new(&JwtSettings {
            hs256_secret: auth_options.jwt_hs256_secret.clone(),
            jwks_file: auth_options.jwt_jwks_file.clone(),
            issuer: auth_options.jwt_issuer.clone(),
            audience: auth_options.jwt_audience.clone(),
            account_claim: auth_options.jwt_account_claim.clone(),
            leeway_secs: auth_options.jwt_leeway_secs,
        })?;
        let api_keys = ApiKeys::new(
            platform::client::http_client(Duration::from_secs(5)),
            &upstreams.account_url,
            Duration::from_millis(auth_options.credential_cache_ms),
            auth_options.credential_cache_size,
        );
        let protection = &options.protection;
        let shared = Arc::new(Shared {
            client,
            identity,
            auth: Authenticator { api_keys, jwt },
            credential_limit: KeyedLimit::new(
                protection.rate_limit_per_credential,
                protection.rate_limit_credential_burst,
            ),
            ip_limit: KeyedLimit::new(protection.rate_limit_per_ip, protection.rate_limit_ip_burst),
            trust_forwarded_for: protection.trust_forwarded_for,
            max_header_bytes: protection.max_header_bytes,
            admission: Admission::new(options.max_in_flight, options.wait_rule()),
            body_limit: common.body_limit,
            default_timeout: timeout,
            prices: options.prices.clone(),
            upstreams: upstreams.by_name().into_iter().map(|(name, url)| (name.to_owned(), url)).collect(),
            in_process,
            access: AccessList { allow: protection.allow_ips.clone(), deny: protection.deny_ips.clone() },
            http: common.http_options(),
        });
        let (table, file_text) = match &options.routes_file {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading --routes-file {}", path.display()))?;
                let table = RouteTable::from_toml(&text)
                    .map_err(|e| anyhow::anyhow!("--routes-file {}: {e}", path.display()))?;
                (table, Some(text))
            }
            None => (RouteTable::built_in(), None),
        };
        let router = compile(&shared, &table).map_err(|e| anyhow::anyhow!("the route table: {e}"))?;
        let live = Self { shared, current: Arc::new(ArcSwap::from_pointee(router)) };
        if let (Some(path), Some(text)) = (&options.routes_file, file_text) {
            let every = Duration::from_millis(options.reload_poll_ms.max(10));
            tokio::spawn(watch(live.shared.clone(), live.current.clone(), path.clone(), text, every, shutdown.clone()));
        }
        Ok(live)
    }

    /// A router that always serves the current table.
    pub fn router(&self) -> Router {
        let current = self.current.clone();
        Router::new().fallback_service(tower::service_fn(move |request: Request| {
            let router = current.load_full();
            async move { Router::clone(&router).oneshot(request).await }
        }))
    }
}

/// Polls `path` and swaps in the table it holds whenever its content changes.
async fn watch(
    shared: Arc<Shared>,
    current: Arc<ArcSwap<Router>>,
    path: PathBuf,
    mut last: String,
    every: Duration,
    shutdown: CancellationToken,
) {
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(every) => {}
        }
        let Ok(text) = tokio::fs::read_to_string(&path).await else {
            tracing::warn!(file = %path.display(), "the routes file cannot be read; keeping the table in use");
            continue;
        };
        if text == last {
            continue;
        }
        last = text.clone();
        let compiled = RouteTable::from_toml(&text).and_then(|table| compile(&shared, &table));
        let outcome = match compiled {
            Ok(router) => {
                current.store(Arc::new(router));
                tracing::info!(file = %path.display(), "route table reloaded");
                "ok"
            }
            Err(err) => {
                tracing::error!(file = %path.display(), error = %err, "the routes file is not valid; keeping the table in use");
                "rejected"
            }
        };
        metrics::counter!("gateway_route_table_reloads_total", "service" => SERVICE, "outcome" => outcome).increment(1);
    }
}

/// One route under one prefix, with its upstream resolved.
struct Compiled {
    route: Route,
    prefix: String,
    /// The upstream's base URL (forwarding routes).
    base: Option<String>,
    /// The upstream's router, when it is served in this process.
    in_process: Option<Router>,
    access: Arc<AccessList>,
    invoice_sources: Sources,
}

/// Compiles `table` into a router with the platform's routes and layers.
fn compile(shared: &Arc<Shared>, table: &RouteTable) -> Result<Router, String> {
    table.check()?;
    let mut upstreams = shared.upstreams.clone();
    upstreams.extend(table.upstreams.clone());
    let access = Arc::new(AccessList {
        allow: shared.access.allow.iter().chain(&table.allow).copied().collect(),
        deny: shared.access.deny.iter().chain(&table.deny).copied().collect(),
    });
    let invoice_sources = Sources {
        delivery: upstreams["delivery"].clone(),
        package: upstreams["package"].clone(),
        dronescheduler: upstreams["dronescheduler"].clone(),
    };
    let mut routes: Vec<(String, MethodFilter, Arc<Compiled>)> = Vec::new();
    for route in &table.routes {
        let base = match &route.action {
            Action::Forward { upstream, .. } => Some(upstreams[upstream].trim_end_matches('/').to_owned()),
            Action::Invoices => None,
        };
        let mut filter: Option<MethodFilter> = None;
        for method in &route.methods {
            let one = MethodFilter::try_from(method.clone()).map_err(|_| format!("method {method} is not routable"))?;
            filter = Some(filter.map_or(one, |f| f.or(one)));
        }
        let filter = filter.ok_or("a route without methods")?;
        for prefix in &route.prefixes {
            let compiled = Compiled {
                route: route.clone(),
                prefix: prefix.clone(),
                base: base.clone(),
                in_process: base.as_ref().and_then(|base| shared.in_process.get(base)),
                access: access.clone(),
                invoice_sources: invoice_sources.clone(),
            };
            routes.push((format!("{prefix}{}", route.path), filter, Arc::new(compiled)));
        }
    }
    let http = shared.http;
    let shared = shared.clone();
    // axum panics on routes that overlap; a table is configuration, so that must be an error
    // the reload can log rather than a crash.
    let api = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
        let mut api = Router::new();
        for (path, filter, compiled) in routes {
            let shared = shared.clone();
            api = api.route(
                &path,
                on(filter, move |request: Request| {
                    let (shared, compiled) = (shared.clone(), compiled.clone());
                    async move { handle(&shared, &compiled, request).await }
                }),
            );
        }
        api
    }))
    .map_err(|panic| {
        let why = panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
            .unwrap_or_else(|| "routes that cannot be served together".to_owned());
        format!("the routes conflict: {why}")
    })?;
    Ok(ServiceRouter::new(SERVICE, api).options(http).build())
}

/// Serves one request on one route: protection, authentication, then the route's action.
async fn handle(shared: &Shared, compiled: &Compiled, mut request: Request) -> Response {
    match protect(shared, compiled, &request) {
        Ok(()) => {}
        Err(problem) => return problem.into_response(),
    }
    platform::identity::strip(request.headers_mut());
    if compiled.route.auth == AuthPolicy::Credential {
        let caller = match shared.auth.authenticate(request.headers()).await {
            Ok(caller) => caller,
            Err(err) => {
                let reason = if matches!(err, crate::auth::AuthError::Unavailable) {
                    "auth_unavailable"
                } else {
                    "unauthenticated"
                };
                metrics::counter!("gateway_requests_rejected_total", "service" => SERVICE, "reason" => reason)
                    .increment(1);
                return err.into_response();
            }
        };
        if let Err(wait) = shared.credential_limit.check(&caller.identity.account_id) {
            return crate::limits::too_many(crate::limits::Limit::Account, wait).into_response();
        }
        tracing::debug!(account = %caller.identity.account_id, credential = %caller.credential, "authenticated");
        let now = chrono::Utc::now().timestamp();
        if let Err(err) = shared.identity.attach(&caller.identity, request.headers_mut(), now) {
            return Problem::new(
                StatusCode::UNAUTHORIZED,
                format!("the credential's identity cannot be forwarded: {err}"),
            )
            .into_response();
        }
    }
    let Some(_slot) = shared.admission.admit().await else {
        metrics::counter!("gateway_requests_shed_total", "service" => SERVICE).increment(1);
        return Problem::unavailable("the system is at capacity; retry shortly", 1).into_response();
    };
    let in_flight = shared.admission.in_flight();
    metrics::gauge!("downstream_in_flight", "service" => SERVICE, "downstream" => "all").set(in_flight as f64);
    let timeout = compiled.route.timeout.unwrap_or(shared.default_timeout);
    match &compiled.route.action {
        Action::Forward { upstream, target } => {
            let base = compiled.base.as_deref().expect("forwarding routes have an upstream");
            forward(shared, compiled, upstream, base, target, timeout, request).await
        }
        Action::Invoices => {
            let query: HashMap<String, String> = request.uri().query().map(url_pairs).unwrap_or_default();
            let mut identity = axum::http::HeaderMap::new();
            for name in platform::identity::HEADERS {
                if let Some(value) = request.headers().get(name) {
                    identity.insert(name, value.clone());
                }
            }
            match crate::invoice::invoice(
                &shared.client,
                &compiled.invoice_sources,
                &identity,
                &query,
                timeout,
                &shared.prices,
            )
            .await
            {
                Ok(invoice) => Json(invoice).into_response(),
                Err(problem) => problem.into_response(),
            }
        }
    }
}

/// Header size, client address lists, and the per-IP rate limit: all before authentication,
/// so a flood of bad credentials costs the account service nothing beyond the IP's budget.
fn protect(shared: &Shared, compiled: &Compiled, request: &Request) -> Result<(), Problem> {
    if crate::limits::header_bytes(request.headers()) > shared.max_header_bytes {
        metrics::counter!("gateway_requests_rejected_total", "service" => SERVICE, "reason" => "headers_too_large")
            .increment(1);
        return Err(Problem::new(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, "the request's headers are too large"));
    }
    if let Some(ip) = crate::limits::client_ip(request, shared.trust_forwarded_for) {
        if !compiled.access.permits(ip) {
            return Err(crate::forbidden());
        }
        if let Err(wait) = shared.ip_limit.check(&ip.to_string()) {
            return Err(crate::limits::too_many(crate::limits::Limit::ClientIp, wait));
        }
    }
    Ok(())
}

async fn forward(
    shared: &Shared,
    compiled: &Compiled,
    upstream: &str,
    base: &str,
    target: &str,
    timeout: Duration,
    mut request: Request,
) -> Response {
    let params: Vec<(String, String)> =
        request.extract_parts::<Path<Vec<(String, String)>>>().await.map(|Path(params)| params).unwrap_or_default();
    let mut url = format!("{base}{}", crate::routes::fill(target, &params));
    if let Some(query) = request.uri().query().filter(|q| !q.is_empty()) {
        url.push('?');
        url.push_str(query);
    }
    let method = request.method().as_str().to_owned();
    let started = std::time::Instant::now();
    let hop = proxy::Hop {
        upstream_name: upstream,
        url,
        timeout,
        body_limit: shared.body_limit,
        public_prefix: &compiled.prefix,
        pass_authorization: compiled.route.auth == AuthPolicy::None,
        in_process: compiled.in_process.as_ref(),
    };
    let forwarded = proxy::forward(&shared.client, hop, request).await;
    record_call(upstream, method, &forwarded, started.elapsed());
    match forwarded {
        Ok(response) => response,
        Err(problem) => problem.into_response(),
    }
}

/// A query string's pairs, percent-decoded (the last of a repeated name wins).
fn url_pairs(query: &str) -> HashMap<String, String> {
    axum::extract::Query::<HashMap<String, String>>::try_from_uri(
        &format!("/?{query}").parse().unwrap_or_else(|_| axum::http::Uri::from_static("/")),
    )
    .map(|q| q.0)
    .unwrap_or_default()
}

/// The caller's view of one forwarded call, in the same families as the workflow's calls. An
/// error is what says the upstream is unwell: no answer, or a 5xx.
fn record_call(upstream: &str, method: String, result: &Result<Response, Problem>, took: Duration) {
    let status = match result {
        Ok(response) => Some(response.status().as_u16()),
        // A body over the limit never left the gateway; anything else is a failed hop.
        Err(problem) if problem.status == 413 => return,
        Err(_) => None,
    };
    let outcome = status.map_or("transport_error", platform::metrics::status_class);
    let unwell = status.is_none_or(|code| code >= 500);
    metrics::counter!(
        "downstream_calls_total",
        "service" => SERVICE,
        "downstream" => upstream.to_owned(),
        "outcome" => if unwell { "error" } else { "ok" }
    )
    .increment(1);
    metrics::histogram!(
        "downstream_call_duration_seconds",
        "service" => SERVICE,
        "downstream" => upstream.to_owned(),
        "method" => method,
        "outcome" => outcome
    )
    .record(took.as_secs_f64());
}
