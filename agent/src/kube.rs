//! What the agent writes to make a node a Kubernetes node, rendered as text
//! from the node config and the plan's `kubernetes` step: the container
//! runtime's config (containerd or CRI-O), kubelet's unit and kubeadm
//! drop-in, the kubeadm v1beta3 configs, and the CNI's ConfigMap. Pure, so
//! every file is a snapshot test; the boot steps write and run them.

use airgap_bundle::node::{NodeConfig, NodeEntry, Role, Runtime};
use anyhow::{Result, anyhow};
use std::fmt::Write;
use std::path::Path;

/// Where the files go (relative to the node's root).
pub const CONTAINERD_CONFIG: &str = "etc/containerd/config.toml";
pub const CRIO_DROPIN: &str = "etc/crio/crio.conf.d/10-kpaas.conf";
pub const MODULES_LOAD: &str = "etc/modules-load.d/kpaas-kubernetes.conf";
pub const SYSCTL: &str = "etc/sysctl.d/99-kpaas-kubernetes.conf";
pub const KUBELET_UNIT: &str = "etc/systemd/system/kubelet.service";
pub const KUBELET_DROPIN: &str = "etc/systemd/system/kubelet.service.d/10-kubeadm.conf";
pub const KUBELET_ENV: &str = "etc/kubernetes/kubelet.env";
/// The resolver kubelet gives pods with `dnsPolicy: Default` (CoreDNS).
pub const KUBELET_RESOLV: &str = "etc/kubernetes/resolv.conf";
pub const PKI_DIR: &str = "etc/kubernetes/pki";
pub const ADMIN_CONF: &str = "etc/kubernetes/admin.conf";
pub const KUBELET_CONF: &str = "etc/kubernetes/kubelet.conf";
pub const ROOT_KUBECONFIG: &str = "root/.kube/config";
/// The kubeadm config holds the bootstrap token: it lives with the agent's
/// state (0700), not in /etc/kubernetes.
pub const KUBEADM_CONFIG: &str = "kubeadm.yaml";
/// In the agent's state directory: kubeadm's patches for the static pods.
pub const PATCHES_DIR: &str = "kubeadm-patches";
/// Where cloud-init's `write_files` puts the cluster secrets.
pub const SECRETS_DIR: &str = "etc/kpaas/secrets";

pub use airgap_bundle::node::{KERNEL_MODULES as MODULES, SYSCTLS};

/// What the cluster is formed with: the plan's values, the node, and what
/// the bundle holds.
#[derive(Debug, Clone)]
pub struct Inputs {
    pub cluster: String,
    pub me: NodeEntry,
    pub master: NodeEntry,
    pub runtime: Runtime,
    pub kubernetes_version: String,
    pub pod_cidr: String,
    pub service_cidr: String,
    pub api_san: String,
    /// The API server's port: the plan's `apiserver_port` when it sets one.
    pub api_port: u16,
    /// How many workers the cluster has: with none, the master takes the
    /// platform's workloads.
    pub workers: usize,
    /// The seeds' join credential: how long kubeadm makes it valid (the
    /// master's keeper renews it after that, by the policy).
    pub join: airgap_bundle::join::JoinPolicy,
}

impl Inputs {
    /// The node config's settings for this node; an error lists every
    /// problem at once (a node config written by hand is held to the rules
    /// `seeds` applies), and a bundle of another Kubernetes version than
    /// the seeds were made for is refused, naming both.
    pub fn new(cfg: &NodeConfig, me: &NodeEntry, kubernetes_version: &str) -> Result<Inputs> {
        let Some(k) = &cfg.kubernetes else {
            return Err(anyhow!(
                "the node config has no kubernetes settings: this node forms no cluster"
            ));
        };
        let mut problems = k.problems();
        let master = cfg.nodes.iter().find(|n| n.role == Role::Master);
        if master.is_none() {
            problems.push("the node config names no master".into());
        }
        if let Some(want) = k.version.as_deref().filter(|v| *v != kubernetes_version) {
            problems.push(format!(
                "the seeds were made for Kubernetes {want}, the bundle holds {kubernetes_version}"
            ));
        }
        match master {
            Some(master) if problems.is_empty() => Ok(Inputs {
                cluster: cfg.cluster.clone(),
                me: me.clone(),
                master: master.clone(),
                runtime: cfg.runtime,
                kubernetes_version: kubernetes_version.into(),
                pod_cidr: k.pod_cidr.to_string(),
                service_cidr: k.service_cidr.to_string(),
                api_san: k.apiserver_san.clone(),
                api_port: k.apiserver_port,
                workers: cfg.nodes.iter().filter(|n| n.role == Role::Worker).count(),
                join: cfg.join,
            }),
            _ => Err(anyhow!("{}", problems.join("; "))),
        }
    }

