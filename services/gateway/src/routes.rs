//! The route table: which public path goes to which upstream, under which path, with which
//! timeout and authentication. It is data, not code: the built-in table below is what the
//! gateway serves by default, and a TOML file (`--routes-file`, format in
//! `docs/gateway-routes.example.toml`) replaces it and is reloaded when it changes. Anything
//! not listed (the internal PUT/DELETE routes of package, dronescheduler and delivery,
//! confirmations, the fleet, the account service's `/internal/…`) is not reachable from outside.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::http::Method;
use ipnet::IpNet;
use serde::Deserialize;

/// The upstreams every table may name without declaring them; their URLs come from the
/// `--*-url` flags (a table's `[upstreams]` may override them).
pub const BUILT_IN_UPSTREAMS: &[&str] =
    &["ingestion", "delivery", "package", "dronescheduler", "deliveryhistory", "account"];

/// Prefixes routes are served under unless a route says otherwise: the plain one and the
/// reference's versioned one.
pub const PREFIXES: &[&str] = &["/api", "/v0.1.0/api"];

/// Whether a route needs a credential.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthPolicy {
    /// An API key or a JWT; the caller's identity is forwarded, signed.
    Credential,
    /// Passed through unauthenticated (the upstream checks what it needs itself, like the
    /// account service's operator tokens); identity headers are still stripped.
    None,
}

/// What a route does with a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Forwards to `upstream` at `target` (`{name}` filled from the public path).
    Forward { upstream: String, target: String },
    /// The invoice aggregation (delivery summary, package summary, drone utilization).
    Invoices,
}

/// One route of the table.
#[derive(Debug, Clone)]
pub struct Route {
    pub methods: Vec<Method>,
    /// Path after the prefix, in axum syntax (`{id}`, `{*rest}`).
    pub path: String,
    pub prefixes: Vec<String>,
    pub action: Action,
    /// None: the gateway's `--timeout-ms`.
    pub timeout: Option<Duration>,
    pub auth: AuthPolicy,
}

/// A whole table: routes, upstream URLs it adds or overrides, and IP lists it adds to the
/// configured ones.
#[derive(Debug, Clone, Default)]
pub struct RouteTable {
    pub routes: Vec<Route>,
    pub upstreams: BTreeMap<String, String>,
    pub allow: Vec<IpNet>,
    pub deny: Vec<IpNet>,
}

impl RouteTable {
    /// The table served without a routes file: the public API, the account service's admin
    /// routes (unauthenticated here: the account service requires operator tokens itself) and
    /// the invoice aggregation.
    pub fn built_in() -> Self {
        let forward = |method: Method, path: &str, upstream: &str, target: &str| Route {
            methods: vec![method],
            path: path.to_owned(),
            prefixes: PREFIXES.iter().map(|p| (*p).to_owned()).collect(),
            action: Action::Forward { upstream: upstream.to_owned(), target: target.to_owned() },
            timeout: None,
            auth: AuthPolicy::Credential,
        };
        let mut routes = vec![
            forward(Method::POST, "/deliveryrequests", "ingestion", "/api/deliveryrequests"),
            forward(Method::PATCH, "/deliveryrequests/{id}", "ingestion", "/api/deliveryrequests/{id}"),
            forward(Method::DELETE, "/deliveryrequests/{id}", "ingestion", "/api/deliveryrequests/{id}"),
            forward(Method::GET, "/deliveries/summary", "delivery", "/api/deliveries/summary"),
            forward(Method::GET, "/deliveries/{id}", "delivery", "/api/deliveries/public/{id}"),
            forward(Method::GET, "/deliveries/{id}/status", "delivery", "/api/deliveries/{id}/status"),
            forward(Method::GET, "/deliveries/{id}/owner", "delivery", "/api/deliveries/{id}/owner"),
            forward(
                Method::POST,
                "/deliveries/{id}/notifymerequests",
                "delivery",
                "/api/deliveries/{id}/notifymerequests",
            ),
            forward(Method::GET, "/dronedeliveries/utilization", "dronescheduler", "/api/dronedeliveries/utilization"),
            forward(Method::GET, "/packages/summary/{owner_id}", "package", "/api/packages/summary/{owner_id}"),
            forward(Method::GET, "/deliveryhistory", "deliveryhistory", "/api/deliveryhistory"),
            forward(Method::GET, "/deliveryhistory/{id}", "deliveryhistory", "/api/deliveryhistory/{id}"),
        ];
        let mut admin = forward(Method::GET, "/admin/{*rest}", "account", "/api/admin/{*rest}");
        admin.methods = vec![Method::GET, Method::POST, Method::PATCH, Method::DELETE];
        admin.auth = AuthPolicy::None;
        routes.push(admin);
        let mut invoices = forward(Method::GET, "/invoices", "", "");
        invoices.action = Action::Invoices;
        routes.push(invoices);
        Self { routes, ..Self::default() }
    }

