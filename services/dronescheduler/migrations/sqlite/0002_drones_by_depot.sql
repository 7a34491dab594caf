-- The assignment query looks for each depot's first free drone in id order.
CREATE INDEX IF NOT EXISTS drones_depot ON drones (depot_id, id);
