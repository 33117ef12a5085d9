//! Pools: named sets of nodes that run jobs' tasks.
//!
//! A pool belongs to the account that created it and is invisible to every
//! other account, unless it is **shared**: an admin's pool that every
//! account may submit jobs to. The service's own pool [`LOCAL_POOL`], served
//! by the embedded node, is shared. A pool's **id** is what its nodes
//! register with and its tasks are queued on: the name of a shared pool,
//! `account/name` otherwise, so that two accounts may both have a pool
//! called `gpu`.
//!
//! A pool's properties ([`PoolSpec`], in [`spec`]) say how large its nodes
//! are, how many it should have, what each node runs first, and who starts
//! them. Only admins give a pool a `slurm` or `command` provider (they run
//! programs of the service's machine); any account may use `local`.

pub(crate) mod manager;
mod spec;

pub use spec::{AutoscaleSpec, PoolChange, PoolSpec, ProviderSpec, StartTask};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::accounts::{Caller, check_name};
use crate::digest::Digest;
use crate::error::Error;
use crate::model::{LOCAL_POOL, NodeState};
use crate::protocol::NodeError;
use crate::service::Service;
use crate::store::PoolRow;

/// A pool, as the API shows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Pool {
    /// What its nodes register with.
    pub id: String,
    /// Its name, unique among its account's pools.
    pub name: String,
    /// The account that owns it.
    pub account: String,
    /// Whether every account may run jobs on it.
    pub shared: bool,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// Its registered nodes (those removed are left out).
    pub nodes: Vec<PoolNode>,
    /// Tasks waiting for one of its nodes.
    pub queued_tasks: u64,
    /// Tasks running on (or leased to) its nodes.
    pub running_tasks: u64,
    /// Its properties; `target_nodes` is its current target.
    pub spec: PoolSpec,
    /// Its autoscale formula's last evaluation.
    #[serde(default)]
    pub autoscale_run: Option<AutoscaleRun>,
    /// Why its provider's last call failed, if it did.
    #[serde(default)]
    pub provider_error: Option<String>,
    /// The job it was created for (an auto-pool): it is removed, and its
    /// nodes stopped, once that job has ended.
    #[serde(default)]
    pub auto_job: Option<String>,
    /// The token node agents join it with: given to its owner when the
    /// pool is created and when the token is shown or replaced, never in
    /// listings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub join_token: Option<String>,
}

/// A node of a pool.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolNode {
    /// The node's id (unique to one registration of an agent).
    pub id: String,
    /// The machine it runs on.
    pub hostname: String,
    /// Where it can be reached, for operators.
    pub address: String,
    /// Its task slots.
    pub slots: u64,
    /// The memory it offers its tasks, in bytes.
    pub memory_bytes: u64,
    /// The Tessera version it runs.
    pub version: String,
    /// Where it is in its life.
    pub state: NodeState,
    /// Why it is `unusable` or `start_task_failed`.
    pub reason: Option<String>,
    /// The handle of the provider's allocation that started it, if one did.
    #[serde(default)]
    pub agent: Option<String>,
    /// What its start task wrote to stdout (the end of it), if it ran one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_task_stdout: Option<String>,
    /// What its start task wrote to stderr (the end of it), if it ran one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_task_stderr: Option<String>,
    /// Tasks running on it (or leased to it).
    pub running_tasks: u64,
    /// When it registered.
    pub registered_at: DateTime<Utc>,
    /// When it was last heard from (its last heartbeat).
    pub last_seen: DateTime<Utc>,
}

impl PoolNode {
    /// Whether it is still part of the pool (not offline).
    pub fn is_live(&self) -> bool {
        self.state.is_live()
    }
}

/// A request to create a pool.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewPool {
    /// Its name.
    pub name: String,
    /// Whether every account may run jobs on it (admins only).
    #[serde(default)]
    pub shared: bool,
    /// Its properties.
    #[serde(default)]
    pub spec: PoolSpec,
}

/// One evaluation of a pool's autoscale formula, as the pool shows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AutoscaleRun {
    /// When it ran.
    pub at: DateTime<Utc>,
    /// The target it computed (before the pool's bounds), if it worked.
    pub target_nodes: Option<u32>,
    /// The deallocation option it chose, if it worked.
    pub deallocation: Option<crate::autoscale::DeallocationOption>,
    /// Every variable's value, by name.
    pub variables: std::collections::BTreeMap<String, serde_json::Value>,
    /// Why it failed, if it did (the pool kept its target).
    pub error: Option<String>,
}

