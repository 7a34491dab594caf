-- One row per delivery: its latest finish. `document` is the FinishedDelivery as JSON, kept
-- verbatim so a read returns exactly what the event carried. Times are Unix milliseconds.
CREATE TABLE IF NOT EXISTS finished_deliveries (
    delivery_id TEXT PRIMARY KEY NOT NULL,
    owner_id TEXT NOT NULL,
    stage_rank INTEGER NOT NULL,
    finished_at INTEGER NOT NULL,
    document TEXT NOT NULL,
    revision INTEGER NOT NULL DEFAULT 0
);
-- Listing one owner's history is a range scan in page order.
CREATE INDEX IF NOT EXISTS finished_deliveries_owner_page
    ON finished_deliveries (owner_id, finished_at, delivery_id);
