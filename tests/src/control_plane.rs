//! A real Kubernetes v1.25.6 control plane on loopback, per test: etcd,
//! kube-apiserver, kube-controller-manager and kube-scheduler as processes
//! (the kit's own builds), certificates and kubeconfigs made by the real
//! kubeadm (`init phase certs|kubeconfig`), and kwok turning the pods of its
//! fake nodes Running and Ready. Ports are chosen free; everything stops
//! when the value is dropped.

use crate::kit;
use crate::servers::free_port;
use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The programs a control plane needs.
pub const PROGRAMS: &[&str] = &[
    "kubeadm",
    "kubectl",
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kwok",
];

pub struct ControlPlane {
    procs: Vec<(String, Child)>,
    dir: tempfile::TempDir,
    /// An admin kubeconfig (system:masters).
    pub kubeconfig: PathBuf,
    /// https://127.0.0.1:<port>
    pub server: String,
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        // Reverse order: clients before the API server, etcd last.
        for (_, c) in self.procs.iter_mut().rev() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl ControlPlane {
    /// Starts one, or returns None after saying why (a program is not built).
    pub fn start(test: &str) -> Result<Option<ControlPlane>> {
        if !kit::have_programs(test, PROGRAMS) {
            return Ok(None);
        }
        let dir = tempfile::tempdir()?;
        let d = dir.path().to_path_buf();
        let api_port = free_port();
        let pki = d.join("pki");
        let cfg = d.join("kubeadm.yaml");
        std::fs::write(&cfg, kubeadm_config(api_port, &pki))?;
        let kubeadm = kit::bin_dir().join("kubeadm");
        let c = cfg.to_string_lossy().to_string();
        let kd = d.to_string_lossy().to_string();
        kit::run(&kubeadm, &["init", "phase", "certs", "all", "--config", &c])?;
        for conf in ["admin", "controller-manager", "scheduler"] {
            kit::run(
                &kubeadm,
                &[
                    "init",
                    "phase",
                    "kubeconfig",
                    conf,
                    "--config",
                    &c,
                    "--kubeconfig-dir",
                    &kd,
                ],
            )?;
        }
        // kubeadm 1.25 points the controller-manager's and the scheduler's
        // kubeconfigs at the local endpoint (the SAN-only address above).
        for conf in ["controller-manager.conf", "scheduler.conf"] {
            let f = d.join(conf);
            let text = std::fs::read_to_string(&f)?;
            std::fs::write(
                &f,
                text.replace(&format!("https://{ADVERTISED}:"), "https://127.0.0.1:"),
            )?;
        }
        let mut cp = ControlPlane {
            procs: Vec::new(),
            kubeconfig: d.join("admin.conf"),
            server: format!("https://127.0.0.1:{api_port}"),
            dir,
        };
        let p = |f: &str| pki.join(f).to_string_lossy().to_string();
        let etcd_port = free_port();
        let etcd_url = format!("http://127.0.0.1:{etcd_port}");
        cp.spawn(
            "etcd",
            &[
                "--name=loopback",
                &format!("--data-dir={}", d.join("etcd").display()),
                &format!("--listen-client-urls={etcd_url}"),
                &format!("--advertise-client-urls={etcd_url}"),
                &format!("--listen-peer-urls=http://127.0.0.1:{}", free_port()),
                "--log-level=warn",
            ],
        )?;
        cp.spawn(
            "kube-apiserver",
            &[
                "--advertise-address=127.0.0.1",
                "--bind-address=127.0.0.1",
                &format!("--secure-port={api_port}"),
                &format!("--etcd-servers={etcd_url}"),
                "--allow-privileged=true",
                "--authorization-mode=Node,RBAC",
                // As kubeadm's control plane: join credentials authenticate.
                "--enable-bootstrap-token-auth=true",
                "--enable-admission-plugins=NodeRestriction",
                &format!("--client-ca-file={}", p("ca.crt")),
                &format!("--tls-cert-file={}", p("apiserver.crt")),
                &format!("--tls-private-key-file={}", p("apiserver.key")),
                &format!(
                    "--kubelet-client-certificate={}",
                    p("apiserver-kubelet-client.crt")
                ),
                &format!("--kubelet-client-key={}", p("apiserver-kubelet-client.key")),
                &format!("--proxy-client-cert-file={}", p("front-proxy-client.crt")),
                &format!("--proxy-client-key-file={}", p("front-proxy-client.key")),
                &format!("--requestheader-client-ca-file={}", p("front-proxy-ca.crt")),
                "--requestheader-allowed-names=front-proxy-client",
                "--requestheader-extra-headers-prefix=X-Remote-Extra-",
                "--requestheader-group-headers=X-Remote-Group",
                "--requestheader-username-headers=X-Remote-User",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                &format!("--service-account-key-file={}", p("sa.pub")),
                &format!("--service-account-signing-key-file={}", p("sa.key")),
                "--service-cluster-ip-range=10.96.0.0/16",
                &format!("--cert-dir={}", d.join("apiserver-certs").display()),
            ],
        )?;
        cp.wait_ready(Duration::from_secs(120))?;
        let kc = |f: &str| d.join(f).to_string_lossy().to_string();
        let cm = kc("controller-manager.conf");
        cp.spawn(
            "kube-controller-manager",
            &[
                &format!("--kubeconfig={cm}"),
                &format!("--authentication-kubeconfig={cm}"),
                &format!("--authorization-kubeconfig={cm}"),
                "--bind-address=127.0.0.1",
                &format!("--secure-port={}", free_port()),
                &format!("--client-ca-file={}", p("ca.crt")),
                &format!("--cluster-signing-cert-file={}", p("ca.crt")),
                &format!("--cluster-signing-key-file={}", p("ca.key")),
                &format!("--root-ca-file={}", p("ca.crt")),
                &format!("--service-account-private-key-file={}", p("sa.key")),
                "--use-service-account-credentials=true",
                "--controllers=*,bootstrapsigner,tokencleaner",
                "--leader-elect=false",
                // kwok's heartbeats lag when the 2-core host is busy (a
                // build beside the tests): at the default 40 s grace the
                // node goes NotReady, its pods' Ready turns False and kwok
                // never turns it back (seen: a rollout that never ends).
                "--node-monitor-grace-period=10m",
            ],
        )?;
        let sc = kc("scheduler.conf");
        cp.spawn(
            "kube-scheduler",
            &[
                &format!("--kubeconfig={sc}"),
                &format!("--authentication-kubeconfig={sc}"),
                &format!("--authorization-kubeconfig={sc}"),
                "--bind-address=127.0.0.1",
                &format!("--secure-port={}", free_port()),
                "--leader-elect=false",
            ],
        )?;
        let admin = kc("admin.conf");
        let kwok = kwok_args(&admin);
        cp.spawn("kwok", &kwok.iter().map(String::as_str).collect::<Vec<_>>())?;
        Ok(Some(cp))
    }

    fn spawn(&mut self, program: &str, args: &[&str]) -> Result<()> {
        let bin = kit::bin_dir().join(program);
        let log = std::fs::File::create(self.log_path(program))?;
        let child = Command::new(&bin)
            .args(args)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        self.procs.push((program.to_string(), child));
        Ok(())
    }

    fn log_path(&self, program: &str) -> PathBuf {
        self.dir.path().join(format!("{program}.log"))
    }

    /// The last lines each process wrote: for failure messages.
    pub fn logs(&self) -> String {
        let mut s = String::new();
        for (name, _) in &self.procs {
            let text = std::fs::read_to_string(self.log_path(name)).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let tail = lines[lines.len().saturating_sub(15)..].join("\n");
            s.push_str(&format!("--- {name} (last lines) ---\n{tail}\n"));
        }
        s
    }

    /// Fails (with every process's last lines) if one of them has exited.
    fn check_alive(&mut self) -> Result<()> {
        for (name, c) in self.procs.iter_mut() {
            if let Some(st) = c.try_wait()? {
                let name = name.clone();
                bail!("{name} exited with {st}\n{}", self.logs());
            }
        }
        Ok(())
    }

    fn wait_ready(&mut self, limit: Duration) -> Result<()> {
        let t = Instant::now();
        loop {
            if self.kubectl(&["get", "--raw", "/readyz"]).is_ok() {
                return Ok(());
            }
            self.check_alive()?;
            if t.elapsed() > limit {
                bail!(
                    "kube-apiserver was not ready within {limit:?}\n{}",
                    self.logs()
                );
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// The kit's kubectl against this control plane, as admin.
    pub fn kubectl(&self, args: &[&str]) -> Result<String> {
        let mut a = vec!["--kubeconfig", self.kubeconfig.to_str().unwrap_or_default()];
        a.extend_from_slice(args);
        kit::run(&kit::bin_dir().join("kubectl"), &a)
    }

    /// Applies `yaml` with the kit's kubectl.
    pub fn apply(&self, yaml: &str) -> Result<String> {
        let f = self.dir.path().join(format!("apply-{}.yaml", free_port()));
        std::fs::write(&f, yaml)?;
        self.kubectl(&["apply", "-f", f.to_str().unwrap_or_default()])
    }

    /// Registers `n` fake nodes that kwok keeps Ready and whose pods it runs.
    pub fn add_nodes(&mut self, n: usize) -> Result<()> {
        for i in 0..n {
            self.apply(&fake_node(&format!("kwok-node-{i}")))?;
        }
        self.check_alive()?;
        self.kubectl(&[
            "wait",
            "--for=condition=Ready",
            "node",
            "--all",
            "--timeout=120s",
        ])
        .with_context(|| self.logs())?;
        Ok(())
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

/// kubeadm's own v1beta3 config for the certificates and kubeconfigs of a
/// control plane on 127.0.0.1 (the CRI socket is named so kubeadm does not
/// go looking for a runtime this host does not run). kubeadm replaces a
/// loopback advertiseAddress with a host interface's address, and fails on
/// hosts whose IPv6 table has an unreachable default on `lo`; the address
/// here (TEST-NET-2, never contacted) only becomes a SAN of the serving
/// certificate: clients use controlPlaneEndpoint, 127.0.0.1.
const ADVERTISED: &str = "198.51.100.10";

fn kubeadm_config(api_port: u16, pki: &Path) -> String {
    format!(
        "apiVersion: kubeadm.k8s.io/v1beta3
kind: InitConfiguration
localAPIEndpoint: {{advertiseAddress: {ADVERTISED}, bindPort: {api_port}}}
nodeRegistration: {{name: loopback, criSocket: unix:///run/containerd/containerd.sock}}
---
apiVersion: kubeadm.k8s.io/v1beta3
kind: ClusterConfiguration
kubernetesVersion: v1.25.6
clusterName: loopback
certificatesDir: {}
controlPlaneEndpoint: 127.0.0.1:{api_port}
networking: {{serviceSubnet: 10.96.0.0/16, dnsDomain: cluster.local}}
apiServer: {{certSANs: [127.0.0.1, localhost]}}
",
        pki.display()
    )
}

/// kwok manages only the nodes annotated as its own, and their pods.
fn kwok_args(kubeconfig: &str) -> Vec<String> {
    vec![
        format!("--kubeconfig={kubeconfig}"),
        "--manage-all-nodes=false".into(),
        "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake".into(),
        "--cidr=10.244.0.0/16".into(),
        "--node-ip=10.244.0.1".into(),
    ]
}

fn fake_node(name: &str) -> String {
    format!(
        "apiVersion: v1
kind: Node
metadata:
  name: {name}
  annotations: {{kwok.x-k8s.io/node: fake, node.alpha.kubernetes.io/ttl: \"0\"}}
  labels: {{kubernetes.io/hostname: {name}, kubernetes.io/os: linux, kubernetes.io/arch: amd64, type: kwok}}
status:
  allocatable: {{cpu: \"32\", memory: 256Gi, pods: \"110\"}}
  capacity: {{cpu: \"32\", memory: 256Gi, pods: \"110\"}}
"
    )
}
