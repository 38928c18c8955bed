//! `just bench-platform`: a master and a worker powered on together under
//! TCG (2 vCPUs each) from one image and the universal seed, through the
//! cluster to the demo platform ready: power-on to "platform ready" against
//! the goal (12 minutes), each wave's time (its first console line
//! to its component's "ready"), and the Harbor hand-off's push rate against
//! the seed's own read rate, which the agent measures on the same node in
//! the same run (goal: push >= 0.4 x read), and the processes and API
//! requests the master's agent made; then each node's critical path (each
//! step and component at its time since power-on, its time split into the
//! agent's own work, waiting on others and the processes it ran, and the
//! node's CPU by process kind at the cluster ready and the platform ready);
//! then the limit on the same guests (`kpaas_testkit::limit`: the platform's
//! pods restarted with their images present, `kubeadm init` alone on the
//! worker with its images present) and our time as a ratio of it (goal
//! <= 1.5x). Before the limit, a phase of day 2: `node add` on the master
//! and a third guest booted with its seed, timed from its power-on to
//! joined, Ready and its first platform pod started, beside the listed
//! worker's first join; and the update: the demo's 0.2.0 built as a delta
//! against the master's inventory and as a full bundle (their sizes), the
//! delta hot-plugged to the master and applied, timed against the first
//! boot's deploy of the component it upgrades. Prints figures; asserts
//! nothing.

use anyhow::{Context, Result};
use kpaas_testkit::lab::{Lab, first, median, print_costs};
use kpaas_testkit::limit;
use std::time::Duration;

/// One run by default (a run takes most of an hour here): `--runs N`.
const RUNS: usize = 1;
const LIMIT: Duration = Duration::from_secs(90 * 60);
const GOAL_SECS: f64 = 12.0 * 60.0;
const FILL_GOAL: f64 = 0.4;

