//! The first boot as a list of steps, one module each, run by one loop that
//! skips what is done, journals each outcome and emits one event per
//! transition. A new step is a new module here and a line in [`STEPS`] or
//! [`CLUSTER_STEPS`].

pub mod cluster;
mod cni;
pub mod credential;
mod deploy;
mod handoff;
pub mod identity;
mod init;
mod install;
mod join;
mod kubelet;
mod live;
mod mirrors;
pub mod preflight;
mod prepare;
pub mod ready;
mod runtime;
pub mod serve;
mod step;
mod unseal;
mod update;
mod verify;

pub use step::{Rerun, Step, StepId, always};

use crate::events::{Kind, Sink};
use crate::seed_registry::Seed;
use airgap_bundle::node::{NodeConfig, NodeEntry};
use airgap_bundle::run::Runner;
use anyhow::{Result, anyhow};
use std::path::PathBuf;
use std::sync::Arc;

/// The boot up to a ready seed registry, in order.
pub const STEPS: &[Step] = &[
    identity::STEP,
    live::STEP,
    preflight::STEP,
    verify::STEP,
    install::STEP,
    serve::STEP,
    mirrors::STEP,
];

/// Then, with the seed serving, the cluster: nothing changes before
/// `prepare` has checked the seed holds every image kubeadm needs; the
/// master inits and lays the CNI, a worker joins; both wait for ready; the
/// master then deploys the platform.
pub const CLUSTER_STEPS: &[Step] = &[
    prepare::STEP,
    runtime::STEP,
    kubelet::STEP,
    init::STEP,
    // Right after init (and at every later boot): a worker racked late
    // finds the join credential valid whatever the later steps do.
    credential::STEP,
    cni::STEP,
    join::STEP,
    ready::STEP,
    // Before deploy: after a reboot mid-deploy, the waves after Vault's
    // need it unsealed (at the first boot there is no key yet).
    unseal::STEP,
    deploy::STEP,
    handoff::STEP,
    // After the platform (the deploy's own resume first): an update a power
    // cut stopped is finished.
    update::STEP,
];

/// Whether this node's seed asks it to form a cluster.
pub fn forms_cluster(ctx: &Ctx) -> bool {
    cluster::forms_cluster(ctx)
}

/// What the steps share: the machine, the config, and what earlier steps of
/// this boot found. Only every-boot steps leave results here, so a step may
/// rely on them even when once-steps were skipped.
pub struct Ctx {
    /// Root of the system (tests use a prepared tree).
    pub root: PathBuf,
    pub cfg: NodeConfig,
    pub runner: Arc<dyn Runner>,
    /// The async runtime the seed registry serves on.
    pub rt: tokio::runtime::Handle,
    pub me: Option<NodeEntry>,
    /// The live medium's device name, when running from the ISO.
    pub live: Option<String>,
    pub seed: Option<Arc<Seed>>,
    pub servers: Vec<tokio::task::JoinHandle<()>>,
    /// Set by a step after which this boot goes no further (the installer
    /// has asked for a reboot).
    pub halt: bool,
}

impl Ctx {
    pub fn new(
        root: PathBuf,
        cfg: NodeConfig,
        runner: Arc<dyn Runner>,
        rt: tokio::runtime::Handle,
    ) -> Ctx {
        Ctx {
            root,
            cfg,
            runner,
            rt,
            me: None,
            live: None,
            seed: None,
            servers: Vec::new(),
            halt: false,
        }
    }

    pub fn me(&self) -> Result<&NodeEntry> {
        self.me
            .as_ref()
            .ok_or_else(|| anyhow!("the identity step has not run at this boot"))
    }

    pub fn seed(&self) -> Result<&Arc<Seed>> {
        self.seed
            .as_ref()
            .ok_or_else(|| anyhow!("the verify step has not run at this boot"))
    }
}

/// Why a boot stopped.
#[derive(Debug)]
pub enum Stopped {
    /// A step failed; its event (console, journal, stream) says why.
    Step(StepId),
    /// The journal or the event stream could not be written.
    Sink(anyhow::Error),
}

