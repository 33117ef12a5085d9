//! State: the one place that speaks SQL.
//!
//! Everything Tessera must not forget (applications, files, jobs, tasks,
//! attempts, outputs, nodes, accounts, pools) lives in a SQL database reached through
//! `sqlx::AnyPool`, so the same statements serve SQLite (the embedded default)
//! and PostgreSQL (for several replicas). The SQL is kept portable: `$n`
//! placeholders, `BIGINT`/`TEXT` columns (flags as 0/1), times as
//! milliseconds since the epoch, JSON documents as text, sums cast to
//! `BIGINT`, `RETURNING` and row values; the few places the dialects differ
//! are [`Dialect`]'s methods, and each has its own migrations folder.
//!
//! Reads go through [`Store`]. Writes that belong together happen inside a
//! [`Tx`], which the scheduler and the job service drive so that one logical
//! change (a batch of task results and the job transitions they cause)
//! commits atomically and is durable before anyone is told "ok"; a few
//! single-statement writes (creating an account or a pool) are `Store`
//! methods of their own. Each file holds one area: `tx` the transaction,
//! files, app versions and jobs, `tasks` tasks, attempts and outputs,
//! `nodes` nodes and their leases, `pools`, `accounts`, `queries` the
//! reads of jobs, tasks and outputs, `dialect` the SQL that differs.

mod accounts;
mod dialect;
mod nodes;
mod pools;
mod queries;
mod tasks;
mod tx;
mod wakeups;

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::migrate::MigrateDatabase;
use sqlx::{AnyPool, Executor, Row};

pub(crate) use dialect::Dialect;

pub(crate) use nodes::{Lease, NodeRow, Release};
pub(crate) use pools::{ManagedPool, PoolRow};
pub(crate) use queries::{JobListQuery, TaskListQuery};
pub(crate) use tasks::{AttemptRecord, CurrentTask, LeasedTask, NewTask};
pub(crate) use tx::{JobRecord, Tx};
pub(crate) use wakeups::Wakeup;

use crate::error::Error;

/// Where the service keeps its state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Database {
    /// A SQLite file (the default: `<data dir>/state.db`).
    Sqlite(PathBuf),
    /// A PostgreSQL database, by its `postgres://` URL; several replicas
    /// may share it.
    Postgres(String),
}

impl Database {
    /// Reads a database location: `postgres://…` or `postgresql://…`,
    /// `sqlite://path`, or a path to a SQLite file.
    pub fn parse(location: &str) -> Result<Self, Error> {
        match location.split_once("://") {
            None if location.is_empty() => {
                Err(Error::Config("the database location is empty".into()))
            }
            None => Ok(Self::Sqlite(PathBuf::from(location))),
            Some(("sqlite", path)) => Ok(Self::Sqlite(PathBuf::from(path))),
            Some(("postgres" | "postgresql", _)) => Ok(Self::Postgres(location.to_string())),
            Some((other, _)) => Err(Error::Config(format!(
                "the database location has the unknown scheme `{other}`: give \
                 postgres://user:password@host/database or a SQLite file's path"
            ))),
        }
    }
}

impl std::fmt::Display for Database {
    /// The location without its password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Sqlite(path) => write!(f, "{}", path.display()),
            Self::Postgres(url) => {
                let (scheme, rest) = url.split_once("://").unwrap_or(("postgres", url));
                let Some((userinfo, host)) = rest.rsplit_once('@') else {
                    return write!(f, "{url}");
                };
                match userinfo.split_once(':') {
                    Some((user, _)) => write!(f, "{scheme}://{user}:***@{host}"),
                    None => write!(f, "{url}"),
                }
            }
        }
    }
}

/// A handle on the state database; cheap to clone.
#[derive(Clone)]
pub(crate) struct Store {
    /// Connections for reads (SQLite in WAL mode lets them run beside a writer).
    read: AnyPool,
    /// The single writer connection of this process: SQLite allows one
    /// writer at a time, and queueing in the pool is cheaper than retrying
    /// on `SQLITE_BUSY`; on PostgreSQL it keeps this replica's transactions
    /// from waiting on each other (replicas are made safe by the
    /// statements themselves: fenced and conditional updates, row locks).
    write: AnyPool,
    dialect: Dialect,
    /// The PostgreSQL URL, for the connection that listens for other
    /// replicas' wake-ups.
    postgres: Option<String>,
}

