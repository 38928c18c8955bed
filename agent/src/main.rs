//! `kpaas-agent`: the first-boot agent on every node. It finds the node in the
//! inventory, checks the machine, verifies the bundle, serves it as a
//! read-only seed registry and points the container runtime at it, then
//! forms the cluster from it (kubeadm init on the master, join on workers),
//! recording each step so that a crash or reboot resumes where it stopped.
//! This file is the command line; the boot's steps live in `boot/`.

mod boot;
mod config;
mod deploy;
mod events;
mod facts;
mod fill;
mod grow;
mod journal;
mod k8s;
mod kube;
mod ledger;
mod mirrors;
mod node_api;
mod preflight;
mod probe;
mod runtime;
mod seed_registry;
mod site;
mod state_file;
mod status;
mod update;
mod vault;

use airgap_bundle::node::{self, Role};
use airgap_bundle::run::Host;
use anyhow::{Result, bail};
use clap::{Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

#[derive(Parser)]
#[command(
    name = "kpaas-agent",
    version,
    about = "K-PaaS appliance first-boot agent",
    max_term_width = 80
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(clap::Args, Clone)]
struct ConfigArg {
    /// Node config (cloud-init writes it; else read from a CIDATA volume).
    #[arg(long, default_value = node::NODE_CONFIG_PATH)]
    config: PathBuf,
    /// Root of the system to inspect and configure (tests use a temp tree).
    #[arg(long, default_value = "/")]
    root: PathBuf,
}

