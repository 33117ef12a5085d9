//! Pools, their nodes and the work waiting for them.

use sqlx::Row;
use sqlx::any::AnyRow;

use super::{Store, Tx};
use crate::error::Error;
use crate::model::{now_ms, time_from_ms};
use crate::pools::{AutoscaleRun, Pool, PoolNode, PoolSpec};

impl Store {
    /// The rows of the pools `account` sees (its own and the shared ones),
    /// by name, own pools before shared ones of the same name; only those
    /// called `name` if it is given.
    async fn visible_pools(&self, account: &str, name: Option<&str>) -> Result<Vec<AnyRow>, Error> {
        let named = if name.is_some() { " AND name = $2" } else { "" };
        let sql = format!(
            "SELECT id, account, name, shared, created_at, spec, target_nodes, autoscale_run, \
             auto_job FROM pools \
             WHERE (account = $1 OR shared = 1){named} ORDER BY name, shared"
        );
        let mut query = sqlx::query(&sql).bind(account);
        if let Some(name) = name {
            query = query.bind(name);
        }
        Ok(query.fetch_all(&self.read).await?)
    }

    /// The id of the pool `name` as `account` sees it (its own, else a
    /// shared one).
    pub(crate) async fn visible_pool_id(
        &self,
        account: &str,
        name: &str,
    ) -> Result<Option<String>, Error> {
        let rows = self.visible_pools(account, Some(name)).await?;
        Ok(rows.first().map(|r| r.try_get("id")).transpose()?)
    }

    /// The pools `account` sees, as [`Store::visible_pools`] orders them,
    /// with their nodes and work.
    pub(crate) async fn pools(
        &self,
        account: &str,
        name: Option<&str>,
    ) -> Result<Vec<Pool>, Error> {
        let rows = self.visible_pools(account, name).await?;
        let mut pools = Vec::with_capacity(rows.len());
        for row in rows {
            let id: String = row.try_get("id")?;
            let (queued_tasks, running_tasks) = self.pool_work(&id).await?;
            pools.push(Pool {
                nodes: self.pool_nodes(&id).await?,
                queued_tasks,
                running_tasks,
                id,
                name: row.try_get("name")?,
                account: row.try_get("account")?,
                shared: row.try_get::<i64, _>("shared")? != 0,
                created_at: time_from_ms(row.try_get("created_at")?),
                spec: pool_spec(&row)?,
                autoscale_run: row
                    .try_get::<Option<String>, _>("autoscale_run")?
                    .map(|text| serde_json::from_str(&text))
                    .transpose()
                    .map_err(|e| Error::Internal(format!("column autoscale_run: {e}")))?,
                auto_job: row.try_get("auto_job")?,
                join_token: None,
                provider_error: None,
            });
        }
        Ok(pools)
    }

