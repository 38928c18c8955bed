//! The first-boot journal: each step's completion is recorded atomically
//! (temp file, fsync, rename, fsync dir), so a crash or reboot resumes at the
//! first unfinished step and a run after success does nothing.

use airgap_bundle::fsutil::{now_unix, rfc3339, write_atomic};
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub const STEPS: &[&str] = &["identity", "preflight", "verify", "serve", "mirrors"];

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Done,
    Failed,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Entry {
    pub state: State,
    pub at: String,
    pub detail: String,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Journal {
    pub steps: BTreeMap<String, Entry>,
    #[serde(skip)]
    path: PathBuf,
}

impl Journal {
    pub fn open(state_dir: &Path) -> Result<Journal> {
        let path = state_dir.join("firstboot.json");
        let mut j: Journal = match std::fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b)
                .with_context(|| format!("parsing journal {}", path.display()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Journal::default(),
            Err(e) => return Err(e).with_context(|| format!("reading journal {}", path.display())),
        };
        j.path = path;
        Ok(j)
    }

    pub fn done(&self, step: &str) -> bool {
        self.steps.get(step).is_some_and(|e| e.state == State::Done)
    }

    pub fn record(&mut self, step: &str, state: State, detail: &str) -> Result<()> {
        self.steps.insert(
            step.to_string(),
            Entry {
                state,
                at: rfc3339(now_unix()),
                detail: detail.to_string(),
            },
        );
        write_atomic(&self.path, &serde_json::to_vec_pretty(self)?)
    }

    /// Each step in order with its state (`pending` when not yet run).
    pub fn status(&self) -> Vec<(String, String, String, String)> {
        STEPS
            .iter()
            .map(|s| match self.steps.get(*s) {
                Some(e) => (
                    s.to_string(),
                    format!("{:?}", e.state).to_lowercase(),
                    e.at.clone(),
                    e.detail.clone(),
                ),
                None => (
                    s.to_string(),
                    "pending".into(),
                    String::new(),
                    String::new(),
                ),
            })
            .collect()
    }
}
