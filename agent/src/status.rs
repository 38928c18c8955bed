//! What the node is doing, for people and programs: `kpaas-agent status`
//! (each step's state from the journal, or every event of every boot), and
//! the read-only HTTP page every node serves beside its seed registry
//! (`/status` as text, `/status.json`): the steps, the step now running and
//! for how long, what it waits for, the deploy's waves and releases, the
//! last error. Built from the journal, the deploy journal and the event
//! stream only, which never hold a secret (steps put paths and counts in
//! them, not tokens or keys).

use crate::boot::StepId;
use crate::deploy::journal::DeployJournal;
use crate::events::{self, Event, Kind};
use crate::journal;
use crate::site::Site;
use airgap_bundle::fsutil::{now_unix, parse_rfc3339, rfc3339};
use anyhow::Result;
use serde::Serialize;
use std::path::Path;

pub fn print(state_dir: &Path, json: bool, all_events: bool) -> Result<()> {
    if all_events {
        let all = events::read_all(state_dir)?;
        if json {
            println!("{}", serde_json::to_string_pretty(&all)?);
        } else {
            for e in all {
                println!("{} {:<10} {:?} {}", e.at, e.step, e.kind, e.detail);
            }
        }
        return Ok(());
    }
    let rows = journal::Journal::open(state_dir)?.status();
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        for r in rows {
            println!("{:<10} {:<8} {:<21} {}", r.step, r.state, r.at, r.detail);
        }
        if let Some(site) = site(state_dir) {
            println!();
            for l in site.describe() {
                println!("{l}");
            }
        }
        if let Some(u) = update(state_dir) {
            println!("\n{}", u.line);
            for r in &u.releases {
                println!(
                    "  wave {} {} {:?}: {}",
                    r.wave,
                    r.release,
                    r.change,
                    r.detail.as_deref().unwrap_or(&r.state)
                );
            }
        }
    }
    Ok(())
}

/// The step running now (started at this boot, not yet done or failed).
#[derive(Debug, Serialize, PartialEq)]
pub struct Now {
    pub step: StepId,
    pub since: String,
    pub elapsed_s: u64,
    /// Its last progress line: what it waits for, which wave or release.
    pub doing: String,
    /// The platform's components running side by side, each with its own
    /// last line (the deploy step only).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub components: Vec<ComponentNow>,
}

/// A component deploying now and its last progress line.
#[derive(Debug, Serialize, PartialEq)]
pub struct ComponentNow {
    pub component: String,
    pub doing: String,
}

#[derive(Debug, Serialize)]
pub struct Snapshot {
    pub at: String,
    pub steps: Vec<journal::Row>,
    pub now: Option<Now>,
    pub last_error: Option<String>,
    /// `component/release` → what was applied, and components found ready.
    pub deploy: Option<DeployJournal>,
    pub platform_ready: bool,
    /// Whether the firmware booted this node with Secure Boot enforcing.
    pub secure_boot: crate::facts::SecureBoot,
    /// The site's record (the master's): its nodes and join credentials,
    /// token ids only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub site: Option<Site>,
    /// The last update (`kpaas-agent update`), done or not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub update: Option<crate::update::View>,
}

fn update(state_dir: &Path) -> Option<crate::update::View> {
    crate::update::Record::load(state_dir)
        .ok()
        .flatten()
        .map(|r| r.view())
}

/// The site's record, on the master once its keeper has run.
fn site(state_dir: &Path) -> Option<Site> {
    Site::load(state_dir).ok().filter(|s| !s.listed.is_empty())
}

