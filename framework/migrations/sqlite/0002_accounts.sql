-- Accounts: who may call the service, with the two keys requests are signed
-- with (HMAC needs the key itself, so it is kept; it is never logged and
-- only returned to its owner or an admin on request). NULL quotas are
-- unlimited.
CREATE TABLE accounts (
    name              TEXT PRIMARY KEY,
    admin             BIGINT NOT NULL DEFAULT 0,
    primary_key       TEXT NOT NULL,
    secondary_key     TEXT NOT NULL,
    max_stored_bytes  BIGINT,
    max_pending_jobs  BIGINT,
    created_at        BIGINT NOT NULL
);