    /// Parses and checks a routes file.
    pub fn from_toml(text: &str) -> Result<Self, String> {
        let file: File = toml::from_str(text).map_err(|e| e.to_string())?;
        let parse_nets = |nets: Vec<String>, what: &str| -> Result<Vec<IpNet>, String> {
            nets.iter().map(|n| parse_net(n).map_err(|e| format!("access.{what}: {e}"))).collect()
        };
        let access = file.access.unwrap_or_default();
        let mut table = Self {
            routes: Vec::with_capacity(file.routes.len()),
            upstreams: file.upstreams,
            allow: parse_nets(access.allow, "allow")?,
            deny: parse_nets(access.deny, "deny")?,
        };
        for (i, spec) in file.routes.into_iter().enumerate() {
            let route = spec.into_route().map_err(|e| format!("routes[{i}]: {e}"))?;
            table.routes.push(route);
        }
        table.check()?;
        Ok(table)
    }

    /// Every upstream a route names is known, every path is well formed.
    pub fn check(&self) -> Result<(), String> {
        for (name, url) in &self.upstreams {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(format!("upstreams.{name}: {url:?} is not an http(s) URL"));
            }
        }
        for route in &self.routes {
            if !route.path.starts_with('/') {
                return Err(format!("route {}: the path must start with '/'", route.path));
            }
            if let Action::Forward { upstream, target } = &route.action {
                if !BUILT_IN_UPSTREAMS.contains(&upstream.as_str()) && !self.upstreams.contains_key(upstream) {
                    return Err(format!("route {}: unknown upstream {upstream:?}", route.path));
                }
                if !target.starts_with('/') {
                    return Err(format!("route {}: the target must start with '/'", route.path));
                }
            }
        }
        Ok(())
    }
}

