-- A flight re-planned for a rescheduled delivery starts where the drone was (NULL: at its depot,
-- the plan made at assignment), may start with the package on board, carries the miles flown
-- before it, and counts its re-plans (the n-th re-plan's event id ends in n).
ALTER TABLE flights ADD COLUMN IF NOT EXISTS origin_latitude DOUBLE PRECISION;
ALTER TABLE flights ADD COLUMN IF NOT EXISTS origin_longitude DOUBLE PRECISION;
ALTER TABLE flights ADD COLUMN IF NOT EXISTS origin_altitude DOUBLE PRECISION;
ALTER TABLE flights ADD COLUMN IF NOT EXISTS carrying BOOLEAN NOT NULL DEFAULT FALSE;
ALTER TABLE flights ADD COLUMN IF NOT EXISTS flown_before_miles DOUBLE PRECISION NOT NULL DEFAULT 0;
ALTER TABLE flights ADD COLUMN IF NOT EXISTS replans BIGINT NOT NULL DEFAULT 0;
