-- A flight re-planned for a rescheduled delivery starts where the drone was (NULL: at its depot,
-- the plan made at assignment), may start with the package on board, carries the miles flown
-- before it, and counts its re-plans (the n-th re-plan's event id ends in n).
ALTER TABLE flights ADD COLUMN origin_latitude REAL;
ALTER TABLE flights ADD COLUMN origin_longitude REAL;
ALTER TABLE flights ADD COLUMN origin_altitude REAL;
ALTER TABLE flights ADD COLUMN carrying BOOLEAN NOT NULL DEFAULT FALSE;
ALTER TABLE flights ADD COLUMN flown_before_miles REAL NOT NULL DEFAULT 0;
ALTER TABLE flights ADD COLUMN replans INTEGER NOT NULL DEFAULT 0;