    /// A pool's nodes, oldest registration first.
    pub(crate) async fn pool_nodes(&self, id: &str) -> Result<Vec<PoolNode>, Error> {
        let rows = sqlx::query(
            "SELECT n.id, n.hostname, n.address, n.slots, n.memory_bytes, n.version, n.state, \
             n.reason, n.agent, n.start_task_stdout, n.start_task_stderr, n.registered_at, \
             n.last_seen, \
             (SELECT COUNT(*) FROM tasks t WHERE t.state = 'running' AND t.node = n.id) AS running \
             FROM nodes n WHERE n.pool = $1 ORDER BY n.registered_at, n.id",
        )
        .bind(id)
        .fetch_all(&self.read)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(PoolNode {
                    id: r.try_get("id")?,
                    hostname: r.try_get("hostname")?,
                    address: r.try_get("address")?,
                    slots: r.try_get::<i64, _>("slots")? as u64,
                    memory_bytes: r.try_get::<i64, _>("memory_bytes")? as u64,
                    version: r.try_get("version")?,
                    state: super::parse_column(r, "state")?,
                    reason: r.try_get("reason")?,
                    agent: r.try_get("agent")?,
                    start_task_stdout: r.try_get("start_task_stdout")?,
                    start_task_stderr: r.try_get("start_task_stderr")?,
                    running_tasks: r.try_get::<i64, _>("running")? as u64,
                    registered_at: time_from_ms(r.try_get("registered_at")?),
                    last_seen: time_from_ms(r.try_get("last_seen")?),
                })
            })
            .collect()
    }

    /// Tasks queued on the pool, and tasks running on its nodes (each count
    /// reads only its partial index).
    async fn pool_work(&self, id: &str) -> Result<(u64, u64), Error> {
        let row = sqlx::query(
            "SELECT (SELECT COUNT(*) FROM tasks WHERE pool = $1 AND state = 'queued') AS queued, \
             (SELECT COUNT(*) FROM tasks WHERE state = 'running' \
              AND node IN (SELECT id FROM nodes WHERE pool = $1)) AS running",
        )
        .bind(id)
        .fetch_one(&self.read)
        .await?;
        Ok((
            row.try_get::<i64, _>("queued")? as u64,
            row.try_get::<i64, _>("running")? as u64,
        ))
    }

    /// Creates a pool; `false` if its id or its name in the account is
    /// taken.
    pub(crate) async fn insert_pool(&self, row: &PoolRow<'_>) -> Result<bool, Error> {
        let mut tx = self.begin().await?;
        let created = tx.insert_pool(row).await?;
        tx.commit().await?;
        Ok(created)
    }

    /// Replaces a pool's properties and target.
    pub(crate) async fn set_pool_spec(&self, id: &str, spec: &PoolSpec) -> Result<(), Error> {
        sqlx::query("UPDATE pools SET spec = $2, target_nodes = $3 WHERE id = $1")
            .bind(id)
            .bind(spec_json(spec))
            .bind(i64::from(spec.target_nodes))
            .execute(&self.write)
            .await?;
        Ok(())
    }

    /// Records an autoscale evaluation: its result, and the target it set
    /// (none when it failed).
    pub(crate) async fn set_autoscale_run(
        &self,
        id: &str,
        run: &AutoscaleRun,
        target: Option<u32>,
    ) -> Result<(), Error> {
        sqlx::query(
            "UPDATE pools SET autoscale_run = $2, target_nodes = COALESCE($3, target_nodes) \
             WHERE id = $1",
        )
        .bind(id)
        .bind(serde_json::to_string(run).expect("plain data serialises"))
        .bind(target.map(i64::from))
        .execute(&self.write)
        .await?;
        Ok(())
    }

    /// A pool's owner and properties.
    pub(crate) async fn pool_spec(&self, id: &str) -> Result<Option<(String, PoolSpec)>, Error> {
        let row = sqlx::query("SELECT account, spec, target_nodes FROM pools WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.read)
            .await?;
        row.map(|r| Ok((r.try_get("account")?, pool_spec(&r)?)))
            .transpose()
    }

    /// A pool's task counts now, for its autoscale history: tasks ready to
    /// run, running, and succeeded and failed in its unfinished jobs.
    pub(crate) async fn pool_counts(&self, id: &str) -> Result<[u64; 4], Error> {
        let row = sqlx::query(
            "SELECT (SELECT COUNT(*) FROM tasks WHERE pool = $1 AND state = 'queued') AS active, \
             (SELECT COUNT(*) FROM tasks WHERE state = 'running' AND pool = $1) AS running, \
             (SELECT CAST(COALESCE(SUM(tasks_succeeded), 0) AS BIGINT) FROM jobs \
                 WHERE pool = $1 AND finished_at IS NULL) AS succeeded, \
             (SELECT CAST(COALESCE(SUM(tasks_failed), 0) AS BIGINT) FROM jobs \
                 WHERE pool = $1 AND finished_at IS NULL) AS failed",
        )
        .bind(id)
        .fetch_one(&self.read)
        .await?;
        let n = |c: &str| row.try_get::<i64, _>(c).map(|v| v.max(0) as u64);
        Ok([n("active")?, n("running")?, n("succeeded")?, n("failed")?])
    }

    /// Every pool that has a provider or an autoscale formula, with its
    /// owner and properties (what the pool manager tends).
    pub(crate) async fn managed_pools(&self) -> Result<Vec<ManagedPool>, Error> {
        let rows = sqlx::query(
            "SELECT p.id, p.spec, p.target_nodes, p.auto_job, j.id AS job, j.finished_at \
             FROM pools p LEFT JOIN jobs j ON j.id = p.auto_job \
             WHERE p.spec LIKE '%\"provider\"%' OR p.spec LIKE '%\"autoscale\"%' \
             OR p.auto_job IS NOT NULL",
        )
        .fetch_all(&self.read)
        .await?;
        let mut pools = Vec::with_capacity(rows.len());
        for row in rows {
            let spec = pool_spec(&row)?;
            let auto = row.try_get::<Option<String>, _>("auto_job")?.is_some();
            if spec.provider.is_none() && spec.autoscale.is_none() && !auto {
                continue;
            }
            // The job is inserted with its pool, so one that is missing
            // has been removed.
            let job_over = row.try_get::<Option<String>, _>("job")?.is_none()
                || row.try_get::<Option<i64>, _>("finished_at")?.is_some();
            pools.push(ManagedPool {
                id: row.try_get("id")?,
                spec,
                retired: auto && job_over,
            });
        }
        Ok(pools)
    }

    /// A pool's owner, whether it is shared, and its join token.
    pub(crate) async fn pool_access(
        &self,
        id: &str,
    ) -> Result<Option<(String, bool, String)>, Error> {
        let row = sqlx::query("SELECT account, shared, join_token FROM pools WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.read)
            .await?;
        row.map(|r| {
            Ok((
                r.try_get("account")?,
                r.try_get::<i64, _>("shared")? != 0,
                r.try_get("join_token")?,
            ))
        })
        .transpose()
    }

    /// Replaces a pool's join token.
    pub(crate) async fn set_join_token(&self, id: &str, token: &str) -> Result<(), Error> {
        sqlx::query("UPDATE pools SET join_token = $2 WHERE id = $1")
            .bind(id)
            .bind(token)
            .execute(&self.write)
            .await?;
        Ok(())
    }

    /// The pool a node registered with, if it did.
    pub(crate) async fn node_pool(&self, node: &str) -> Result<Option<String>, Error> {
        let row = sqlx::query("SELECT pool FROM nodes WHERE id = $1")
            .bind(node)
            .fetch_optional(&self.read)
            .await?;
        Ok(row.map(|r| r.try_get("pool")).transpose()?)
    }

    /// Whether `account` may read the file `digest`: it uploaded it, it is
    /// part of one of its applications, or one of its jobs produced it.
    pub(crate) async fn account_may_read(
        &self,
        account: &str,
        digest: &crate::digest::Digest,
    ) -> Result<bool, Error> {
        let row = sqlx::query(
            "SELECT CASE WHEN EXISTS (SELECT 1 FROM files WHERE account = $1 AND digest = $2) \
             OR EXISTS (SELECT 1 FROM app_versions WHERE account = $1 AND \
                 (image_digest = $2 OR assembly_digest = $2 OR splitter_digest = $2 \
                  OR processor_digest = $2)) \
             OR EXISTS (SELECT 1 FROM outputs o JOIN jobs j ON j.id = o.job_id \
                 WHERE o.digest = $2 AND j.account = $1) THEN 1 ELSE 0 END AS readable",
        )
        .bind(account)
        .bind(digest.to_hex())
        .fetch_one(&self.read)
        .await?;
        Ok(row.try_get::<i64, _>("readable")? != 0)
    }

    /// Deletes the pool (its nodes become `offline`) unless it has
    /// unfinished jobs; returns how many it has (0: deleted).
    pub(crate) async fn delete_pool(&self, id: &str) -> Result<u64, Error> {
        let mut tx = self.write.begin().await?;
        // Wait for jobs being added to the pool (they hold its row), so
        // that the count below sees them.
        sqlx::query(&format!(
            "SELECT id FROM pools WHERE id = $1{}",
            self.dialect.for_update()
        ))
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
        let row =
            sqlx::query("SELECT COUNT(*) AS n FROM jobs WHERE pool = $1 AND finished_at IS NULL")
                .bind(id)
                .fetch_one(&mut *tx)
                .await?;
        let unfinished = row.try_get::<i64, _>("n")? as u64;
        if unfinished == 0 {
            sqlx::query("DELETE FROM pools WHERE id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await?;
            sqlx::query("UPDATE nodes SET state = 'offline' WHERE pool = $1")
                .bind(id)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
        }
        Ok(unfinished)
    }
}

impl Tx {
    /// Creates a pool in this transaction; `false` if its id or its name
    /// in the account is taken.
    pub(crate) async fn insert_pool(&mut self, row: &PoolRow<'_>) -> Result<bool, Error> {
        let done = sqlx::query(
            "INSERT INTO pools (id, account, name, shared, created_at, join_token, spec, \
             target_nodes, auto_job) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
             ON CONFLICT DO NOTHING",
        )
        .bind(row.id)
        .bind(row.account)
        .bind(row.name)
        .bind(i64::from(row.shared))
        .bind(now_ms())
        .bind(row.join_token)
        .bind(spec_json(row.spec))
        .bind(i64::from(row.spec.target_nodes))
        .bind(row.auto_job)
        .execute(&mut *self.tx)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Whether a pool with this id exists. Its row stays locked (shared)
    /// until the transaction ends, so that the pool cannot be deleted under
    /// a job being added to it.
    pub(crate) async fn pool_exists(&mut self, id: &str) -> Result<bool, Error> {
        let row = sqlx::query(&format!(
            "SELECT id FROM pools WHERE id = $1{}",
            self.dialect.for_share()
        ))
        .bind(id)
        .fetch_optional(&mut *self.tx)
        .await?;
        Ok(row.is_some())
    }
}

/// A new pool's row.
pub(crate) struct PoolRow<'a> {
    pub id: &'a str,
    pub account: &'a str,
    pub name: &'a str,
    pub shared: bool,
    pub join_token: &'a str,
    pub spec: &'a PoolSpec,
    /// The job it is created for (an auto-pool), removed when that job ends.
    pub auto_job: Option<&'a str>,
}

/// A pool the pool manager tends.
#[derive(Clone, Debug)]
pub(crate) struct ManagedPool {
    pub id: String,
    /// Its properties, `target_nodes` the current target.
    pub spec: PoolSpec,
    /// An auto-pool whose job has ended: its nodes are stopped, then it is
    /// removed.
    pub retired: bool,
}

fn spec_json(spec: &PoolSpec) -> String {
    serde_json::to_string(spec).expect("plain data serialises")
}

/// A pool's properties, with the current target.
fn pool_spec(row: &AnyRow) -> Result<PoolSpec, Error> {
    let text: String = row.try_get("spec")?;
    let mut spec: PoolSpec =
        serde_json::from_str(&text).map_err(|e| Error::Internal(format!("column spec: {e}")))?;
    spec.target_nodes = row.try_get::<i64, _>("target_nodes")? as u32;
    Ok(spec)
}

#[cfg(test)]
mod tests {
    use super::PoolRow;
    use crate::pools::PoolSpec;
    use crate::store::tests::temp_stores;

    fn row<'a>(id: &'a str, account: &'a str, name: &'a str, token: &'a str) -> PoolRow<'a> {
        static SPEC: std::sync::LazyLock<PoolSpec> = std::sync::LazyLock::new(PoolSpec::default);
        PoolRow {
            id,
            account,
            name,
            shared: false,
            join_token: token,
            spec: &SPEC,
            auto_job: None,
        }
    }

    #[tokio::test]
    async fn accounts_see_their_own_pools_and_the_shared_ones() {
        for (_dir, store) in temp_stores().await {
            assert!(
                store
                    .insert_pool(&row("alice/gpu", "alice", "gpu", "t1"))
                    .await
                    .unwrap()
            );
            assert!(
                store
                    .insert_pool(&row("bob/gpu", "bob", "gpu", "t2"))
                    .await
                    .unwrap()
            );
            assert!(
                !store
                    .insert_pool(&row("alice/gpu", "alice", "gpu", "t3"))
                    .await
                    .unwrap()
            );
            let ids = |pools: Vec<crate::pools::Pool>| {
                pools.into_iter().map(|p| p.id).collect::<Vec<_>>()
            };
            assert_eq!(
                ids(store.pools("alice", None).await.unwrap()),
                ["alice/gpu", "local"]
            );
            assert_eq!(
                ids(store.pools("bob", Some("gpu")).await.unwrap()),
                ["bob/gpu"]
            );
            assert_eq!(ids(store.pools("carol", None).await.unwrap()), ["local"]);
            assert!(store.pools("carol", Some("gpu")).await.unwrap().is_empty());
            assert_eq!(store.delete_pool("alice/gpu").await.unwrap(), 0);
            assert_eq!(ids(store.pools("alice", None).await.unwrap()), ["local"]);
        }
    }
}
