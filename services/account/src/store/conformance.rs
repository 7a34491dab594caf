//! The behaviour suite every [`AccountStore`] backend must pass.
//!
//! A backend's test file implements [`AccountStoreHarness`] and expands
//! [`account_store_conformance_tests!`](crate::account_store_conformance_tests), which turns each
//! function here into its own `#[tokio::test]`.

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Duration, TimeZone, Utc};

use super::{AccountStore, Added, Rotated};
use crate::domain::{
    self, Account, AccountChanges, AccountStatus, KeyInfo, NewKey, NewOperator, OPERATOR_TOKEN_PREFIX, User,
};

/// Opens the backend under test.
#[async_trait]
pub trait AccountStoreHarness: Send + Sync {
    /// `count` stores on one fresh, empty database, each with its own connections: what
    /// `count` account processes sharing the database would see.
    async fn open_shared(&self, count: usize) -> Vec<Arc<dyn AccountStore>>;

    /// A fresh, empty store.
    async fn open(&self) -> Arc<dyn AccountStore> {
        self.open_shared(1).await.pop().expect("the harness opened no store")
    }
}

/// Expands to one test per behaviour for the harness built by `$make`.
///
/// `$make` is evaluated inside each test, so it may `.await`, and it may `return` to skip the
/// test (e.g. through `platform::require_server!` when the backend's server is not configured).
#[macro_export]
macro_rules! account_store_conformance_tests {
    ($make:expr) => {
        $crate::account_store_conformance_tests!(@cases $make;
            accounts_round_trip_in_creation_order,
            update_changes_only_the_given_fields,
            users_belong_to_an_existing_account,
            keys_need_the_account_and_its_own_user,
            find_key_sees_the_hash_revocation_and_account_status,
            revoking_is_scoped_to_the_account_and_keeps_the_first_time,
            rotation_revokes_the_old_key_and_stores_the_new,
            concurrent_rotations_of_one_key_rotate_once,
            the_first_operator_is_stored_once,
            replacing_operators_revokes_the_earlier_ones,
            ping_answers,
        );
    };
    (@cases $make:expr; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let harness = $make;
                $crate::store::conformance::$case(&harness).await;
            }
        )*
    };
}

fn at(minute: u32, ms: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 15, 12, minute, 0).single().expect("valid time") + Duration::milliseconds(ms)
}

fn account(id: &str, minute: u32) -> Account {
    Account { id: id.into(), name: format!("Account {id}"), status: AccountStatus::Active, created_at: at(minute, 7) }
}

fn user(id: &str, account_id: &str, email: Option<&str>) -> User {
    User {
        id: id.into(),
        account_id: account_id.into(),
        name: format!("User {id}"),
        email: email.map(str::to_owned),
        created_at: at(1, 3),
    }
}

fn key(id: &str, account_id: &str, user_id: Option<&str>, minute: u32) -> NewKey {
    NewKey {
        info: KeyInfo {
            key_id: id.into(),
            account_id: account_id.into(),
            user_id: user_id.map(str::to_owned),
            name: Some(format!("key {id}")),
            created_at: at(minute, 11),
            revoked_at: None,
        },
        secret_sha256: domain::hash_secret(&format!("secret of {id}")),
    }
}

fn operator(minute: u32) -> (NewOperator, String) {
    let issued = domain::issue(OPERATOR_TOKEN_PREFIX);
    let operator =
        NewOperator { id: issued.id.clone(), secret_sha256: issued.secret_sha256.clone(), created_at: at(minute, 0) };
    (operator, issued.secret_sha256)
}

pub async fn accounts_round_trip_in_creation_order(h: &dyn AccountStoreHarness) {
    let store = h.open().await;
    assert_eq!(store.list_accounts().await.unwrap(), vec![]);
    assert_eq!(store.get_account("a1").await.unwrap(), None);
    let (later, earlier) = (account("a1", 5), account("a2", 1));
    store.create_account(&later).await.unwrap();
    store.create_account(&earlier).await.unwrap();
    assert_eq!(store.get_account("a1").await.unwrap(), Some(later.clone()));
    assert_eq!(store.get_account("A1").await.unwrap(), None, "ids are case-sensitive");
    assert_eq!(store.list_accounts().await.unwrap(), vec![earlier, later.clone()]);
    assert!(store.create_account(&later).await.is_err(), "an id is stored once");
}

pub async fn update_changes_only_the_given_fields(h: &dyn AccountStoreHarness) {
    let store = h.open().await;
    store.create_account(&account("a1", 1)).await.unwrap();
    let suspend = AccountChanges { status: Some(AccountStatus::Suspended), name: None };
    let updated = store.update_account("a1", &suspend).await.unwrap().expect("exists");
    assert_eq!((updated.name.as_str(), updated.status), ("Account a1", AccountStatus::Suspended));
    let rename = AccountChanges { name: Some("Contoso".into()), status: None };
    let updated = store.update_account("a1", &rename).await.unwrap().expect("exists");
    assert_eq!((updated.name.as_str(), updated.status), ("Contoso", AccountStatus::Suspended));
    assert_eq!(store.get_account("a1").await.unwrap(), Some(updated));
    assert_eq!(store.update_account("nobody", &rename).await.unwrap(), None);
    assert_eq!(store.get_account("nobody").await.unwrap(), None, "an update must not create");
}

