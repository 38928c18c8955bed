//! What a first-boot step is: a typed id, a rerun rule, and the work.

use super::Ctx;
use crate::events::Sink;
use anyhow::Result;
use serde::{Deserialize, Serialize};
use std::fmt;

/// Every step, in the order a boot runs them. The journal, the event stream
/// and `status` name steps by this id only, so a typo cannot add a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StepId {
    Identity,
    Live,
    Preflight,
    Verify,
    Install,
    Serve,
    Mirrors,
    Prepare,
    Runtime,
    Kubelet,
    Init,
    Credential,
    Cni,
    Join,
    Ready,
    Unseal,
    Deploy,
    Handoff,
    /// Not a boot step: the site's nodes added and removed on day 2
    /// (`kpaas-agent node add|remove`), in the same event stream.
    Nodes,
    /// An update bundle applied (`kpaas-agent update`); at a master's boot,
    /// an unfinished one resumed.
    Update,
}

impl StepId {
    pub const ALL: &[StepId] = &[
        StepId::Identity,
        StepId::Live,
        StepId::Preflight,
        StepId::Verify,
        StepId::Install,
        StepId::Serve,
        StepId::Mirrors,
        StepId::Prepare,
        StepId::Runtime,
        StepId::Kubelet,
        StepId::Init,
        StepId::Credential,
        StepId::Cni,
        StepId::Join,
        StepId::Ready,
        StepId::Unseal,
        StepId::Deploy,
        StepId::Handoff,
        StepId::Nodes,
        StepId::Update,
    ];

    /// Steps that only some boots or roles run (live from the ISO,
    /// installing; the master's init and CNI, a worker's join): `status`
    /// lists them only once they have run.
    pub fn conditional(self) -> bool {
        matches!(
            self,
            StepId::Live
                | StepId::Install
                | StepId::Init
                | StepId::Credential
                | StepId::Cni
                | StepId::Join
                | StepId::Deploy
                | StepId::Handoff
                | StepId::Unseal
                | StepId::Nodes
                | StepId::Update
        )
    }

    /// Steps of the cluster stage, after the seed registry is up.
    pub fn cluster(self) -> bool {
        self >= StepId::Prepare
    }

    pub fn name(self) -> &'static str {
        match self {
            StepId::Identity => "identity",
            StepId::Live => "live",
            StepId::Preflight => "preflight",
            StepId::Verify => "verify",
            StepId::Install => "install",
            StepId::Serve => "serve",
            StepId::Mirrors => "mirrors",
            StepId::Prepare => "prepare",
            StepId::Runtime => "runtime",
            StepId::Kubelet => "kubelet",
            StepId::Init => "init",
            StepId::Credential => "credential",
            StepId::Cni => "cni",
            StepId::Join => "join",
            StepId::Ready => "ready",
            StepId::Deploy => "deploy",
            StepId::Handoff => "handoff",
            StepId::Unseal => "unseal",
            StepId::Nodes => "nodes",
            StepId::Update => "update",
        }
    }
}

impl fmt::Display for StepId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // pad: `status` lines up its columns with `{:<10}`.
        f.pad(self.name())
    }
}

/// When a step runs again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rerun {
    /// Once done, never again (it changed the machine; doing it twice would
    /// redo or undo work).
    Once,
    /// On every boot (it is cheap, or its result lives only in memory: a
    /// mounted medium, a listening registry). The journal keeps the first
    /// success, so `status` shows when the node first got there.
    EveryBoot,
}

/// One first-boot step: its id, when it runs again, whether it applies to
/// this node at this boot, and the work. `run` returns what "done" records
/// in the journal and says on the console; progress on the way goes to the
/// sink. A table of these, not a trait: each step module declares one
/// `STEP` and the boot is the list of them.
pub struct Step {
    pub id: StepId,
    pub rerun: Rerun,
    pub applies: fn(&Ctx) -> bool,
    pub run: fn(&mut Ctx, &mut Sink) -> Result<String>,
}

/// For steps every node runs at every boot.
pub fn always(_: &Ctx) -> bool {
    true
}
