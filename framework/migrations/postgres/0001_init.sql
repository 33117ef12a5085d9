-- Tessera state, PostgreSQL dialect: the same tables and columns as the
-- SQLite migrations reach (see migrations/sqlite), made in one step.
-- Times are milliseconds since the Unix epoch; JSON documents are TEXT;
-- flags are BIGINT 0/1 so that both dialects read them alike. Text sorts by
-- code point (COLLATE "C"), as in SQLite, so pages and listings come in the
-- same order on both, whatever the database's locale.

CREATE TABLE apps (
    account    TEXT COLLATE "C" NOT NULL,
    name       TEXT COLLATE "C" NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (account, name)
);

CREATE TABLE app_versions (
    account          TEXT COLLATE "C" NOT NULL,
    app              TEXT COLLATE "C" NOT NULL,
    version          BIGINT NOT NULL,
    created_at       BIGINT NOT NULL,
    image_digest     TEXT COLLATE "C",
    image_size       BIGINT NOT NULL,
    assembly_digest  TEXT COLLATE "C" NOT NULL,
    assembly_size    BIGINT NOT NULL,
    splitter_digest  TEXT COLLATE "C" NOT NULL,
    processor_digest TEXT COLLATE "C" NOT NULL,
    parameters       TEXT NOT NULL,
    PRIMARY KEY (account, app, version)
);

CREATE TABLE files (
    account    TEXT COLLATE "C" NOT NULL,
    digest     TEXT COLLATE "C" NOT NULL,
    size       BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (account, digest)
);

CREATE TABLE jobs (
    id               TEXT COLLATE "C" PRIMARY KEY,
    account          TEXT COLLATE "C" NOT NULL,
    app              TEXT COLLATE "C" NOT NULL,
    app_version      BIGINT NOT NULL,
    pool             TEXT COLLATE "C" NOT NULL,
    state            TEXT COLLATE "C" NOT NULL,
    parameters       TEXT NOT NULL,
    inputs           TEXT NOT NULL,
    max_task_retries BIGINT NOT NULL,
    task_timeout_ms  BIGINT NOT NULL,
    merge            BIGINT NOT NULL DEFAULT 0,
    has_deps         BIGINT NOT NULL DEFAULT 0,
    task_count       BIGINT NOT NULL DEFAULT 0,
    -- Tasks (split and merge steps excluded) by state, kept in step with
    -- the tasks table by every statement that moves a task.
    tasks_blocked    BIGINT NOT NULL DEFAULT 0,
    tasks_queued     BIGINT NOT NULL DEFAULT 0,
    tasks_running    BIGINT NOT NULL DEFAULT 0,
    tasks_succeeded  BIGINT NOT NULL DEFAULT 0,
    tasks_failed     BIGINT NOT NULL DEFAULT 0,
    tasks_cancelled  BIGINT NOT NULL DEFAULT 0,
    failure_kind     TEXT COLLATE "C",
    failure          TEXT,
    created_at       BIGINT NOT NULL,
    finished_at      BIGINT
);
CREATE INDEX jobs_by_account ON jobs (account, id);
CREATE INDEX jobs_by_state ON jobs (account, state, id);
CREATE INDEX jobs_pool ON jobs (pool) WHERE finished_at IS NULL;

-- One row per unit of guest work: the split step (seq 0), the job's tasks
-- (seq 1..=n) and the merge step (seq n+1).
CREATE TABLE tasks (
    job_id         TEXT COLLATE "C" NOT NULL,
    seq            BIGINT NOT NULL,
    name           TEXT COLLATE "C" NOT NULL,
    kind           TEXT COLLATE "C" NOT NULL,
    pool           TEXT COLLATE "C" NOT NULL,
    state          TEXT COLLATE "C" NOT NULL,
    parameters     TEXT NOT NULL,
    inputs         TEXT NOT NULL,
    depends_on     TEXT NOT NULL,
    env            TEXT NOT NULL,
    deps_remaining BIGINT NOT NULL DEFAULT 0,
    attempts       BIGINT NOT NULL DEFAULT 0,
    failures       BIGINT NOT NULL DEFAULT 0,
    node           TEXT COLLATE "C",
    progress       DOUBLE PRECISION NOT NULL DEFAULT 0,
    started_at     BIGINT,
    finished_at    BIGINT,
    failure_kind   TEXT COLLATE "C",
    failure        TEXT,
    node_losses    BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (job_id, seq)
);
CREATE UNIQUE INDEX tasks_by_name ON tasks (job_id, name);
-- Only queued tasks are in the queue index and only running ones in the
-- node index, so a task finishing touches neither.
CREATE INDEX tasks_queue ON tasks (pool, job_id, seq) WHERE state = 'queued';
CREATE INDEX tasks_running ON tasks (node) WHERE state = 'running';

