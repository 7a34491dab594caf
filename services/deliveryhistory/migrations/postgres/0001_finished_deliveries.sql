-- As the SQLite schema. Text columns that take part in ordering or in the "which finish wins"
-- comparison use the "C" collation: byte order, the same as SQLite's, whatever the database's
-- locale, so both backends page and pick winners alike.
CREATE TABLE IF NOT EXISTS finished_deliveries (
    delivery_id TEXT COLLATE "C" PRIMARY KEY NOT NULL,
    owner_id TEXT NOT NULL,
    stage_rank INTEGER NOT NULL,
    finished_at BIGINT NOT NULL,
    document TEXT COLLATE "C" NOT NULL,
    revision BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS finished_deliveries_owner_page
    ON finished_deliveries (owner_id, finished_at, delivery_id);
