//! State: the one place that speaks SQL.
//!
//! Everything Tessera must not forget (applications, files, jobs, tasks,
//! attempts, outputs, nodes, accounts, pools) lives in a SQL database reached through
//! `sqlx::AnyPool`, so the same statements serve SQLite (the embedded default)
//! and, later, PostgreSQL. The SQL is kept portable: `$n` placeholders,
//! `BIGINT`/`TEXT`/`REAL` columns, times as milliseconds since the epoch,
//! JSON documents as text, `RETURNING` and row values where both dialects have
//! them.
//!
//! Reads go through [`Store`]. Writes that belong together happen inside a
//! [`Tx`], which the scheduler and the job service drive so that one logical
//! change (a batch of task results and the job transitions they cause)
//! commits atomically and is durable before anyone is told "ok"; a few
//! single-statement writes (creating an account or a pool) are `Store`
//! methods of their own. Each file holds one area: `tx` jobs and tasks,
//! `nodes` nodes and their leases, `pools`, `accounts`, `queries` the
//! reads of jobs, tasks and outputs.

mod accounts;
mod nodes;
mod pools;
mod queries;
mod tx;

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Executor, Row};

pub(crate) use nodes::{Lease, NodeRow, Release};
pub(crate) use pools::{ManagedPool, PoolRow};
pub(crate) use queries::{JobListQuery, TaskListQuery};
pub(crate) use tx::{AttemptRecord, CurrentTask, JobRecord, LeasedTask, NewTask, Tx};

use crate::error::Error;

/// A handle on the state database; cheap to clone.
#[derive(Clone)]
pub(crate) struct Store {
    /// Connections for reads (SQLite in WAL mode lets them run beside a writer).
    read: AnyPool,
    /// The single writer connection: SQLite allows one writer at a time, and
    /// queueing in the pool is cheaper than retrying on `SQLITE_BUSY`.
    write: AnyPool,
}

impl Store {
    /// Opens (creating if needed) the SQLite database at `path` and brings its
    /// schema up to date.
    pub(crate) async fn open_sqlite(path: &Path) -> Result<Self, Error> {
        sqlx::any::install_default_drivers();
        let encoded = path
            .to_string_lossy()
            .replace('%', "%25")
            .replace('?', "%3F")
            .replace('#', "%23");
        let url = format!("sqlite://{encoded}?mode=rwc");
        // WAL lets readers proceed while the writer commits; synchronous=FULL
        // makes every commit durable across power loss, which stays cheap
        // because results are committed in batches.
        // A 64 MiB page cache per connection keeps a job of a million tasks
        // in memory.
        let pragmas = "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; \
                       PRAGMA busy_timeout = 30000; PRAGMA foreign_keys = ON; \
                       PRAGMA cache_size = -65536; PRAGMA temp_store = MEMORY;";
        let connect = |max: u32| {
            AnyPoolOptions::new()
                .max_connections(max)
                .min_connections(1)
                .acquire_timeout(Duration::from_secs(60))
                .after_connect(move |conn, _| {
                    Box::pin(async move {
                        conn.execute(pragmas).await?;
                        Ok(())
                    })
                })
                .connect(&url)
        };
        let write = connect(1).await?;
        sqlx::migrate!("migrations/sqlite").run(&write).await?;
        let read = connect(4).await?;
        Ok(Self { read, write })
    }

    /// Starts a write transaction.
    pub(crate) async fn begin(&self) -> Result<Tx, Error> {
        Ok(Tx::new(self.write.begin().await?))
    }

    /// The service secret called `name`: random bytes made on first use and
    /// kept in the database, so that every replica (and every restart)
    /// shares them.
    pub(crate) async fn secret(&self, name: &str) -> Result<Vec<u8>, Error> {
        let fresh = crate::auth::generate_key();
        sqlx::query(
            "INSERT INTO service_secrets (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
        )
        .bind(name)
        .bind(&fresh)
        .execute(&self.write)
        .await?;
        let row = sqlx::query("SELECT value FROM service_secrets WHERE name = $1")
            .bind(name)
            .fetch_one(&self.write)
            .await?;
        let value: String = row.try_get("value")?;
        crate::auth::decode_key(&value)
            .map_err(|e| Error::Internal(format!("the service secret `{name}` is corrupt: {e}")))
    }

