//! The first-boot journal: each step's outcome is recorded atomically
//! (temp file, fsync, rename), so a crash or reboot resumes at the first
//! unfinished step and a run after success does nothing.

use crate::boot::StepId;
use crate::state_file;
use anyhow::Result;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub const JOURNAL_FILE: &str = "firstboot.json";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Done,
    Failed,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Entry {
    pub state: State,
    pub at: String,
    pub detail: String,
}

/// One row of `status`.
#[derive(Debug, Serialize, PartialEq)]
pub struct Row {
    pub step: StepId,
    /// done, failed or pending.
    pub state: String,
    pub at: String,
    pub detail: String,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Journal {
    pub steps: BTreeMap<StepId, Entry>,
    #[serde(skip)]
    path: PathBuf,
}

impl Journal {
    pub fn open(state_dir: &Path) -> Result<Journal> {
        let path = state_dir.join(JOURNAL_FILE);
        let mut j: Journal = state_file::load(&path, "journal")?;
        j.path = path;
        Ok(j)
    }

    pub fn done(&self, step: StepId) -> bool {
        self.steps
            .get(&step)
            .is_some_and(|e| e.state == State::Done)
    }

    pub fn record(&mut self, step: StepId, state: State, at: &str, detail: &str) -> Result<()> {
        self.steps.insert(
            step,
            Entry {
                state,
                at: at.into(),
                detail: detail.into(),
            },
        );
        state_file::save(&self.path, "the journal", self)
    }

    /// Each step in order with its state (`pending` when not yet run);
    /// conditional steps only once they ran.
    /// One row per step in boot order. Steps that only some boots or roles
    /// run are listed once they ran; the cluster stage's steps once it began
    /// (a node seeded for the registry only never forms a cluster).
    pub fn status(&self) -> Vec<Row> {
        let cluster = self.steps.keys().any(|s| s.cluster());
        StepId::ALL
            .iter()
            .filter_map(|s| match self.steps.get(s) {
                Some(e) => Some(Row {
                    step: *s,
                    state: format!("{:?}", e.state).to_lowercase(),
                    at: e.at.clone(),
                    detail: e.detail.clone(),
                }),
                None if s.conditional() || (s.cluster() && !cluster) => None,
                None => Some(Row {
                    step: *s,
                    state: "pending".into(),
                    at: String::new(),
                    detail: String::new(),
                }),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests: a panic is the failure report
    use super::*;

    #[test]
    fn a_record_survives_reopening_and_status_keeps_step_order() {
        let t = tempfile::tempdir().unwrap();
        let mut j = Journal::open(t.path()).unwrap();
        assert!(!j.done(StepId::Identity));
        j.record(StepId::Verify, State::Failed, "t1", "bad blob")
            .unwrap();
        j.record(StepId::Identity, State::Done, "t0", "m1").unwrap();
        let j = Journal::open(t.path()).unwrap();
        assert!(j.done(StepId::Identity) && !j.done(StepId::Verify));
        let rows: Vec<String> = j
            .status()
            .iter()
            .map(|r| format!("{}={}", r.step, r.state))
            .collect();
        // Live and install did not run: not listed, nor the cluster stage,
        // which has not begun; the rest in boot order.
        assert_eq!(
            rows,
            [
                "identity=done",
                "preflight=pending",
                "verify=failed",
                "serve=pending",
                "mirrors=pending",
            ]
        );
        // Once the cluster stage began, its steps are listed; a master's
        // join never is.
        let mut j = j;
        j.record(StepId::Init, State::Failed, "t2", "refused")
            .unwrap();
        let rows: Vec<String> = j
            .status()
            .iter()
            .filter(|r| r.step.cluster())
            .map(|r| format!("{}={}", r.step, r.state))
            .collect();
        assert_eq!(
            rows,
            [
                "prepare=pending",
                "runtime=pending",
                "kubelet=pending",
                "init=failed",
                "ready=pending"
            ]
        );
        // The file names steps by their ids.
        let text = std::fs::read_to_string(t.path().join(JOURNAL_FILE)).unwrap();
        assert!(
            text.contains("\"identity\"") && text.contains("\"failed\""),
            "{text}"
        );
    }

    #[test]
    fn an_unknown_step_or_a_torn_file_is_an_error_naming_the_file() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join(JOURNAL_FILE);
        std::fs::write(
            &p,
            r#"{"steps":{"identiy":{"state":"done","at":"","detail":""}}}"#,
        )
        .unwrap();
        let e = format!("{:#}", Journal::open(t.path()).unwrap_err());
        assert!(
            e.contains(&p.display().to_string()) && e.contains("identiy"),
            "{e}"
        );
        std::fs::write(&p, "{\"steps\":").unwrap();
        assert!(Journal::open(t.path()).is_err());
    }
}
