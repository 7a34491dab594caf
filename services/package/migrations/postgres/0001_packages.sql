-- Times are Unix milliseconds, as in the SQLite schema, so both backends round the same way.
CREATE TABLE IF NOT EXISTS packages (
    id TEXT PRIMARY KEY NOT NULL,
    size TEXT NOT NULL,
    weight DOUBLE PRECISION NOT NULL,
    tag TEXT,
    owner_id TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    revision BIGINT NOT NULL DEFAULT 0
);
-- The monthly summary sums one owner's packages by first-stored time.
CREATE INDEX IF NOT EXISTS packages_owner_created ON packages (owner_id, created_at);