    pub fn endpoint(&self) -> String {
        format!("{}:{}", self.master.ip, self.api_port)
    }
}

/// containerd 1.6+: CRI with systemd cgroups, the bundle's pause, and the
/// registry hosts directory the mirrors step already wrote (no `mirrors`
/// table: those fall back to the source registry).
pub fn containerd_config(pause: &str) -> String {
    format!(
        r#"# Written by kpaas-agent: containerd for kubelet. Images come only from the
# node's seed registry (certs.d/<registry>/hosts.toml).
version = 2

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{pause}"

[plugins."io.containerd.grpc.v1.cri".containerd]
  default_runtime_name = "runc"

[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"

[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
  SystemdCgroup = true

[plugins."io.containerd.grpc.v1.cri".cni]
  bin_dir = "/opt/cni/bin"
  conf_dir = "/etc/cni/net.d"

[plugins."io.containerd.grpc.v1.cri".registry]
  config_path = "/etc/containerd/certs.d"
"#
    )
}

/// CRI-O's drop-in, as Kubespray's `crio` role sets it (systemd cgroups,
/// conmon in the pod's cgroup, runc at Kubespray's path, the pause image);
/// the registries drop-in is the mirrors step's.
pub fn crio_dropin(pause: &str) -> String {
    format!(
        r#"# Written by kpaas-agent: CRI-O for kubelet. Registries: the mirrors step's
# /etc/containers/registries.conf.d drop-in (the node's seed registry only).
[crio.runtime]
cgroup_manager = "systemd"
conmon_cgroup = "pod"
default_runtime = "runc"

[crio.runtime.runtimes.runc]
runtime_path = "/usr/local/bin/runc"
runtime_type = "oci"
runtime_root = "/run/runc"

[crio.image]
pause_image = "{pause}"

[crio.network]
network_dir = "/etc/cni/net.d/"
plugin_dirs = ["/opt/cni/bin"]
"#
    )
}

pub fn modules_load() -> String {
    let mut s =
        String::from("# Written by kpaas-agent: for the container runtime and kube-proxy.\n");
    for m in MODULES {
        let _ = writeln!(s, "{m}");
    }
    s
}

pub fn sysctl_conf() -> String {
    let mut s =
        String::from("# Written by kpaas-agent: kube-proxy and the CNI route pod traffic.\n");
    for (k, v) in SYSCTLS {
        let _ = writeln!(s, "{k} = {v}");
    }
    s
}

/// The unit Kubespray installs with kubeadm (`kubelet.service`), the binary
/// at its catalog path; kubeadm's drop-in gives it its arguments.
pub fn kubelet_unit(kubelet: &str, runtime: Runtime) -> String {
    let rt = format!("{}.service", runtime.name());
    format!(
        r#"# Written by kpaas-agent (the layout Kubespray uses with kubeadm).
[Unit]
Description=Kubernetes Kubelet Server
Documentation=https://kubernetes.io/docs/reference/command-line-tools-reference/kubelet/
After={rt}
Wants={rt}

[Service]
ExecStart={kubelet}
Restart=always
RestartSec=5
# kubelet refuses to run with swap on; the agent checked it is off.

[Install]
WantedBy=multi-user.target
"#
    )
}

/// kubeadm's drop-in: the kubeconfigs kubeadm writes, the config it writes,
/// its flags file, and the node's own environment file.
pub fn kubelet_dropin(kubelet: &str) -> String {
    format!(
        r#"# Written by kpaas-agent: kubeadm's drop-in for kubelet.
[Service]
Environment="KUBELET_KUBECONFIG_ARGS=--bootstrap-kubeconfig=/etc/kubernetes/bootstrap-kubelet.conf --kubeconfig=/etc/kubernetes/kubelet.conf"
Environment="KUBELET_CONFIG_ARGS=--config=/var/lib/kubelet/config.yaml"
# Written by kubeadm init/join at runtime: KUBELET_KUBEADM_ARGS.
EnvironmentFile=-/var/lib/kubelet/kubeadm-flags.env
# The node's own settings (node IP): KUBELET_EXTRA_ARGS.
EnvironmentFile=-/etc/kubernetes/kubelet.env
ExecStart=
ExecStart={kubelet} $KUBELET_KUBECONFIG_ARGS $KUBELET_CONFIG_ARGS $KUBELET_KUBEADM_ARGS $KUBELET_EXTRA_ARGS
"#
    )
}

pub fn kubelet_env(me: &NodeEntry) -> String {
    format!(
        "# Written by kpaas-agent: this node's address from its node config.\nKUBELET_EXTRA_ARGS=--node-ip={}\n",
        me.ip
    )
}

/// The upstream resolvers for CoreDNS: the node's own, less loopback ones
/// (CoreDNS would ask itself and stop on its loop check). An air-gapped
/// node often has none; CoreDNS refuses to start without one, so the node's
/// own address stands in: nothing answers there, cluster names still
/// resolve, outside names fail at once instead of timing out.
pub fn resolv_conf(host: &str, me: &NodeEntry) -> String {
    let mut out = String::from("# Written by kpaas-agent: CoreDNS's upstream resolvers.\n");
    let mut servers = 0;
    for l in host.lines() {
        let mut w = l.split_whitespace();
        match (w.next(), w.next()) {
            (Some("nameserver"), Some(ip))
                if ip
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|a| !a.is_loopback()) =>
            {
                servers += 1;
                let _ = writeln!(out, "nameserver {ip}");
            }
            (Some("search"), Some(_)) => {
                let _ = writeln!(out, "{}", l.trim());
            }
            _ => {}
        }
    }
    if servers == 0 {
        let _ = writeln!(
            out,
            "# The node has no resolver: its own address, where none answers.\nnameserver {}",
            me.ip
        );
    }
    out
}

fn node_registration(out: &mut String, i: &Inputs) {
    let _ = write!(
        out,
        r#"nodeRegistration:
  name: {name}
  criSocket: {sock}
  imagePullPolicy: IfNotPresent
"#,
        name = i.me.hostname,
        sock = i.runtime.socket(),
    );
}

/// The master's kubeadm config: InitConfiguration with the seed's bootstrap
/// token, ClusterConfiguration from the plan, and kubelet's configuration.
pub fn init_config(i: &Inputs, token: &str, patches: &Path) -> String {
    let mut s = format!(
        r#"# Written by kpaas-agent from the plan's kubernetes step. Holds the
# bootstrap token: 0600, root only.
apiVersion: kubeadm.k8s.io/v1beta3
kind: InitConfiguration
bootstrapTokens:
  - token: "{token}"
    description: "kpaas: the cluster's join token, from the seeds"
    ttl: {ttl}s
    usages: [signing, authentication]
    groups: ["system:bootstrappers:kubeadm:default-node-token"]
localAPIEndpoint:
  advertiseAddress: {ip}
  bindPort: {port}
"#,
        ip = i.me.ip,
        port = i.api_port,
        ttl = i.join.credential_ttl.secs(),
    );
    node_registration(&mut s, i);
    if i.workers == 0 {
        // A cluster of one node (a lab, the demo): kubeadm's control-plane
        // taint would leave the platform's pods nowhere to run, as
        // Kubespray leaves a master that is also a node untainted.
        s.push_str("  taints: []\n");
    }
    // kubeadm 1.25 checks that no proxy captures the pod and service CIDRs
    // by parsing "https://[<IPv4>]:1234", which Go >= 1.24's net/url
    // rejects: built with today's Go the check fails on every IPv4 cluster.
    // The agent runs kubeadm with no proxy in its environment, so there is
    // nothing for the check to find.
    s.push_str("  ignorePreflightErrors: [HTTPProxyCIDR]\n");
    let _ = write!(s, "patches:\n  directory: {}\n---\n", patches.display());
    s.push_str(&cluster_config(i));
    s
}

/// kubeadm patches for the control plane's static pods, by file name: more
/// patience in the probes of the API server and etcd (and of the
/// controller-manager and the scheduler, which restart alike when the API
/// server is slow to answer them). kubeadm's defaults
/// restart them after ~4 min of starting and ~2 min of not answering; on a
/// slow or busy node (a small site server, a VM under emulation) a
/// restarted API server then starts no faster, and the node never leaves
/// that loop. Started and answering, they are probed as often as before.
pub fn control_plane_patches() -> Vec<(String, String)> {
    [
        "kube-apiserver",
        "etcd",
        "kube-controller-manager",
        "kube-scheduler",
    ]
    .iter()
        .map(|c| {
            (
                format!("{c}+strategic.yaml"),
                format!(
                    "# Written by kpaas-agent: a slow node keeps its {c} (see kube.rs).\nspec:\n  containers:\n    - name: {c}\n      startupProbe:\n        failureThreshold: 60\n      livenessProbe:\n        failureThreshold: 24\n"
                ),
            )
        })
        .collect()
}

/// The ClusterConfiguration (and kubelet's): alone, what `kubeadm config
/// images list --config` reads on any node.
pub fn cluster_config(i: &Inputs) -> String {
    let mut sans = vec![i.master.ip.to_string(), i.master.hostname.clone()];
    if !sans.contains(&i.api_san) {
        sans.push(i.api_san.clone());
    }
    format!(
        r#"apiVersion: kubeadm.k8s.io/v1beta3
kind: ClusterConfiguration
clusterName: {cluster}
kubernetesVersion: {version}
controlPlaneEndpoint: "{endpoint}"
# The images by their upstream names: the runtime's mirrors send
# registry.k8s.io to the node's seed registry.
imageRepository: registry.k8s.io
networking:
  dnsDomain: cluster.local
  podSubnet: {pods}
  serviceSubnet: {svcs}
apiServer:
  certSANs: [{sans}]
  # Under emulation the control plane takes minutes to answer.
  timeoutForControlPlane: 15m0s
# One control plane (K-PaaS standalone): nothing to elect. With election on,
# a busy node's controller-manager misses a lease renewal, exits and
# crash-loops (seen: two nodes under emulation; Services got no endpoints).
controllerManager:
  extraArgs:
    leader-elect: "false"
scheduler:
  extraArgs:
    leader-elect: "false"
---
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
cgroupDriver: systemd
failSwapOn: true
resolvConf: /{KUBELET_RESOLV}
"#,
        cluster = i.cluster,
        version = i.kubernetes_version,
        endpoint = i.endpoint(),
        pods = i.pod_cidr,
        svcs = i.service_cidr,
        sans = sans
            .iter()
            .map(|s| format!("\"{s}\""))
            .collect::<Vec<_>>()
            .join(", "),
    )
}

/// A worker's kubeadm config: discovery by the bootstrap token, pinned to
/// the CA's public key hash from the seed (nothing the network says about
/// the CA is trusted unless it matches).
pub fn join_config(i: &Inputs, token: &str, ca_hash: &str) -> String {
    let mut s = format!(
        r#"# Written by kpaas-agent. Holds the bootstrap token: 0600, root only.
apiVersion: kubeadm.k8s.io/v1beta3
kind: JoinConfiguration
discovery:
  bootstrapToken:
    apiServerEndpoint: "{endpoint}"
    token: "{token}"
    caCertHashes: ["{ca_hash}"]
  timeout: 5m0s
"#,
        endpoint = i.endpoint(),
    );
    node_registration(&mut s, i);
    s
}

/// The CNI's cluster-specific settings (flannel's `kube-flannel-cfg`): the
/// pod network is the plan's, so the manifest in the bundle stays static.
pub fn flannel_config(namespace: &str, pod_cidr: &str) -> String {
    format!(
        r#"# Written by kpaas-agent: the CNI's settings from the plan's pod CIDR.
apiVersion: v1
kind: ConfigMap
metadata:
  name: kube-flannel-cfg
  namespace: {namespace}
  labels:
    app: flannel
    tier: node
data:
  cni-conf.json: |
    {{
      "name": "cbr0",
      "cniVersion": "0.3.1",
      "plugins": [
        {{"type": "flannel", "delegate": {{"hairpinMode": true, "isDefaultGateway": true}}}},
        {{"type": "portmap", "capabilities": {{"portMappings": true}}}}
      ]
    }}
  net-conf.json: |
    {{
      "Network": "{pod_cidr}",
      "Backend": {{"Type": "host-gw"}}
    }}
"#
    )
}

/// The lab's settings (K-PaaS's default networks) for tests of the steps
/// that read them.
#[cfg(test)]
pub fn lab_settings(api_san: &str, cni: &str) -> airgap_bundle::node::KubernetesStep {
    let net = |s: &str| s.to_string().try_into().expect("a valid CIDR");
    airgap_bundle::node::KubernetesStep {
        version: None,
        pod_cidr: net("10.233.64.0/18"),
        service_cidr: net("10.233.0.0/18"),
        apiserver_san: api_san.into(),
        apiserver_port: airgap_bundle::kube_settings::DEFAULT_API_PORT,
        cni_manifest: cni.into(),
        ready: vec![],
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests: a panic is the failure report
    use super::*;
    use airgap_bundle::node::Role;
    use std::path::Path;

    fn node(name: &str, ip: &str, role: Role) -> NodeEntry {
        NodeEntry {
            hostname: name.into(),
            ip: ip.parse().unwrap(),
            mac: None,
            role,
        }
    }

    fn config(runtime: Runtime) -> NodeConfig {
        let mut c = NodeConfig::with_defaults(
            "lab",
            vec![
                node("kpaas-master", "10.10.0.10", Role::Master),
                node("kpaas-worker1", "10.10.0.11", Role::Worker),
            ],
        );
        c.runtime = runtime;
        c.kubernetes = Some(lab_settings("203.0.113.7", "kube-flannel.yml"));
        c
    }

    #[test]
    fn rendered_node_files_for_a_master_and_a_worker() {
        let pause = "registry.k8s.io/pause:3.8";
        let (mc, wc) = (config(Runtime::Containerd), config(Runtime::Crio));
        let m = Inputs::new(&mc, &mc.nodes[0], "v1.25.6").unwrap();
        let w = Inputs::new(&wc, &wc.nodes[1], "v1.25.6").unwrap();
        let worker = &wc.nodes[1];
        let token = "abcdef.0123456789abcdef";
        let hash = "sha256:0000000000000000000000000000000000000000000000000000000000000000";
        let files = [
            (CONTAINERD_CONFIG, containerd_config(pause)),
            (CRIO_DROPIN, crio_dropin(pause)),
            (MODULES_LOAD, modules_load()),
            (SYSCTL, sysctl_conf()),
            (
                KUBELET_UNIT,
                kubelet_unit("/usr/local/bin/kubelet", Runtime::Containerd),
            ),
            (KUBELET_DROPIN, kubelet_dropin("/usr/local/bin/kubelet")),
            (KUBELET_ENV, kubelet_env(worker)),
            (
                "etc/kubernetes/resolv.conf (node without a resolver)",
                resolv_conf("nameserver 127.0.0.53\n", worker),
            ),
            (
                "etc/kubernetes/resolv.conf (node with one)",
                resolv_conf("search site.internal\nnameserver 10.10.0.53\n", worker),
            ),
            (
                "master: var/lib/kpaas/kubeadm.yaml",
                init_config(&m, token, Path::new("/var/lib/kpaas/kubeadm-patches")),
            ),
            (
                "worker: var/lib/kpaas/kubeadm.yaml",
                join_config(&w, token, hash),
            ),
            (
                "cni: kube-flannel-cfg",
                flannel_config("kube-system", &m.pod_cidr),
            ),
        ];
        let mut text = String::new();
        for (name, body) in files {
            let _ = write!(text, "### {name}\n{body}");
        }
        for (name, body) in control_plane_patches() {
            let _ = write!(
                text,
                "### master: var/lib/kpaas/kubeadm-patches/{name}\n{body}"
            );
        }
        kpaas_testkit::snapshot(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/snapshots"),
            "kube-files.txt",
            &text,
        );
    }

    #[test]
    fn a_master_alone_is_not_tainted_one_with_workers_is() {
        let mut c = config(Runtime::Containerd);
        let patches = Path::new("/p");
        let with = init_config(
            &Inputs::new(&c, &c.nodes[0], "v1.25.6").unwrap(),
            "t",
            patches,
        );
        assert!(!with.contains("taints"), "{with}");
        c.nodes.truncate(1);
        let alone = init_config(
            &Inputs::new(&c, &c.nodes[0], "v1.25.6").unwrap(),
            "t",
            patches,
        );
        assert!(
            alone.contains("  imagePullPolicy: IfNotPresent\n  taints: []\n"),
            "{alone}"
        );
    }

    #[test]
    fn settings_the_seeds_would_refuse_are_refused_naming_each_problem() {
        let mut c = config(Runtime::Crio);
        if let Some(k) = c.kubernetes.as_mut() {
            k.service_cidr = "10.233.64.0/24".to_string().try_into().unwrap();
            k.version = Some("v1.26.0".into());
        }
        let me = c.nodes[1].clone();
        c.nodes.remove(0);
        let e = Inputs::new(&c, &me, "v1.25.6").err().unwrap().to_string();
        assert!(
            e.contains("pod_cidr 10.233.64.0/18 overlaps service_cidr 10.233.64.0/24")
                && e.contains("made for Kubernetes v1.26.0, the bundle holds v1.25.6")
                && e.contains("names no master"),
            "{e}"
        );
        c.kubernetes = None;
        assert!(Inputs::new(&c, &me, "v1.25.6").is_err());
    }
}
