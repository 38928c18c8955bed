//! One event per step transition, written three ways from the same value:
//! a console line (systemd sends it to the serial console and the
//! journal), the first-boot journal (done and failed), and a JSON-lines
//! stream (`events.jsonl` in the state directory) that status readers and
//! the coming HTTP status page read. Details never carry secrets: steps put
//! paths and counts in them, not tokens or keys.

use crate::boot::StepId;
use crate::journal::{Journal, State};
use crate::ledger::{self, Cpu, Mark, Took, uptime};
use airgap_bundle::fsutil::{create_dir, now_unix, rfc3339};
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

pub const EVENTS_FILE: &str = "events.jsonl";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Started,
    /// Something a step wants seen while it works (waiting, writing).
    Progress,
    Done,
    Failed,
    /// Not run: done at an earlier boot.
    Skipped,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub at: String,
    pub step: StepId,
    pub kind: Kind,
    pub detail: String,
    /// Seconds since the kernel started (`/proc/uptime`): the events of
    /// one boot on one clock, finer than `at`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uptime_s: Option<f64>,
    /// A step's outcome (or a component's readiness): what its time went
    /// to (`crate::ledger`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub took: Option<Took>,
    /// The node's CPU since power-on by process kind, at the moments the
    /// report needs (the cluster ready, the platform ready).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<Cpu>,
    /// The platform component whose thread wrote it (components deploy
    /// side by side): what the status page groups by.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub component: Option<String>,
}

impl Event {
    /// The console's line; started and skipped steps stay off the console
    /// (one line per step there).
    pub fn console_line(&self) -> Option<String> {
        match self.kind {
            Kind::Started | Kind::Skipped => None,
            Kind::Failed => Some(format!(
                "kpaas-agent: {}: FAILED: {}",
                self.step, self.detail
            )),
            Kind::Progress | Kind::Done => {
                Some(format!("kpaas-agent: {}: {}", self.step, self.detail))
            }
        }
    }
}

/// Where events go.
pub struct Sink {
    /// The boot journal; none on a component's sink ([`Sink::fork`]): its
    /// events are progress only, the step's outcome is its own sink's.
    journal: Option<Journal>,
    /// events.jsonl, opened once in append mode.
    stream: File,
    stream_path: PathBuf,
    console: bool,
    /// Each running step's start, for its cost at its outcome.
    marks: std::collections::BTreeMap<StepId, Mark>,
    /// Set on a component's own sink ([`Sink::fork`]), on each event.
    component: Option<String>,
}

impl Sink {
    pub fn open(state_dir: &Path) -> Result<Sink> {
        create_dir(state_dir)?;
        let stream_path = state_dir.join(EVENTS_FILE);
        let stream = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&stream_path)
            .with_context(|| format!("opening {}", stream_path.display()))?;
        Ok(Sink {
            journal: Some(Journal::open(state_dir)?),
            stream,
            stream_path,
            console: true,
            marks: Default::default(),
            component: None,
        })
    }

    /// Another sink on the same stream and console, for a component's own
    /// thread (components deploy side by side): its events name it. Each
    /// event is one append, so the threads' lines interleave whole.
    /// It shares the stream's open file and carries no journal, so a fork
    /// reads nothing from disk.
    pub fn fork(&self, component: &str) -> Result<Sink> {
        Ok(Sink {
            journal: None,
            stream: self
                .stream
                .try_clone()
                .with_context(|| format!("sharing {}", self.stream_path.display()))?,
            stream_path: self.stream_path.clone(),
            console: self.console,
            marks: Default::default(),
            component: Some(component.to_string()),
        })
    }

    /// No console lines (unit tests).
    #[cfg(test)]
    pub fn quiet(mut self) -> Sink {
        self.console = false;
        self
    }

    /// The boot journal, of a step's own sink (a fork has none: `None`).
    pub fn journal(&self) -> Option<&Journal> {
        self.journal.as_ref()
    }

    /// A step's outcome carries its cost (from its start) and puts a
    /// `cost:` line on the console after its own.
    pub fn emit(&mut self, step: StepId, kind: Kind, detail: &str) -> Result<()> {
        let took = match kind {
            Kind::Started => {
                self.marks.insert(step, ledger::mark());
                None
            }
            Kind::Done | Kind::Failed => self.marks.remove(&step).map(|m| m.took()),
            _ => None,
        };
        self.write(Event {
            at: rfc3339(now_unix()),
            step,
            kind,
            detail: detail.into(),
            uptime_s: uptime(),
            took,
            cpu: None,
            component: None,
        })
    }

    /// A progress event with what a span of the step (a component) cost
    /// since `from`, its `cost:` line after it on the console.
    pub fn progress_took(&mut self, step: StepId, detail: &str, from: &Mark) -> Result<()> {
        self.write(Event {
            at: rfc3339(now_unix()),
            step,
            kind: Kind::Progress,
            detail: detail.into(),
            uptime_s: uptime(),
            took: Some(from.took()),
            cpu: None,
            component: None,
        })
    }

    /// The node's CPU since power-on by process kind, as a progress event
    /// with a `cpu:` line on the console.
    pub fn cpu(&mut self, step: StepId) -> Result<()> {
        let Some(cpu) = ledger::cpu() else {
            return Ok(());
        };
        self.write(Event {
            at: rfc3339(now_unix()),
            step,
            kind: Kind::Progress,
            detail: format!("cpu: {}", cpu.line()),
            uptime_s: uptime(),
            took: None,
            cpu: Some(cpu),
            component: None,
        })
    }

    fn write(&mut self, mut e: Event) -> Result<()> {
        e.component.clone_from(&self.component);
        let (step, kind, detail) = (e.step, e.kind, e.detail.clone());
        let detail = detail.as_str();
        if self.console
            && let Some(line) = e.console_line()
        {
            // The cost line right after its outcome, in one write: a
            // concurrent thread's line never lands between them.
            let cost = e
                .took
                .as_ref()
                .map(|t| format!("kpaas-agent: {step}: cost: {}\n", t.line()))
                .unwrap_or_default();
            eprint!("{line}\n{cost}");
        }
        // One write per line in append mode: readers never see half a line
        // from us, and a crash loses at most the last event.
        let mut line = serde_json::to_vec(&e).context("encoding an event")?;
        line.push(b'\n');
        self.stream
            .write_all(&line)
            .with_context(|| format!("appending to {}", self.stream_path.display()))?;
        let Some(journal) = self.journal.as_mut() else {
            return Ok(());
        };
        match kind {
            // The first success is the one `status` shows: when the node got there.
            Kind::Done if !journal.done(step) => journal.record(step, State::Done, &e.at, detail),
            Kind::Failed => journal.record(step, State::Failed, &e.at, detail),
            _ => Ok(()),
        }
    }

    pub fn progress(&mut self, step: StepId, detail: &str) -> Result<()> {
        self.emit(step, Kind::Progress, detail)
    }
}

