-- The account an id was handed to (from the gateway's identity); NULL when the service ran
-- without an identity policy, and for ids handed out before accounts existed.
ALTER TABLE accepted_deliveries ADD COLUMN account_id TEXT;