#[derive(Subcommand)]
enum Cmd {
    /// The first boot: identity, preflight, verify, serve, mirrors, then the
    /// cluster: prepare, runtime, kubelet, init or join, cni, ready (journaled).
    Run {
        #[command(flatten)]
        c: ConfigArg,
        /// Return once the seed registry is ready (no cluster, no serving on).
        #[arg(long)]
        no_wait: bool,
    },
    /// Check the machine against this node's needs.
    Preflight {
        #[command(flatten)]
        c: ConfigArg,
        #[arg(long)]
        json: bool,
    },
    /// Say which inventory node this machine is.
    Identity {
        #[command(flatten)]
        c: ConfigArg,
    },
    /// Serve a bundle as a read-only OCI registry.
    Serve {
        #[arg(long)]
        bundle: PathBuf,
        /// Address to listen on (repeatable).
        #[arg(long, required = true)]
        listen: Vec<SocketAddr>,
        /// Hash every blob before serving, instead of on first read.
        #[arg(long)]
        full_verify: bool,
    },
    /// Push every image and chart of a bundle into a registry (the Harbor
    /// hand-off, by hand): skips blobs it has, mounts across repositories,
    /// reads every manifest back. Prints the report as JSON.
    Fill {
        #[arg(long)]
        bundle: PathBuf,
        /// The registry's plain-HTTP endpoint, host:port.
        #[arg(long)]
        registry: String,
        #[arg(long, default_value = "cp-portal-repository")]
        project: String,
        /// Harbor: make the project first, as admin with the password in
        /// $KPAAS_HARBOR_PASSWORD (never on the command line).
        #[arg(long)]
        harbor: bool,
        /// Blobs sent at once.
        #[arg(long, default_value_t = 4)]
        jobs: usize,
        /// A seed registry serving the same bundle (host:port): its read
        /// rate is measured after the push, as the yardstick.
        #[arg(long)]
        seed: Option<String>,
        /// Hash every blob before the push (timed apart) instead of while
        /// sending it: the push's rate is then the registry's intake alone.
        #[arg(long)]
        verify_first: bool,
    },
    /// Write the runtime mirror configuration for a bundle.
    Mirrors {
        #[arg(long)]
        bundle: PathBuf,
        /// The seed registry as host:port (default: loopback, the seed port).
        #[arg(long)]
        seed: Option<String>,
        /// The platform's registry as host:port/project, tried before the
        /// seed (after the Harbor hand-off).
        #[arg(long)]
        platform: Option<String>,
        #[arg(long, default_value = "/")]
        root: PathBuf,
    },
    /// Deploy the platform's waves now (the master does at first boot):
    /// resumes after the last finished release; --from re-runs waves.
    Deploy {
        #[command(flatten)]
        c: ConfigArg,
        /// Run this wave and every later one again (Helm upgrades,
        /// manifests re-applied), whatever the journal says.
        #[arg(long)]
        from: Option<usize>,
        /// How long one component's readiness may take, in seconds.
        #[arg(long, default_value_t = deploy::READY_LIMIT.as_secs())]
        timeout: u64,
    },
    /// The site's nodes, on the master: add one on day 2 (its own join
    /// credential and a CIDATA seed), remove one, list them.
    Node {
        #[command(subcommand)]
        cmd: NodeCmd,
    },
    /// The site's inventory, on the master: the bundle it runs (serial,
    /// digest), every blob it holds, its releases with Helm's revisions,
    /// its nodes. Carry it to the connected side for `kpaas-builder bundle
    /// --since`. Nothing in it is secret.
    Inventory {
        #[command(flatten)]
        c: ConfigArg,
        /// Write it to this file (default: stdout).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Apply an update bundle on the master: checked first (signature,
    /// digests, platform, serial, a delta's base, Kubernetes version) with
    /// nothing changed when a check fails; then staged, switched, the
    /// platform's registry filled, each changed release applied in wave
    /// order, removed ones uninstalled. Journaled: --resume continues it.
    Update {
        #[command(flatten)]
        c: ConfigArg,
        /// A bundle directory, .tar(.zst), or a device; default: the volume
        /// labelled KPAAS-UPDATE.
        path: Option<PathBuf>,
        /// Check and print the plan; change nothing.
        #[arg(long)]
        check: bool,
        /// Continue the update a power cut or a failure stopped.
        #[arg(long, conflicts_with_all = ["check", "rollback", "path"])]
        resume: bool,
        /// Take an unfinished update back to the bundle it replaced.
        #[arg(long, conflicts_with_all = ["check", "path"])]
        rollback: bool,
        /// How long one release or component may take, in seconds.
        #[arg(long, default_value_t = deploy::READY_LIMIT.as_secs())]
        timeout: u64,
    },
    /// Show each first-boot step's state.
    Status {
        #[arg(long, default_value = node::STATE_DIR)]
        state_dir: PathBuf,
        #[arg(long)]
        json: bool,
        /// Every event of every boot instead (the JSON-lines stream).
        #[arg(long)]
        events: bool,
    },
}

#[derive(Subcommand)]
enum NodeCmd {
    /// Check a new worker against the site, issue it a join credential of
    /// its own and write its seed: a directory and a CIDATA disk image to
    /// attach to the machine, which then boots the site's node image.
    Add {
        #[command(flatten)]
        c: ConfigArg,
        #[arg(long)]
        hostname: String,
        /// Its address on the node network.
        #[arg(long)]
        ip: std::net::Ipv4Addr,
        /// Its NIC's MAC (the seed's network config matches it).
        #[arg(long)]
        mac: String,
        /// How long its credential is valid (2h, 1d, 36h).
        #[arg(long, default_value = "1d")]
        valid_for: String,
        /// Where to write the seed (default: the state directory's seeds/).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Take a worker out: Vault's role first, then drain and delete it and
    /// withdraw its credentials.
    Remove {
        #[command(flatten)]
        c: ConfigArg,
        name: String,
    },
    /// Bind Vault's role to the site's nodes again (after Vault was away
    /// during an add or remove).
    Follow {
        #[command(flatten)]
        c: ConfigArg,
    },
    /// The site's record: its nodes, when each joined, every credential.
    List {
        #[command(flatten)]
        c: ConfigArg,
        #[arg(long)]
        json: bool,
    },
}

fn node_cmd(cmd: NodeCmd) -> Result<()> {
    let c = match &cmd {
        NodeCmd::Add { c, .. }
        | NodeCmd::Remove { c, .. }
        | NodeCmd::Follow { c }
        | NodeCmd::List { c, .. } => c.clone(),
    };
    let cfg = config::load(&c.config, &c.root, &Host)?;
    let sink = || events::Sink::open(&cfg.state_dir);
    let out = match cmd {
        NodeCmd::Add {
            hostname,
            ip,
            mac,
            valid_for,
            out,
            ..
        } => {
            let valid_for = airgap_bundle::join::Span::try_from(valid_for)
                .map_err(|e| anyhow::anyhow!("--valid-for: {e}"))?;
            let a = grow::AddArgs {
                node: airgap_bundle::day2::NewNode { hostname, ip, mac },
                valid_for,
                out,
            };
            grow::add(&cfg, &c.root, &a, &mut sink()?)?
        }
        NodeCmd::Remove { name, .. } => grow::remove(&cfg, &c.root, &name, &Host, &mut sink()?)?,
        NodeCmd::Follow { .. } => grow::follow_now(&cfg, &c.root, &mut sink()?)?,
        NodeCmd::List { json, .. } => grow::list(&cfg, json)?,
    };
    println!("{out}");
    Ok(())
}

fn first_boot(c: &ConfigArg, no_wait: bool, rt: &tokio::runtime::Runtime) -> Result<()> {
    let cfg = config::load(&c.config, &c.root, &Host)?;
    let mut sink = events::Sink::open(&cfg.state_dir)?;
    let mut ctx = boot::Ctx::new(c.root.clone(), cfg, Arc::new(Host), rt.handle().clone());
    match boot::run(&mut ctx, &mut sink, boot::STEPS) {
        Ok(()) => {}
        Err(boot::Stopped::Step(id)) => bail!("first boot stopped at step {id} (see above)"),
        Err(boot::Stopped::Sink(e)) => return Err(e.context("recording the first boot")),
    }
    if ctx.halt {
        return Ok(());
    }
    boot::serve::notify_ready("seed registry ready");
    if no_wait {
        return Ok(());
    }
    if ctx.me()?.role == Role::Worker
        && let Some(m) = ctx.cfg.nodes.iter().find(|n| n.role == Role::Master)
    {
        rt.spawn(probe::watch_master(SocketAddr::new(
            m.ip,
            ctx.cfg.seed_port,
        )));
    }
    if boot::forms_cluster(&ctx) {
        // A failed cluster step does not stop the seed registry: the node
        // keeps serving (other nodes may pull from it), the failure is in
        // the console, the journal and `status`, and the next boot resumes.
        match boot::run(&mut ctx, &mut sink, boot::CLUSTER_STEPS) {
            Ok(()) if ctx.cfg.platform.is_empty() || ctx.me()?.role == Role::Worker => {
                println!("kpaas-agent: the cluster is formed; serving the seed registry")
            }
            Ok(()) => println!("kpaas-agent: the platform is deployed; serving the seed registry"),
            Err(boot::Stopped::Step(id)) => println!(
                "kpaas-agent: the cluster stopped at step {id} (see above); serving the seed registry; the next boot resumes there"
            ),
            Err(boot::Stopped::Sink(e)) => return Err(e.context("recording the first boot")),
        }
    } else {
        println!(
            "kpaas-agent: the node config carries no kubernetes step (seeds made with --seed-only): no cluster formed; serving the seed registry"
        );
    }
    boot::serve::wait(rt, ctx.servers);
    Ok(())
}

fn dispatch(cmd: Cmd, rt: &tokio::runtime::Runtime) -> Result<()> {
    match cmd {
        Cmd::Run { c, no_wait } => first_boot(&c, no_wait, rt),
        Cmd::Preflight { c, json } => {
            let cfg = config::load(&c.config, &c.root, &Host)?;
            let me = boot::identity::whoami(&cfg, &c.root)?;
            boot::preflight::report(&c.root, &cfg, me, json)
        }
        Cmd::Identity { c } => {
            let cfg = config::load(&c.config, &c.root, &Host)?;
            let me = boot::identity::whoami(&cfg, &c.root)?;
            println!("{} {:?} {}", me.hostname, me.role, me.ip);
            Ok(())
        }
        Cmd::Serve {
            bundle,
            listen,
            full_verify,
        } => boot::serve::alone(&bundle, &listen, full_verify, rt),
        Cmd::Fill {
            bundle,
            registry,
            project,
            harbor,
            jobs,
            seed,
            verify_first,
        } => {
            let auth = if harbor {
                let pw = std::env::var("KPAAS_HARBOR_PASSWORD").map_err(|_| {
                    anyhow::anyhow!(
                        "--harbor: set KPAAS_HARBOR_PASSWORD to Harbor's admin password"
                    )
                })?;
                Some(("admin".to_string(), pw))
            } else {
                None
            };
            let t = fill::Target {
                base: format!("http://{registry}"),
                project,
                auth,
            };
            if harbor {
                rt.block_on(fill::ensure_project(&t))?;
            }
            // Run on its own, nothing has hashed the bundle's blobs: all
            // are, first or while sent.
            let (proven, verified) = if verify_first {
                let (proven, bytes, secs) = rt.block_on(fill::verify_first(&bundle, jobs))?;
                eprintln!(
                    "kpaas-agent: fill: {} blob(s), {:.1} MiB hashed in {secs:.1} s before the push",
                    proven.len(),
                    bytes as f64 / f64::from(1 << 20)
                );
                (proven, Some((bytes, secs)))
            } else {
                Default::default()
            };
            let r = rt.block_on(fill::fill(&bundle, &t, jobs, &proven))?;
            eprintln!("kpaas-agent: fill: {}", r.summary());
            let mut out = serde_json::to_value(&r)?;
            if let Some((bytes, secs)) = verified {
                out["verified_bytes"] = bytes.into();
                out["verified_secs"] = secs.into();
            }
            if let Some(seed) = seed {
                let (bytes, rate) = rt.block_on(fill::seed_read_rate(
                    &bundle,
                    &seed,
                    r.bytes_sent.max(64 << 20),
                ))?;
                out["seed_read_bytes"] = bytes.into();
                out["seed_read_bytes_per_s"] = rate.into();
            }
            println!("{}", serde_json::to_string_pretty(&out)?);
            Ok(())
        }
        Cmd::Mirrors {
            bundle,
            seed,
            platform,
            root,
        } => {
            let s = seed_registry::Seed::load(&bundle)?;
            let hosts = mirrors::registries(s.repositories());
            let seed = seed.unwrap_or_else(|| format!("127.0.0.1:{}", node::SEED_PORT));
            for p in mirrors::write_all(&root, &hosts, &seed, platform.as_deref())? {
                println!("wrote {}", p.display());
            }
            Ok(())
        }
        Cmd::Deploy { c, from, timeout } => {
            let cfg = config::load(&c.config, &c.root, &Host)?;
            if cfg.platform.is_empty() {
                bail!(
                    "{}: the node config carries no platform steps (seeds made with --cluster-only or --seed-only): nothing to deploy",
                    c.config.display()
                );
            }
            let mut sink = events::Sink::open(&cfg.state_dir)?;
            let mut engine = deploy::Engine::new(&c.root, cfg, Arc::new(Host))?;
            engine.limit = std::time::Duration::from_secs(timeout);
            sink.emit(boot::StepId::Deploy, events::Kind::Started, "by hand")?;
            match engine.run(&mut sink, deploy::Options { from }) {
                Ok(detail) => sink.emit(boot::StepId::Deploy, events::Kind::Done, &detail),
                Err(e) => {
                    sink.emit(
                        boot::StepId::Deploy,
                        events::Kind::Failed,
                        &format!("{e:#}"),
                    )?;
                    bail!("the deploy stopped (see above); `kpaas-agent deploy` resumes it")
                }
            }
        }
        Cmd::Node { cmd } => node_cmd(cmd),
        Cmd::Inventory { c, out } => {
            let cfg = config::load(&c.config, &c.root, &Host)?;
            let inv = update::inventory::gather(&c.root, &cfg, Arc::new(Host))?;
            match out {
                Some(p) => {
                    airgap_bundle::fsutil::write_atomic(&p, &inv.to_bytes())?;
                    eprintln!(
                        "inventory of {} ({} {} serial {}): {} blobs, {} releases, {} nodes, in {}",
                        inv.cluster,
                        inv.platform,
                        inv.platform_version,
                        inv.serial,
                        inv.blobs.len(),
                        inv.releases.len(),
                        inv.nodes.len(),
                        p.display()
                    );
                }
                None => print!("{}", String::from_utf8_lossy(&inv.to_bytes())),
            }
            Ok(())
        }
        Cmd::Update {
            c,
            path,
            check,
            resume,
            rollback,
            timeout,
        } => {
            let cfg = config::load(&c.config, &c.root, &Host)?;
            let a = update::Args {
                path,
                check,
                resume,
                rollback,
                limit: std::time::Duration::from_secs(timeout),
            };
            println!("{}", update::run_update(&c.root, &cfg, Arc::new(Host), &a)?);
            Ok(())
        }
        Cmd::Status {
            state_dir,
            json,
            events,
        } => status::print(&state_dir, json, events),
    }
}

fn main() {
    let cli = Cli::parse();
    let r = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| anyhow::anyhow!("starting the async runtime: {e}"))
        .and_then(|rt| dispatch(cli.cmd, &rt));
    if let Err(e) = r {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
