//! Which component may start: the deploy engine's scheduler, kept apart
//! from the threads that run the components so its rules read in one
//! place. A component starts once every component it depends on is ready
//! (one outside the platform, the cluster step, is met); the critical path
//! is the chain, from the last to finish back, of the dependency whose
//! readiness let each start.

use crate::ledger::Account;
use airgap_bundle::plan::Step;
use anyhow::Result;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

/// A component's thread, ended.
pub(super) struct Finished {
    pub step: usize,
    pub result: Result<()>,
    /// Its waits and processes, for the critical path's split.
    pub account: Account,
    pub at: Instant,
}

/// What has started, what is ready, what failed.
pub(super) struct Schedule<'a> {
    steps: &'a [&'a Step],
    /// In the platform (a dependency outside it, the cluster, is met).
    names: BTreeSet<&'a str>,
    pub ready: BTreeSet<&'a str>,
    started: BTreeMap<usize, Started>,
    pub failures: Vec<String>,
    /// The last component to finish: what let the next one start.
    last: Option<usize>,
}

struct Started {
    at: Instant,
    /// The dependency whose readiness let it start (its last), if any.
    after: Option<usize>,
    ended: Option<(Instant, Account)>,
}

impl<'a> Schedule<'a> {
    pub fn new(steps: &'a [&'a Step]) -> Schedule<'a> {
        Schedule {
            steps,
            names: steps.iter().map(|s| s.component.as_str()).collect(),
            ready: BTreeSet::new(),
            started: BTreeMap::new(),
            failures: Vec::new(),
            last: None,
        }
    }

    fn deps(&self, i: usize) -> impl Iterator<Item = &'a str> + '_ {
        self.steps[i]
            .depends_on
            .iter()
            .map(String::as_str)
            .filter(|d| self.names.contains(d))
    }

    /// The first component (in wave order) not started whose dependencies
    /// are all ready.
    pub fn next(&self) -> Option<usize> {
        (0..self.steps.len()).find(|&i| {
            let c = self.steps[i].component.as_str();
            !self.ready.contains(c)
                && !self.started.contains_key(&i)
                && self.deps(i).all(|d| self.ready.contains(d))
        })
    }

    pub fn start(&mut self, i: usize) {
        // Started right after the last finish: that was its last dependency.
        let after = self
            .last
            .filter(|l| self.deps(i).any(|d| d == self.steps[*l].component));
        self.started.insert(
            i,
            Started {
                at: Instant::now(),
                after,
                ended: None,
            },
        );
    }

    /// ` (after a, b)` for the start event.
    pub fn after(&self, i: usize) -> String {
        let d: Vec<&str> = self.deps(i).collect();
        if d.is_empty() {
            String::new()
        } else {
            format!(" (after {})", d.join(", "))
        }
    }

    pub fn finish(&mut self, f: Finished) {
        if let Some(s) = self.started.get_mut(&f.step) {
            s.ended = Some((f.at, f.account));
        }
        match f.result {
            Ok(()) => {
                self.ready.insert(&self.steps[f.step].component);
                self.last = Some(f.step);
            }
            Err(e) => self.failures.push(format!("{e:#}")),
        }
    }

    /// A component never started and what it waits for, when one is left.
    pub fn waiting(&self) -> Option<String> {
        (0..self.steps.len()).find_map(|i| {
            let c = self.steps[i].component.as_str();
            if self.ready.contains(c) || self.started.contains_key(&i) {
                return None;
            }
            let missing: Vec<&str> = self.deps(i).filter(|d| !self.ready.contains(d)).collect();
            Some(format!("{c} waits for {}", missing.join(", ")))
        })
    }

    /// The chain of components that decided when the platform was ready:
    /// from the last to finish back through the dependency that let each
    /// start; as text (each with its seconds) and its waits and processes.
    pub fn critical_path(&self, from: Instant) -> (String, Account) {
        let mut chain = Vec::new();
        let mut at = self
            .started
            .iter()
            .filter_map(|(i, s)| s.ended.as_ref().map(|(e, _)| (*i, *e)))
            .max_by_key(|(_, e)| *e)
            .map(|(i, _)| i);
        let mut spent = Account::default();
        while let Some(i) = at {
            let s = &self.started[&i];
            if let Some((end, a)) = &s.ended {
                chain.push(format!(
                    "{} {:.0} s (from {:.0} s)",
                    self.steps[i].component,
                    end.duration_since(s.at).as_secs_f64(),
                    s.at.duration_since(from).as_secs_f64()
                ));
                spent.add(a);
            }
            at = s.after;
        }
        chain.reverse();
        (chain.join(" -> "), spent)
    }
}

#[cfg(test)]
mod tests {
    use super::{Finished, Schedule};
    use airgap_bundle::plan::Step;
    use std::time::Instant;

    fn step(wave: usize, name: &str, deps: &[&str]) -> Step {
        Step {
            wave,
            component: name.into(),
            namespace: None,
            release: None,
            depends_on: deps.iter().map(|d| d.to_string()).collect(),
            artifacts: Vec::new(),
            values: Default::default(),
            releases: Vec::new(),
            readiness: Vec::new(),
            notes: Vec::new(),
        }
    }

    fn done(step: usize, ok: bool) -> Finished {
        Finished {
            step,
            result: if ok {
                Ok(())
            } else {
                Err(anyhow::anyhow!("it broke"))
            },
            account: Default::default(),
            at: Instant::now(),
        }
    }

    #[test]
    fn a_component_starts_once_its_own_dependencies_are_ready_not_its_wave() {
        let steps = [
            step(1, "storage", &["kubernetes"]),
            step(1, "core", &["kubernetes"]),
            step(2, "vault", &["storage"]),
            step(2, "apps", &["core"]),
            step(3, "portal", &["vault", "apps"]),
        ];
        let refs: Vec<&Step> = steps.iter().collect();
        let mut s = Schedule::new(&refs);
        // The cluster is outside the platform: met.
        assert_eq!(s.next(), Some(0));
        s.start(0);
        assert_eq!(s.next(), Some(1));
        s.start(1);
        assert_eq!(s.next(), None);
        // Core ready: apps starts while storage still runs.
        s.finish(done(1, true));
        assert_eq!(s.next(), Some(3));
        s.start(3);
        assert_eq!(s.after(3), " (after core)");
        assert_eq!(s.next(), None);
        s.finish(done(0, true));
        assert_eq!(s.next(), Some(2));
        s.start(2);
        s.finish(done(3, true));
        assert_eq!(s.next(), None, "the portal waits for vault too");
        s.finish(done(2, true));
        assert_eq!(s.next(), Some(4));
        s.start(4);
        s.finish(done(4, true));
        assert_eq!(s.waiting(), None);
        // Vault finished last of the portal's two: the chain runs through it.
        let (path, _) = s.critical_path(Instant::now());
        let names: Vec<&str> = path
            .split(" -> ")
            .map(|c| c.split(' ').next().unwrap_or(""))
            .collect();
        assert_eq!(names, ["storage", "vault", "portal"], "{path}");
    }

    #[test]
    fn what_depends_on_a_failed_component_never_starts_and_is_named() {
        let steps = [step(1, "storage", &[]), step(2, "vault", &["storage"])];
        let refs: Vec<&Step> = steps.iter().collect();
        let mut s = Schedule::new(&refs);
        s.start(0);
        s.finish(done(0, false));
        assert_eq!(s.failures, ["it broke"]);
        assert_eq!(s.next(), None);
        assert_eq!(s.waiting().as_deref(), Some("vault waits for storage"));
    }
}
