-- Each assignment's flight: where and when its drone flies, how a release before the pickup cut
-- it short, and how many of its drone-events were published (the outbox, kept by state: the
-- events themselves follow from the flight). Times are Unix milliseconds. Assignments made
-- before this migration have no flight: they publish nothing and count as before.
CREATE TABLE IF NOT EXISTS flights (
    delivery_id TEXT PRIMARY KEY NOT NULL,
    drone_id TEXT NOT NULL,
    depot_latitude DOUBLE PRECISION NOT NULL,
    depot_longitude DOUBLE PRECISION NOT NULL,
    pickup_latitude DOUBLE PRECISION NOT NULL,
    pickup_longitude DOUBLE PRECISION NOT NULL,
    pickup_altitude DOUBLE PRECISION NOT NULL,
    dropoff_latitude DOUBLE PRECISION NOT NULL,
    dropoff_longitude DOUBLE PRECISION NOT NULL,
    dropoff_altitude DOUBLE PRECISION NOT NULL,
    speed_mph DOUBLE PRECISION NOT NULL,
    time_scale DOUBLE PRECISION NOT NULL,
    -- The plan, kept as planned after a turn-back.
    departed_at BIGINT NOT NULL,
    pickup_at BIGINT NOT NULL,
    dropoff_at BIGINT NOT NULL,
    back_at BIGINT NOT NULL,
    -- Set when a release before the pickup turned the drone back: when, where, and when it is home.
    turned_at BIGINT,
    turned_latitude DOUBLE PRECISION,
    turned_longitude DOUBLE PRECISION,
    turned_altitude DOUBLE PRECISION,
    home_at BIGINT,
    -- How many of the flight's events (in their fixed order) are published, and when the next one
    -- is due (NULL: none left).
    events_published BIGINT NOT NULL DEFAULT 0,
    next_event_at BIGINT,
    -- The latest time any flight clock claimed the flight at: events due until then may be out, so
    -- a release is never placed before it.
    announced_through BIGINT NOT NULL DEFAULT 0,
    -- The flight clock publishing the flight's events, and until when its claim holds.
    claim_token TEXT,
    claim_expires_at BIGINT,
    -- Bumped by a re-plan, so progress computed from an older plan cannot set the schedule.
    plan_version BIGINT NOT NULL DEFAULT 0
);
-- The flight clock looks for flights whose next event is due; finished flights leave the index.
CREATE INDEX IF NOT EXISTS flights_next_event ON flights (next_event_at) WHERE next_event_at IS NOT NULL;
