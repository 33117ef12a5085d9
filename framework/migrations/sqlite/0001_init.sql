-- Tessera state, SQLite dialect. Tables keyed by a composite primary key
-- are WITHOUT ROWID: the key is the table, one b-tree fewer to write.
-- Times are milliseconds since the Unix epoch;
-- JSON documents are TEXT. Keep statements portable: PostgreSQL gets its own
-- migration folder with the same tables.

CREATE TABLE apps (
    account    TEXT NOT NULL,
    name       TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (account, name)
) WITHOUT ROWID;

CREATE TABLE app_versions (
    account          TEXT NOT NULL,
    app              TEXT NOT NULL,
    version          BIGINT NOT NULL,
    created_at       BIGINT NOT NULL,
    image_digest     TEXT,
    image_size       BIGINT NOT NULL,
    assembly_digest  TEXT NOT NULL,
    assembly_size    BIGINT NOT NULL,
    splitter_digest  TEXT NOT NULL,
    processor_digest TEXT NOT NULL,
    parameters       TEXT NOT NULL,
    PRIMARY KEY (account, app, version)
) WITHOUT ROWID;

CREATE TABLE files (
    account    TEXT NOT NULL,
    digest     TEXT NOT NULL,
    size       BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (account, digest)
) WITHOUT ROWID;

CREATE TABLE jobs (
    id               TEXT PRIMARY KEY,
    account          TEXT NOT NULL,
    app              TEXT NOT NULL,
    app_version      BIGINT NOT NULL,
    pool             TEXT NOT NULL,
    state            TEXT NOT NULL,
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
    failure_kind     TEXT,
    failure          TEXT,
    created_at       BIGINT NOT NULL,
    finished_at      BIGINT
);
CREATE INDEX jobs_by_account ON jobs (account, id);
CREATE INDEX jobs_by_state ON jobs (account, state, id);

-- One row per unit of guest work: the split step (seq 0), the job's tasks
-- (seq 1..=n) and the merge step (seq n+1).
CREATE TABLE tasks (
    job_id         TEXT NOT NULL,
    seq            BIGINT NOT NULL,
    name           TEXT NOT NULL,
    kind           TEXT NOT NULL,
    pool           TEXT NOT NULL,
    state          TEXT NOT NULL,
    parameters     TEXT NOT NULL,
    inputs         TEXT NOT NULL,
    depends_on     TEXT NOT NULL,
    env            TEXT NOT NULL,
    deps_remaining BIGINT NOT NULL DEFAULT 0,
    attempts       BIGINT NOT NULL DEFAULT 0,
    failures       BIGINT NOT NULL DEFAULT 0,
    node           TEXT,
    progress       REAL NOT NULL DEFAULT 0,
    started_at     BIGINT,
    finished_at    BIGINT,
    failure_kind   TEXT,
    failure        TEXT,
    PRIMARY KEY (job_id, seq)
) WITHOUT ROWID;
CREATE UNIQUE INDEX tasks_by_name ON tasks (job_id, name);
-- Only queued tasks are in the queue index and only running ones in the
-- node index, so a task finishing touches neither.
CREATE INDEX tasks_queue ON tasks (pool, job_id, seq) WHERE state = 'queued';
CREATE INDEX tasks_running ON tasks (node) WHERE state = 'running';

CREATE TABLE task_deps (
    job_id  TEXT NOT NULL,
    dep_seq BIGINT NOT NULL,
    seq     BIGINT NOT NULL,
    PRIMARY KEY (job_id, dep_seq, seq)
) WITHOUT ROWID;
CREATE INDEX task_deps_by_task ON task_deps (job_id, seq);

CREATE TABLE attempts (
    job_id        TEXT NOT NULL,
    seq           BIGINT NOT NULL,
    attempt       BIGINT NOT NULL,
    node          TEXT NOT NULL,
    state         TEXT NOT NULL,
    failure_kind  TEXT,
    failure       TEXT,
    started_at    BIGINT NOT NULL,
    finished_at   BIGINT NOT NULL,
    stdout_digest TEXT,
    stdout_size   BIGINT NOT NULL,
    stderr_digest TEXT,
    stderr_size   BIGINT NOT NULL,
    peak_memory   BIGINT NOT NULL,
    PRIMARY KEY (job_id, seq, attempt)
) WITHOUT ROWID;

CREATE TABLE outputs (
    job_id TEXT NOT NULL,
    seq    BIGINT NOT NULL,
    path   TEXT NOT NULL,
    digest TEXT NOT NULL,
    size   BIGINT NOT NULL,
    kind   TEXT NOT NULL,
    PRIMARY KEY (job_id, seq, path)
) WITHOUT ROWID;

CREATE TABLE nodes (
    id            TEXT PRIMARY KEY,
    pool          TEXT NOT NULL,
    hostname      TEXT NOT NULL,
    address       TEXT NOT NULL,
    slots         BIGINT NOT NULL,
    state         TEXT NOT NULL,
    registered_at BIGINT NOT NULL,
    last_seen     BIGINT NOT NULL
);