CREATE TABLE task_deps (
    job_id  TEXT COLLATE "C" NOT NULL,
    dep_seq BIGINT NOT NULL,
    seq     BIGINT NOT NULL,
    PRIMARY KEY (job_id, dep_seq, seq)
);
CREATE INDEX task_deps_by_task ON task_deps (job_id, seq);

CREATE TABLE attempts (
    job_id        TEXT COLLATE "C" NOT NULL,
    seq           BIGINT NOT NULL,
    attempt       BIGINT NOT NULL,
    node          TEXT COLLATE "C" NOT NULL,
    state         TEXT COLLATE "C" NOT NULL,
    failure_kind  TEXT COLLATE "C",
    failure       TEXT,
    started_at    BIGINT NOT NULL,
    finished_at   BIGINT NOT NULL,
    stdout_digest TEXT COLLATE "C",
    stdout_size   BIGINT NOT NULL,
    stderr_digest TEXT COLLATE "C",
    stderr_size   BIGINT NOT NULL,
    peak_memory   BIGINT NOT NULL,
    wall_us       BIGINT NOT NULL DEFAULT 0,
    cpu_us        BIGINT NOT NULL DEFAULT 0,
    bytes_read    BIGINT NOT NULL DEFAULT 0,
    bytes_written BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (job_id, seq, attempt)
);

CREATE TABLE outputs (
    job_id TEXT COLLATE "C" NOT NULL,
    seq    BIGINT NOT NULL,
    path   TEXT COLLATE "C" NOT NULL,
    digest TEXT COLLATE "C" NOT NULL,
    size   BIGINT NOT NULL,
    kind   TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (job_id, seq, path)
);
-- A node may fetch a file only if its pool's account may read it: outputs
-- are found by content for that check.
CREATE INDEX outputs_by_digest ON outputs (digest);

CREATE TABLE nodes (
    id                TEXT COLLATE "C" PRIMARY KEY,
    pool              TEXT COLLATE "C" NOT NULL,
    hostname          TEXT NOT NULL,
    address           TEXT NOT NULL,
    slots             BIGINT NOT NULL,
    state             TEXT COLLATE "C" NOT NULL,
    registered_at     BIGINT NOT NULL,
    last_seen         BIGINT NOT NULL,
    memory_bytes      BIGINT NOT NULL DEFAULT 0,
    version           TEXT NOT NULL DEFAULT '',
    -- The node provider's handle of the allocation that started the node.
    agent             TEXT COLLATE "C",
    -- Why the node is `unusable` or `start_task_failed`.
    reason            TEXT,
    -- What a node's start task wrote (its last 64 KiB each).
    start_task_stdout TEXT,
    start_task_stderr TEXT
);
CREATE INDEX nodes_pool ON nodes (pool);

-- Accounts: who may call the service, with the two keys requests are signed
-- with. NULL quotas are unlimited.
CREATE TABLE accounts (
    name              TEXT COLLATE "C" PRIMARY KEY,
    admin             BIGINT NOT NULL DEFAULT 0,
    primary_key       TEXT NOT NULL,
    secondary_key     TEXT NOT NULL,
    max_stored_bytes  BIGINT,
    max_pending_jobs  BIGINT,
    created_at        BIGINT NOT NULL,
    max_running_tasks BIGINT
);

-- Pools: named sets of nodes, each owned by an account (see the SQLite
-- migration 0004). Node agents join a pool with its join token.
CREATE TABLE pools (
    id            TEXT COLLATE "C" PRIMARY KEY,
    account       TEXT COLLATE "C" NOT NULL,
    name          TEXT COLLATE "C" NOT NULL,
    shared        BIGINT NOT NULL DEFAULT 0,
    created_at    BIGINT NOT NULL,
    join_token    TEXT NOT NULL DEFAULT '',
    spec          TEXT NOT NULL DEFAULT '{}',
    target_nodes  BIGINT NOT NULL DEFAULT 0,
    autoscale_run TEXT,
    auto_job      TEXT COLLATE "C",
    UNIQUE (account, name)
);
INSERT INTO pools (id, account, name, shared, created_at, join_token)
VALUES ('local', 'admin', 'local', 1, 0,
        encode(sha256(convert_to(gen_random_uuid()::text || gen_random_uuid()::text, 'UTF8')), 'hex'));

-- Secrets the service generates for itself on its first start, shared by
-- every replica.
CREATE TABLE service_secrets (
    name  TEXT COLLATE "C" PRIMARY KEY,
    value TEXT NOT NULL
);
