//! `kpaas-builder seeds`: per-node NoCloud seeds (CIDATA ISO and vfat) from
//! the cluster file, rendered by `airgap_bundle::seed` (the handlebars
//! templates in `cloud-init/`, shared with the master's day-2 seeds), plus
//! one universal seed that serves every node. Cluster
//! secrets are made here and reach only the nodes that need them.

use airgap_bundle::cluster::{Cluster, PASSWORD_KEYS};
use airgap_bundle::node::{NodeConfig, NodeEntry, Role, VerifyMode};
use airgap_bundle::run::run;
use airgap_bundle::seed::{Renderer, Seed, SiteFacts};
use airgap_bundle::{Digest, fsutil};
use anyhow::{Context, Result};
use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

pub use airgap_bundle::plan::node::{NodePlan, node_plan};

fn random_string(n: usize, alphabet: &[u8]) -> Result<String> {
    let mut raw = vec![0u8; n];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut raw))
        .context("reading /dev/urandom")?;
    Ok(raw
        .iter()
        .map(|b| alphabet[*b as usize % alphabet.len()] as char)
        .collect())
}

/// The cluster's secrets, made once and kept in `<out>/secrets` (0600) so a
/// re-render gives every node the same ones.
pub fn secrets(dir: &Path, c: &Cluster) -> Result<BTreeMap<String, Vec<u8>>> {
    fsutil::create_dir(dir)?;
    fsutil::set_mode(dir, 0o700)?;
    let token = dir.join("bootstrap-token");
    if !token.exists() {
        let a = b"abcdefghijklmnopqrstuvwxyz0123456789";
        // kubeadm's format: [a-z0-9]{6}.[a-z0-9]{16}
        fsutil::write_private(
            &token,
            format!("{}.{}\n", random_string(6, a)?, random_string(16, a)?).as_bytes(),
        )?;
    }
    if !dir.join("ca.crt").exists() {
        run("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "3650",
                "-subj",
                "/CN=kubernetes",
            ])
            .args([
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign,digitalSignature",
            ])
            .arg("-keyout")
            .arg(dir.join("ca.key"))
            .arg("-out")
            .arg(dir.join("ca.crt"))
            .ok()?;
        std::fs::set_permissions(dir.join("ca.key"), std::fs::Permissions::from_mode(0o600))?;
    }
    // kubeadm's --discovery-token-ca-cert-hash: sha256 of the CA's SubjectPublicKeyInfo.
    let pem = run("openssl")
        .args(["x509", "-noout", "-pubkey", "-in"])
        .arg(dir.join("ca.crt"))
        .output()?;
    std::fs::write(dir.join("ca.pub.pem"), pem)?;
    let der = run("openssl")
        .args(["pkey", "-pubin", "-outform", "der", "-in"])
        .arg(dir.join("ca.pub.pem"))
        .output()?;
    let hash = format!("{}\n", Digest::of(&der));
    fsutil::write_private(&dir.join("ca-cert-hash"), hash.as_bytes())?;
    let pw_path = dir.join("passwords.yaml");
    let mut pw: BTreeMap<String, String> = match std::fs::read_to_string(&pw_path) {
        Ok(t) => {
            serde_saphyr::from_str(&t).with_context(|| format!("reading {}", pw_path.display()))?
        }
        Err(_) => BTreeMap::new(),
    };
    for k in PASSWORD_KEYS {
        let v = match c.passwords.get(*k) {
            Some(v) => v.clone(),
            None => match pw.get(*k) {
                Some(v) => v.clone(),
                None => random_string(
                    24,
                    b"ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789",
                )?,
            },
        };
        pw.insert(k.to_string(), v);
    }
    fsutil::write_private(&pw_path, serde_saphyr::to_string(&pw)?.as_bytes())?;
    let mut out = BTreeMap::new();
    for f in [
        "bootstrap-token",
        "ca-cert-hash",
        "ca.crt",
        "ca.key",
        "passwords.yaml",
    ] {
        out.insert(f.to_string(), std::fs::read(dir.join(f))?);
    }
    Ok(out)
}

