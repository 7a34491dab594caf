-- Times are Unix milliseconds, as in the SQLite schema, so both backends round alike.

-- Every delivery id ingestion handed out, so reschedules and cancels of unknown ids get 404.
CREATE TABLE IF NOT EXISTS accepted_deliveries (
    delivery_id TEXT PRIMARY KEY NOT NULL,
    owner_id TEXT NOT NULL,
    accepted_at BIGINT NOT NULL
);

-- The first response to each Idempotency-Key, replayed for retries within the window.
CREATE TABLE IF NOT EXISTS idempotency_keys (
    scope TEXT NOT NULL,
    key TEXT NOT NULL,
    request_hash TEXT NOT NULL,
    status INTEGER NOT NULL,
    location TEXT,
    body TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (scope, key)
);
-- The purge drops expired keys by age.
CREATE INDEX IF NOT EXISTS idempotency_keys_created ON idempotency_keys (created_at);
