-- Real milliseconds between a flight's DronePosition events (0: none), fixed when the flight is
-- planned: the flight's events follow from its row alone. Flights planned before report none.
ALTER TABLE flights ADD COLUMN position_every_ms INTEGER NOT NULL DEFAULT 0;
