//! How the command line shows things.

use chrono::{DateTime, Utc};
use serde::Serialize;
use tessera_framework::accounts::AccountInfo;
use tessera_framework::model::{AppSummary, AppVersion, Job, Task};
use tessera_framework::pools::Pool;

/// Prints a value as pretty JSON.
pub(super) fn json<T: Serialize>(value: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

fn when(t: &DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S").to_string()
}

/// `1m 05s`-style durations.
pub(super) fn duration(secs: f64) -> String {
    if secs < 60.0 {
        format!("{secs:.1}s")
    } else {
        let s = secs.round() as u64;
        if s < 3600 {
            format!("{}m {:02}s", s / 60, s % 60)
        } else {
            format!("{}h {:02}m", s / 3600, (s % 3600) / 60)
        }
    }
}

pub(super) fn accounts(accounts: &[AccountInfo]) {
    let limit = |v: Option<u64>| v.map_or_else(|| "-".to_string(), |v| v.to_string());
    println!(
        "{:<32} {:<6} {:>16} {:>12}  CREATED",
        "ACCOUNT", "ROLE", "MAX STORED BYTES", "MAX PENDING"
    );
    for a in accounts {
        println!(
            "{:<32} {:<6} {:>16} {:>12}  {}",
            a.name,
            if a.admin { "admin" } else { "user" },
            limit(a.quotas.max_stored_bytes),
            limit(a.quotas.max_pending_jobs),
            when(&a.created_at)
        );
    }
}

pub(super) fn pools(pools: &[Pool]) {
    println!(
        "{:<24} {:<16} {:<7} {:>6} {:>6} {:>8} {:>8}",
        "POOL", "OWNER", "SHARED", "NODES", "SLOTS", "QUEUED", "RUNNING"
    );
    for p in pools {
        let live = p.nodes.iter().filter(|n| n.is_live());
        println!(
            "{:<24} {:<16} {:<7} {:>6} {:>6} {:>8} {:>8}",
            p.name,
            p.account,
            if p.shared { "yes" } else { "no" },
            live.clone().count(),
            live.map(|n| n.slots).sum::<u64>(),
            p.queued_tasks,
            p.running_tasks
        );
    }
}

pub(super) fn pool(p: &Pool) {
    println!("pool:     {}", p.name);
    println!("id:       {} (nodes register with this)", p.id);
    println!(
        "owner:    {}{}",
        p.account,
        if p.shared { " (shared)" } else { "" }
    );
    println!("created:  {}", when(&p.created_at));
    println!("queued:   {} tasks", p.queued_tasks);
    println!("running:  {} tasks", p.running_tasks);
    let spec = &p.spec;
    println!(
        "nodes:    target {} (from {} to {}), {} slots each{}",
        spec.target_nodes,
        spec.min_nodes,
        spec.max_nodes,
        spec.slots_per_node,
        spec.memory_per_slot_mib
            .map(|m| format!(", {m} MiB per slot"))
            .unwrap_or_default()
    );
    if let Some(provider) = &spec.provider {
        println!("provider: {}", provider.kind());
    }
    if let Some(task) = &spec.start_task {
        println!("start:    {} {}", task.program, task.args.join(" "));
    }
    if let Some(autoscale) = &spec.autoscale {
        println!("autoscale every {} s:", autoscale.interval_secs);
        for line in autoscale.formula.lines() {
            println!("    {line}");
        }
        match &p.autoscale_run {
            Some(run) => match &run.error {
                Some(error) => println!("  last run {}: failed: {error}", when(&run.at)),
                None => println!(
                    "  last run {}: target {}",
                    when(&run.at),
                    run.target_nodes.unwrap_or_default()
                ),
            },
            None => println!("  not evaluated yet"),
        }
    }
    if p.nodes.is_empty() {
        println!(
            "nodes:    none yet; its jobs wait until a node joins (`tessera pool token {}` shows how)",
            p.name
        );
        return;
    }
    println!(
        "{:<28} {:<17} {:>5} {:>7}  {:<24} LAST HEARTBEAT",
        "NODE", "STATE", "SLOTS", "RUNNING", "ADDRESS"
    );
    for n in &p.nodes {
        println!(
            "{:<28} {:<17} {:>5} {:>7}  {:<24} {}",
            n.id,
            n.state,
            n.slots,
            n.running_tasks,
            n.address,
            when(&n.last_seen)
        );
        if let Some(reason) = &n.reason {
            println!("    {reason}");
        }
    }
}

pub(super) fn autoscale_run(run: &tessera_framework::pools::AutoscaleRun) {
    if let Some(error) = &run.error {
        println!("The formula failed: {error}");
        return;
    }
    for (name, value) in &run.variables {
        println!("{name} = {value}");
    }
    println!(
        "target: {} nodes (before the pool's bounds), deallocation: {}",
        run.target_nodes.unwrap_or_default(),
        run.deallocation.map(|d| d.as_str()).unwrap_or("requeue")
    );
}

pub(super) fn apps(apps: &[AppSummary]) {
    if apps.is_empty() {
        println!(
            "No applications yet. Publish one with `tessera app publish NAME --assembly assembly.zip`."
        );
        return;
    }
    println!("{:<32} {:>7}  CREATED", "APPLICATION", "LATEST");
    for a in apps {
        println!(
            "{:<32} {:>7}  {}",
            a.name,
            a.latest_version,
            when(&a.created_at)
        );
    }
}

pub(super) fn app_version(v: &AppVersion) {
    println!(
        "{} version {} (published {})",
        v.app,
        v.version,
        when(&v.created_at)
    );
    println!(
        "  assembly   sha256:{} ({} bytes)",
        v.assembly.sha256, v.assembly.size
    );
    match &v.image {
        Some(i) => println!("  image      sha256:{} ({} bytes)", i.sha256, i.size),
        None => println!("  image      none"),
    }
    if v.parameters.is_empty() {
        println!("  parameters none");
    } else {
        println!("  parameters");
        for (name, p) in &v.parameters {
            let default = p
                .default
                .as_ref()
                .map_or_else(|| "required".to_owned(), |d| format!("default {d}"));
            let description = p.description.as_deref().unwrap_or("");
            println!(
                "    {name:<20} {:<6} {default:<20} {description}",
                format!("{:?}", p.kind).to_lowercase()
            );
        }
    }
}

pub(super) fn jobs(jobs: &[Job]) {
    if jobs.is_empty() {
        println!("No jobs.");
        return;
    }
    println!(
        "{:<36}  {:<20} {:<10} {:>7}  SUBMITTED",
        "JOB", "APPLICATION", "STATE", "DONE"
    );
    for j in jobs {
        println!(
            "{:<36}  {:<20} {:<10} {:>6.1}%  {}",
            j.id,
            format!("{}@{}", j.app, j.app_version),
            j.state.as_str(),
            j.progress.percent,
            when(&j.created_at)
        );
    }
}

pub(super) fn job(j: &Job) {
    let p = &j.progress;
    println!("job        {}", j.id);
    println!("app        {} version {}", j.app, j.app_version);
    println!("state      {}", j.state);
    println!(
        "tasks      {}/{} succeeded ({:.1}%), {} running, {} queued, {} blocked, {} failed, {} cancelled",
        p.succeeded, p.total, p.percent, p.running, p.queued, p.blocked, p.failed, p.cancelled
    );
    println!("submitted  {}", when(&j.created_at));
    if let Some(end) = &j.finished_at {
        let secs = (*end - j.created_at).num_milliseconds() as f64 / 1000.0;
        println!("finished   {} (after {})", when(end), duration(secs));
    }
    if let Some(f) = &j.failure {
        println!("failure    {f}");
    }
}

pub(super) fn tasks(tasks: &[Task]) {
    println!(
        "{:<24} {:<8} {:<10} {:>8}  {:<24} FAILURE",
        "TASK", "KIND", "STATE", "ATTEMPTS", "NODE"
    );
    for t in tasks {
        println!(
            "{:<24} {:<8} {:<10} {:>8}  {:<24} {}",
            t.name,
            t.kind.as_str(),
            t.state.as_str(),
            t.attempts,
            t.node.as_deref().unwrap_or("-"),
            t.failure
                .as_ref()
                .map(|f| f.to_string())
                .unwrap_or_default()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_well() {
        assert_eq!(duration(1.25), "1.2s");
        assert_eq!(duration(65.0), "1m 05s");
        assert_eq!(duration(7260.0), "2h 01m");
    }
}