impl AutoscaleRun {
    /// The run of a formula evaluation that ended as `result`.
    pub fn of(
        result: Result<crate::autoscale::Evaluation, crate::autoscale::EvalError>,
        at: DateTime<Utc>,
    ) -> Self {
        match result {
            Ok(e) => Self {
                at,
                target_nodes: Some(e.target_nodes),
                deallocation: Some(e.deallocation),
                variables: e
                    .variables
                    .iter()
                    .map(|(k, v)| {
                        let value = serde_json::to_value(v).unwrap_or(serde_json::Value::Null);
                        (k.clone(), value)
                    })
                    .collect(),
                error: None,
            },
            Err(e) => Self {
                at,
                target_nodes: None,
                deallocation: None,
                variables: Default::default(),
                error: Some(e.to_string()),
            },
        }
    }
}

/// A pool as a node agent authenticated for it sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodePool {
    /// Its id.
    pub id: String,
    /// Its owner.
    pub account: String,
    /// Whether every account's jobs run on it.
    pub shared: bool,
}

/// A fresh join token: 32 random bytes in hex.
fn join_token() -> String {
    let mut bytes = [0u8; 32];
    getrandom::getrandom(&mut bytes).expect("the system has a random source");
    hex::encode(bytes)
}

/// The id of `account`'s pool `name`.
pub(crate) fn pool_id(account: &str, name: &str, shared: bool) -> String {
    if shared {
        name.to_owned()
    } else {
        format!("{account}/{name}")
    }
}

/// A pool to be created with the job it serves.
pub(crate) struct AutoPool {
    pub id: String,
    pub name: String,
    pub join_token: String,
    pub spec: PoolSpec,
}

/// The name of the pool with id `id`.
pub(crate) fn pool_name(id: &str) -> &str {
    id.rsplit('/').next().unwrap_or(id)
}

impl Service {
    /// Creates a pool owned by the caller; only admins create shared pools.
    pub async fn create_pool(&self, caller: &Caller, request: NewPool) -> Result<Pool, Error> {
        check_name("pool", &request.name)?;
        if request.shared {
            Self::require_admin(caller, "create shared pools")?;
        }
        self.check_spec(caller, &request.spec).await?;
        let id = pool_id(&caller.account, &request.name, request.shared);
        let token = join_token();
        let created = self
            .inner
            .store
            .insert_pool(&PoolRow {
                id: &id,
                account: &caller.account,
                name: &request.name,
                shared: request.shared,
                join_token: &token,
                spec: &request.spec,
                auto_job: None,
            })
            .await?;
        if !created {
            return Err(Error::Conflict(format!(
                "a pool named `{}` already exists; pick another name",
                request.name
            )));
        }
        tracing::info!(pool = %id, by = %caller.account, "pool created");
        let mut pool = self.pool(&caller.account, &request.name).await?;
        pool.join_token = Some(token);
        Ok(pool)
    }

    /// The pool a job `job` of the caller asks to have made for it, its
    /// properties checked as for `create_pool`.
    pub(crate) async fn auto_pool(
        &self,
        caller: &Caller,
        job: &str,
        spec: PoolSpec,
    ) -> Result<AutoPool, Error> {
        self.check_spec(caller, &spec).await.map_err(|e| match e {
            Error::Invalid(why) => Error::Invalid(format!("auto_pool: {why}")),
            other => other,
        })?;
        let name = format!("auto-{job}");
        Ok(AutoPool {
            id: pool_id(&caller.account, &name, false),
            name,
            join_token: join_token(),
            spec,
        })
    }

    /// Changes some of one of the caller's pools' properties.
    pub async fn update_pool(
        &self,
        caller: &Caller,
        name: &str,
        change: &PoolChange,
    ) -> Result<Pool, Error> {
        let pool = self.owned_pool(caller, name, "change it").await?;
        if pool.id == LOCAL_POOL && change.provider.is_some() {
            return Err(Error::Conflict(format!(
                "`{LOCAL_POOL}` is served by the service's embedded node; it takes no provider"
            )));
        }
        let spec = pool.spec.changed(change);
        self.check_spec(caller, &spec).await?;
        self.inner.store.set_pool_spec(&pool.id, &spec).await?;
        tracing::info!(pool = %pool.id, by = %caller.account, "pool changed");
        self.pool(&caller.account, name).await
    }

