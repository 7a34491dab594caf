CREATE TABLE IF NOT EXISTS deliveries (
    id TEXT PRIMARY KEY NOT NULL,
    owner_user_id TEXT NOT NULL,
    -- The Delivery document without its stage.
    body TEXT NOT NULL,
    stage TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS deliveries_owner_created ON deliveries (owner_user_id, created_at);

CREATE TABLE IF NOT EXISTS tracking_events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    delivery_id TEXT NOT NULL REFERENCES deliveries (id),
    stage TEXT NOT NULL,
    location TEXT,
    at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS tracking_events_delivery ON tracking_events (delivery_id, seq);

CREATE TABLE IF NOT EXISTS notify_requests (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    delivery_id TEXT NOT NULL REFERENCES deliveries (id),
    email TEXT,
    sms TEXT,
    created_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS notify_requests_delivery ON notify_requests (delivery_id);

CREATE TABLE IF NOT EXISTS confirmations (
    delivery_id TEXT PRIMARY KEY NOT NULL REFERENCES deliveries (id),
    body TEXT NOT NULL,
    at INTEGER NOT NULL
);
