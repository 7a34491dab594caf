CREATE TABLE IF NOT EXISTS depots (
    id TEXT PRIMARY KEY NOT NULL,
    name TEXT NOT NULL,
    latitude REAL NOT NULL,
    longitude REAL NOT NULL
);

CREATE TABLE IF NOT EXISTS drones (
    id TEXT PRIMARY KEY NOT NULL,
    depot_id TEXT NOT NULL REFERENCES depots (id),
    max_payload REAL NOT NULL,
    speed_mph REAL NOT NULL,
    -- Unix ms when the current flight ends; the drone is free at or after it.
    busy_until INTEGER NOT NULL DEFAULT 0,
    current_delivery_id TEXT
);
CREATE INDEX IF NOT EXISTS drones_free ON drones (busy_until, max_payload);

CREATE TABLE IF NOT EXISTS assignments (
    delivery_id TEXT PRIMARY KEY NOT NULL,
    -- NULL for a delivery cancelled before any drone was assigned (a fence against a late assignment).
    drone_id TEXT,
    owner_id TEXT NOT NULL,
    depot_id TEXT,
    assigned_at INTEGER NOT NULL,
    traveled_miles REAL NOT NULL,
    assigned_hours REAL NOT NULL,
    busy_until INTEGER NOT NULL,
    released INTEGER NOT NULL DEFAULT 0,
    released_at INTEGER
);
CREATE INDEX IF NOT EXISTS assignments_owner_time ON assignments (owner_id, assigned_at);