    /// Sets the target node count of one of the caller's pools (not of a
    /// pool its autoscale formula sizes).
    pub async fn resize_pool(
        &self,
        caller: &Caller,
        name: &str,
        target: u32,
    ) -> Result<Pool, Error> {
        let pool = self.owned_pool(caller, name, "resize it").await?;
        if pool.spec.autoscale.is_some() {
            return Err(Error::Conflict(format!(
                "the pool `{name}` is sized by its autoscale formula; remove the formula first (`tessera pool update {name} --no-autoscale`)"
            )));
        }
        let spec = PoolSpec {
            target_nodes: target,
            ..pool.spec
        };
        spec.check()?;
        self.inner.store.set_pool_spec(&pool.id, &spec).await?;
        tracing::info!(pool = %pool.id, target, by = %caller.account, "pool resized");
        self.pool(&caller.account, name).await
    }

    /// Checks a pool's properties: on their own, then against the caller:
    /// only admins run programs of the service's machine (`slurm` and
    /// `command` providers), and a start task names the caller's own
    /// application or upload.
    async fn check_spec(&self, caller: &Caller, spec: &PoolSpec) -> Result<(), Error> {
        spec.check()?;
        if let Some(provider @ (ProviderSpec::Slurm { .. } | ProviderSpec::Command { .. })) =
            &spec.provider
        {
            Self::require_admin(
                caller,
                &format!("give a pool the `{}` provider", provider.kind()),
            )?;
        }
        if let Some(task) = &spec.start_task {
            if let Some(app) = &task.app {
                self.app_version(&caller.account, app, task.version).await?;
            }
            if let Some(image) = &task.image {
                self.uploaded_size(&caller.account, image, "the start task's image")
                    .await?;
            }
        }
        Ok(())
    }

    /// One of the caller's pools with its join token, after replacing the
    /// token if `regenerate` (the old one is refused from then on, by
    /// every node that uses it). Only the pool's owner sees its token.
    pub async fn join_token(
        &self,
        caller: &Caller,
        name: &str,
        regenerate: bool,
    ) -> Result<Pool, Error> {
        let mut pool = self
            .owned_pool(caller, name, "see or replace its join token")
            .await?;
        let token = if regenerate {
            let token = join_token();
            self.inner.store.set_join_token(&pool.id, &token).await?;
            tracing::info!(pool = %pool.id, by = %caller.account, "join token regenerated");
            token
        } else {
            self.inner
                .store
                .pool_access(&pool.id)
                .await?
                .map(|(_, _, token)| token)
                .ok_or_else(|| Error::not_found("pool", name))?
        };
        pool.join_token = Some(token);
        Ok(pool)
    }

    /// One of the caller's own pools (a shared pool is its owner's).
    async fn owned_pool(&self, caller: &Caller, name: &str, to: &str) -> Result<Pool, Error> {
        let pool = self.pool(&caller.account, name).await?;
        if pool.account != caller.account {
            return Err(Error::Forbidden(format!(
                "the shared pool `{name}` belongs to `{}`; only its owner may {to}",
                pool.account
            )));
        }
        Ok(pool)
    }

    /// Checks a node agent's credentials: `pool_id` exists and `token` is
    /// its join token.
    pub async fn authenticate_node(
        &self,
        pool_id: &str,
        token: &str,
    ) -> Result<NodePool, NodeError> {
        let Some((account, shared, expected)) = self.inner.store.pool_access(pool_id).await? else {
            return Err(NodeError::PoolGone(pool_id.to_owned()));
        };
        let same = expected.len() == token.len()
            && expected
                .bytes()
                .zip(token.bytes())
                .fold(0u8, |d, (a, b)| d | (a ^ b))
                == 0;
        if !same {
            return Err(NodeError::TokenRefused(format!(
                "it is not the join token of pool `{pool_id}` (wrong, or replaced with `tessera pool token NAME --regenerate`); start the agent with the pool's current token"
            )));
        }
        Ok(NodePool {
            id: pool_id.to_owned(),
            account,
            shared,
        })
    }

    /// Checks that the node `node_id`, calling with `key`, is one of
    /// `pool`'s. Another pool's node is as unknown as a node that never
    /// registered.
    pub async fn authenticate_pool_node(
        &self,
        pool: &NodePool,
        node_id: &str,
        key: &str,
    ) -> Result<(), NodeError> {
        let registered = self.inner.store.node_pool(node_id).await?;
        if registered.as_deref() != Some(pool.id.as_str())
            || !self.inner.scheduler.check_node_key(node_id, key)
        {
            return Err(NodeError::UnknownNode(node_id.to_owned()));
        }
        Ok(())
    }

