-- The account that requested the delivery; NULL when it came without one (the owner then
-- stands for the account). Utilization is counted per account when the caller has one.
ALTER TABLE assignments ADD COLUMN account_id TEXT;
