//! The deploy journal (`deploy.json` in the state directory): one record
//! per release applied and per component found ready, each written
//! atomically the moment it happens. A run after kill -9 or a power cut
//! skips what is recorded, so no release is installed twice; `--from WAVE`
//! forgets the records of that wave and later ones.

use crate::state_file;
use airgap_bundle::fsutil::{now_unix, rfc3339};
use anyhow::Result;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub const DEPLOY_JOURNAL: &str = "deploy.json";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Record {
    pub wave: usize,
    pub at: String,
    /// What was done ("helm release demo/demo revision 1", "ready in 12 s").
    pub detail: String,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct DeployJournal {
    /// `component/release` → applied.
    pub releases: BTreeMap<String, Record>,
    /// component → every readiness check held.
    pub ready: BTreeMap<String, Record>,
    /// `host:port/project` once the hand-off filled the platform's
    /// registry: the master's mirrors point there, and workers read it from
    /// the master's node endpoint (`crate::node_api`) to point theirs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registry: Option<String>,
    #[serde(skip)]
    path: PathBuf,
}

pub fn release_key(component: &str, release: &str) -> String {
    format!("{component}/{release}")
}

impl DeployJournal {
    pub fn open(state_dir: &Path) -> Result<DeployJournal> {
        let path = state_dir.join(DEPLOY_JOURNAL);
        let mut j: DeployJournal = state_file::load(&path, "the deploy journal")?;
        j.path = path;
        Ok(j)
    }

    fn save(&self) -> Result<()> {
        state_file::save(&self.path, "the deploy journal", self)
    }

    pub fn applied(&self, component: &str, release: &str) -> Option<&Record> {
        self.releases.get(&release_key(component, release))
    }

    pub fn is_ready(&self, component: &str) -> bool {
        self.ready.contains_key(component)
    }

    fn record(wave: usize, detail: &str) -> Record {
        Record {
            wave,
            at: rfc3339(now_unix()),
            detail: detail.to_string(),
        }
    }

    pub fn mark_applied(
        &mut self,
        component: &str,
        release: &str,
        wave: usize,
        detail: &str,
    ) -> Result<()> {
        self.releases
            .insert(release_key(component, release), Self::record(wave, detail));
        self.save()
    }

    pub fn mark_ready(&mut self, component: &str, wave: usize, detail: &str) -> Result<()> {
        self.ready
            .insert(component.to_string(), Self::record(wave, detail));
        self.save()
    }

    /// Forgets a release an update removed (and its component's readiness).
    pub fn forget(&mut self, component: &str, release: &str) -> Result<()> {
        self.releases.remove(&release_key(component, release));
        self.ready.remove(component);
        self.save()
    }

    pub fn set_registry(&mut self, registry: &str) -> Result<()> {
        self.registry = Some(registry.to_string());
        self.save()
    }

    /// Forgets every record of wave `from` and later: they run again.
    pub fn forget_from(&mut self, from: usize) -> Result<usize> {
        let before = self.releases.len() + self.ready.len();
        self.releases.retain(|_, r| r.wave < from);
        self.ready.retain(|_, r| r.wave < from);
        let forgotten = before - self.releases.len() - self.ready.len();
        self.save()?;
        Ok(forgotten)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests: a panic is the failure report
    use super::*;

    #[test]
    fn records_survive_reopening_and_from_forgets_later_waves() {
        let t = tempfile::tempdir().unwrap();
        let mut j = DeployJournal::open(t.path()).unwrap();
        j.mark_applied("ingress", "demo-ingress", 1, "rev 1")
            .unwrap();
        j.mark_ready("ingress", 1, "ready").unwrap();
        j.mark_applied("apps", "demo", 2, "rev 1").unwrap();
        let mut j = DeployJournal::open(t.path()).unwrap();
        assert!(j.applied("ingress", "demo-ingress").is_some());
        assert!(j.is_ready("ingress") && !j.is_ready("apps"));
        assert_eq!(j.forget_from(2).unwrap(), 1);
        let j = DeployJournal::open(t.path()).unwrap();
        assert!(j.applied("apps", "demo").is_none());
        assert!(j.applied("ingress", "demo-ingress").is_some());
        // A torn file is an error naming it, not an empty journal.
        std::fs::write(t.path().join(DEPLOY_JOURNAL), b"{\"releases\": {").unwrap();
        let e = DeployJournal::open(t.path()).unwrap_err();
        assert!(format!("{e:#}").contains(DEPLOY_JOURNAL), "{e:#}");
    }
}
