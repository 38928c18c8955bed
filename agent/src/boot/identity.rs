//! Which inventory node this machine is (by MAC, else hostname, else IP),
//! then a bounded wait for its address: networkd applies cloud-init's
//! network config moments after the agent may start. Cheap, so every boot.

use super::{Ctx, Rerun, Step, StepId, always};
use crate::events::Sink;
use crate::facts;
use airgap_bundle::node::{self, NodeConfig, NodeEntry};
use anyhow::Result;
use std::net::IpAddr;
use std::path::Path;
use std::time::{Duration, Instant};

/// How long a boot waits for its address; preflight then reports it.
const ADDRESS_WAIT: Duration = Duration::from_secs(30);

pub const STEP: Step = Step {
    id: StepId::Identity,
    rerun: Rerun::EveryBoot,
    applies: always,
    run: work,
};

fn work(ctx: &mut Ctx, events: &mut Sink) -> Result<String> {
    let me = whoami(&ctx.cfg, &ctx.root)?.clone();
    let who = format!("{} ({:?}, {})", me.hostname, me.role, me.ip).to_lowercase();
    if !wait_for_address(&ctx.root, me.ip, ADDRESS_WAIT) {
        events.progress(
            StepId::Identity,
            &format!(
                "{} is not on any interface after {} s",
                me.ip,
                ADDRESS_WAIT.as_secs()
            ),
        )?;
    }
    ctx.me = Some(me);
    Ok(who)
}

pub fn whoami<'a>(cfg: &'a NodeConfig, root: &Path) -> Result<&'a NodeEntry> {
    node::identify(cfg, &facts::gather(root)).map_err(|e| anyhow::anyhow!(e))
}

fn wait_for_address(root: &Path, ip: IpAddr, max: Duration) -> bool {
    let t = Instant::now();
    loop {
        if ip.is_loopback() || facts::local_ips(root).contains(&ip) {
            return true;
        }
        if t.elapsed() > max {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
