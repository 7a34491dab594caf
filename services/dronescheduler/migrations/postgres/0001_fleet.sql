-- Times are Unix milliseconds, as in the SQLite schema, so both backends round alike.
-- Drone ids sort bytewise (COLLATE "C"), as in SQLite and Rust, so "the first free drone by id"
-- is the same drone whatever the database's locale.

CREATE TABLE IF NOT EXISTS depots (
    id TEXT COLLATE "C" PRIMARY KEY NOT NULL,
    name TEXT NOT NULL,
    latitude DOUBLE PRECISION NOT NULL,
    longitude DOUBLE PRECISION NOT NULL
);

CREATE TABLE IF NOT EXISTS drones (
    id TEXT COLLATE "C" PRIMARY KEY NOT NULL,
    depot_id TEXT COLLATE "C" NOT NULL REFERENCES depots (id),
    max_payload DOUBLE PRECISION NOT NULL,
    speed_mph DOUBLE PRECISION NOT NULL,
    -- Unix ms when the current flight ends; the drone is free at or after it.
    busy_until BIGINT NOT NULL DEFAULT 0,
    current_delivery_id TEXT
);
-- Assignment looks for each depot's first free drone in id order. busy_until is deliberately not
-- indexed: every assignment rewrites it, and leaving it out keeps those updates HOT.
CREATE INDEX IF NOT EXISTS drones_depot ON drones (depot_id, id);
-- The heaviest payload, asked when no drone could take a package.
CREATE INDEX IF NOT EXISTS drones_max_payload ON drones (max_payload);

CREATE TABLE IF NOT EXISTS assignments (
    delivery_id TEXT PRIMARY KEY NOT NULL,
    -- NULL for a delivery cancelled before any drone was assigned (a fence against a late assignment).
    drone_id TEXT COLLATE "C",
    owner_id TEXT NOT NULL,
    depot_id TEXT COLLATE "C",
    assigned_at BIGINT NOT NULL,
    traveled_miles DOUBLE PRECISION NOT NULL,
    assigned_hours DOUBLE PRECISION NOT NULL,
    busy_until BIGINT NOT NULL,
    released BOOLEAN NOT NULL DEFAULT FALSE,
    released_at BIGINT
);
-- Utilization sums one owner's assignments per month.
CREATE INDEX IF NOT EXISTS assignments_owner_time ON assignments (owner_id, assigned_at);