    /// Closes every connection.
    pub(crate) async fn close(&self) {
        self.write.close().await;
        self.read.close().await;
    }
}

/// A stored attempt log: its content address (`None` when empty) and size.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct LogRef {
    pub digest: Option<crate::digest::Digest>,
    pub size: u64,
}

impl LogRef {
    /// The log of an uploaded file, or an empty one.
    pub(crate) fn of(file: Option<&crate::protocol::Uploaded>) -> Self {
        file.map_or_else(Self::default, |f| Self {
            digest: Some(f.digest),
            size: f.size,
        })
    }
}

/// Reads a text column holding an enum's textual form.
fn parse_column<T: FromStr<Err = String>>(row: &AnyRow, column: &str) -> Result<T, Error> {
    let text: String = row.try_get(column)?;
    text.parse()
        .map_err(|e| Error::Internal(format!("column {column}: {e}")))
}

/// Reads an optional text column holding a sha256 digest.
fn parse_digest(row: &AnyRow, column: &str) -> Result<Option<crate::digest::Digest>, Error> {
    let text: Option<String> = row.try_get(column)?;
    text.map(|t| {
        t.parse()
            .map_err(|e| Error::Internal(format!("column {column}: {e}")))
    })
    .transpose()
}

/// Decodes a JSON text column.
fn parse_json<T: serde::de::DeserializeOwned>(row: &AnyRow, column: &str) -> Result<T, Error> {
    let text: String = row.try_get(column)?;
    serde_json::from_str(&text).map_err(|e| Error::Internal(format!("column {column}: {e}")))
}

/// Builds `failure` from the two failure columns.
fn parse_failure(row: &AnyRow) -> Result<Option<crate::model::Failure>, Error> {
    let kind: Option<String> = row.try_get("failure_kind")?;
    let message: Option<String> = row.try_get("failure")?;
    kind.map(|k| {
        Ok(crate::model::Failure {
            kind: k
                .parse()
                .map_err(|e: String| Error::Internal(format!("column failure_kind: {e}")))?,
            message: message.unwrap_or_default(),
        })
    })
    .transpose()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Opens a store in a fresh temporary directory.
    pub(crate) async fn temp_store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_sqlite(&dir.path().join("state.db"))
            .await
            .unwrap();
        (dir, store)
    }

    /// A job of app `app` version 1 of account `acct` on the local pool, in
    /// `state`, with no tasks yet.
    pub(crate) fn job_record(id: &str, state: crate::model::JobState) -> JobRecord {
        JobRecord {
            id: id.into(),
            account: "acct".into(),
            app: "app".into(),
            app_version: 1,
            pool: crate::model::LOCAL_POOL.into(),
            state,
            parameters: "{}".into(),
            inputs: "[]".into(),
            max_task_retries: 1,
            task_timeout_ms: 60_000,
            merge: false,
            has_deps: false,
            task_count: 0,
            counts: Default::default(),
            failure: None,
            created_at: 0,
            finished_at: None,
        }
    }

    #[tokio::test]
    async fn reopening_keeps_the_schema_and_data() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        {
            let store = Store::open_sqlite(&path).await.unwrap();
            let mut tx = store.begin().await.unwrap();
            tx.record_file("acct", &crate::digest::Digest::of(b"x"), 1)
                .await
                .unwrap();
            tx.commit().await.unwrap();
            store.close().await;
        }
        let store = Store::open_sqlite(&path).await.unwrap();
        let missing = store
            .missing_files(
                "acct",
                &[
                    crate::digest::Digest::of(b"x"),
                    crate::digest::Digest::of(b"y"),
                ],
            )
            .await
            .unwrap();
        assert_eq!(missing, vec![crate::digest::Digest::of(b"y")]);
    }
}