    /// Whether a node of `pool` may fetch the file `digest`: a shared
    /// pool's nodes run every account's work, a private pool's only its
    /// owner's, so they may read only what that account may read.
    pub async fn node_may_read(&self, pool: &NodePool, digest: &Digest) -> Result<bool, Error> {
        if pool.shared {
            return Ok(true);
        }
        self.inner
            .store
            .account_may_read(&pool.account, digest)
            .await
    }

    /// The pools the account may use: its own and the shared ones, by name.
    pub async fn list_pools(&self, account: &str) -> Result<Vec<Pool>, Error> {
        let mut pools = self.inner.store.pools(account, None).await?;
        for pool in &mut pools {
            pool.provider_error = self.inner.manager.provider_error(&pool.id);
        }
        Ok(pools)
    }

    /// The pool `name` as the account sees it: its own pool of that name,
    /// else a shared one.
    pub async fn pool(&self, account: &str, name: &str) -> Result<Pool, Error> {
        let mut pool = self
            .inner
            .store
            .pools(account, Some(name))
            .await?
            .into_iter()
            .next()
            .ok_or_else(|| Error::not_found("pool", name))?;
        pool.provider_error = self.inner.manager.provider_error(&pool.id);
        Ok(pool)
    }

    /// Evaluates an autoscale formula (the pool's own when `formula` is
    /// `None`) for one of the caller's pools now, over its sample history,
    /// and returns every variable's value; nothing is applied.
    pub async fn evaluate_autoscale(
        &self,
        caller: &Caller,
        name: &str,
        formula: Option<&str>,
    ) -> Result<AutoscaleRun, Error> {
        let pool = self.pool(&caller.account, name).await?;
        let text = match (formula, &pool.spec.autoscale) {
            (Some(text), _) => text.to_owned(),
            (None, Some(autoscale)) => autoscale.formula.clone(),
            (None, None) => {
                return Err(Error::Invalid(format!(
                    "the pool `{name}` has no autoscale formula; give one to evaluate"
                )));
            }
        };
        let formula = crate::autoscale::Formula::parse(&text).map_err(Error::Formula)?;
        self.inner
            .manager
            .dry_run(&pool.id, &pool.spec, &formula)
            .await
    }

    /// Deletes one of the caller's pools. A pool with unfinished jobs or
    /// live nodes is kept; the service's own pool is never deleted.
    pub async fn delete_pool(&self, caller: &Caller, name: &str) -> Result<(), Error> {
        let pool = self.owned_pool(caller, name, "delete it").await?;
        if pool.id == LOCAL_POOL {
            return Err(Error::Conflict(format!(
                "`{LOCAL_POOL}` is the service's own pool, served by its embedded node; it cannot be deleted"
            )));
        }
        let live = pool.nodes.iter().filter(|n| n.is_live()).count();
        if live > 0 {
            return Err(Error::Conflict(format!(
                "the pool `{name}` has {live} live nodes; stop them before deleting it"
            )));
        }
        let unfinished = self.inner.store.delete_pool(&pool.id).await?;
        if unfinished > 0 {
            return Err(Error::Conflict(format!(
                "the pool `{name}` has {unfinished} unfinished jobs; cancel them or wait for them before deleting it"
            )));
        }
        tracing::info!(pool = %pool.id, by = %caller.account, "pool deleted");
        Ok(())
    }

    /// The id of the pool a job of `account` names (default: the local
    /// pool).
    pub(crate) async fn job_pool(
        &self,
        account: &str,
        name: Option<&str>,
    ) -> Result<String, Error> {
        match name {
            None => Ok(LOCAL_POOL.to_owned()),
            Some(name) => self
                .inner
                .store
                .visible_pool_id(account, name)
                .await?
                .ok_or_else(|| Error::not_found("pool", name)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_names_for_shared_pools_and_qualified_otherwise() {
        assert_eq!(pool_id("alice", "gpu", false), "alice/gpu");
        assert_eq!(pool_id("admin", "big", true), "big");
        assert_eq!(pool_name("alice/gpu"), "gpu");
        assert_eq!(pool_name(LOCAL_POOL), LOCAL_POOL);
    }
}
