//! One message per delivery at a time: a cancel must not run while the same delivery's
//! creation is half done in this process.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{Mutex as AsyncMutex, OwnedMutexGuard};

/// Per-key async locks that free their memory when nobody holds or waits for them.
#[derive(Default, Clone)]
pub struct KeyedLocks {
    locks: Arc<Mutex<HashMap<String, Arc<AsyncMutex<()>>>>>,
}

/// Held while a key is locked.
pub struct KeyGuard {
    key: String,
    locks: Arc<Mutex<HashMap<String, Arc<AsyncMutex<()>>>>>,
    guard: Option<OwnedMutexGuard<()>>,
}

impl KeyedLocks {
    pub async fn lock(&self, key: &str) -> KeyGuard {
        let mutex = {
            let mut locks = self.locks.lock().expect("keyed lock map");
            locks.entry(key.to_owned()).or_default().clone()
        };
        let guard = mutex.lock_owned().await;
        KeyGuard { key: key.to_owned(), locks: self.locks.clone(), guard: Some(guard) }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.locks.lock().expect("keyed lock map").len()
    }
}

impl Drop for KeyGuard {
    fn drop(&mut self) {
        drop(self.guard.take());
        let mut locks = self.locks.lock().expect("keyed lock map");
        // Only the map holds it now: nobody is waiting, so forget the key.
        if locks.get(&self.key).is_some_and(|m| Arc::strong_count(m) == 1) {
            locks.remove(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn same_key_waits_other_keys_do_not() {
        let locks = KeyedLocks::default();
        let held = locks.lock("a").await;
        let _other = tokio::time::timeout(Duration::from_millis(50), locks.lock("b")).await.expect("b is free");
        assert!(tokio::time::timeout(Duration::from_millis(50), locks.lock("a")).await.is_err(), "a is held");
        drop(held);
        drop(_other);
        let _again = locks.lock("a").await;
        drop(_again);
        assert_eq!(locks.len(), 0);
    }
}
