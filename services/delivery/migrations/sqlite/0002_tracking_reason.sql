-- Why a delivery changed stage, when the change came with one (a closure: Failed or Cancelled).
ALTER TABLE tracking_events ADD COLUMN reason TEXT;
