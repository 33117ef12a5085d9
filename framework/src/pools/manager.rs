//! The pool manager: keeps every pool that has an autoscale formula or a
//! node provider at its size.
//!
//! Every tick it samples each such pool's task counts into the pool's
//! history (what the formula's `GetSample` reads), evaluates the formula
//! when its interval has passed (recording the result, or the error, on the
//! pool, and the target clamped to the pool's bounds), and asks the pool's
//! provider for as many agents as the target says. Shrinking removes idle
//! nodes first; a busy node goes as `$NodeDeallocationOption` says:
//! `requeue` stops its agent now (its tasks run elsewhere, not counted as
//! failures), `terminate` fails its tasks and stops it, `taskcompletion`
//! asks it to leave once its tasks are done.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::autoscale::{DeallocationOption, EvalInput, Formula, History, Sample};
use crate::error::Error;
use crate::model::{NodeState, now_ms, time_from_ms};
use crate::pools::{AutoscaleRun, PoolNode, PoolSpec};
use crate::provider::{self, AgentState, Launch};
use crate::scheduler::Scheduler;
use crate::store::{ManagedPool, Store};

/// Most agents started for one pool in one tick.
const STARTS_PER_TICK: usize = 8;

/// The service lease that lets one replica at a time tend the pools (the
/// manager keeps each pool's history and the agents it stops in memory,
/// and two managers would start agents twice).
const LEASE: &str = "pool_manager";

/// Settings of the pool manager.
#[derive(Clone, Debug)]
pub(crate) struct ManagerConfig {
    /// How often it looks at the pools.
    pub tick: Duration,
    /// How often a pool's task counts are sampled for its formula.
    pub sample_period: Duration,
    /// How much sample history is kept.
    pub history: Duration,
    /// Where providers keep their files (agent logs, work folders, state).
    pub provider_dir: PathBuf,
    /// The `tessera` executable agents run.
    pub program: PathBuf,
    /// The URL agents reach the service at (`None`: providers cannot start
    /// agents, and say so on the pool).
    pub url: Option<String>,
}

/// What the manager keeps of one pool between ticks.
struct Tended {
    history: History,
    last_sample: Option<Instant>,
    last_evaluation: Option<Instant>,
    deallocation: DeallocationOption,
    /// Agents asked to stop, not yet gone.
    stopping: HashSet<String>,
    /// The provider's last error, if its last call failed.
    provider_error: Option<String>,
}

/// The pool manager; cheap to clone.
#[derive(Clone)]
pub(crate) struct PoolManager {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    scheduler: Scheduler,
    config: ManagerConfig,
    pools: Mutex<HashMap<String, Tended>>,
}

impl PoolManager {
    pub(crate) fn new(store: Store, scheduler: Scheduler, config: ManagerConfig) -> Self {
        Self {
            inner: Arc::new(Inner {
                store,
                scheduler,
                config,
                pools: Mutex::new(HashMap::new()),
            }),
        }
    }

    fn pools(&self) -> std::sync::MutexGuard<'_, HashMap<String, Tended>> {
        // Only plain data lives here, changed in single steps.
        self.inner.pools.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn tended<T>(&self, pool: &str, f: impl FnOnce(&mut Tended) -> T) -> T {
        let config = &self.inner.config;
        let mut pools = self.pools();
        let tended = pools.entry(pool.to_owned()).or_insert_with(|| Tended {
            history: History::new(config.sample_period, config.history),
            last_sample: None,
            last_evaluation: None,
            deallocation: DeallocationOption::default(),
            stopping: HashSet::new(),
            provider_error: None,
        });
        f(tended)
    }

