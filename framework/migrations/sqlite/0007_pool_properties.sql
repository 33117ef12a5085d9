-- Pool properties (slots per node, memory per slot, node bounds, autoscale
-- formula, start task, provider) as a JSON document, the target node count
-- (changed by resizes and by the formula), and the formula's last result.
ALTER TABLE pools ADD COLUMN spec TEXT NOT NULL DEFAULT '{}';
ALTER TABLE pools ADD COLUMN target_nodes BIGINT NOT NULL DEFAULT 0;
ALTER TABLE pools ADD COLUMN autoscale_run TEXT;