pub async fn users_belong_to_an_existing_account(h: &dyn AccountStoreHarness) {
    let store = h.open().await;
    assert_eq!(store.create_user(&user("u1", "nobody", None)).await.unwrap(), Added::NoSuchAccount);
    store.create_account(&account("a1", 1)).await.unwrap();
    store.create_account(&account("a2", 2)).await.unwrap();
    let ann = user("u1", "a1", Some("ann@contoso.com"));
    let bob = user("u2", "a1", None);
    assert_eq!(store.create_user(&ann).await.unwrap(), Added::Done);
    assert_eq!(store.create_user(&bob).await.unwrap(), Added::Done);
    assert_eq!(store.create_user(&user("u3", "a2", None)).await.unwrap(), Added::Done);
    assert_eq!(store.list_users("a1").await.unwrap(), vec![ann, bob]);
    assert_eq!(store.list_users("a2").await.unwrap().len(), 1);
    assert_eq!(store.list_users("nobody").await.unwrap(), vec![]);
}

pub async fn keys_need_the_account_and_its_own_user(h: &dyn AccountStoreHarness) {
    let store = h.open().await;
    assert_eq!(store.create_key(&key("k0", "a1", None, 1)).await.unwrap(), Added::NoSuchAccount);
    store.create_account(&account("a1", 1)).await.unwrap();
    store.create_account(&account("a2", 1)).await.unwrap();
    store.create_user(&user("u1", "a1", None)).await.unwrap();
    store.create_user(&user("u2", "a2", None)).await.unwrap();
    assert_eq!(store.create_key(&key("k1", "a1", Some("u2"), 1)).await.unwrap(), Added::NoSuchUser);
    assert_eq!(store.create_key(&key("k1", "a1", Some("nobody"), 1)).await.unwrap(), Added::NoSuchUser);
    let (with_user, without) = (key("k2", "a1", Some("u1"), 3), key("k3", "a1", None, 2));
    assert_eq!(store.create_key(&with_user).await.unwrap(), Added::Done);
    assert_eq!(store.create_key(&without).await.unwrap(), Added::Done);
    assert_eq!(store.create_key(&key("k4", "a2", None, 1)).await.unwrap(), Added::Done);
    assert_eq!(store.list_keys("a1").await.unwrap(), vec![without.info, with_user.info]);
    assert_eq!(store.list_keys("nobody").await.unwrap(), vec![]);
    assert!(store.find_key("k1").await.unwrap().is_none(), "a refused key is not stored");
}

pub async fn find_key_sees_the_hash_revocation_and_account_status(h: &dyn AccountStoreHarness) {
    let store = h.open().await;
    store.create_account(&account("a1", 1)).await.unwrap();
    let stored = key("k1", "a1", None, 1);
    store.create_key(&stored).await.unwrap();
    let found = store.find_key("k1").await.unwrap().expect("stored");
    assert_eq!((&found.info, &found.secret_sha256), (&stored.info, &stored.secret_sha256));
    assert_eq!(found.account_status, AccountStatus::Active);
    assert_eq!(store.find_key("K1").await.unwrap(), None);

    let suspend = AccountChanges { status: Some(AccountStatus::Suspended), name: None };
    store.update_account("a1", &suspend).await.unwrap();
    assert_eq!(store.find_key("k1").await.unwrap().unwrap().account_status, AccountStatus::Suspended);
    assert!(store.revoke_key("a1", "k1", at(9, 0)).await.unwrap());
    assert_eq!(store.find_key("k1").await.unwrap().unwrap().info.revoked_at, Some(at(9, 0)));
}

pub async fn revoking_is_scoped_to_the_account_and_keeps_the_first_time(h: &dyn AccountStoreHarness) {
    let store = h.open().await;
    store.create_account(&account("a1", 1)).await.unwrap();
    store.create_account(&account("a2", 1)).await.unwrap();
    store.create_key(&key("k1", "a1", None, 1)).await.unwrap();
    assert!(!store.revoke_key("a2", "k1", at(5, 0)).await.unwrap(), "another account's key");
    assert!(!store.revoke_key("a1", "nobody", at(5, 0)).await.unwrap());
    assert_eq!(store.list_keys("a1").await.unwrap()[0].revoked_at, None);
    assert!(store.revoke_key("a1", "k1", at(5, 0)).await.unwrap());
    assert!(store.revoke_key("a1", "k1", at(6, 0)).await.unwrap(), "revoking again answers as done");
    assert_eq!(store.list_keys("a1").await.unwrap()[0].revoked_at, Some(at(5, 0)));
}

