-- Node agents on other machines: what a node offers and who started it,
-- node states as the node life cycle names them, how often a task lost its
-- node, what each attempt used, and the service's own secrets.
ALTER TABLE nodes ADD COLUMN memory_bytes BIGINT NOT NULL DEFAULT 0;
ALTER TABLE nodes ADD COLUMN version TEXT NOT NULL DEFAULT '';
-- The node provider's handle of the allocation that started the node.
ALTER TABLE nodes ADD COLUMN agent TEXT;
-- Why the node is `unusable` or `start_task_failed`.
ALTER TABLE nodes ADD COLUMN reason TEXT;
UPDATE nodes SET state = 'running' WHERE state = 'busy';
UPDATE nodes SET state = 'offline' WHERE state = 'removed';

-- Node losses do not count as failed attempts, but they are bounded.
ALTER TABLE tasks ADD COLUMN node_losses BIGINT NOT NULL DEFAULT 0;

ALTER TABLE attempts ADD COLUMN wall_us BIGINT NOT NULL DEFAULT 0;
ALTER TABLE attempts ADD COLUMN cpu_us BIGINT NOT NULL DEFAULT 0;
ALTER TABLE attempts ADD COLUMN bytes_read BIGINT NOT NULL DEFAULT 0;
ALTER TABLE attempts ADD COLUMN bytes_written BIGINT NOT NULL DEFAULT 0;

-- Secrets the service generates for itself on its first start (the key
-- that signs upload receipts), shared by every replica.
CREATE TABLE service_secrets (
    name  TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