pub fn snapshot(state_dir: &Path) -> Result<Snapshot> {
    let all = events::read_all(state_dir)?;
    let now_s = now_unix();
    let deploy = DeployJournal::open(state_dir)
        .ok()
        .filter(|j| !j.releases.is_empty() || !j.ready.is_empty());
    let steps = journal::Journal::open(state_dir)?.status();
    let platform_ready = steps
        .iter()
        .any(|r| r.step == StepId::Deploy && r.state == "done");
    Ok(Snapshot {
        at: rfc3339(now_s),
        now: running(&all, now_s),
        last_error: all
            .iter()
            .rev()
            .find(|e| e.kind == Kind::Failed)
            .map(|e| format!("{} {}: {}", e.at, e.step, e.detail)),
        steps,
        deploy,
        platform_ready,
        secure_boot: crate::facts::secure_boot(Path::new("/")),
        site: site(state_dir),
        update: update(state_dir),
    })
}

/// The last started step with no outcome after it.
fn running(all: &[Event], now_s: u64) -> Option<Now> {
    let start = all.iter().rposition(|e| e.kind == Kind::Started)?;
    let s = &all[start];
    let after = &all[start + 1..];
    if after
        .iter()
        .any(|e| e.step == s.step && matches!(e.kind, Kind::Done | Kind::Failed))
    {
        return None;
    }
    let doing = after
        .iter()
        .rev()
        .find(|e| e.step == s.step && e.kind == Kind::Progress)
        .map(|e| e.detail.clone())
        .unwrap_or_default();
    // Each component's last line; one whose last line is its readiness
    // (the line that carries its cost) is done.
    let mut last: Vec<(&str, &Event)> = Vec::new();
    for e in after.iter().filter(|e| e.step == s.step) {
        if let Some(c) = e.component.as_deref() {
            match last.iter_mut().find(|(n, _)| *n == c) {
                Some(slot) => slot.1 = e,
                None => last.push((c, e)),
            }
        }
    }
    let components = last
        .into_iter()
        .filter(|(_, e)| e.took.is_none())
        .map(|(c, e)| ComponentNow {
            component: c.to_string(),
            doing: e.detail.clone(),
        })
        .collect();
    Some(Now {
        step: s.step,
        since: s.at.clone(),
        elapsed_s: parse_rfc3339(&s.at).map_or(0, |t| now_s.saturating_sub(t)),
        doing,
        components,
    })
}

