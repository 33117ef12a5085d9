-- Node agents join a pool with its join token (shown to the pool's owner,
-- replaced on request). Existing pools get a fresh one.
ALTER TABLE pools ADD COLUMN join_token TEXT NOT NULL DEFAULT '';
UPDATE pools SET join_token = lower(hex(randomblob(32)));
-- A node may fetch a file only if its pool's account may read it: outputs
-- are found by content for that check.
CREATE INDEX outputs_by_digest ON outputs (digest);
