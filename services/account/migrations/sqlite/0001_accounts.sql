-- Times are Unix milliseconds. Secrets are never stored: only the hex SHA-256 of one.
CREATE TABLE IF NOT EXISTS accounts (
    id TEXT PRIMARY KEY NOT NULL,
    name TEXT NOT NULL,
    status TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS users (
    id TEXT PRIMARY KEY NOT NULL,
    account_id TEXT NOT NULL REFERENCES accounts (id),
    name TEXT NOT NULL,
    email TEXT,
    created_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS users_account ON users (account_id, created_at);
CREATE TABLE IF NOT EXISTS api_keys (
    id TEXT PRIMARY KEY NOT NULL,
    account_id TEXT NOT NULL REFERENCES accounts (id),
    user_id TEXT REFERENCES users (id),
    name TEXT,
    secret_sha256 TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    revoked_at INTEGER
);
CREATE INDEX IF NOT EXISTS api_keys_account ON api_keys (account_id, created_at);
CREATE TABLE IF NOT EXISTS operator_tokens (
    id TEXT PRIMARY KEY NOT NULL,
    secret_sha256 TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    revoked_at INTEGER
);
-- One row once the first operator token exists: inserting it is what makes a bootstrap the first.
CREATE TABLE IF NOT EXISTS operator_bootstrap (
    id INTEGER PRIMARY KEY NOT NULL CHECK (id = 1),
    created_at INTEGER NOT NULL
);