    /// Tends the pools every tick until the returned task is aborted.
    pub(crate) fn spawn(&self) -> tokio::task::JoinHandle<()> {
        let manager = self.clone();
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(manager.inner.config.tick);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticker.tick().await;
                if let Err(e) = manager.tick().await {
                    tracing::error!(error = %e, "tending the pools failed");
                }
            }
        })
    }

    /// One look at every managed pool, if this replica is the one that
    /// tends them: when replicas share the database, the one holding the
    /// manager's lease (renewed every tick, taken over by another replica
    /// ten ticks after this one stops renewing it).
    async fn tick(&self) -> Result<(), Error> {
        let now = now_ms();
        let ttl = (self.inner.config.tick * 10).max(Duration::from_secs(5));
        let me = self.inner.scheduler.replica();
        let until = now + ttl.as_millis() as i64;
        if self.inner.store.is_shared()
            && !self.inner.store.hold_lease(LEASE, me, now, until).await?
        {
            // Another replica tends the pools; what this one knew of them
            // is stale by the time it takes over.
            self.pools().clear();
            return Ok(());
        }
        let managed = self.inner.store.managed_pools().await?;
        let ids: HashSet<&str> = managed.iter().map(|p| p.id.as_str()).collect();
        self.pools().retain(|id, _| ids.contains(id.as_str()));
        for pool in &managed {
            if let Err(e) = self.tend(pool).await {
                tracing::error!(pool = %pool.id, error = %e, "tending a pool failed");
            }
        }
        Ok(())
    }

    async fn tend(&self, pool: &ManagedPool) -> Result<(), Error> {
        let nodes = self.inner.store.pool_nodes(&pool.id).await?;
        if pool.retired {
            return self.retire(pool, &nodes).await;
        }
        self.sample(&pool.id).await?;
        let mut target = pool.spec.target_nodes;
        if let Some(autoscale) = &pool.spec.autoscale {
            let due = self.tended(&pool.id, |t| {
                t.last_evaluation
                    .is_none_or(|at| at.elapsed() >= Duration::from_secs(autoscale.interval_secs))
            });
            if due {
                self.tended(&pool.id, |t| t.last_evaluation = Some(Instant::now()));
                let formula = Formula::parse(&autoscale.formula).map_err(Error::Formula)?;
                let run = self.evaluate(&pool.id, &pool.spec, &formula, &nodes);
                if let (Some(computed), Some(deallocation)) = (run.target_nodes, run.deallocation) {
                    target = computed.clamp(pool.spec.min_nodes, pool.spec.max_nodes);
                    self.tended(&pool.id, |t| t.deallocation = deallocation);
                }
                let applied = run.error.is_none().then_some(target);
                self.inner
                    .store
                    .set_autoscale_run(&pool.id, &run, applied)
                    .await?;
            }
        }
        if pool.spec.provider.is_some() {
            self.reconcile(pool, target, &nodes).await;
        }
        Ok(())
    }

    /// An auto-pool whose job has ended: its agents are stopped and its
    /// nodes asked to leave; once none is left, the pool is removed.
    async fn retire(&self, pool: &ManagedPool, nodes: &[PoolNode]) -> Result<(), Error> {
        let mut agents_left = 0;
        if let Some(spec) = &pool.spec.provider {
            self.reconcile(pool, 0, nodes).await;
            let provider = provider::for_spec(spec, &self.inner.config.provider_dir);
            agents_left = match provider.list(&pool.id).await {
                Ok(agents) => agents.len(),
                // Tried again next tick; the error is on the pool.
                Err(_) => return Ok(()),
            };
        }
        let mut live = 0;
        for node in nodes.iter().filter(|n| n.is_live()) {
            live += 1;
            if node.state != NodeState::Leaving {
                self.inner.scheduler.ask_to_leave(&node.id).await?;
            }
        }
        if live == 0 && agents_left == 0 && self.inner.store.delete_pool(&pool.id).await? == 0 {
            self.pools().remove(&pool.id);
            tracing::info!(pool = %pool.id, "its job has ended: auto-pool removed");
        }
        Ok(())
    }

    /// Samples a pool's task counts if a sample period has passed.
    async fn sample(&self, pool: &str) -> Result<(), Error> {
        let period = self.inner.config.sample_period;
        if !self.tended(pool, |t| {
            t.last_sample.is_none_or(|at| at.elapsed() >= period)
        }) {
            return Ok(());
        }
        let [active, running, succeeded, failed] = self.inner.store.pool_counts(pool).await?;
        self.tended(pool, |t| {
            t.last_sample = Some(Instant::now());
            t.history.push(Sample {
                at_ms: now_ms(),
                active,
                running,
                succeeded,
                failed,
            });
        });
        Ok(())
    }

    /// Evaluates `formula` over a pool's history, applying nothing.
    fn evaluate(
        &self,
        pool: &str,
        spec: &PoolSpec,
        formula: &Formula,
        nodes: &[PoolNode],
    ) -> AutoscaleRun {
        let current = nodes.iter().filter(|n| counts(n)).count() as u32;
        let now = now_ms();
        let result = self.tended(pool, |t| {
            formula.evaluate(&EvalInput {
                now_ms: now,
                history: &t.history,
                current_nodes: current,
                target_nodes: spec.target_nodes,
            })
        });
        AutoscaleRun::of(result, time_from_ms(now))
    }

    /// Evaluates `formula` (or the pool's own) for `pool` now, without
    /// applying it: `tessera pool autoscale evaluate`.
    pub(crate) async fn dry_run(
        &self,
        pool: &str,
        spec: &PoolSpec,
        formula: &Formula,
    ) -> Result<AutoscaleRun, Error> {
        self.sample(pool).await?;
        let nodes = self.inner.store.pool_nodes(pool).await?;
        Ok(self.evaluate(pool, spec, formula, &nodes))
    }

    /// The provider's last error for a pool, if its last call failed.
    pub(crate) fn provider_error(&self, pool: &str) -> Option<String> {
        self.pools()
            .get(pool)
            .and_then(|t| t.provider_error.clone())
    }

    /// Starts or stops agents so that the pool has `target` of them.
    async fn reconcile(&self, pool: &ManagedPool, target: u32, nodes: &[PoolNode]) {
        let result = self.reconcile_with_errors(pool, target, nodes).await;
        let error = result.err().map(|e| e.to_string());
        if let Some(e) = &error {
            tracing::warn!(pool = %pool.id, error = %e, "the pool's provider failed");
        }
        self.tended(&pool.id, |t| t.provider_error = error);
    }

    async fn reconcile_with_errors(
        &self,
        pool: &ManagedPool,
        target: u32,
        nodes: &[PoolNode],
    ) -> Result<(), String> {
        let spec = pool
            .spec
            .provider
            .as_ref()
            .expect("only pools with a provider");
        let provider = provider::for_spec(spec, &self.inner.config.provider_dir);
        let agents = provider.list(&pool.id).await.map_err(|e| e.to_string())?;
        let listed: HashSet<&str> = agents.iter().map(|a| a.handle.as_str()).collect();
        let stopping = self.tended(&pool.id, |t| {
            t.stopping.retain(|h| listed.contains(h.as_str()));
            t.stopping.clone()
        });
        // The node each agent registered (its newest live one).
        let node_of: HashMap<&str, &PoolNode> = nodes
            .iter()
            .filter(|n| n.is_live())
            .filter_map(|n| n.agent.as_deref().map(|a| (a, n)))
            .collect();
        let live: Vec<&provider::Agent> = agents
            .iter()
            .filter(|a| !stopping.contains(&a.handle))
            .filter(|a| {
                node_of
                    .get(a.handle.as_str())
                    .is_none_or(|n| n.state != NodeState::Leaving)
            })
            .collect();
        let target = target as usize;
        if live.len() < target {
            let url = self.inner.config.url.clone().ok_or(
                "the service has no URL its node agents can reach; start it with --advertise-url",
            )?;
            let (_, _, token) = self
                .inner
                .store
                .pool_access(&pool.id)
                .await
                .map_err(|e| e.to_string())?
                .ok_or("the pool is gone")?;
            let launch = Launch {
                program: self.inner.config.program.clone(),
                url,
                pool: pool.id.clone(),
                token,
                slots: pool.spec.slots_per_node,
            };
            for _ in 0..(target - live.len()).min(STARTS_PER_TICK) {
                provider.start(&launch).await.map_err(|e| e.to_string())?;
            }
            return Ok(());
        }
        let excess = live.len() - target;
        if excess == 0 {
            return Ok(());
        }
        // Idle nodes first, then agents that have no node yet, then busy
        // ones (the newest first among equals).
        let mut order: Vec<(u8, &provider::Agent, Option<&PoolNode>)> = live
            .iter()
            .map(|a| {
                let node = node_of.get(a.handle.as_str()).copied();
                let rank = match node {
                    Some(n) if n.running_tasks == 0 => 0,
                    None if a.state == AgentState::Queued => 1,
                    None => 2,
                    Some(_) => 3,
                };
                (rank, *a, node)
            })
            .collect();
        order.sort_by_key(|(rank, a, _)| (*rank, std::cmp::Reverse(a.handle.clone())));
        let deallocation = self.tended(&pool.id, |t| t.deallocation);
        for (_, agent, node) in order.into_iter().take(excess) {
            let busy = node.is_some_and(|n| n.running_tasks > 0);
            if let Some(node) = node {
                let told = if busy && deallocation == DeallocationOption::Terminate {
                    self.inner.scheduler.terminate_tasks(&node.id).await
                } else {
                    self.inner.scheduler.ask_to_leave(&node.id).await
                };
                told.map_err(|e| e.to_string())?;
            }
            // A busy node asked to finish its tasks first ends its agent
            // itself when it leaves.
            if !(busy && deallocation == DeallocationOption::TaskCompletion) {
                provider
                    .stop(&pool.id, &agent.handle)
                    .await
                    .map_err(|e| e.to_string())?;
            }
            self.tended(&pool.id, |t| t.stopping.insert(agent.handle.clone()));
            tracing::info!(pool = %pool.id, agent = %agent.handle, busy, "scaling down: removing a node agent");
        }
        Ok(())
    }

    /// Stops the agents the `local` provider started (the service is
    /// stopping, and they are of this machine), waiting up to `limit` for
    /// them to leave.
    pub(crate) async fn stop_local_agents(&self, limit: Duration) -> Result<(), Error> {
        let managed = self.inner.store.managed_pools().await?;
        let deadline = Instant::now() + limit;
        for pool in managed
            .iter()
            .filter(|p| matches!(p.spec.provider, Some(crate::pools::ProviderSpec::Local)))
        {
            let spec = pool.spec.provider.as_ref().expect("filtered above");
            let provider = provider::for_spec(spec, &self.inner.config.provider_dir);
            let Ok(agents) = provider.list(&pool.id).await else {
                continue;
            };
            for agent in &agents {
                let _ = provider.stop(&pool.id, &agent.handle).await;
            }
            while Instant::now() < deadline
                && provider.list(&pool.id).await.is_ok_and(|a| !a.is_empty())
            {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        Ok(())
    }

    /// Gives up the manager's lease (when this replica stops, after its
    /// manager task has ended), so that another replica takes over at once.
    pub(crate) async fn resign(&self) {
        let me = self.inner.scheduler.replica();
        if let Err(e) = self.inner.store.drop_lease(LEASE, me).await {
            tracing::warn!(error = %e, "giving up the pool manager's lease failed");
        }
    }
}

/// Whether a node counts as one of the pool's current nodes.
fn counts(node: &PoolNode) -> bool {
    node.is_live() && node.state != NodeState::Leaving
}
