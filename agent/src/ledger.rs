//! Where the agent's time and the node's CPU went: the critical-path
//! report's inputs. Each step's (and each component's) wall time splits into
//! waiting on others (inside `boot::cluster::wait_with`: the API server, a
//! rollout, a registry), the processes it ran (by program: wall and CPU, from
//! `airgap_bundle::run`), and the agent's own work (the rest). The node's CPU
//! since power-on splits by process kind from `/proc`. Both reach the
//! console as `cost:` and `cpu:` lines (what `just bench-platform` reads for
//! both nodes) and the events as structured fields.

use airgap_bundle::run::{self, Spent, clock_ticks, proc_stat_fields};
use serde::{Deserialize, Serialize};
use std::cell::Cell;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

thread_local! {
    /// Time this thread spent inside waits, less the processes run while
    /// waiting. Per thread, as the processes are (`run::spent_here`):
    /// components deployed at once each have their own account.
    static WAITED: Cell<Duration> = const { Cell::new(Duration::ZERO) };
}

/// A point to measure from, on this thread.
#[derive(Debug, Clone)]
pub struct Mark {
    at: Instant,
    waited: Duration,
    spent: BTreeMap<String, Spent>,
}

fn waited_so_far() -> Duration {
    WAITED.with(Cell::get)
}

pub fn mark() -> Mark {
    Mark {
        at: Instant::now(),
        waited: waited_so_far(),
        spent: run::spent_here(),
    }
}

/// Called when a wait that began at `began` ends: its time counts as
/// waiting, less the processes it ran meanwhile (they count as theirs).
pub fn waited(began: &Mark) {
    let d = began.since();
    let waiting = d.wall.saturating_sub(d.processes_wall());
    WAITED.with(|w| w.set(w.get() + waiting));
}

/// What a span on one thread went to (its waits and processes), to be
/// counted on another: a helper thread's by the thread that joined it, or
/// the critical path's components by the deploy that waited for them.
#[derive(Debug, Clone, Default)]
pub struct Account {
    waited: Duration,
    spent: BTreeMap<String, Spent>,
}

impl Account {
    /// Adds another span's (the next component on a chain).
    pub fn add(&mut self, o: &Account) {
        self.waited += o.waited;
        run::merge(&mut self.spent, &o.spent);
    }
}

/// Counts `a` as this thread's own waits and processes.
pub fn absorb(a: &Account) {
    WAITED.with(|w| w.set(w.get() + a.waited));
    run::add_here(&a.spent);
}

/// One program's processes in a span.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ProcessTime {
    pub count: u64,
    pub wall_s: f64,
    pub cpu_s: f64,
}

/// A span's wall time, split.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Took {
    pub wall_s: f64,
    /// The agent's own work: the rest.
    pub own_s: f64,
    /// Waiting on others (the API server, a rollout, a registry).
    pub waiting_s: f64,
    /// Processes it ran, by program.
    pub processes: BTreeMap<String, ProcessTime>,
}

struct Delta {
    wall: Duration,
    waited: Duration,
    spent: BTreeMap<String, Spent>,
}

impl Delta {
    fn processes_wall(&self) -> Duration {
        self.spent.values().map(|s| s.wall).sum()
    }
}

impl Mark {
    fn since(&self) -> Delta {
        let now = run::spent_here();
        let spent = now
            .into_iter()
            .filter_map(|(k, v)| {
                let b = self.spent.get(&k).copied().unwrap_or_default();
                (v.count > b.count).then(|| {
                    (
                        k,
                        Spent {
                            count: v.count - b.count,
                            wall: v.wall.saturating_sub(b.wall),
                            cpu: v.cpu.saturating_sub(b.cpu),
                        },
                    )
                })
            })
            .collect();
        Delta {
            wall: self.at.elapsed(),
            waited: waited_so_far().saturating_sub(self.waited),
            spent,
        }
    }

    /// This thread's waits and processes since the mark, for another
    /// thread to [`absorb`].
    pub fn account(&self) -> Account {
        let d = self.since();
        Account {
            waited: d.waited,
            spent: d.spent,
        }
    }

