-- The notification outbox: one row per notification id ({deliveryId}:{eventType}:{channel}:{n}),
-- pending until sent or given up (failed). No reference to deliveries: a record is about an
-- event that happened, whatever becomes of the delivery afterwards.
CREATE TABLE IF NOT EXISTS notifications (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    delivery_id TEXT NOT NULL,
    -- The Notification document: event, channel, recipient, text.
    body TEXT NOT NULL,
    -- pending | sent | failed
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    sent_at INTEGER
);
CREATE INDEX IF NOT EXISTS notifications_delivery ON notifications (delivery_id, seq);
