-- Expedited requests that found no free drone (domain::may_take_drone): while any is waiting, a
-- standard request only gets a drone if idle ones outnumber them. Times are Unix milliseconds;
-- a row whose wait has lapsed (waits_until <= now) no longer counts and is swept by the next waiter.
CREATE TABLE IF NOT EXISTS expedited_waiters (
    delivery_id TEXT COLLATE "C" PRIMARY KEY NOT NULL,
    since BIGINT NOT NULL,
    waits_until BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS expedited_waiters_waits_until ON expedited_waiters (waits_until);