    /// What the time since this mark went to.
    pub fn took(&self) -> Took {
        let d = self.since();
        let procs = d.processes_wall();
        Took {
            wall_s: d.wall.as_secs_f64(),
            // Processes another thread ran for this one (helm beside its
            // progress loop) overlap: the own part never goes below zero.
            own_s: d
                .wall
                .saturating_sub(d.waited)
                .saturating_sub(procs)
                .as_secs_f64(),
            waiting_s: d.waited.as_secs_f64(),
            processes: d
                .spent
                .into_iter()
                .map(|(k, s)| {
                    (
                        k,
                        ProcessTime {
                            count: s.count,
                            wall_s: s.wall.as_secs_f64(),
                            cpu_s: s.cpu.as_secs_f64(),
                        },
                    )
                })
                .collect(),
        }
    }
}

impl Took {
    /// `12.0 s: own 2.0 s, waiting 8.0 s, processes 2.0 s (kubeadm 1× 2.0 s, 1.5 s CPU)`.
    pub fn line(&self) -> String {
        // Folded from 0.0: an empty f64 sum is -0.0, printed "-0.0 s".
        let procs = self.processes.values().fold(0.0, |a, p| a + p.wall_s);
        let mut s = format!(
            "{:.1} s: own {:.1} s, waiting {:.1} s, processes {:.1} s",
            self.wall_s, self.own_s, self.waiting_s, procs
        );
        if !self.processes.is_empty() {
            let each: Vec<String> = self
                .processes
                .iter()
                .map(|(k, p)| format!("{k} {}× {:.1} s, {:.1} s CPU", p.count, p.wall_s, p.cpu_s))
                .collect();
            s.push_str(&format!(" ({})", each.join("; ")));
        }
        s
    }
}

/// Seconds since the kernel started (`/proc/uptime`).
pub fn uptime() -> Option<f64> {
    std::fs::read_to_string("/proc/uptime")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The node's CPU since power-on, by process kind.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Cpu {
    pub cpus: usize,
    pub uptime_s: f64,
    pub busy_s: f64,
    pub idle_s: f64,
    pub iowait_s: f64,
    /// Seconds by process kind (a live process's own and its reaped
    /// children's; the agent's processes by program), largest first.
    pub by_kind: Vec<(String, f64)>,
}

/// The kind a process counts under, by its command name.
fn kind_of(comm: &str, ppid: u64) -> String {
    if ppid == 2 || comm.starts_with("kworker") {
        return "kernel threads".into();
    }
    match comm {
        // systemd reaps what exits without a live parent: services that
        // ran and ended, orphans.
        "systemd" => "exited processes (reaped by systemd)".into(),
        "containerd-shim" | "containerd-shim-runc-v2" | "conmon" => "container shims".into(),
        c if c.starts_with("kube-controller") => "kube-controller-manager".into(),
        c => c.to_string(),
    }
}

/// Reads `/proc` now. The agent itself is split from the processes it ran
/// (by program, from their zombies); kinds below 1% of busy time are
/// summed as "other".
pub fn cpu() -> Option<Cpu> {
    let hz = clock_ticks() as f64;
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let mut cpus = 0;
    let mut total: Vec<f64> = Vec::new();
    for l in stat.lines() {
        let mut f = l.split_whitespace();
        match f.next() {
            Some("cpu") => total = f.filter_map(|x| x.parse().ok()).collect(),
            Some(c) if c.starts_with("cpu") => cpus += 1,
            _ => {}
        }
    }
    // user nice system idle iowait irq softirq steal
    let at = |i: usize| total.get(i).copied().unwrap_or(0.0) / hz;
    let busy = at(0) + at(1) + at(2) + at(5) + at(6) + at(7);
    let uptime_s = uptime()?;
    let me = std::process::id();
    let mut kinds: BTreeMap<String, f64> = BTreeMap::new();
    for e in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(text) = std::fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        let Some(f) = proc_stat_fields(&text) else {
            continue;
        };
        let comm = text
            .split_once('(')
            .and_then(|(_, r)| r.rsplit_once(')'))
            .map_or("?", |(c, _)| c);
        let ticks = |i: usize| f.get(i).and_then(|x| x.parse::<f64>().ok()).unwrap_or(0.0);
        let ppid = f.get(1).and_then(|x| x.parse().ok()).unwrap_or(0);
        if pid == me {
            *kinds.entry("kpaas-agent".into()).or_default() += (ticks(11) + ticks(12)) / hz;
            for (prog, s) in run::spent() {
                *kinds.entry(format!("kpaas-agent's {prog}")).or_default() += s.cpu.as_secs_f64();
            }
            continue;
        }
        *kinds.entry(kind_of(comm, ppid)).or_default() +=
            (ticks(11) + ticks(12) + ticks(13) + ticks(14)) / hz;
    }
    let mut by_kind: Vec<(String, f64)> = Vec::new();
    let mut other = 0.0;
    for (k, s) in kinds {
        if s < busy * 0.01 {
            other += s;
        } else {
            by_kind.push((k, s));
        }
    }
    by_kind.sort_by(|a, b| b.1.total_cmp(&a.1));
    if other > 0.0 {
        by_kind.push(("other".into(), other));
    }
    Some(Cpu {
        cpus: cpus.max(1),
        uptime_s,
        busy_s: busy,
        idle_s: at(3),
        iowait_s: at(4),
        by_kind,
    })
}

