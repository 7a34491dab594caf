//! Times are stored as Unix milliseconds (`BIGINT`), like the SQLite backend, so both round alike.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use platform::clock::unix_millis;
use sqlx::Row;
use sqlx::postgres::{PgPool, PgRow};

use super::{AccountStore, Added, Rotated, StoreError, rows};
use crate::domain::{Account, AccountChanges, KeyInfo, NewKey, NewOperator, StoredKey, User};

/// Connections per process; every operation is a short statement or transaction.
const POOL_SIZE: u32 = 8;

/// Accounts in a PostgreSQL database shared by any number of account processes.
///
/// Atomicity comes from PostgreSQL: single statements, or a transaction whose first write
/// takes the row lock a concurrent one waits on (rotation), never from process-local locks.
pub struct PostgresAccountStore {
    pool: PgPool,
}

impl PostgresAccountStore {
    /// Connects (waiting for the server to come up) and brings the schema up to date.
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        let pool = platform::postgres::open_pool(url, POOL_SIZE).await?;
        let mut migrator = sqlx::migrate!("./migrations/postgres");
        // Our own bookkeeping table, so services sharing one schema do not read each other's
        // migration history as a modified one.
        migrator.dangerous_set_table_name("_sqlx_migrations_account");
        migrator.run(&pool).await?;
        Ok(Self { pool })
    }
}

fn account(row: &PgRow) -> Result<Account, StoreError> {
    rows::account(row.try_get(0)?, row.try_get(1)?, &row.try_get::<String, _>(2)?, row.try_get(3)?)
}

fn user(row: &PgRow) -> Result<User, StoreError> {
    Ok(User {
        id: row.try_get(0)?,
        account_id: row.try_get(1)?,
        name: row.try_get(2)?,
        email: row.try_get(3)?,
        created_at: rows::time(row.try_get(4)?),
    })
}

fn key_info(row: &PgRow) -> Result<KeyInfo, StoreError> {
    Ok(KeyInfo {
        key_id: row.try_get(0)?,
        account_id: row.try_get(1)?,
        user_id: row.try_get(2)?,
        name: row.try_get(3)?,
        created_at: rows::time(row.try_get(4)?),
        revoked_at: row.try_get::<Option<i64>, _>(5)?.map(rows::time),
    })
}

#[async_trait]
impl AccountStore for PostgresAccountStore {
    async fn create_account(&self, a: &Account) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO accounts (id, name, status, created_at) VALUES ($1, $2, $3, $4)")
            .bind(&a.id)
            .bind(&a.name)
            .bind(a.status.as_str())
            .bind(unix_millis(a.created_at))
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn get_account(&self, id: &str) -> Result<Option<Account>, StoreError> {
        let row = sqlx::query("SELECT id, name, status, created_at FROM accounts WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(account).transpose()
    }

    async fn list_accounts(&self) -> Result<Vec<Account>, StoreError> {
        let rows = sqlx::query("SELECT id, name, status, created_at FROM accounts ORDER BY created_at, id")
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(account).collect()
    }

    async fn update_account(&self, id: &str, changes: &AccountChanges) -> Result<Option<Account>, StoreError> {
        let row = sqlx::query(
            "UPDATE accounts SET name = COALESCE($1, name), status = COALESCE($2, status) WHERE id = $3
             RETURNING id, name, status, created_at",
        )
        .bind(&changes.name)
        .bind(changes.status.map(|s| s.as_str()))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(account).transpose()
    }

    async fn create_user(&self, u: &User) -> Result<Added, StoreError> {
        // Accounts are never deleted, so the account found here still exists at the insert.
        if self.get_account(&u.account_id).await?.is_none() {
            return Ok(Added::NoSuchAccount);
        }
        sqlx::query("INSERT INTO users (id, account_id, name, email, created_at) VALUES ($1, $2, $3, $4, $5)")
            .bind(&u.id)
            .bind(&u.account_id)
            .bind(&u.name)
            .bind(&u.email)
            .bind(unix_millis(u.created_at))
            .execute(&self.pool)
            .await?;
        Ok(Added::Done)
    }

    async fn list_users(&self, account_id: &str) -> Result<Vec<User>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, account_id, name, email, created_at FROM users WHERE account_id = $1 ORDER BY created_at, id",
        )
        .bind(account_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(user).collect()
    }

    async fn create_key(&self, key: &NewKey) -> Result<Added, StoreError> {
        if self.get_account(&key.info.account_id).await?.is_none() {
            return Ok(Added::NoSuchAccount);
        }
        if let Some(user_id) = &key.info.user_id {
            let found: Option<i32> = sqlx::query_scalar("SELECT 1 FROM users WHERE id = $1 AND account_id = $2")
                .bind(user_id)
                .bind(&key.info.account_id)
                .fetch_optional(&self.pool)
                .await?;
            if found.is_none() {
                return Ok(Added::NoSuchUser);
            }
        }
        insert_key(&self.pool, key).await?;
        Ok(Added::Done)
    }