/// An address or a network (`10.0.0.0/8`, `::1`).
pub fn parse_net(text: &str) -> Result<IpNet, String> {
    let text = text.trim();
    text.parse::<IpNet>()
        .or_else(|_| text.parse::<std::net::IpAddr>().map(IpNet::from))
        .map_err(|_| format!("{text:?} is not an IP address or CIDR network"))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    upstreams: BTreeMap<String, String>,
    access: Option<AccessSpec>,
    #[serde(default)]
    routes: Vec<RouteSpec>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct AccessSpec {
    #[serde(default)]
    allow: Vec<String>,
    #[serde(default)]
    deny: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RouteSpec {
    methods: Vec<String>,
    path: String,
    prefixes: Option<Vec<String>>,
    upstream: Option<String>,
    target: Option<String>,
    /// `invoices`: the built-in aggregation instead of an upstream.
    handler: Option<String>,
    timeout_ms: Option<u64>,
    auth: Option<AuthPolicy>,
}

impl RouteSpec {
    fn into_route(self) -> Result<Route, String> {
        if self.methods.is_empty() {
            return Err("methods: at least one is required".to_owned());
        }
        let methods = self
            .methods
            .iter()
            .map(|m| m.to_ascii_uppercase().parse::<Method>().map_err(|_| format!("methods: {m:?} is not a method")))
            .collect::<Result<Vec<_>, _>>()?;
        let action = match (self.handler.as_deref(), self.upstream, self.target) {
            (Some("invoices"), None, None) => Action::Invoices,
            (Some(other), None, None) => return Err(format!("handler: unknown handler {other:?}")),
            (Some(_), _, _) => return Err("a route has either a handler or an upstream and target".to_owned()),
            (None, Some(upstream), target) => {
                // Without a target the upstream sees the public path (without its prefix's
                // version), which is what a strangled legacy route usually wants.
                let target = target.unwrap_or_else(|| self.path.clone());
                Action::Forward { upstream, target }
            }
            (None, None, _) => return Err("upstream: required (or a handler)".to_owned()),
        };
        let prefixes = self.prefixes.unwrap_or_else(|| PREFIXES.iter().map(|p| (*p).to_owned()).collect());
        if let Some(bad) = prefixes.iter().find(|p| !(p.is_empty() || p.starts_with('/')) || p.ends_with('/')) {
            return Err(format!("prefixes: {bad:?} must be empty or start with '/' and not end with one"));
        }
        if self.timeout_ms == Some(0) {
            return Err("timeout_ms: must be at least 1".to_owned());
        }
        Ok(Route {
            methods,
            path: self.path,
            prefixes,
            action,
            timeout: self.timeout_ms.map(Duration::from_millis),
            auth: self.auth.unwrap_or(AuthPolicy::Credential),
        })
    }
}

/// Fills `{name}` and `{*name}` placeholders of `template` from `params`: a `{name}` value is
/// one percent-encoded segment, a `{*name}` value keeps its slashes and encodes each segment.
pub fn fill(template: &str, params: &[(String, String)]) -> String {
    let mut path = template.to_owned();
    for (name, value) in params {
        path = path.replace(&format!("{{{name}}}"), &platform::client::encode_segment(value));
        let segments: Vec<String> = value.split('/').map(platform::client::encode_segment).collect();
        path = path.replace(&format!("{{*{name}}}"), &segments.join("/"));
    }
    path
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fills_and_encodes_placeholders() {
        let params = vec![("id".to_owned(), "a b/c".to_owned())];
        assert_eq!(fill("/api/deliveries/public/{id}", &params), "/api/deliveries/public/a%20b%2Fc");
        let rest = vec![("rest".to_owned(), "accounts/a 1/keys".to_owned())];
        assert_eq!(fill("/api/admin/{*rest}", &rest), "/api/admin/accounts/a%201/keys");
    }

    #[test]
    fn the_built_in_table_is_valid_and_targets_api_paths() {
        let table = RouteTable::built_in();
        table.check().unwrap();
        for route in &table.routes {
            if let Action::Forward { target, .. } = &route.action {
                assert!(target.starts_with("/api/"), "{route:?}");
            }
        }
    }

    #[test]
    fn parses_a_routes_file() {
        let table = RouteTable::from_toml(
            r#"
            [upstreams]
            legacy = "http://legacy.internal:9000"
            [access]
            allow = ["10.0.0.0/8", "127.0.0.1"]
            [[routes]]
            methods = ["get", "POST"]
            path = "/orders/{*rest}"
            upstream = "legacy"
            target = "/v1/orders/{*rest}"
            timeout_ms = 2500
            [[routes]]
            methods = ["GET"]
            path = "/invoices"
            handler = "invoices"
            [[routes]]
            methods = ["GET"]
            path = "/open"
            prefixes = [""]
            upstream = "delivery"
            auth = "none"
            "#,
        )
        .unwrap();
        assert_eq!(table.routes.len(), 3);
        assert_eq!(table.routes[0].methods, vec![Method::GET, Method::POST]);
        assert_eq!(table.routes[0].timeout, Some(Duration::from_millis(2500)));
        assert_eq!(table.routes[0].auth, AuthPolicy::Credential);
        assert_eq!(table.routes[1].action, Action::Invoices);
        assert_eq!(table.routes[2].action, Action::Forward { upstream: "delivery".into(), target: "/open".into() });
        assert_eq!(table.routes[2].auth, AuthPolicy::None);
        assert_eq!(table.allow.len(), 2);
    }

    #[test]
    fn the_documented_example_file_is_valid_and_has_every_built_in_route() {
        let example = RouteTable::from_toml(include_str!("../../../docs/gateway-routes.example.toml")).unwrap();
        for built_in in RouteTable::built_in().routes {
            for method in &built_in.methods {
                assert!(
                    example.routes.iter().any(|r| r.path == built_in.path
                        && r.methods.contains(method)
                        && r.action == built_in.action
                        && r.auth == built_in.auth),
                    "{method} {} is missing from the example",
                    built_in.path
                );
            }
        }
    }

    #[test]
    fn rejects_bad_files_naming_what_is_wrong() {
        let bad = |text: &str, expected: &str| {
            let err = RouteTable::from_toml(text).unwrap_err();
            assert!(err.contains(expected), "{err} should mention {expected}");
        };
        bad("[[routes]]\nmethods=[\"GET\"]\npath=\"/x\"\nupstream=\"nowhere\"", "unknown upstream");
        bad("[[routes]]\nmethods=[]\npath=\"/x\"\nupstream=\"delivery\"", "methods");
        bad("[[routes]]\nmethods=[\"GET\"]\npath=\"/x\"\nupstream=\"delivery\"\nauth=\"maybe\"", "auth");
        bad("[access]\ndeny=[\"10.0.0.0/99\"]", "access.deny");
        bad("[upstreams]\nx=\"ftp://x\"", "upstreams.x");
    }
}