impl Cpu {
    pub fn line(&self) -> String {
        format!(
            "since power-on ({} CPU(s), up {:.0} s): busy {:.0} s, idle {:.0} s, iowait {:.0} s; {}",
            self.cpus,
            self.uptime_s,
            self.busy_s,
            self.idle_s,
            self.iowait_s,
            self.by_kind
                .iter()
                .map(|(k, s)| format!("{k} {s:.0} s"))
                .collect::<Vec<_>>()
                .join(", ")
        )
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests: a panic is the failure report
    use super::*;
    use airgap_bundle::run::run;

    #[test]
    fn a_span_splits_into_waiting_processes_and_own_work() {
        let m = mark();
        let w = mark();
        run("sh").args(["-c", "sleep 0.3"]).ok().unwrap();
        std::thread::sleep(Duration::from_millis(300));
        waited(&w);
        let t = m.took();
        // The sleep inside the wait counts as waiting; the process as its
        // own, not as waiting too.
        assert!(t.waiting_s >= 0.25, "{t:?}");
        assert!(t.processes["sh"].wall_s >= 0.25, "{t:?}");
        assert!(
            t.waiting_s + t.processes["sh"].wall_s <= t.wall_s + 0.01,
            "{t:?}"
        );
        assert!(t.line().contains("sh 1×"), "{}", t.line());
        assert!(
            Took::default().line().ends_with("processes 0.0 s"),
            "{}",
            Took::default().line()
        );
    }

    #[test]
    fn a_thread_is_charged_only_with_its_own_and_what_it_absorbs() {
        let m = mark();
        // Another thread's process and wait are not this thread's...
        let other = std::thread::spawn(|| {
            let m = mark();
            let w = mark();
            run("sh").args(["-c", "sleep 0.2"]).ok().unwrap();
            waited(&w);
            m.account()
        })
        .join()
        .unwrap();
        let t = m.took();
        assert!(!t.processes.contains_key("sh"), "{t:?}");
        assert!(t.waiting_s < 0.1, "{t:?}");
        // ...until it counts them as its own (a joined helper's).
        absorb(&other);
        let t = m.took();
        assert_eq!(t.processes["sh"].count, 1, "{t:?}");
        assert!(t.processes["sh"].wall_s >= 0.15, "{t:?}");
    }

    #[test]
    fn the_nodes_cpu_is_read_by_kind() {
        let c = cpu().unwrap();
        assert!(c.cpus >= 1 && c.uptime_s > 0.0 && c.busy_s > 0.0, "{c:?}");
        // This test process is "the agent" here: it is listed by that name.
        let mut sum = 0.0;
        for (k, s) in &c.by_kind {
            assert!(*s >= 0.0, "{k}");
            sum += s;
        }
        assert!(sum > 0.0, "{c:?}");
        assert!(c.line().starts_with("since power-on ("), "{}", c.line());
    }
}