/// Runs `steps` in order: skips once-steps already done, runs the rest,
/// records each outcome, stops at the first failure.
pub fn run(ctx: &mut Ctx, events: &mut Sink, steps: &[Step]) -> Result<(), Stopped> {
    for s in steps {
        if !(s.applies)(ctx) {
            continue;
        }
        let id = s.id;
        if s.rerun == Rerun::Once && events.journal().is_some_and(|j| j.done(id)) {
            events
                .emit(id, Kind::Skipped, "done at an earlier boot")
                .map_err(Stopped::Sink)?;
            continue;
        }
        events.emit(id, Kind::Started, "").map_err(Stopped::Sink)?;
        match (s.run)(ctx, events) {
            Ok(detail) => events
                .emit(id, Kind::Done, &detail)
                .map_err(Stopped::Sink)?,
            Err(e) => {
                events
                    .emit(id, Kind::Failed, &format!("{e:#}"))
                    .map_err(Stopped::Sink)?;
                return Err(Stopped::Step(id));
            }
        }
        if ctx.halt {
            break;
        }
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod cluster_tests;

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests: a panic is the failure report
    use super::*;
    use crate::events::read_all;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    /// Three steps that count their runs; the last fails while told to.
    static RUNS: [AtomicUsize; 3] = [
        AtomicUsize::new(0),
        AtomicUsize::new(0),
        AtomicUsize::new(0),
    ];
    static FAIL: AtomicBool = AtomicBool::new(true);

    fn count(i: usize) -> Result<String> {
        let n = RUNS[i].fetch_add(1, Ordering::SeqCst) + 1;
        if i == 2 && FAIL.load(Ordering::SeqCst) {
            anyhow::bail!("mirrors broke");
        }
        Ok(format!("run {n}"))
    }

    const PROBES: [Step; 3] = [
        Step {
            id: StepId::Identity,
            rerun: Rerun::EveryBoot,
            applies: always,
            run: |_, _| count(0),
        },
        Step {
            id: StepId::Preflight,
            rerun: Rerun::Once,
            applies: always,
            run: |_, _| count(1),
        },
        Step {
            id: StepId::Mirrors,
            rerun: Rerun::Once,
            applies: always,
            run: |_, _| count(2),
        },
    ];

    #[test]
    fn the_loop_skips_done_once_steps_reruns_every_boot_ones_and_stops_at_a_failure() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let t = tempfile::tempdir().unwrap();
        let cfg = NodeConfig::with_defaults("c", Vec::new());
        let mut ctx = Ctx::new(
            t.path().into(),
            cfg,
            Arc::new(airgap_bundle::run::Recording::new()),
            rt.handle().clone(),
        );
        let boot = |ctx: &mut Ctx| {
            let mut s = Sink::open(t.path()).unwrap().quiet();
            run(ctx, &mut s, &PROBES)
        };
        // Boot 1: the last step fails; the boot says which.
        assert!(matches!(
            boot(&mut ctx),
            Err(Stopped::Step(StepId::Mirrors))
        ));
        // Boot 2: fixed. Identity runs again, preflight is skipped.
        FAIL.store(false, Ordering::SeqCst);
        assert!(boot(&mut ctx).is_ok());
        // Boot 3: nothing left but the every-boot step.
        assert!(boot(&mut ctx).is_ok());
        let runs = |i: usize| RUNS[i].load(Ordering::SeqCst);
        assert_eq!((runs(0), runs(1), runs(2)), (3, 1, 2));
        let ev: Vec<String> = read_all(t.path())
            .unwrap()
            .iter()
            .map(|e| format!("{} {:?} {}", e.step, e.kind, e.detail))
            .collect();
        assert_eq!(
            ev,
            [
                "identity Started ",
                "identity Done run 1",
                "preflight Started ",
                "preflight Done run 1",
                "mirrors Started ",
                "mirrors Failed mirrors broke",
                "identity Started ",
                "identity Done run 2",
                "preflight Skipped done at an earlier boot",
                "mirrors Started ",
                "mirrors Done run 2",
                "identity Started ",
                "identity Done run 3",
                "preflight Skipped done at an earlier boot",
                "mirrors Skipped done at an earlier boot",
            ]
        );
        // The journal kept identity's first success and mirrors' fix.
        let j = crate::journal::Journal::open(t.path()).unwrap();
        assert_eq!(j.steps[&StepId::Identity].detail, "run 1");
        assert_eq!(j.steps[&StepId::Mirrors].detail, "run 2");
    }
}
