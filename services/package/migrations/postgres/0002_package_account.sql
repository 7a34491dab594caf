-- The account of the delivery request that stored the package; NULL when it came without one
-- (the owner then stands for the account).
ALTER TABLE packages ADD COLUMN account_id TEXT;
