-- The drone's flight for each delivery (from its DroneAssigned event; the newest by departure,
-- then by the event's time). No reference to deliveries: the drone is assigned, and its event
-- may arrive, before the workflow creates the delivery.
CREATE TABLE IF NOT EXISTS flights (
    delivery_id TEXT PRIMARY KEY NOT NULL,
    -- The Flight document.
    body TEXT NOT NULL,
    departed_at INTEGER NOT NULL,
    observed_at INTEGER NOT NULL
);