fn inventory(c: &Cluster) -> Vec<NodeEntry> {
    let mut v = vec![NodeEntry {
        hostname: c.master.hostname.clone(),
        ip: c.master.private_ip.into(),
        mac: c.master.mac.clone(),
        role: Role::Master,
    }];
    v.extend(c.workers.iter().map(|w| NodeEntry {
        hostname: w.hostname.clone(),
        ip: w.private_ip.into(),
        mac: w.mac.clone(),
        role: Role::Worker,
    }));
    v
}

/// Every seed for the cluster: one per node and the universal one. Workers
/// get the token and the CA hash; only the master (and the universal seed,
/// which may boot the master) get the CA key and the passwords.
pub fn plan(
    c: &Cluster,
    node_plan: &NodePlan,
    secrets: &BTreeMap<String, Vec<u8>>,
    seed_port: u16,
    verify: VerifyMode,
) -> Result<Vec<Seed>> {
    let h = Renderer::new()?;
    let nodes = inventory(c);
    let site = SiteFacts {
        node_cidr: c.network.node_cidr,
        gateway: c.network.gateway,
        ssh_authorized_keys: c.ssh_authorized_keys.clone(),
    };
    let cfg = |node: Option<&NodeEntry>| NodeConfig {
        verify,
        seed_port,
        node: node.map(|n| n.hostname.clone()),
        minimums: c.minimums.clone(),
        secure_boot: c.secure_boot,
        install_disk: c.install_disk.clone(),
        runtime: c.container_manager,
        kubernetes: node_plan.kubernetes.clone(),
        platform: node_plan.platform.clone(),
        bundle_digest: node_plan.bundle_digest.clone(),
        join: c.join,
        site: Some(site.clone()),
        cluster_file: Some(c.without_passwords()),
        ..NodeConfig::with_defaults(&c.name, nodes.clone())
    };
    let get = |k: &str| secrets.get(k).map(Vec::as_slice).unwrap_or_default();
    let worker: Vec<(&str, &[u8])> = vec![
        ("bootstrap-token", get("bootstrap-token")),
        ("ca-cert-hash", get("ca-cert-hash")),
    ];
    let mut master = worker.clone();
    master.extend([
        ("ca.crt", get("ca.crt")),
        ("ca.key", get("ca.key")),
        ("passwords.yaml", get("passwords.yaml")),
    ]);
    let mut seeds = Vec::new();
    for n in &nodes {
        let sec = if n.role == Role::Master {
            &master
        } else {
            &worker
        };
        seeds.push(h.render(&n.hostname, &site, Some(n), &cfg(Some(n)), sec)?);
    }
    seeds.push(h.render("universal", &site, None, &cfg(None), &master)?);
    Ok(seeds)
}

