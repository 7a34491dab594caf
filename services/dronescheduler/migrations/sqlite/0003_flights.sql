-- Each assignment's flight: where and when its drone flies, how a release before the pickup cut
-- it short, and how many of its drone-events were published (the outbox, kept by state: the
-- events themselves follow from the flight). Times are Unix milliseconds. Assignments made
-- before this migration have no flight: they publish nothing and count as before.
CREATE TABLE IF NOT EXISTS flights (
    delivery_id TEXT PRIMARY KEY NOT NULL,
    drone_id TEXT NOT NULL,
    depot_latitude REAL NOT NULL,
    depot_longitude REAL NOT NULL,
    pickup_latitude REAL NOT NULL,
    pickup_longitude REAL NOT NULL,
    pickup_altitude REAL NOT NULL,
    dropoff_latitude REAL NOT NULL,
    dropoff_longitude REAL NOT NULL,
    dropoff_altitude REAL NOT NULL,
    speed_mph REAL NOT NULL,
    time_scale REAL NOT NULL,
    -- The plan, kept as planned after a turn-back.
    departed_at INTEGER NOT NULL,
    pickup_at INTEGER NOT NULL,
    dropoff_at INTEGER NOT NULL,
    back_at INTEGER NOT NULL,
    -- Set when a release before the pickup turned the drone back: when, where, and when it is home.
    turned_at INTEGER,
    turned_latitude REAL,
    turned_longitude REAL,
    turned_altitude REAL,
    home_at INTEGER,
    -- How many of the flight's events (in their fixed order) are published, and when the next one
    -- is due (NULL: none left).
    events_published INTEGER NOT NULL DEFAULT 0,
    next_event_at INTEGER,
    -- The latest time any flight clock claimed the flight at: events due until then may be out, so
    -- a release is never placed before it.
    announced_through INTEGER NOT NULL DEFAULT 0,
    -- The flight clock publishing the flight's events, and until when its claim holds.
    claim_token TEXT,
    claim_expires_at INTEGER,
    -- Bumped by a re-plan, so progress computed from an older plan cannot set the schedule.
    plan_version INTEGER NOT NULL DEFAULT 0
);
-- The flight clock looks for flights whose next event is due; finished flights leave the index.
CREATE INDEX IF NOT EXISTS flights_next_event ON flights (next_event_at) WHERE next_event_at IS NOT NULL;
