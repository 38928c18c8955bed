//! `just bench-cluster`: a master and a worker powered on together under
//! TCG (2 vCPUs each), from one image and the universal seed: power-on to
//! master Ready and to worker joined, three runs, the median against the
//! issue's goal (5 minutes to a two-node Ready cluster), and each run's
//! timeline of agent steps and kubeadm phases (the time each console line
//! first appeared), and the master's init step against `kubeadm init`
//! alone on the worker with its images present, measured after the run on
//! the same guests (`kpaas_testkit::limit`). Prints figures; asserts
//! nothing.

use anyhow::{Context, Result};
use kpaas_testkit::lab::{Lab, first, median, print_costs};
use kpaas_testkit::limit;
use std::time::Duration;

/// Runs by default (`--runs N` to change).
const RUNS: usize = 3;
const LIMIT: Duration = Duration::from_secs(45 * 60);
const GOAL_SECS: f64 = 300.0;

fn main() -> Result<()> {
    let runs = match kpaas_testkit::flag("--runs") {
        Some(n) => n.parse().context("--runs N")?,
        None => RUNS,
    };
    let work = tempfile::tempdir()?;
    let lab =
        Lab::build(work.path(), false).context("building the lab (demo bundle, seeds, image)")?;
    let (mut masters, mut workers) = (Vec::new(), Vec::new());
    for run in 1..=runs {
        let (ml, wl, limits) =
            lab.race(work.path(), run, "kpaas-agent: ready: cluster ready", LIMIT)?;
        let ready = first(&ml, "kpaas-agent: ready: cluster ready").unwrap_or_default();
        let joined = first(&wl, "kpaas-agent: join: joined").unwrap_or_default();
        println!(
            "run {run}: power-on -> master Ready (both nodes) {ready:.0} s, -> worker joined {joined:.0} s"
        );
        for (who, lines) in [("master", &ml), ("worker", &wl)] {
            for (t, l) in lines.lock().map(|l| l.clone()).unwrap_or_default() {
                if let Some(rest) = l.split("kpaas-agent: ").nth(1) {
                    println!(
                        "  {who} {t:>7.1} s  {}",
                        rest.chars().take(110).collect::<String>()
                    );
                }
            }
        }
        print_costs("master", &ml);
        print_costs("worker", &wl);
        limit::print(&limits, &ml, None);
        masters.push(ready);
        workers.push(joined);
    }
    let (m, w) = (median(masters), median(workers));
    println!(
        "median of {runs}: power-on -> two-node cluster Ready {m:.0} s (goal {GOAL_SECS:.0} s: {:.2}x the goal), -> worker joined {w:.0} s",
        m / GOAL_SECS
    );
    Ok(())
}