impl Store {
    /// Opens (creating if needed) the database and brings its schema up
    /// to date.
    pub(crate) async fn open(database: &Database) -> Result<Self, Error> {
        match database {
            Database::Sqlite(path) => Self::open_sqlite(path).await,
            Database::Postgres(url) => Self::open_postgres(url).await,
        }
    }

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
        Ok(Self {
            read,
            write,
            dialect: Dialect::Sqlite,
            postgres: None,
        })
    }

    /// Opens the PostgreSQL database at `url`, creating it if the server
    /// has none of that name, and brings its schema up to date (replicas
    /// starting at once take turns: the migrations hold a lock).
    async fn open_postgres(url: &str) -> Result<Self, Error> {
        sqlx::any::install_default_drivers();
        let unreachable = |e: sqlx::Error| {
            Error::Config(format!(
                "cannot reach the PostgreSQL database {}: {e}; check that the server runs \
                 and that the URL's host, port, user and password are right",
                Database::Postgres(url.to_string())
            ))
        };
        if !sqlx::Postgres::database_exists(url)
            .await
            .map_err(unreachable)?
            && let Err(e) = sqlx::Postgres::create_database(url).await
        {
            // Another replica may have created it first (PostgreSQL says
            // so as duplicate_database, or as a unique violation when both
            // created it at once).
            let duplicate = e
                .as_database_error()
                .and_then(|d| d.code())
                .is_some_and(|code| code == "42P04" || code == "23505");
            if !duplicate {
                return Err(unreachable(e));
            }
        }
        let connect = |max: u32| {
            AnyPoolOptions::new()
                .max_connections(max)
                .min_connections(1)
                .acquire_timeout(Duration::from_secs(60))
                .connect(url)
        };
        let write = connect(1).await.map_err(unreachable)?;
        sqlx::migrate!("migrations/postgres").run(&write).await?;
        let read = connect(4).await?;
        Ok(Self {
            read,
            write,
            dialect: Dialect::Postgres,
            postgres: Some(url.to_string()),
        })
    }

    /// Starts a write transaction.
    pub(crate) async fn begin(&self) -> Result<Tx, Error> {
        Ok(Tx::new(self.write.begin().await?, self.dialect))
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

    /// Whether other replicas may share this database (PostgreSQL; a
    /// SQLite file belongs to one process).
    pub(crate) fn is_shared(&self) -> bool {
        self.dialect == Dialect::Postgres
    }

    /// Takes the service lease `name` for `holder` until `until` (ms), or
    /// renews it if `holder` has it; returns whether `holder` has it now.
    /// Another holder's lease is taken only once it has expired (`now`).
    pub(crate) async fn hold_lease(
        &self,
        name: &str,
        holder: &str,
        now: i64,
        until: i64,
    ) -> Result<bool, Error> {
        let done = sqlx::query(
            "INSERT INTO service_leases (name, holder, expires_at) VALUES ($1, $2, $3) \
             ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, \
             expires_at = excluded.expires_at \
             WHERE service_leases.holder = excluded.holder OR service_leases.expires_at < $4",
        )
        .bind(name)
        .bind(holder)
        .bind(until)
        .bind(now)
        .execute(&self.write)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Gives up the service lease `name` if `holder` has it.
    pub(crate) async fn drop_lease(&self, name: &str, holder: &str) -> Result<(), Error> {
        sqlx::query("DELETE FROM service_leases WHERE name = $1 AND holder = $2")
            .bind(name)
            .bind(holder)
            .execute(&self.write)
            .await?;
        Ok(())
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

    /// A fresh database of every state backend there is to test: SQLite
    /// in a temporary folder always, and a new database on the PostgreSQL
    /// server `TESSERA_TEST_POSTGRES` names (`postgres://user@host:port`),
    /// when it is set (a test says so when it is not).
    pub(crate) fn test_databases() -> Vec<(tempfile::TempDir, Database)> {
        let dir = tempfile::tempdir().unwrap();
        let sqlite = Database::Sqlite(dir.path().join("state.db"));
        let mut out = vec![(dir, sqlite)];
        match std::env::var("TESSERA_TEST_POSTGRES") {
            Ok(server) if !server.is_empty() => {
                let name = format!("tessera_unit_{}", uuid::Uuid::now_v7().simple());
                let url = format!("{}/{name}", server.trim_end_matches('/'));
                out.push((tempfile::tempdir().unwrap(), Database::Postgres(url)));
            }
            _ => eprintln!("SKIPPED on PostgreSQL: TESSERA_TEST_POSTGRES is not set"),
        }
        out
    }

    /// A fresh store of every state backend (see [`test_databases`]).
    pub(crate) async fn temp_stores() -> Vec<(tempfile::TempDir, Store)> {
        let mut out = Vec::new();
        for (dir, database) in test_databases() {
            out.push((dir, Store::open(&database).await.unwrap()));
        }
        out
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
        for (_dir, database) in test_databases() {
            let store = Store::open(&database).await.unwrap();
            let mut tx = store.begin().await.unwrap();
            tx.record_file("acct", &crate::digest::Digest::of(b"x"), 1)
                .await
                .unwrap();
            tx.commit().await.unwrap();
            store.close().await;
            let store = Store::open(&database).await.unwrap();
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

    #[tokio::test]
    async fn a_service_lease_has_one_holder_until_it_expires() {
        for (_dir, store) in temp_stores().await {
            assert!(store.hold_lease("manager", "a", 0, 100).await.unwrap());
            assert!(!store.hold_lease("manager", "b", 50, 150).await.unwrap());
            // Renewed by its holder, taken by another once it expired.
            assert!(store.hold_lease("manager", "a", 90, 200).await.unwrap());
            assert!(!store.hold_lease("manager", "b", 199, 300).await.unwrap());
            assert!(store.hold_lease("manager", "b", 201, 300).await.unwrap());
            assert!(!store.hold_lease("manager", "a", 250, 350).await.unwrap());
            // Given up by its holder only.
            store.drop_lease("manager", "a").await.unwrap();
            assert!(!store.hold_lease("manager", "a", 260, 360).await.unwrap());
            store.drop_lease("manager", "b").await.unwrap();
            assert!(store.hold_lease("manager", "a", 270, 370).await.unwrap());
            // Leases of other names are apart.
            assert!(store.hold_lease("other", "b", 270, 370).await.unwrap());
        }
    }

    #[tokio::test]
    async fn postgres_over_tls_is_encrypted_and_checks_the_servers_certificate() {
        let (Ok(server), Ok(ca)) = (
            std::env::var("TESSERA_TEST_POSTGRES"),
            std::env::var("TESSERA_TEST_POSTGRES_CA"),
        ) else {
            eprintln!(
                "SKIPPED: TESSERA_TEST_POSTGRES and TESSERA_TEST_POSTGRES_CA are not both set"
            );
            return;
        };
        let name = format!("tessera_unit_{}", uuid::Uuid::now_v7().simple());
        let base = format!("{}/{name}", server.trim_end_matches('/'));
        let verified = Database::Postgres(format!("{base}?sslmode=verify-full&sslrootcert={ca}"));
        let store = Store::open(&verified).await.unwrap();
        let row = sqlx::query("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
            .fetch_one(&store.read)
            .await
            .unwrap();
        assert!(
            row.try_get::<bool, _>("ssl").unwrap(),
            "the connection is encrypted"
        );
        store.close().await;

        // The server's own certificate is no CA: nothing it signs is trusted.
        let server_cert = Path::new(&ca).with_file_name("server.crt");
        let wrong = Database::Postgres(format!(
            "{base}?sslmode=verify-full&sslrootcert={}",
            server_cert.display()
        ));
        let err = Store::open(&wrong)
            .await
            .err()
            .expect("an untrusted server is refused");
        assert!(matches!(err, Error::Config(_)), "{err:?}");
        let message = err.to_string();
        assert!(
            message.contains("cannot reach the PostgreSQL database"),
            "{message}"
        );
        assert!(message.contains("certificate"), "{message}");
    }

    #[test]
    fn database_locations_are_read_and_shown_without_passwords() {
        let pg = Database::parse("postgres://tessera:s3cret@db.example:5432/tessera").unwrap();
        assert_eq!(
            pg,
            Database::Postgres("postgres://tessera:s3cret@db.example:5432/tessera".into())
        );
        assert_eq!(
            pg.to_string(),
            "postgres://tessera:***@db.example:5432/tessera"
        );
        assert_eq!(
            Database::parse("postgresql://db/t").unwrap().to_string(),
            "postgresql://db/t"
        );
        assert_eq!(
            Database::parse("sqlite:///var/lib/tessera/state.db").unwrap(),
            Database::Sqlite("/var/lib/tessera/state.db".into())
        );
        assert_eq!(
            Database::parse("state.db").unwrap(),
            Database::Sqlite("state.db".into())
        );
        let e = Database::parse("mysql://db/t").unwrap_err();
        assert_eq!(e.code(), "invalid_config");
        assert!(e.to_string().contains("unknown scheme `mysql`"), "{e}");
        assert!(
            Database::parse("")
                .unwrap_err()
                .to_string()
                .contains("empty")
        );
    }
}