pub async fn rotation_revokes_the_old_key_and_stores_the_new(h: &dyn AccountStoreHarness) {
    let store = h.open().await;
    store.create_account(&account("a1", 1)).await.unwrap();
    store.create_account(&account("a2", 1)).await.unwrap();
    store.create_user(&user("u1", "a1", None)).await.unwrap();
    store.create_key(&key("old", "a1", Some("u1"), 1)).await.unwrap();

    assert_eq!(store.rotate_key("old", &key("x", "a2", Some("u1"), 2)).await.unwrap(), Rotated::NotFound);
    assert_eq!(store.rotate_key("nobody", &key("x", "a1", None, 2)).await.unwrap(), Rotated::NotFound);
    assert!(store.find_key("x").await.unwrap().is_none());

    let new = key("new", "a1", Some("u1"), 4);
    assert_eq!(store.rotate_key("old", &new).await.unwrap(), Rotated::Done);
    let old = store.find_key("old").await.unwrap().unwrap();
    assert_eq!(old.info.revoked_at, Some(new.info.created_at), "revoked when its successor was made");
    assert_eq!(store.find_key("new").await.unwrap().unwrap().info, new.info);

    assert_eq!(store.rotate_key("old", &key("newer", "a1", None, 5)).await.unwrap(), Rotated::AlreadyRevoked);
    assert!(store.find_key("newer").await.unwrap().is_none(), "a refused rotation stores nothing");
    assert_eq!(store.list_keys("a1").await.unwrap().len(), 2);
}

pub async fn concurrent_rotations_of_one_key_rotate_once(h: &dyn AccountStoreHarness) {
    // Two stores on one database, as two account processes behind a load balancer.
    let stores = h.open_shared(2).await;
    stores[0].create_account(&account("a1", 1)).await.unwrap();
    stores[0].create_key(&key("old", "a1", None, 1)).await.unwrap();
    let rotations = (0..10).map(|i| {
        let store = stores[i % stores.len()].clone();
        async move { store.rotate_key("old", &key(&format!("new{i}"), "a1", None, 2)).await }
    });
    let outcomes = futures::future::join_all(rotations).await;
    let done = outcomes.iter().filter(|o| matches!(o, Ok(Rotated::Done))).count();
    let refused = outcomes.iter().filter(|o| matches!(o, Ok(Rotated::AlreadyRevoked))).count();
    assert_eq!((done, refused), (1, 9), "{outcomes:?}");
    let live: Vec<_> =
        stores[1].list_keys("a1").await.unwrap().into_iter().filter(|k| k.revoked_at.is_none()).collect();
    assert_eq!(live.len(), 1, "exactly one successor: {live:?}");
}

pub async fn the_first_operator_is_stored_once(h: &dyn AccountStoreHarness) {
    let stores = h.open_shared(2).await;
    let (first, first_hash) = operator(1);
    assert_eq!(stores[0].find_operator(&first.id).await.unwrap(), None);
    let attempts = (0..6).map(|i| {
        let store = stores[i % 2].clone();
        let candidate = if i == 0 { first.clone() } else { operator(2).0 };
        async move { store.create_first_operator(&candidate).await.map(|stored| (stored, candidate.id)) }
    });
    let outcomes: Vec<_> = futures::future::join_all(attempts).await.into_iter().map(Result::unwrap).collect();
    let stored: Vec<_> = outcomes.iter().filter(|(stored, _)| *stored).map(|(_, id)| id.clone()).collect();
    assert_eq!(stored.len(), 1, "{outcomes:?}");
    for (was_stored, id) in &outcomes {
        assert_eq!(stores[1].find_operator(id).await.unwrap().is_some(), *was_stored, "{id}");
    }
    if stored[0] == first.id {
        assert_eq!(stores[1].find_operator(&first.id).await.unwrap(), Some(first_hash));
    }
    assert!(!stores[0].create_first_operator(&operator(3).0).await.unwrap(), "never a second first");
}

pub async fn replacing_operators_revokes_the_earlier_ones(h: &dyn AccountStoreHarness) {
    let store = h.open().await;
    let (first, _) = operator(1);
    store.create_first_operator(&first).await.unwrap();
    let (second, second_hash) = operator(2);
    store.replace_operators(&second).await.unwrap();
    assert_eq!(store.find_operator(&first.id).await.unwrap(), None, "revoked");
    assert_eq!(store.find_operator(&second.id).await.unwrap(), Some(second_hash));
    assert!(!store.create_first_operator(&operator(3).0).await.unwrap());

    // Replacing on an empty store also counts as the first bootstrap.
    let empty = h.open().await;
    let (forced, _) = operator(4);
    empty.replace_operators(&forced).await.unwrap();
    assert!(empty.find_operator(&forced.id).await.unwrap().is_some());
    assert!(!empty.create_first_operator(&operator(5).0).await.unwrap());
}

pub async fn ping_answers(h: &dyn AccountStoreHarness) {
    let store = h.open().await;
    store.ping().await.unwrap();
}
