//! The public routing table: which public route goes to which service, under which path.
//! Anything not listed here (the internal PUT/DELETE routes of package, dronescheduler and
//! delivery, confirmations, the fleet) is not reachable from outside.

use axum::http::Method;

/// The services behind the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Upstream {
    Ingestion,
    Delivery,
    DroneScheduler,
    Package,
    DeliveryHistory,
}

/// One public route.
#[derive(Debug, Clone)]
pub struct PublicRoute {
    pub method: Method,
    /// Path after the `/api` prefix, in axum syntax.
    pub public: &'static str,
    pub upstream: Upstream,
    /// Path on the upstream; `{name}` is filled from the public path.
    pub target: &'static str,
}

/// Prefixes the public routes are served under: the plain one and the reference's versioned one.
pub const PREFIXES: &[&str] = &["/api", "/v0.1.0/api"];

pub static PUBLIC_ROUTES: &[PublicRoute] = &[
    route(Method::POST, "/deliveryrequests", Upstream::Ingestion, "/api/deliveryrequests"),
    route(Method::PATCH, "/deliveryrequests/{id}", Upstream::Ingestion, "/api/deliveryrequests/{id}"),
    route(Method::DELETE, "/deliveryrequests/{id}", Upstream::Ingestion, "/api/deliveryrequests/{id}"),
    route(Method::GET, "/deliveries/summary", Upstream::Delivery, "/api/deliveries/summary"),
    route(Method::GET, "/deliveries/{id}", Upstream::Delivery, "/api/deliveries/public/{id}"),
    route(Method::GET, "/deliveries/{id}/status", Upstream::Delivery, "/api/deliveries/{id}/status"),
    route(Method::GET, "/deliveries/{id}/owner", Upstream::Delivery, "/api/deliveries/{id}/owner"),
    route(
        Method::POST,
        "/deliveries/{id}/notifymerequests",
        Upstream::Delivery,
        "/api/deliveries/{id}/notifymerequests",
    ),
    route(Method::GET, "/dronedeliveries/utilization", Upstream::DroneScheduler, "/api/dronedeliveries/utilization"),
    route(Method::GET, "/packages/summary/{owner_id}", Upstream::Package, "/api/packages/summary/{owner_id}"),
    route(Method::GET, "/deliveryhistory", Upstream::DeliveryHistory, "/api/deliveryhistory"),
    route(Method::GET, "/deliveryhistory/{id}", Upstream::DeliveryHistory, "/api/deliveryhistory/{id}"),
];

const fn route(method: Method, public: &'static str, upstream: Upstream, target: &'static str) -> PublicRoute {
    PublicRoute { method, public, upstream, target }
}

/// Fills `{name}` placeholders of `template` from `params`, percent-encoding each value.
pub fn fill(template: &str, params: &[(String, String)]) -> String {
    let mut path = template.to_owned();
    for (name, value) in params {
        path = path.replace(&format!("{{{name}}}"), &platform::client::encode_segment(value));
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
    }

    #[test]
    fn every_route_targets_an_api_path() {
        for r in PUBLIC_ROUTES {
            assert!(r.target.starts_with("/api/"), "{r:?}");
        }
    }
}