    async fn list_keys(&self, account_id: &str) -> Result<Vec<KeyInfo>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, account_id, user_id, name, created_at, revoked_at FROM api_keys
             WHERE account_id = $1 ORDER BY created_at, id",
        )
        .bind(account_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(key_info).collect()
    }

    async fn find_key(&self, key_id: &str) -> Result<Option<StoredKey>, StoreError> {
        let row = sqlx::query(
            "SELECT k.id, k.account_id, k.user_id, k.name, k.created_at, k.revoked_at, k.secret_sha256, a.status
             FROM api_keys k JOIN accounts a ON a.id = k.account_id WHERE k.id = $1",
        )
        .bind(key_id)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        Ok(Some(StoredKey {
            info: key_info(&row)?,
            secret_sha256: row.try_get(6)?,
            account_status: rows::status(&row.try_get::<String, _>(7)?)?,
        }))
    }

    async fn revoke_key(&self, account_id: &str, key_id: &str, at: DateTime<Utc>) -> Result<bool, StoreError> {
        let result =
            sqlx::query("UPDATE api_keys SET revoked_at = COALESCE(revoked_at, $1) WHERE id = $2 AND account_id = $3")
                .bind(unix_millis(at))
                .bind(key_id)
                .bind(account_id)
                .execute(&self.pool)
                .await?;
        Ok(result.rows_affected() == 1)
    }

    async fn rotate_key(&self, old_key_id: &str, new: &NewKey) -> Result<Rotated, StoreError> {
        let mut tx = self.pool.begin().await?;
        let revoked =
            sqlx::query("UPDATE api_keys SET revoked_at = $1 WHERE id = $2 AND account_id = $3 AND revoked_at IS NULL")
                .bind(unix_millis(new.info.created_at))
                .bind(old_key_id)
                .bind(&new.info.account_id)
                .execute(&mut *tx)
                .await?;
        if revoked.rows_affected() == 0 {
            let exists: Option<i32> = sqlx::query_scalar("SELECT 1 FROM api_keys WHERE id = $1 AND account_id = $2")
                .bind(old_key_id)
                .bind(&new.info.account_id)
                .fetch_optional(&mut *tx)
                .await?;
            return Ok(if exists.is_some() { Rotated::AlreadyRevoked } else { Rotated::NotFound });
        }
        insert_key(&mut *tx, new).await?;
        tx.commit().await?;
        Ok(Rotated::Done)
    }

    async fn create_first_operator(&self, operator: &NewOperator) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        let first =
            sqlx::query("INSERT INTO operator_bootstrap (id, created_at) VALUES (1, $1) ON CONFLICT DO NOTHING")
                .bind(unix_millis(operator.created_at))
                .execute(&mut *tx)
                .await?;
        if first.rows_affected() == 0 {
            return Ok(false);
        }
        insert_operator(&mut *tx, operator).await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn replace_operators(&self, operator: &NewOperator) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        let at = unix_millis(operator.created_at);
        sqlx::query("INSERT INTO operator_bootstrap (id, created_at) VALUES (1, $1) ON CONFLICT DO NOTHING")
            .bind(at)
            .execute(&mut *tx)
            .await?;
        sqlx::query("UPDATE operator_tokens SET revoked_at = $1 WHERE revoked_at IS NULL")
            .bind(at)
            .execute(&mut *tx)
            .await?;
        insert_operator(&mut *tx, operator).await?;
        tx.commit().await
    }

    async fn find_operator(&self, id: &str) -> Result<Option<String>, StoreError> {
        sqlx::query_scalar("SELECT secret_sha256 FROM operator_tokens WHERE id = $1 AND revoked_at IS NULL")
            .bind(id)
            .fetch_optional(&self.pool)
            .await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await.map(|_| ())
    }
}

async fn insert_key<'e>(executor: impl sqlx::PgExecutor<'e>, key: &NewKey) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO api_keys (id, account_id, user_id, name, secret_sha256, created_at)
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(&key.info.key_id)
    .bind(&key.info.account_id)
    .bind(&key.info.user_id)
    .bind(&key.info.name)
    .bind(&key.secret_sha256)
    .bind(unix_millis(key.info.created_at))
    .execute(executor)
    .await?;
    Ok(())
}

async fn insert_operator<'e>(executor: impl sqlx::PgExecutor<'e>, operator: &NewOperator) -> Result<(), StoreError> {
    sqlx::query("INSERT INTO operator_tokens (id, secret_sha256, created_at) VALUES ($1, $2, $3)")
        .bind(&operator.id)
        .bind(&operator.secret_sha256)
        .bind(unix_millis(operator.created_at))
        .execute(executor)
        .await?;
    Ok(())
}