fn main() -> Result<()> {
    let runs = match kpaas_testkit::flag("--runs") {
        Some(n) => n.parse().context("--runs N")?,
        None => RUNS,
    };
    let work = tempfile::tempdir()?;
    let lab =
        Lab::build(work.path(), true).context("building the lab (demo bundle, seeds, image)")?;
    let mut totals = Vec::new();
    for run in 1..=runs {
        let (ml, wl, limits) = lab.race(
            work.path(),
            run,
            "kpaas-agent: deploy: platform ready",
            LIMIT,
        )?;
        let lines = ml.lock().map(|l| l.clone()).unwrap_or_default();
        let at = |marker: &str| first(&ml, marker);
        let cluster = at("kpaas-agent: ready: cluster ready").unwrap_or_default();
        let total = at("kpaas-agent: deploy: platform ready").unwrap_or_default();
        println!(
            "run {run}: power-on -> two-node cluster Ready {cluster:.0} s, -> platform ready {total:.0} s (goal {GOAL_SECS:.0} s: {:.2}x); worker joined {:.0} s, its mirrors on the registry {:.0} s",
            total / GOAL_SECS,
            first(&wl, "kpaas-agent: join: joined").unwrap_or_default(),
            first(&wl, "kpaas-agent: handoff: ").unwrap_or_default(),
        );
        // Each component from its start to its readiness (they overlap:
        // each starts once its own dependencies are ready), then the chain
        // that decided the total.
        let deploy = |(t, l): &(f64, String)| {
            let rest = l.split("kpaas-agent: deploy: ").nth(1)?;
            Some((*t, rest.to_string()))
        };
        let said: Vec<(f64, String)> = lines.iter().filter_map(deploy).collect();
        for (t, rest) in &said {
            let Some(c) = rest
                .strip_suffix(": starting")
                .or_else(|| rest.split_once(": starting (").map(|(c, _)| c))
            else {
                continue;
            };
            let ready = said
                .iter()
                .find(|(_, r)| r.starts_with(&format!("{c}: ready in ")))
                .map(|(r, _)| *r);
            match ready {
                Some(r) => println!(
                    "  {c:<14} started {t:>5.0} s, ready {r:>5.0} s: {:>5.0} s",
                    r - t
                ),
                None => println!("  {c:<14} started {t:>5.0} s, never ready"),
            }
        }
        if let Some(path) = said
            .iter()
            .find_map(|(_, r)| r.split("; critical path ").nth(1))
            .and_then(|p| p.split("; since the agent started").next())
        {
            println!("  critical path: {path}");
        }
        match &limits.timeline {
            Some(Ok(t)) => {
                println!(
                    "  the cluster's events of {} (s since power-on, the guests' clocks):",
                    limit::TIMELINE.join(", ")
                );
                for e in t {
                    println!(
                        "    {:>5.0} s  {:<18} {:<44} {}: {}",
                        e.secs,
                        e.namespace,
                        e.object,
                        e.reason,
                        e.message.chars().take(90).collect::<String>()
                    );
                }
            }
            Some(Err(e)) => println!("  the cluster's events: not read: {e}"),
            None => {}
        }
        if let Some(h) = limit::handoff(&ml) {
            println!(
                "  hand-off: {}",
                h.detail.chars().take(400).collect::<String>()
            );
            match h.push_read {
                Some(r) => println!(
                    "  fill: push/seed-read ratio {r:.2} (goal >= {FILL_GOAL:.1}: {})",
                    if r >= FILL_GOAL { "met" } else { "not met" }
                ),
                None => println!("  fill: no ratio in the hand-off's line"),
            }
        }
        // What the master's agent cost in processes and API requests from
        // power-on to here (its own count, in the deploy's done line).
        if let Some((_, l)) = lines
            .iter()
            .find(|(_, l)| l.contains("deploy: platform ready"))
        {
            match l.split("since the agent started: ").nth(1) {
                Some(cost) => println!("  master's agent since power-on: {}", cost.trim()),
                None => println!("  master's agent: no process count in its done line"),
            }
        }
        // Day 2 beside the first join: the listed worker's power-on to
        // joined and Ready (powered on with the master), the added node's
        // from its own power-on, the master long up.
        let first_join = first(&wl, "kpaas-agent: join: joined").unwrap_or_default();
        let first_ready =
            first(&wl, "kpaas-agent: ready: node kpaas-worker1 Ready").unwrap_or_default();
        match &limits.grow {
            Some(Ok(g)) => println!(
                "  grow: node add on the master and its seed fetched {:.0} s; the added node's power-on -> joined {:.0} s, -> Ready {:.0} s, -> first platform pod started {:.0} s ({}); the first join (listed worker, powered on with the master): -> joined {first_join:.0} s, -> Ready {first_ready:.0} s; added/first Ready {:.2}",
                g.add_s,
                g.joined_s,
                g.ready_s,
                g.pod_s,
                g.image,
                g.ready_s / first_ready.max(0.001)
            ),
            Some(Err(e)) => println!("  grow: not measured: {e}"),
            None => {}
        }
        // The update against what the site holds: the delta against the
        // full bundle of the same version, and its apply against the first
        // boot's deploy of the component it upgrades.
        match &limits.update {
            Some(Ok(u)) => {
                println!(
                    "  update 0.1.0 -> 0.2.0: delta {} bytes, full 0.2.0 bundle {} bytes: delta/full {:.4}",
                    u.delta_bytes,
                    u.full_bytes,
                    u.delta_bytes as f64 / u.full_bytes.max(1) as f64
                );
                println!(
                    "  update applied in {:.0} s (volume found to done); the first boot's deploy of apps {:.0} s: update/fresh {:.2}",
                    u.apply_s,
                    u.fresh_s,
                    u.apply_s / u.fresh_s.max(0.001)
                );
                println!(
                    "  update: {}",
                    u.summary.chars().take(300).collect::<String>()
                );
            }
            Some(Err(e)) => println!("  update: not measured: {e}"),
            None => {}
        }
        print_costs("master", &ml);
        print_costs("worker", &wl);
        limit::print(&limits, &ml, Some(total - cluster));
        totals.push(total);
    }
    let med = median(totals);
    println!(
        "median of {runs}: power-on -> platform ready {med:.0} s (goal {GOAL_SECS:.0} s: {:.2}x the goal)",
        med / GOAL_SECS
    );
    Ok(())
}
