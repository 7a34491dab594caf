//! Protection in front of the services: token-bucket rate limits (per client IP before
//! authentication, per account after it), IP allow/deny lists, the header size limit, and
//! which address a request comes from.

use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::extract::ConnectInfo;
use axum::http::{HeaderMap, Request, StatusCode};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use ipnet::IpNet;
use platform::Problem;

/// How many checks between sweeps of idle buckets (a bucket that is full again is the same as
/// no bucket, so forgetting it changes nothing but memory).
const SWEEP_EVERY: u64 = 4096;

/// Token buckets keyed by a string (an IP, an account).
pub struct KeyedLimit {
    limiter: Option<DefaultKeyedRateLimiter<String>>,
    checks: AtomicU64,
}

impl KeyedLimit {
    /// `per_second` tokens refilled each second, up to `burst`; 0 per second turns it off.
    pub fn new(per_second: u32, burst: u32) -> Self {
        let limiter = NonZeroU32::new(per_second).map(|rate| {
            let burst = NonZeroU32::new(burst.max(per_second)).unwrap_or(rate);
            RateLimiter::keyed(Quota::per_second(rate).allow_burst(burst))
        });
        Self { limiter, checks: AtomicU64::new(0) }
    }

    /// Takes a token for `key`, or says after how many whole seconds one is available.
    pub fn check(&self, key: &str) -> Result<(), u64> {
        let Some(limiter) = &self.limiter else { return Ok(()) };
        if self.checks.fetch_add(1, Ordering::Relaxed) % SWEEP_EVERY == SWEEP_EVERY - 1 {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
        // Keys are short (an IP or an account id): the copy is cheaper than a second map type.
        limiter.check_key(&key.to_owned()).map_err(|not_until| {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            wait.as_secs() + u64::from(wait.subsec_nanos() > 0)
        })
    }
}

/// Which limit turned a request away.
#[derive(Debug, Clone, Copy)]
pub enum Limit {
    Account,
    ClientIp,
}

/// The 429 answer, counted by which limit it was.
pub fn too_many(limit: Limit, retry_after_secs: u64) -> Problem {
    let (reason, what) = match limit {
        Limit::Account => ("rate_limited_account", "this account"),
        Limit::ClientIp => ("rate_limited_ip", "this client address"),
    };
    metrics::counter!("gateway_requests_rejected_total", "service" => crate::SERVICE, "reason" => reason).increment(1);
    Problem::new(StatusCode::TOO_MANY_REQUESTS, format!("too many requests from {what}; retry after Retry-After"))
        .with_retry_after(retry_after_secs.max(1))
}

/// Which client addresses may call at all: a deny entry always wins; with any allow entry,
/// only addresses in one of them pass.
#[derive(Debug, Clone, Default)]
pub struct AccessList {
    pub allow: Vec<IpNet>,
    pub deny: Vec<IpNet>,
}

impl AccessList {
    pub fn permits(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        if self.deny.iter().any(|net| net.contains(&ip)) {
            return false;
        }
        self.allow.is_empty() || self.allow.iter().any(|net| net.contains(&ip))
    }
}

/// An IPv4 address mapped into IPv6 (a dual-stack listener's view) is matched as IPv4.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// The client's address: the socket peer, or with `trust_forwarded_for` the first address of
/// `X-Forwarded-For` (only safe behind a proxy that sets it). None when neither is known (a
/// router called in-process).
pub fn client_ip<B>(request: &Request<B>, trust_forwarded_for: bool) -> Option<IpAddr> {
    if trust_forwarded_for && let Some(ip) = forwarded_for(request.headers()) {
        return Some(ip);
    }
    request.extensions().get::<ConnectInfo<SocketAddr>>().map(|ConnectInfo(addr)| canonical(addr.ip()))
}

fn forwarded_for(headers: &HeaderMap) -> Option<IpAddr> {
    let value = headers.get("x-forwarded-for")?.to_str().ok()?;
    value.split(',').next()?.trim().parse::<IpAddr>().ok().map(canonical)
}

/// The bytes of a request's headers (names and values), for the header size limit.
pub fn header_bytes(headers: &HeaderMap) -> usize {
    headers.iter().map(|(name, value)| name.as_str().len() + value.len() + 4).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_over_the_limit_waits_and_other_keys_are_unaffected() {
        let limit = KeyedLimit::new(1, 3);
        for _ in 0..3 {
            assert_eq!(limit.check("a"), Ok(()));
        }
        let wait = limit.check("a").unwrap_err();
        assert!((1..=2).contains(&wait), "{wait}");
        assert_eq!(limit.check("b"), Ok(()));
        assert_eq!(KeyedLimit::new(0, 0).check("a"), Ok(()));
    }

    #[test]
    fn deny_wins_and_allow_restricts() {
        let net = |s: &str| crate::routes::parse_net(s).unwrap();
        let list = AccessList { allow: vec![net("10.0.0.0/8")], deny: vec![net("10.1.0.0/16")] };
        assert!(list.permits("10.2.3.4".parse().unwrap()));
        assert!(!list.permits("10.1.3.4".parse().unwrap()));
        assert!(!list.permits("192.168.1.1".parse().unwrap()));
        assert!(list.permits("::ffff:10.2.3.4".parse().unwrap()));
        assert!(AccessList::default().permits("192.168.1.1".parse().unwrap()));
    }

    #[test]
    fn forwarded_for_is_read_only_when_trusted() {
        let mut request = Request::new(());
        request.headers_mut().insert("x-forwarded-for", "203.0.113.9, 10.0.0.1".parse().unwrap());
        request.extensions_mut().insert(ConnectInfo(SocketAddr::from(([127, 0, 0, 1], 9))));
        assert_eq!(client_ip(&request, true), Some("203.0.113.9".parse().unwrap()));
        assert_eq!(client_ip(&request, false), Some("127.0.0.1".parse().unwrap()));
    }
}
