//! A small cache of answers that may be trusted for a short time: the gateway's verified API
//! keys, the workflow's active accounts. Only successes are meant to go in, so a change that
//! takes a permission away (a revoked key, a suspended account) takes effect within the TTL.
//!
//! Bounded without tracking recency: when full of live entries it starts over, which costs one
//! fresh lookup per key in use. Keys and values are cloned out, so keep them small.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub struct TtlCache<K, V> {
    ttl: Duration,
    capacity: usize,
    entries: Mutex<HashMap<K, (V, Instant)>>,
}

impl<K: Eq + Hash, V: Clone> TtlCache<K, V> {
    /// A cache whose entries live `ttl`; a zero `ttl` keeps nothing.
    pub fn new(ttl: Duration, capacity: usize) -> Self {
        Self { ttl, capacity: capacity.max(1), entries: Mutex::new(HashMap::new()) }
    }

    /// The value stored under `key`, unless it is older than the TTL.
    pub fn get<Q>(&self, key: &Q) -> Option<V>
    where
        K: std::borrow::Borrow<Q>,
        Q: Eq + Hash + ?Sized,
    {
        let entries = self.entries.lock().expect("cache lock");
        entries.get(key).filter(|(_, at)| at.elapsed() < self.ttl).map(|(value, _)| value.clone())
    }

    pub fn insert(&self, key: K, value: V) {
        if self.ttl.is_zero() {
            return;
        }
        let mut entries = self.entries.lock().expect("cache lock");
        if entries.len() >= self.capacity && !entries.contains_key(&key) {
            entries.retain(|_, (_, at)| at.elapsed() < self.ttl);
            if entries.len() >= self.capacity {
                entries.clear();
            }
        }
        entries.insert(key, (value, Instant::now()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_lives_for_the_ttl_only() {
        let cache = TtlCache::new(Duration::from_millis(50), 10);
        cache.insert("a".to_owned(), 1);
        assert_eq!(cache.get("a"), Some(1));
        assert_eq!(cache.get("b"), None);
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(cache.get("a"), None, "served after its TTL");
    }

    #[test]
    fn a_zero_ttl_keeps_nothing() {
        let cache = TtlCache::new(Duration::ZERO, 10);
        cache.insert("a".to_owned(), 1);
        assert_eq!(cache.get("a"), None);
    }

    #[test]
    fn a_full_cache_stays_within_its_capacity() {
        let cache = TtlCache::new(Duration::from_secs(60), 3);
        for i in 0..10 {
            cache.insert(i, i);
            assert!(cache.entries.lock().unwrap().len() <= 3);
            assert_eq!(cache.get(&i), Some(i), "the newest entry is always kept");
        }
        cache.insert(9, 90);
        assert_eq!(cache.get(&9), Some(90), "replacing a key does not evict");
    }
}
