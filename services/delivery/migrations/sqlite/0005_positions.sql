-- Where each delivery's drone last reported itself (its latest DronePosition by `at`). Like the
-- flight, kept whether or not the delivery exists yet.
CREATE TABLE IF NOT EXISTS positions (
    delivery_id TEXT PRIMARY KEY NOT NULL,
    -- The DronePosition document.
    body TEXT NOT NULL,
    at INTEGER NOT NULL
);