/// Every event recorded in `state_dir`, oldest first. A line that does not
/// parse is skipped: the stream is append-only, so it can only be a write a
/// power cut tore (seen: the master's status page unreadable for the rest of
/// its life after a cut during kubeadm init).
pub fn read_all(state_dir: &Path) -> Result<Vec<Event>> {
    let p = state_dir.join(EVENTS_FILE);
    let bytes = match std::fs::read(&p) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("reading {}", p.display())),
    };
    Ok(String::from_utf8_lossy(&bytes)
        .lines()
        .filter_map(|l| serde_json::from_str(l.trim_matches('\0')).ok())
        .collect())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests: a panic is the failure report
    use super::*;

    #[test]
    fn one_event_reaches_the_stream_the_journal_and_the_console_text() {
        let t = tempfile::tempdir().unwrap();
        let mut s = Sink::open(t.path()).unwrap().quiet();
        s.emit(StepId::Verify, Kind::Started, "").unwrap();
        s.emit(StepId::Verify, Kind::Done, "fast: 3 artifacts")
            .unwrap();
        // Again at a later boot: streamed, but the journal keeps the first.
        let first = s.journal().unwrap().steps[&StepId::Verify].clone();
        s.emit(StepId::Verify, Kind::Done, "fast: 4 artifacts")
            .unwrap();
        assert_eq!(s.journal().unwrap().steps[&StepId::Verify], first);
        s.emit(StepId::Serve, Kind::Failed, "port 5050 in use")
            .unwrap();
        let ev = read_all(t.path()).unwrap();
        assert_eq!(ev.len(), 4);
        assert_eq!(
            ev.iter().map(|e| e.console_line()).collect::<Vec<_>>(),
            [
                None,
                Some("kpaas-agent: verify: fast: 3 artifacts".into()),
                Some("kpaas-agent: verify: fast: 4 artifacts".into()),
                Some("kpaas-agent: serve: FAILED: port 5050 in use".into()),
            ]
        );
        // The journal on disk agrees with the stream.
        let j = Journal::open(t.path()).unwrap();
        assert_eq!(j.steps[&StepId::Verify].detail, "fast: 3 artifacts");
        assert_eq!(j.steps[&StepId::Serve].state, State::Failed);
        assert_eq!(j.steps[&StepId::Serve].at, ev[3].at);
    }

    #[test]
    fn a_line_a_power_cut_tore_is_skipped_not_fatal() {
        let t = tempfile::tempdir().unwrap();
        let mut s = Sink::open(t.path()).unwrap().quiet();
        s.emit(StepId::Init, Kind::Started, "").unwrap();
        drop(s);
        // The tail a cut leaves: half a line, zeros where blocks were.
        let p = t.path().join(EVENTS_FILE);
        let mut b = std::fs::read(&p).unwrap();
        b.extend_from_slice(b"{\"at\":\"2026-12-03T1");
        b.extend_from_slice(&[0u8; 64]);
        b.push(b'\n');
        std::fs::write(&p, &b).unwrap();
        let mut s = Sink::open(t.path()).unwrap().quiet();
        s.emit(StepId::Init, Kind::Done, "after the cut").unwrap();
        let ev = read_all(t.path()).unwrap();
        assert_eq!(ev.len(), 2, "{ev:?}");
        assert_eq!(ev[1].detail, "after the cut");
    }
}
