//! Where accounts, users and credentials live: the [`AccountStore`] port and its backends.

#[doc(hidden)]
pub mod conformance;
mod postgres;
mod sqlite;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

pub use postgres::PostgresAccountStore;
pub use sqlite::SqliteAccountStore;

use crate::domain::{Account, AccountChanges, KeyInfo, NewKey, NewOperator, StoredKey, User};

/// Store errors: the backend failed.
pub type StoreError = sqlx::Error;

/// What became of a rotation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rotated {
    /// The old key is revoked and the new one stored, in one transaction.
    Done,
    /// The account has no such key.
    NotFound,
    /// The key was revoked already (perhaps by a concurrent rotation); nothing changed.
    AlreadyRevoked,
}

/// What became of adding a key or a user to an account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Added {
    Done,
    NoSuchAccount,
    /// A key named a user that is not the account's.
    NoSuchUser,
}

/// The account repository. Every operation is atomic, so any number of account processes may
/// share one database.
#[async_trait]
pub trait AccountStore: Send + Sync {
    async fn create_account(&self, account: &Account) -> Result<(), StoreError>;
    async fn get_account(&self, id: &str) -> Result<Option<Account>, StoreError>;
    /// Every account, oldest first.
    async fn list_accounts(&self) -> Result<Vec<Account>, StoreError>;
    /// The account after the change; `None` when there is no such account.
    async fn update_account(&self, id: &str, changes: &AccountChanges) -> Result<Option<Account>, StoreError>;

    async fn create_user(&self, user: &User) -> Result<Added, StoreError>;
    /// The account's users, oldest first (empty for an unknown account).
    async fn list_users(&self, account_id: &str) -> Result<Vec<User>, StoreError>;

    /// Stores a key of `key.info.account_id` (for `key.info.user_id`, when set, a user of that
    /// account).
    async fn create_key(&self, key: &NewKey) -> Result<Added, StoreError>;
    /// The account's keys, revoked ones included, oldest first.
    async fn list_keys(&self, account_id: &str) -> Result<Vec<KeyInfo>, StoreError>;
    /// A key with its hash and its account's status, for verification.
    async fn find_key(&self, key_id: &str) -> Result<Option<StoredKey>, StoreError>;
    /// Revokes the account's key at `at` (a second revocation keeps the first time); `false`
    /// when the account has no such key.
    async fn revoke_key(&self, account_id: &str, key_id: &str, at: DateTime<Utc>) -> Result<bool, StoreError>;
    /// Revokes `old_key_id` and stores `new` in one transaction: of concurrent rotations of one
    /// key exactly one is `Done`.
    async fn rotate_key(&self, old_key_id: &str, new: &NewKey) -> Result<Rotated, StoreError>;

    /// Stores the first operator token; `false` (nothing stored) when a first one was ever
    /// stored, even by a concurrent call.
    async fn create_first_operator(&self, operator: &NewOperator) -> Result<bool, StoreError>;
    /// Revokes every operator token and stores `operator` (recovery from a lost or leaked one).
    async fn replace_operators(&self, operator: &NewOperator) -> Result<(), StoreError>;
    /// The hash of an unrevoked operator token's secret.
    async fn find_operator(&self, id: &str) -> Result<Option<String>, StoreError>;

    /// `Ok` when the backend answers (readiness).
    async fn ping(&self) -> Result<(), StoreError>;
}

/// Row decoding both backends share.
mod rows {
    use chrono::{DateTime, Utc};
    use platform::clock::from_unix_millis;

    use super::StoreError;
    use crate::domain::{Account, AccountStatus};

    pub fn time(ms: i64) -> DateTime<Utc> {
        from_unix_millis(ms)
    }

    pub fn status(text: &str) -> Result<AccountStatus, StoreError> {
        AccountStatus::parse(text).ok_or_else(|| StoreError::Decode(format!("unknown account status {text:?}").into()))
    }

    pub fn account(id: String, name: String, status_text: &str, created_ms: i64) -> Result<Account, StoreError> {
        Ok(Account { id, name, status: status(status_text)?, created_at: time(created_ms) })
    }
}