/// The page for people: one line per step, then what runs now, the
/// deploy's releases and the last error.
pub fn text(s: &Snapshot) -> String {
    let mut out = format!(
        "kpaas-agent status at {}\nsecure boot: {}\n\n",
        s.at,
        s.secure_boot.describe()
    );
    for r in &s.steps {
        out.push_str(&format!(
            "{:<10} {:<8} {:<21} {}\n",
            r.step, r.state, r.at, r.detail
        ));
    }
    match &s.now {
        Some(n) if !n.components.is_empty() => {
            out.push_str(&format!(
                "\nnow: {} for {} s, {} component(s) at once:\n",
                n.step,
                n.elapsed_s,
                n.components.len()
            ));
            for c in &n.components {
                out.push_str(&format!("  {}: {}\n", c.component, c.doing));
            }
        }
        Some(n) => out.push_str(&format!(
            "\nnow: {} for {} s{}\n",
            n.step,
            n.elapsed_s,
            if n.doing.is_empty() {
                String::new()
            } else {
                format!(": {}", n.doing)
            }
        )),
        None if s.platform_ready => out.push_str("\nplatform ready\n"),
        None => {}
    }
    if let Some(d) = &s.deploy {
        out.push_str("\ndeploy:\n");
        for (k, r) in &d.releases {
            out.push_str(&format!("  wave {} {k}: {}\n", r.wave, r.detail));
        }
        for (k, r) in &d.ready {
            out.push_str(&format!("  wave {} {k}: {}\n", r.wave, r.detail));
        }
    }
    if let Some(site) = &s.site {
        out.push_str("\nsite:\n");
        for l in site.describe() {
            out.push_str(&format!("  {l}\n"));
        }
    }
    if let Some(u) = &s.update {
        out.push_str(&format!("\n{}\n", u.line));
        for r in &u.releases {
            out.push_str(&format!(
                "  wave {} {} {:?}: {}\n",
                r.wave,
                r.release,
                r.change,
                r.detail.as_deref().unwrap_or(&r.state)
            ));
        }
    }
    if let Some(e) = &s.last_error {
        out.push_str(&format!("\nlast error: {e}\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests: a panic is the failure report
    use super::*;
    use crate::events::Sink;

    #[test]
    fn the_snapshot_says_what_runs_what_it_waits_for_and_the_last_error() {
        let t = tempfile::tempdir().unwrap();
        let mut s = Sink::open(t.path()).unwrap().quiet();
        s.emit(StepId::Ready, Kind::Started, "").unwrap();
        s.emit(StepId::Ready, Kind::Failed, "node kpaas-worker1 not Ready")
            .unwrap();
        s.emit(StepId::Ready, Kind::Started, "").unwrap();
        s.emit(StepId::Ready, Kind::Done, "cluster ready").unwrap();
        s.emit(StepId::Deploy, Kind::Started, "").unwrap();
        s.emit(StepId::Deploy, Kind::Progress, "wave 2: apps")
            .unwrap();
        s.emit(
            StepId::Deploy,
            Kind::Progress,
            "waiting for apps to be ready (30 s: demo/job/demo-pre-install not complete)",
        )
        .unwrap();
        let mut j = DeployJournal::open(t.path()).unwrap();
        j.mark_applied(
            "apps",
            "demo",
            2,
            "helm release demo/demo deployed (revision 1)",
        )
        .unwrap();
        let snap = snapshot(t.path()).unwrap();
        let now = snap.now.as_ref().unwrap();
        assert_eq!(now.step, StepId::Deploy);
        assert!(now.doing.contains("demo-pre-install"), "{now:?}");
        assert!(!snap.platform_ready);
        assert!(
            snap.last_error
                .as_deref()
                .unwrap()
                .contains("ready: node kpaas-worker1 not Ready"),
            "{:?}",
            snap.last_error
        );
        let page = text(&snap);
        for want in [
            "ready      done",
            "now: deploy for ",
            "demo-pre-install not complete",
            "wave 2 apps/demo: helm release demo/demo deployed (revision 1)",
            "last error: ",
        ] {
            assert!(page.contains(want), "{want:?} in:\n{page}");
        }
        // Components side by side: each with its own last line; one whose
        // readiness was said is not listed.
        let mut vault = s.fork("vault").unwrap();
        let mut harbor = s.fork("harbor").unwrap();
        vault
            .progress(
                StepId::Deploy,
                "waiting for vault to be ready (12 s: vault-0 sealed)",
            )
            .unwrap();
        harbor
            .progress(
                StepId::Deploy,
                "harbor: registry.yaml applied server-side (6 object(s))",
            )
            .unwrap();
        harbor
            .progress_took(
                StepId::Deploy,
                "harbor: ready in 40 s",
                &crate::ledger::mark(),
            )
            .unwrap();
        s.emit(StepId::Deploy, Kind::Progress, "wave 3: keycloak")
            .unwrap();
        let snap = snapshot(t.path()).unwrap();
        let now = snap.now.as_ref().unwrap();
        assert_eq!(
            now.components,
            [ComponentNow {
                component: "vault".into(),
                doing: "waiting for vault to be ready (12 s: vault-0 sealed)".into()
            }]
        );
        let page = text(&snap);
        assert!(
            page.contains("1 component(s) at once:\n  vault: waiting for vault to be ready"),
            "{page}"
        );
        s.emit(StepId::Deploy, Kind::Done, "platform ready: 3 component(s)")
            .unwrap();
        let snap = snapshot(t.path()).unwrap();
        assert!(snap.now.is_none() && snap.platform_ready);
        assert!(text(&snap).contains("\nplatform ready\n"));
        let json = serde_json::to_value(&snap).unwrap();
        assert_eq!(json["platform_ready"], true);
        assert_eq!(json["deploy"]["releases"]["apps/demo"]["wave"], 2);
    }
}
