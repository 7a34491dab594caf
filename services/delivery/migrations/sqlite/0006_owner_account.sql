-- The account of each delivery's owner (the body's owner.accountId), in a column of its own so
-- the monthly summary can count one account's deliveries through an index. Rows from before
-- take it from their body; a body without one (none is expected: the field is required) falls
-- back to the user, as the workflow does when a request has no account.
ALTER TABLE deliveries ADD COLUMN owner_account_id TEXT;
UPDATE deliveries SET owner_account_id = COALESCE(json_extract(body, '$.owner.accountId'), owner_user_id);
CREATE INDEX IF NOT EXISTS deliveries_owner_account_created
    ON deliveries (owner_user_id, owner_account_id, created_at);
