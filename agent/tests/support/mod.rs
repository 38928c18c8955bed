//! A master's tree for the agent's tests against the loopback control
//! plane: the bundle's tools at their install paths, the plane's admin
//! kubeconfig, the site's passwords, a node config; and readers of what the
//! agent leaves (events, journals, Helm's releases).

#![allow(clippy::unwrap_used, dead_code)] // tests: a panic is the failure report; each test binary uses a part

use airgap_bundle::node::{NodeConfig, NodeEntry, Role, Runtime};
use kpaas_testkit::control_plane::ControlPlane;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The site's portal password: it must reach the chart's values and
/// nothing else.
pub const PORTAL_ADMIN: &str = "s1te-Portal-pw";

pub struct Node {
    pub root: PathBuf,
    pub state: PathBuf,
    pub config: PathBuf,
    pub bundle: PathBuf,
}

impl Node {
    /// A node tree: the bundle's tools at their install paths, the admin
    /// kubeconfig of the loopback control plane, a node config.
    pub fn new(t: &Path, bundle: &Path, cp: &ControlPlane) -> Node {
        let root = t.join("root");
        let m: serde_json::Value =
            serde_json::from_slice(&std::fs::read(bundle.join("bundle.json")).unwrap()).unwrap();
        for tool in ["kubectl", "helm", "kustomize"] {
            let a = m["artifacts"]
                .as_array()
                .unwrap()
                .iter()
                .find(|a| {
                    a["kind"] == "file"
                        && a["name"]
                            .as_str()
                            .unwrap()
                            .contains(&format!("/{tool}:amd64"))
                })
                .unwrap();
            let blob = bundle
                .join("oci/blobs/sha256")
                .join(&a["content_digest"].as_str().unwrap()[7..]);
            let to = root.join(a["install_path"].as_str().unwrap().trim_start_matches('/'));
            std::fs::create_dir_all(to.parent().unwrap()).unwrap();
            std::fs::copy(blob, &to).unwrap();
            std::fs::set_permissions(&to, std::os::unix::fs::PermissionsExt::from_mode(0o755))
                .unwrap();
        }
        std::fs::create_dir_all(root.join("etc/kubernetes")).unwrap();
        // The site's passwords, as the seed leaves them on the master.
        let secrets = root.join("etc/kpaas/secrets");
        std::fs::create_dir_all(&secrets).unwrap();
        std::fs::write(
            secrets.join("passwords.yaml"),
            format!("portal_admin: {PORTAL_ADMIN}\nmariadb_root: not-used-here\n"),
        )
        .unwrap();
        std::fs::copy(&cp.kubeconfig, root.join("etc/kubernetes/admin.conf")).unwrap();
        Node {
            state: t.join("state"),
            config: t.join("node.yaml"),
            root,
            bundle: bundle.to_path_buf(),
        }
    }

    /// The master's config: this tree's bundle and state, no plan yet.
    pub fn base_config(&self) -> NodeConfig {
        let master = NodeEntry {
            hostname: "kpaas-master".into(),
            ip: "10.10.0.10".parse().unwrap(),
            mac: None,
            role: Role::Master,
        };
        NodeConfig {
            bundle: self.bundle.clone(),
            state_dir: self.state.clone(),
            // As the demo's lab: the hand-off's mirror switch then needs
            // no CRI-O reload (no systemd here).
            runtime: Runtime::Containerd,
            ..NodeConfig::with_defaults("lab", vec![master])
        }
    }

    pub fn write(&self, cfg: &NodeConfig) {
        std::fs::write(&self.config, serde_json::to_vec_pretty(cfg).unwrap()).unwrap();
    }

    /// `kpaas-agent SUB --config --root ARGS`.
    pub fn agent(&self, sub: &str, extra: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_kpaas-agent"));
        c.arg(sub)
            .arg("--config")
            .arg(&self.config)
            .arg("--root")
            .arg(&self.root)
            .args(extra);
        c
    }

    pub fn deploy_cmd(&self, extra: &[&str]) -> Command {
        self.agent("deploy", extra)
    }

    pub fn deploy(&self, extra: &[&str]) -> Output {
        self.deploy_cmd(extra).output().unwrap()
    }

    pub fn events(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(self.state.join("events.jsonl"))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// The details of the deploy events after the `n`th one.
    pub fn details_since(&self, n: usize) -> Vec<String> {
        self.events()[n..]
            .iter()
            .map(|e| {
                format!(
                    "{} {}",
                    e["kind"].as_str().unwrap(),
                    e["detail"].as_str().unwrap()
                )
            })
            .collect()
    }

    pub fn journal(&self) -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(self.state.join("deploy.json")).unwrap_or_default())
            .unwrap_or_default()
    }

    pub fn helm(&self, args: &[&str]) -> String {
        let o = Command::new(self.root.join("usr/local/bin/helm"))
            .args(args)
            .arg("--kubeconfig")
            .arg(self.root.join("etc/kubernetes/admin.conf"))
            .env("HELM_CACHE_HOME", self.state.join("t-helm"))
            .env("HELM_CONFIG_HOME", self.state.join("t-helm"))
            .env("HELM_DATA_HOME", self.state.join("t-helm"))
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout).to_string()
    }

    /// The demo release's revision and status.
    pub fn release(&self) -> (i64, String) {
        let l: serde_json::Value =
            serde_json::from_str(&self.helm(&["list", "-n", "demo", "-a", "-o", "json"])).unwrap();
        let r = &l[0];
        (
            r["revision"].as_str().unwrap_or("0").parse().unwrap(),
            r["status"].as_str().unwrap_or("").to_string(),
        )
    }
}

pub fn text(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr)
}
