//! End-to-end: the real kpaas-agent against real clients (skopeo, containerd's
//! ctr, podman, raw HTTP) on loopback, serving a demo bundle that the real
//! kpaas-builder made.

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use kpaas_testkit::servers::free_port;
use kpaas_testkit::{DemoEnv, have_tools, http};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

const PEERS: &[&str] = &["docker-registry", "nginx", "skopeo"];

struct Agent {
    child: Child,
    addr: String,
    log: PathBuf,
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Agent {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

fn serve(bundle: &Path, dir: &Path) -> Agent {
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let log = dir.join(format!("agent-{port}.log"));
    let mut child = Command::new(env!("CARGO_BIN_EXE_kpaas-agent"))
        .args([
            "serve",
            "--bundle",
            &bundle.to_string_lossy(),
            "--listen",
            &addr,
        ])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    http::wait_registry(&addr, &mut child).unwrap();
    Agent { child, addr, log }
}

/// The demo's sources running, and its signed bundle built in a temp dir.
fn demo() -> (DemoEnv, tempfile::TempDir, PathBuf) {
    let env = DemoEnv::start().unwrap();
    let t = tempfile::tempdir().unwrap();
    let (b, _) = kpaas_testkit::demo_bundle(&env, t.path()).unwrap();
    (env, t, b)
}

/// `kpaas-agent mirrors` for the bundle, written under `root`.
fn write_mirrors(b: &Path, seed: &str, root: &Path) {
    let o = Command::new(env!("CARGO_BIN_EXE_kpaas-agent"))
        .args([
            "mirrors",
            "--bundle",
            &b.to_string_lossy(),
            "--seed",
            seed,
            "--root",
            &root.to_string_lossy(),
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

fn bundle_json(b: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(b.join("bundle.json")).unwrap()).unwrap()
}

fn skopeo(args: &[&str]) -> std::process::Output {
    Command::new("skopeo").args(args).output().unwrap()
}

#[test]
fn skopeo_pulls_every_artifact_from_the_seed() {
    if !have_tools("seed_skopeo", PEERS) {
        return;
    }
    let (env, t, b) = demo();
    let a = serve(&b, t.path());
    let m = bundle_json(&b);
    std::fs::create_dir_all(t.path().join("out")).unwrap();
    for art in m["artifacts"].as_array().unwrap() {
        let name = art["name"].as_str().unwrap();
        let src = format!("docker://{}/{name}", a.addr);
        let raw = skopeo(&["inspect", "--raw", "--tls-verify=false", &src]);
        assert!(
            raw.status.success(),
            "inspect {name}: {}",
            String::from_utf8_lossy(&raw.stderr)
        );
        assert_eq!(
            kpaas_testkit::content::digest(&raw.stdout),
            art["digest"].as_str().unwrap(),
            "{name}"
        );
        let dest = format!(
            "dir:{}",
            t.path()
                .join("out")
                .join(name.replace(['/', ':', '@'], "_"))
                .display()
        );
        let o = skopeo(&[
            "copy",
            "--quiet",
            "--all",
            "--src-tls-verify=false",
            &src,
            &dest,
        ]);
        assert!(
            o.status.success(),
            "copy {name}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
    // Platform selection through the index, and a pull by digest.
    let multi = format!(
        "docker://{}/registry.demo.kpaas.test/demo/multi:1.0",
        a.addr
    );
    let o = skopeo(&[
        "inspect",
        "--tls-verify=false",
        "--override-arch",
        "arm64",
        &multi,
    ]);
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("\"Architecture\": \"arm64\""),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let pinned = format!(
        "docker://{}/registry.demo.kpaas.test/demo/pinned@{}",
        a.addr, env.demo.pinned_digest
    );
    assert!(
        skopeo(&[
            "copy",
            "--quiet",
            "--src-tls-verify=false",
            &pinned,
            &format!("oci:{}:p", t.path().join("pinned").display())
        ])
        .status
        .success()
    );
    // Read-only: a push is refused with the spec's error.
    let o = skopeo(&[
        "copy",
        "--quiet",
        "--dest-tls-verify=false",
        &format!(
            "dir:{}",
            t.path()
                .join("out")
                .read_dir()
                .unwrap()
                .next()
                .unwrap()
                .unwrap()
                .path()
                .display()
        ),
        &format!("docker://{}/x/y:z", a.addr),
    ]);
    assert!(!o.status.success());
}

#[test]
fn hostile_requests_get_the_right_status_and_the_server_keeps_serving() {
    if !have_tools("seed_hostile", PEERS) {
        return;
    }
    let (env, t, b) = demo();
    let a = serve(&b, t.path());
    let name = "registry.demo.kpaas.test/demo/app-a";
    let cases: &[(&str, &str, u16, &str)] = &[
        (
            "GET",
            "/v2/../../etc/passwd/manifests/x",
            400,
            "NAME_INVALID",
        ),
        (
            "GET",
            "/v2/registry.demo.kpaas.test/%2e%2e/%2e%2e/manifests/1.0",
            400,
            "NAME_INVALID",
        ),
        (
            "GET",
            &format!("/v2/{name}/blobs/sha256:zz"),
            400,
            "DIGEST_INVALID",
        ),
        (
            "GET",
            &format!("/v2/{name}/blobs/sha256:../../../../etc/passwd"),
            400,
            "DIGEST_INVALID",
        ),
        (
            "GET",
            &format!("/v2/{name}/manifests/sha256:1234"),
            400,
            "DIGEST_INVALID",
        ),
        ("GET", "/v2/no/such/repo/manifests/1.0", 404, "NAME_UNKNOWN"),
        (
            "GET",
            &format!("/v2/{name}/manifests/nope"),
            404,
            "MANIFEST_UNKNOWN",
        ),
        (
            "GET",
            &format!("/v2/{name}/blobs/{}", env.demo.pinned_digest),
            404,
            "BLOB_UNKNOWN",
        ),
        (
            "PUT",
            &format!("/v2/{name}/manifests/evil"),
            405,
            "UNSUPPORTED",
        ),
        (
            "POST",
            &format!("/v2/{name}/blobs/uploads/"),
            405,
            "UNSUPPORTED",
        ),
        (
            "DELETE",
            &format!("/v2/{name}/manifests/1.0"),
            405,
            "UNSUPPORTED",
        ),
        (
            "PATCH",
            &format!("/v2/{name}/blobs/uploads/x"),
            405,
            "UNSUPPORTED",
        ),
    ];
    for (m, p, status, code) in cases {
        let r = http::request(&a.addr, m, p, &[]).unwrap();
        assert_eq!(
            r.status,
            *status,
            "{m} {p}: {}",
            String::from_utf8_lossy(&r.body)
        );
        assert!(
            String::from_utf8_lossy(&r.body).contains(code),
            "{m} {p}: {}",
            String::from_utf8_lossy(&r.body)
        );
    }
    // A 1 MiB header is cut off, not buffered.
    let big = "x".repeat(1 << 20);
    let r = http::request(&a.addr, "GET", "/v2/", &[("X-Big", &big)]);
    assert!(r.is_err() || r.unwrap().status >= 400);
    // Range on a blob, then the server still answers.
    let man: serde_json::Value = serde_json::from_slice(
        &http::get(&a.addr, &format!("/v2/{name}/manifests/1.0"))
            .unwrap()
            .body,
    )
    .unwrap();
    let layer = man["layers"][0]["digest"].as_str().unwrap();
    let r = http::request(
        &a.addr,
        "GET",
        &format!("/v2/{name}/blobs/{layer}"),
        &[("Range", "bytes=10-19")],
    )
    .unwrap();
    assert_eq!((r.status, r.body.len()), (206, 10));
    assert!(
        r.header("Content-Range")
            .unwrap()
            .starts_with("bytes 10-19/")
    );
    let r = http::request(
        &a.addr,
        "GET",
        &format!("/v2/{name}/blobs/{layer}"),
        &[("Range", "bytes=999999999-")],
    )
    .unwrap();
    assert_eq!(r.status, 416);
    let r = http::request(&a.addr, "HEAD", &format!("/v2/{name}/manifests/1.0"), &[]).unwrap();
    assert_eq!(
        r.header("Docker-Content-Digest"),
        Some(env.demo.app_a_digest.as_str())
    );
    assert_eq!(http::get(&a.addr, "/v2/").unwrap().status, 200);
    let cat: serde_json::Value =
        serde_json::from_slice(&http::get(&a.addr, "/v2/_catalog").unwrap().body).unwrap();
    assert!(
        cat["repositories"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r == name)
    );
    let tags: serde_json::Value = serde_json::from_slice(
        &http::get(&a.addr, &format!("/v2/{name}/tags/list"))
            .unwrap()
            .body,
    )
    .unwrap();
    assert_eq!(tags["tags"], serde_json::json!(["1.0"]));
    // containerd's plain-mirror form: /v2/<repo>?ns=<registry>.
    let r = http::get(
        &a.addr,
        "/v2/demo/app-a/manifests/1.0?ns=registry.demo.kpaas.test",
    )
    .unwrap();
    assert_eq!(r.status, 200);
}

#[test]
fn a_corrupt_blob_is_never_served_and_the_log_names_it() {
    if !have_tools("seed_corrupt", PEERS) {
        return;
    }
    let (env, t, b) = demo();
    let name = "registry.demo.kpaas.test/demo/app-a";
    let man: serde_json::Value = serde_json::from_slice(
        &std::fs::read(b.join("oci/blobs/sha256").join(&env.demo.app_a_digest[7..])).unwrap(),
    )
    .unwrap();
    let own = man["layers"][1]["digest"].as_str().unwrap().to_string();
    let shared = man["layers"][0]["digest"].as_str().unwrap().to_string();
    // The bundle's blobs may be hard links into the builder's cache: break the link first.
    let p = b.join("oci/blobs/sha256").join(&own[7..]);
    let mut bytes = std::fs::read(&p).unwrap();
    std::fs::remove_file(&p).unwrap();
    bytes[20] ^= 1;
    std::fs::write(&p, bytes).unwrap();
    let a = serve(&b, t.path());
    for _ in 0..2 {
        let r = http::get(&a.addr, &format!("/v2/{name}/blobs/{own}")).unwrap();
        assert_eq!(r.status, 500, "a corrupt blob must not be served");
        assert!(
            !r.body.windows(4).any(|w| w == b"\x1f\x8b\x08\x00"),
            "no gzip bytes may leave"
        );
    }
    let log = a.log();
    assert!(
        log.contains(&own) && log.contains("app-a:1.0") && log.contains("REFUSING"),
        "{log}"
    );
    let r = http::get(&a.addr, &format!("/v2/{name}/blobs/{shared}")).unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(kpaas_testkit::content::digest(&r.body), shared);
}

#[test]
fn thirty_two_concurrent_pulls_with_bounded_memory() {
    if !have_tools("seed_load", PEERS) {
        return;
    }
    let (_env, t, b) = demo();
    let a = serve(&b, t.path());
    // Every blob of app-a, app-b and multi's amd64 image: ~14 MB per client, ~450 MB in all.
    let m = bundle_json(&b);
    let mut paths = Vec::new();
    for art in m["artifacts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|x| x["kind"] == "image")
    {
        let name = art["name"].as_str().unwrap();
        let repo = airgap_bundle::ImageRef::parse(name).unwrap().name();
        let man: serde_json::Value = serde_json::from_slice(
            &std::fs::read(
                b.join("oci/blobs/sha256")
                    .join(&art["digest"].as_str().unwrap()[7..]),
            )
            .unwrap(),
        )
        .unwrap();
        for l in man["layers"].as_array().into_iter().flatten() {
            paths.push((
                format!("/v2/{repo}/blobs/{}", l["digest"].as_str().unwrap()),
                l["digest"].as_str().unwrap().to_string(),
            ));
        }
    }
    let total: usize = std::thread::scope(|s| {
        let hs: Vec<_> = (0..32)
            .map(|_| {
                s.spawn(|| {
                    let mut n = 0;
                    for (p, d) in &paths {
                        let r = http::get(&a.addr, p).unwrap();
                        assert_eq!(r.status, 200, "{p}");
                        assert_eq!(&kpaas_testkit::content::digest(&r.body), d);
                        n += r.body.len();
                    }
                    n
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).sum()
    });
    assert!(total > 300 << 20, "only {total} bytes moved");
    let status = std::fs::read_to_string(format!("/proc/{}/status", a.child.id())).unwrap();
    let hwm_kib: u64 = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        hwm_kib < 150 * 1024,
        "peak RSS {hwm_kib} KiB for {total} bytes served: blobs must stream, not buffer"
    );
}

/// A containerd of the test's own (root, state, socket), like the spike's.
struct Containerd {
    child: Child,
    sock: PathBuf,
}

impl Drop for Containerd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn containerd(dir: &Path) -> Containerd {
    let d = |p: &str| dir.join(p).display().to_string();
    let sock = dir.join("containerd.sock");
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(
        dir.join("config.toml"),
        format!(
            "version = 2\nroot = \"{}\"\nstate = \"{}\"\ndisabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n[grpc]\n  address = \"{}\"\n[ttrpc]\n  address = \"{}.ttrpc\"\n[plugins.\"io.containerd.internal.v1.opt\"]\n  path = \"{}\"\n",
            d("root"),
            d("state"),
            sock.display(),
            sock.display(),
            d("opt")
        ),
    )
    .unwrap();
    let child = Command::new("containerd")
        .args(["--config", &d("config.toml")])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("containerd.log")).unwrap())
        .spawn()
        .unwrap();
    let t = std::time::Instant::now();
    while Command::new("ctr")
        .args(["--address", &sock.to_string_lossy(), "version"])
        .output()
        .map(|o| !o.status.success())
        .unwrap_or(true)
    {
        assert!(t.elapsed().as_secs() < 20, "containerd did not start");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    Containerd { child, sock }
}

#[test]
fn containerd_pulls_through_the_written_hosts_toml_and_runs_the_image() {
    if !have_tools(
        "containerd_mirror",
        &[
            "docker-registry",
            "nginx",
            "skopeo",
            "containerd",
            "ctr",
            "runc",
        ],
    ) {
        return;
    }
    let (env, t, b) = demo();
    let a = serve(&b, t.path());
    let root = t.path().join("root");
    write_mirrors(&b, &a.addr, &root);
    let hosts_dir = root.join("etc/containerd/certs.d");
    for h in [
        "registry.k8s.io",
        "docker.io",
        "quay.io",
        "gcr.io",
        "ghcr.io",
        "registry.demo.kpaas.test",
    ] {
        assert!(hosts_dir.join(h).join("hosts.toml").is_file(), "{h}");
    }
    // Stop the source registry: only the seed can answer now.
    drop(env);
    let c = containerd(&t.path().join("ctrd"));
    let ctr = |args: &[&str]| {
        let mut cmd = Command::new("ctr");
        cmd.args(["--address", &c.sock.to_string_lossy()])
            .args(args);
        cmd.output().unwrap()
    };
    let img = "registry.demo.kpaas.test/demo/app-a:1.0";
    let o = ctr(&[
        "image",
        "pull",
        "--hosts-dir",
        &hosts_dir.to_string_lossy(),
        img,
    ]);
    assert!(
        o.status.success(),
        "ctr pull: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    let o = ctr(&[
        "image",
        "pull",
        "--hosts-dir",
        &hosts_dir.to_string_lossy(),
        "--platform",
        "linux/arm64",
        "registry.demo.kpaas.test/demo/multi:1.0",
    ]);
    assert!(
        o.status.success(),
        "ctr pull multi arm64: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let o = ctr(&["run", "--rm", img, "kpaas-t1"]);
    assert!(
        o.status.success(),
        "ctr run: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).trim(),
        "hello from app-a"
    );
    // The kit's flannel images, through docker.io's hosts.toml, run what
    // flannel's manifest runs in them: flanneld, the iptables it execs, and
    // the init containers' `cp`.
    let flannel = "docker.io/flannel/flannel:v0.22.0";
    let plugin = "docker.io/flannel/flannel-cni-plugin:v1.1.2";
    for img in [flannel, plugin] {
        let o = ctr(&[
            "image",
            "pull",
            "--hosts-dir",
            &hosts_dir.to_string_lossy(),
            img,
        ]);
        assert!(
            o.status.success(),
            "ctr pull {img}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
    // Host directories mounted where the manifest mounts hostPaths.
    let host = t.path().join("flannel-host");
    let (cni_bin, net_d, cfg) = (host.join("bin"), host.join("net.d"), host.join("cfg"));
    for d in [&cni_bin, &net_d, &cfg] {
        std::fs::create_dir_all(d).unwrap();
    }
    std::fs::write(cfg.join("cni-conf.json"), "{\"name\": \"cbr0\"}\n").unwrap();
    let mount = |src: &Path, dst: &str| {
        format!("type=bind,src={},dst={dst},options=rbind:rw", src.display())
    };
    let (m_bin, m_net, m_cfg) = (
        mount(&cni_bin, "/opt/cni/bin"),
        mount(&net_d, "/etc/cni/net.d"),
        mount(&cfg, "/etc/kube-flannel"),
    );
    let run = |opts: &[&str], img: &str, id: &str, cmd: &[&str]| {
        let mut a = vec!["run", "--rm"];
        a.extend(opts);
        a.extend([img, id]);
        a.extend(cmd);
        let o = ctr(&a);
        let out =
            String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr);
        assert!(o.status.success(), "ctr {a:?}: {out}");
        out
    };
    let out = run(
        &[],
        flannel,
        "kpaas-fl1",
        &["/opt/bin/flanneld", "--version"],
    );
    assert!(out.contains("v0.22.0"), "{out}");
    let out = run(&[], flannel, "kpaas-fl2", &["iptables", "--version"]);
    assert!(out.contains("(nf_tables)"), "{out}");
    // The init containers, as kube-flannel.yml runs them.
    run(
        &["--mount", &m_bin],
        plugin,
        "kpaas-fl3",
        &["cp", "-f", "/flannel", "/opt/cni/bin/flannel"],
    );
    run(
        &["--mount", &m_net, "--mount", &m_cfg],
        flannel,
        "kpaas-fl4",
        &[
            "cp",
            "-f",
            "/etc/kube-flannel/cni-conf.json",
            "/etc/cni/net.d/10-flannel.conflist",
        ],
    );
    assert_eq!(
        std::fs::read(cni_bin.join("flannel")).unwrap(),
        std::fs::read(kpaas_testkit::kit::bin_dir().join("flannel")).unwrap(),
        "the CNI plugin on the host is the kit's build"
    );
    assert_eq!(
        std::fs::read_to_string(net_d.join("10-flannel.conflist")).unwrap(),
        "{\"name\": \"cbr0\"}\n"
    );
    // A name the bundle lacks fails at the seed, never reaching the internet.
    let o = ctr(&[
        "image",
        "pull",
        "--hosts-dir",
        &hosts_dir.to_string_lossy(),
        "docker.io/library/busybox:latest",
    ]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("not found") && !err.contains("registry-1.docker.io"),
        "{err}"
    );
}

#[test]
fn podman_pulls_through_the_written_registries_conf() {
    if !have_tools(
        "podman_mirror",
        &["docker-registry", "nginx", "skopeo", "podman"],
    ) {
        return;
    }
    let (env, t, b) = demo();
    let a = serve(&b, t.path());
    let root = t.path().join("root");
    write_mirrors(&b, &a.addr, &root);
    drop(env);
    // The drop-in is a complete registries.conf (v2): CRI-O and podman read the same format.
    let conf = root.join("etc/containers/registries.conf.d/50-kpaas-seed.conf");
    let p = t.path().join("podman");
    let podman = |args: &[&str]| {
        Command::new("podman")
            .args([
                "--root",
                &p.join("root").to_string_lossy(),
                "--runroot",
                &p.join("run").to_string_lossy(),
                "--tmpdir",
                &p.join("tmp").to_string_lossy(),
                "--storage-driver",
                "vfs",
            ])
            .args(args)
            .env("CONTAINERS_REGISTRIES_CONF", &conf)
            .output()
            .unwrap()
    };
    let o = podman(&["pull", "-q", "registry.demo.kpaas.test/demo/app-b:1.0"]);
    assert!(
        o.status.success(),
        "podman pull: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let o = podman(&[
        "image",
        "inspect",
        "--format",
        "{{.Digest}}",
        "registry.demo.kpaas.test/demo/app-b:1.0",
    ]);
    let m = bundle_json(&b);
    let want = m["artifacts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["name"] == "registry.demo.kpaas.test/demo/app-b:1.0")
        .unwrap()["digest"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), want);
    let o = podman(&["pull", "-q", "docker.io/library/busybox:latest"]);
    assert!(!o.status.success());
    assert!(
        !String::from_utf8_lossy(&o.stderr).contains("registry-1.docker.io"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// The Harbor hand-off against a real registry (distribution, which Harbor
/// runs as its registry): every image and chart of the bundle pushed under
/// the project with the seed's naming, shared blobs mounted rather than
/// sent twice, every manifest read back equal; a second run sends nothing;
/// a damaged blob is never pushed. Then containerd, pointed at the registry
/// first and at a seed that is not running, pulls and runs an image: it
/// came through the registry.
#[test]
fn the_hand_off_fills_a_real_registry_and_containerd_pulls_through_it() {
    if !have_tools(
        "hand_off",
        &[
            "docker-registry",
            "nginx",
            "skopeo",
            "containerd",
            "ctr",
            "runc",
        ],
    ) {
        return;
    }
    let (env, t, b) = demo();
    drop(env);
    let target = kpaas_testkit::servers::registry(&Default::default()).unwrap();
    let fill = |bundle: &Path| {
        Command::new(env!("CARGO_BIN_EXE_kpaas-agent"))
            .args([
                "fill",
                "--bundle",
                &bundle.to_string_lossy(),
                "--registry",
                &target.addr,
            ])
            .output()
            .unwrap()
    };
    // With the seed serving the same bundle: its read rate is the yardstick.
    let seed = serve(&b, t.path());
    let o = Command::new(env!("CARGO_BIN_EXE_kpaas-agent"))
        .args([
            "fill",
            "--bundle",
            &b.to_string_lossy(),
            "--registry",
            &target.addr,
            "--seed",
            &seed.addr,
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(r["seed_read_bytes"].as_u64().unwrap() > 0, "{r}");
    assert!(r["seed_read_bytes_per_s"].as_f64().unwrap() > 0.0, "{r}");
    drop(seed);
    let bj = bundle_json(&b);
    let pushed: Vec<&serde_json::Value> = bj["artifacts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["kind"] == "image" || a["kind"] == "chart")
        .collect();
    assert_eq!(r["artifacts"], pushed.len(), "{r}");
    assert!(r["blobs_sent"].as_u64().unwrap() > 0, "{r}");
    // app-a, app-b and multi share busybox's layer: mounted, not resent.
    assert!(r["blobs_mounted"].as_u64().unwrap() > 0, "{r}");
    // Every artifact reads back from the registry with the bundle's digest
    // (skopeo, an independent client, asked by tag or by digest).
    for a in &pushed {
        let name = a["name"].as_str().unwrap();
        let r = airgap_bundle::ImageRef::parse(name).unwrap();
        let reference = match &r.tag {
            Some(tag) => format!("{}/cp-portal-repository/{}:{tag}", target.addr, r.name()),
            None => format!(
                "{}/cp-portal-repository/{}@{}",
                target.addr,
                r.name(),
                a["digest"].as_str().unwrap()
            ),
        };
        let o = skopeo(&[
            "inspect",
            "--raw",
            "--tls-verify=false",
            &format!("docker://{reference}"),
        ]);
        assert!(
            o.status.success(),
            "{reference}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        assert_eq!(
            airgap_bundle::Digest::of(&o.stdout).as_str(),
            a["digest"].as_str().unwrap(),
            "{reference}"
        );
    }
    // Again: everything is there, nothing is sent.
    let o = fill(&b);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let again: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(again["blobs_sent"], 0, "{again}");
    assert_eq!(again["blobs_mounted"], 0, "{again}");
    // A damaged copy of the bundle, into a fresh project: the blob is
    // refused before the registry has it.
    let damaged = t.path().join("damaged");
    copy_tree(&b, &damaged);
    let layer = first_layer(&damaged, "registry.demo.kpaas.test/demo/app-a:1.0");
    let p = damaged.join("oci/blobs/sha256").join(&layer[7..]);
    let mut bytes = std::fs::read(&p).unwrap();
    bytes[0] ^= 0xff;
    std::fs::write(&p, bytes).unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_kpaas-agent"))
        .args([
            "fill",
            "--bundle",
            &damaged.to_string_lossy(),
            "--registry",
            &target.addr,
            "--project",
            "damaged",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("the bundle is damaged") && err.contains(&layer[7..]),
        "{err}"
    );
    let head = http::send(
        &target.addr,
        "HEAD",
        &format!("/v2/damaged/registry.demo.kpaas.test/demo/app-a/blobs/{layer}"),
        &[],
        b"",
    )
    .unwrap();
    assert_eq!(head.status, 404);
    // Hashed first (`--verify-first`): the same damage is found before the
    // push starts, and the whole bundle is checked, not one blob.
    let verify_first = |bundle: &Path, project: &str| {
        Command::new(env!("CARGO_BIN_EXE_kpaas-agent"))
            .args(["fill", "--verify-first", "--bundle"])
            .arg(bundle)
            .args(["--registry", &target.addr, "--project", project])
            .output()
            .unwrap()
    };
    let o = verify_first(&damaged, "damaged-first");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success()
            && err
                .contains("1 blob(s) of the bundle are damaged or unreadable; nothing was pushed")
            && err.contains(&layer[7..]),
        "{err}"
    );
    let head = http::send(
        &target.addr,
        "GET",
        "/v2/damaged-first/registry.demo.kpaas.test/demo/app-a/tags/list",
        &[],
        b"",
    )
    .unwrap();
    assert_eq!(head.status, 404);
    // Sound, into a project of its own: everything is hashed once, then
    // sent with nothing hashed again.
    let o = verify_first(&b, "verified");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["artifacts"], pushed.len(), "{v}");
    assert!(v["verified_bytes"].as_u64().unwrap() > 0, "{v}");
    assert!(v["verified_secs"].as_f64().is_some(), "{v}");
    // A new project links nothing yet: the same blobs go as at the first
    // fill, each sent once and mounted where shared.
    assert_eq!(v["blobs_sent"], r["blobs_sent"], "{v}");
    assert_eq!(v["blobs_mounted"], r["blobs_mounted"], "{v}");
    assert_eq!(v["bytes_sent"], r["bytes_sent"], "{v}");

    // The mirror switch: the registry first, the seed behind it. No seed
    // runs, so a pull that works came through the registry.
    let root = t.path().join("root");
    let o = Command::new(env!("CARGO_BIN_EXE_kpaas-agent"))
        .args([
            "mirrors",
            "--bundle",
            &b.to_string_lossy(),
            "--seed",
            &format!("127.0.0.1:{}", free_port()),
            "--platform",
            &format!("{}/cp-portal-repository", target.addr),
            "--root",
            &root.to_string_lossy(),
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let hosts_dir = root.join("etc/containerd/certs.d");
    let c = containerd(&t.path().join("ctrd"));
    let ctr = |args: &[&str]| {
        Command::new("ctr")
            .args(["--address", &c.sock.to_string_lossy()])
            .args(args)
            .output()
            .unwrap()
    };
    let img = "registry.demo.kpaas.test/demo/app-a:1.0";
    let o = ctr(&[
        "image",
        "pull",
        "--hosts-dir",
        &hosts_dir.to_string_lossy(),
        img,
    ]);
    assert!(
        o.status.success(),
        "ctr pull: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let o = ctr(&["run", "--rm", img, "kpaas-handoff"]);
    assert!(
        o.status.success(),
        "ctr run: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).trim(),
        "hello from app-a"
    );
}

fn copy_tree(from: &Path, to: &Path) {
    let o = Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .output()
        .unwrap();
    assert!(o.status.success());
}

/// The first layer of a bundled image (its manifest read from the layout).
fn first_layer(bundle: &Path, name: &str) -> String {
    let a = bundle_json(bundle)["artifacts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == name)
        .unwrap()
        .clone();
    let d = a["digest"].as_str().unwrap();
    let m: serde_json::Value = serde_json::from_slice(
        &std::fs::read(bundle.join("oci/blobs/sha256").join(&d[7..])).unwrap(),
    )
    .unwrap();
    m["layers"][0]["digest"].as_str().unwrap().to_string()
}
