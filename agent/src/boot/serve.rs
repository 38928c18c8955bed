//! The bundle as a read-only OCI registry, on loopback and on the node's
//! own address (workers pull from the master's). Every boot.

use super::{Ctx, Rerun, Step, StepId, always};
use crate::events::Sink;
use crate::{facts, seed_registry};
use anyhow::Result;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

pub const STEP: Step = Step {
    id: StepId::Serve,
    rerun: Rerun::EveryBoot,
    applies: always,
    run: work,
};

fn work(ctx: &mut Ctx, _: &mut Sink) -> Result<String> {
    let me = ctx.me()?.ip;
    let port = ctx.cfg.seed_port;
    let mut listen = vec![SocketAddr::from(([127, 0, 0, 1], port))];
    if !me.is_loopback() && facts::local_ips(&ctx.root).contains(&me) {
        listen.push(SocketAddr::new(me, port));
    }
    let seed = ctx.seed()?.clone();
    // The master answers the site's inventory (read at each request: an
    // update or a node added changes it while the agent runs).
    let inventory: Option<crate::node_api::InventoryFn> =
        (ctx.me()?.role == airgap_bundle::node::Role::Master).then(|| {
            let (root, cfg) = (ctx.root.clone(), ctx.cfg.clone());
            let f: crate::node_api::InventoryFn = Arc::new(move || {
                let cfg = crate::update::store::installed_view(cfg.clone())?;
                crate::update::inventory::gather(&root, &cfg, Arc::new(airgap_bundle::run::Host))
            });
            f
        });
    let handles = ctx.rt.block_on(seed_registry::serve(
        seed,
        &listen,
        Some(&ctx.cfg.state_dir),
        inventory,
    ))?;
    ctx.servers.extend(handles);
    Ok(format!(
        "seed registry ready on {}; status on http://{}/status",
        list(&listen),
        listen[listen.len() - 1]
    ))
}

pub fn list(addrs: &[SocketAddr]) -> String {
    addrs
        .iter()
        .map(|a| a.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// systemd Type=notify: tell it we are up (a no-op outside systemd).
pub fn notify_ready(msg: &str) {
    if let Some(sock) = std::env::var_os("NOTIFY_SOCKET")
        && let Ok(s) = std::os::unix::net::UnixDatagram::unbound()
        && let Err(e) = s.send_to(format!("READY=1\nSTATUS={msg}").as_bytes(), sock)
    {
        eprintln!("kpaas-agent: telling systemd we are ready: {e}");
    }
}

/// The seed registry without a first boot (benches, tests, by hand).
pub fn alone(
    bundle: &Path,
    listen: &[SocketAddr],
    full_verify: bool,
    rt: &tokio::runtime::Runtime,
) -> Result<()> {
    let seed = seed_registry::Seed::load(bundle)?;
    if full_verify {
        airgap_bundle::verify::verify(bundle, None)?.into_result()?;
        seed.trust_all();
    }
    let handles = rt.block_on(seed_registry::serve(Arc::new(seed), listen, None, None))?;
    let ready = format!("seed registry ready on {}", list(listen));
    eprintln!("kpaas-agent: {ready}");
    notify_ready(&ready);
    wait(rt, handles);
    Ok(())
}

/// Serves until every listener has ended.
pub fn wait(rt: &tokio::runtime::Runtime, servers: Vec<tokio::task::JoinHandle<()>>) {
    rt.block_on(async {
        for h in servers {
            // A server task ends only when its listener fails; it said why.
            let _ = h.await;
        }
    });
}
