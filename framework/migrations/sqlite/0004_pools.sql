-- Pools: named sets of nodes, each owned by an account. `id` is what nodes
-- register with and what tasks are queued on: the name of a shared pool
-- (usable by every account), `account/name` otherwise. The service's own
-- pool `local`, served by the embedded node, is shared and the admin's.
CREATE TABLE pools (
    id         TEXT PRIMARY KEY,
    account    TEXT NOT NULL,
    name       TEXT NOT NULL,
    shared     BIGINT NOT NULL DEFAULT 0,
    created_at BIGINT NOT NULL,
    UNIQUE (account, name)
);
INSERT INTO pools (id, account, name, shared, created_at) VALUES ('local', 'admin', 'local', 1, 0);
CREATE INDEX nodes_pool ON nodes (pool);
CREATE INDEX jobs_pool ON jobs (pool) WHERE finished_at IS NULL;