/// Writes a seed's files (0600) and its CIDATA ISO and vfat volumes.
pub fn write_seed(out: &Path, seed: &Seed) -> Result<()> {
    let dir = out.join(&seed.name);
    fsutil::create_dir(&dir)?;
    fsutil::set_mode(&dir, 0o700)?;
    for (f, text) in &seed.files {
        fsutil::write_private(&dir.join(f), text.as_bytes())?;
    }
    let iso = out.join(format!("{}.iso", seed.name));
    let mut x = run("xorriso")
        .args([
            "-as", "mkisofs", "-quiet", "-volid", "CIDATA", "-joliet", "-rock", "-o",
        ])
        .arg(&iso);
    for (f, _) in &seed.files {
        x = x.arg(dir.join(f));
    }
    x.ok()?;
    std::fs::set_permissions(&iso, std::fs::Permissions::from_mode(0o600))?;
    // The same writer as the master's day-2 seeds (`kpaas-agent node add`).
    let files: Vec<(&str, &[u8])> = seed.files.iter().map(|(f, t)| (*f, t.as_bytes())).collect();
    airgap_bundle::cidata::write_vfat(&out.join(format!("{}.vfat", seed.name)), &files)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests: a panic is the failure report
    use super::*;
    use airgap_bundle::catalog::Catalog;
    use airgap_bundle::plan::CLUSTER_STEP as KUBERNETES;

    const LAB: &str = "cluster_version: 1\nname: lab\nplatform: demo\nmaster: {hostname: kpaas-master, private_ip: 10.10.0.10, mac: \"52:54:00:12:34:10\"}\nworkers:\n  - {hostname: kpaas-worker1, private_ip: 10.10.0.11, mac: \"52:54:00:12:34:11\"}\nnetwork: {node_cidr: 10.10.0.0/24, gateway: 10.10.0.1}\nstorage: {type: nfs, nfs: {server: 10.10.0.20}}\nssh_authorized_keys: [\"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIExample admin@site\"]\n";

    #[test]
    fn rendered_seeds_for_a_two_node_lab() {
        let c = Cluster::from_yaml(LAB, "lab.yaml").unwrap();
        // Stand-in secret values: the rendering is what is under test.
        let secrets: BTreeMap<String, Vec<u8>> = [
            "bootstrap-token",
            "ca-cert-hash",
            "ca.crt",
            "ca.key",
            "passwords.yaml",
        ]
        .iter()
        .map(|k| (k.to_string(), format!("<{k}>\n").into_bytes()))
        .collect();
        let catalog =
            Catalog::from_yaml(airgap_bundle::platforms::builtin("demo").unwrap(), "demo").unwrap();
        let todo = node_plan(&catalog, &c, true, None).unwrap();
        assert_eq!(
            todo.kubernetes.as_ref().unwrap().pod_cidr.to_string(),
            "10.233.64.0/18"
        );
        // Every other component, in wave order, for the master to deploy.
        let comps: Vec<&str> = todo.platform.iter().map(|s| s.component.as_str()).collect();
        assert!(
            !comps.contains(&KUBERNETES) && !comps.is_empty(),
            "{comps:?}"
        );
        assert!(todo.platform.windows(2).all(|w| w[0].wave <= w[1].wave));
        assert!(
            node_plan(&catalog, &c, false, None)
                .unwrap()
                .platform
                .is_empty()
        );
        // K-PaaS's own catalog names Calico, which the agent cannot lay:
        // refused here, on the connected machine, not at a first boot.
        let kpaas = Catalog::from_yaml(
            airgap_bundle::platforms::builtin("k-paas-1.4.1").unwrap(),
            "k-paas-1.4.1",
        )
        .unwrap();
        let c2 = Cluster::from_yaml(
            &LAB.replace("platform: demo", "platform: k-paas-1.4.1"),
            "lab.yaml",
        )
        .unwrap();
        let e = format!("{:#}", node_plan(&kpaas, &c2, true, None).unwrap_err());
        assert!(
            e.contains("cannot form a cluster") && e.contains("cni_manifest is missing"),
            "{e}"
        );
        let seeds = plan(&c, &todo, &secrets, 5050, VerifyMode::Fast).unwrap();
        let names: Vec<&str> = seeds.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["kpaas-master", "kpaas-worker1", "universal"]);
        let user_data = |i: usize| seeds[i].files[0].1.clone();
        use base64::Engine;
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        // Only the master and the universal seed carry the CA key.
        assert!(user_data(0).contains(&b64("<ca.key>\n")));
        assert!(!user_data(1).contains(&b64("<ca.key>\n")));
        assert!(user_data(1).contains(&b64("<bootstrap-token>\n")));
        assert!(user_data(2).contains(&b64("<ca.key>\n")));
        let mut text = String::new();
        for s in &seeds {
            for (f, body) in &s.files {
                text.push_str(&format!("### {}/{f}\n{body}", s.name));
                if !body.ends_with('\n') {
                    text.push('\n');
                }
            }
        }
        kpaas_testkit::snapshot(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/snapshots"),
            "seeds-lab.txt",
            &text,
        );
    }
}
