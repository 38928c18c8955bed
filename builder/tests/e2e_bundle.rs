//! End-to-end: the real kpaas-builder binary against real peers on loopback
//! (docker-registry, nginx, skopeo). Skipped with a message when a peer is
//! missing, and failed instead when KPAAS_REQUIRE_ALL_TIERS is set (CI).

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use kpaas_testkit::servers::{self, Fault, RegistryOpts};
use kpaas_testkit::{DemoEnv, have_tools};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const PEERS: &[&str] = &["docker-registry", "nginx", "skopeo", "htpasswd", "openssl"];

fn builder(args: &[String]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kpaas-builder"))
        .args(args)
        .env_remove("DOCKER_CONFIG")
        .output()
        .expect("running kpaas-builder")
}

fn ok(args: &[String]) -> String {
    let o = builder(args);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "kpaas-builder {args:?} failed:\n{err}");
    String::from_utf8_lossy(&o.stdout).to_string() + &err
}

fn fail(args: &[String]) -> String {
    let o = builder(args);
    assert!(
        !o.status.success(),
        "kpaas-builder {args:?} should have failed"
    );
    String::from_utf8_lossy(&o.stderr).to_string()
}

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

/// bundle args for `platform` into `dir/out`, with lock and cache in `dir`,
/// pointed at the demo's loopback servers.
fn args_for(
    env: &DemoEnv,
    platform: &str,
    dir: &Path,
    out: &str,
    lock: &str,
    cache: &str,
    extra: &[&str],
) -> Vec<String> {
    let mut a = s(&["bundle", "-q", "--platform", platform]);
    a.extend(s(&[
        "--lock",
        &dir.join(lock).to_string_lossy(),
        "--cache-dir",
        &dir.join(cache).to_string_lossy(),
    ]));
    a.extend(s(&["--out", &dir.join(out).to_string_lossy()]));
    a.extend(env.mirror_args());
    a.extend(s(extra));
    a
}

/// bundle args for the demo platform into `out`, with its own cache and lock.
fn bundle_args(env: &DemoEnv, dir: &Path, out: &str, extra: &[&str]) -> Vec<String> {
    args_for(env, "demo", dir, out, "demo.lock", "cache", extra)
}

fn bundle_json(dir: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(dir.join("bundle.json")).unwrap()).unwrap()
}

#[test]
fn demo_bundle_verifies_dedups_and_copies_back_with_skopeo() {
    if !have_tools("demo_bundle", PEERS) {
        return;
    }
    let env = DemoEnv::start().unwrap();
    let t = tempfile::tempdir().unwrap();
    ok(&bundle_args(&env, t.path(), "b", &["--arch", "all"]));
    let b = t.path().join("b");
    let out = ok(&s(&["verify", &b.to_string_lossy()]));
    assert!(out.contains("OK"), "{out}");
    let m = bundle_json(&b);
    // Bytes on disk are exactly the unique blob bytes: every blob stored once.
    let on_disk: u64 = std::fs::read_dir(b.join("oci/blobs/sha256"))
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();
    assert_eq!(on_disk, m["totals"]["unique_bytes"].as_u64().unwrap());
    assert!(
        m["totals"]["referenced_bytes"].as_u64().unwrap() > on_disk,
        "shared base layers must be deduplicated"
    );
    // Interop: every image goes back into a fresh registry with its digest intact.
    let fresh = servers::registry(&RegistryOpts::default()).unwrap();
    // skopeo's oci: transport (containers/image) lists only OCI-typed
    // descriptors, so Docker schema 2 images, kept byte for byte to preserve
    // their digests, are checked through the registry path instead.
    for a in m["artifacts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["kind"] == "image" && a["media_type"].as_str().unwrap().contains("oci"))
    {
        let name = a["name"].as_str().unwrap();
        let repo = name
            .split_once('/')
            .unwrap()
            .1
            .split(['@', ':'])
            .next()
            .unwrap();
        let dest = format!("docker://{}/{repo}:copied", fresh.addr);
        let st = Command::new("skopeo")
            .args([
                "copy",
                "--quiet",
                "--all",
                "--dest-tls-verify=false",
                &format!("oci:{}:{name}", b.join("oci").display()),
                &dest,
            ])
            .status()
            .unwrap();
        assert!(st.success(), "skopeo copy of {name}");
        let raw = Command::new("skopeo")
            .args(["inspect", "--raw", "--tls-verify=false", &dest])
            .output()
            .unwrap();
        assert_eq!(
            kpaas_testkit::content::digest(&raw.stdout),
            a["digest"].as_str().unwrap(),
            "{name}"
        );
    }
    let digests: Vec<&str> = m["artifacts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["digest"].as_str().unwrap())
        .collect();
    assert!(
        digests.contains(&env.demo.multi_digest.as_str())
            && digests.contains(&env.demo.pinned_digest.as_str())
    );
    // Real Helm pulls each chart back out of a registry filled from the bundle.
    if let Some(py) = kpaas_testkit::venv_bin("demo_bundle", "python") {
        for a in m["artifacts"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|a| a["kind"] == "chart")
        {
            let name = a["name"].as_str().unwrap();
            let dest = format!("{}/helm/{}", fresh.addr, name.rsplit('/').next().unwrap());
            let st = Command::new("skopeo")
                .args([
                    "copy",
                    "--quiet",
                    "--dest-tls-verify=false",
                    &format!("oci:{}:{name}", b.join("oci").display()),
                    &format!("docker://{dest}"),
                ])
                .status()
                .unwrap();
            assert!(st.success(), "skopeo copy of chart {name}");
            let out = t.path().join("pulled").join(name.replace('/', "_"));
            std::fs::create_dir_all(&out).unwrap();
            let script = "import sys, helm_python as h\nwith h.RegistryClient(plain_http=True) as rc:\n    rc.pull(sys.argv[1], destination=sys.argv[2])\n";
            let o = Command::new(&py)
                .args([
                    "-c",
                    script,
                    &format!("oci://{dest}"),
                    &out.to_string_lossy(),
                ])
                .output()
                .unwrap();
            assert!(
                o.status.success(),
                "helm pull {name}: {}",
                String::from_utf8_lossy(&o.stderr)
            );
            let tgz = std::fs::read_dir(&out)
                .unwrap()
                .next()
                .unwrap()
                .unwrap()
                .path();
            let want = a["content_digest"]
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| {
                    let man: serde_json::Value = serde_json::from_slice(
                        &std::fs::read(
                            b.join("oci/blobs/sha256")
                                .join(&a["digest"].as_str().unwrap()[7..]),
                        )
                        .unwrap(),
                    )
                    .unwrap();
                    man["layers"][0]["digest"].as_str().unwrap().to_string()
                });
            assert_eq!(
                kpaas_testkit::content::digest(&std::fs::read(tgz).unwrap()),
                want,
                "{name}"
            );
        }
    }
    if let Some(spdx) = kpaas_testkit::venv_bin("demo_bundle", "pyspdxtools") {
        let o = Command::new(spdx)
            .arg("-i")
            .arg(b.join("sbom.spdx.json"))
            .output()
            .unwrap();
        let all =
            String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr);
        assert!(
            o.status.success() && !all.contains("invalid"),
            "SPDX validation: {all}"
        );
    }
    // SBOM lists every artifact with its digest.
    let sbom: serde_json::Value =
        serde_json::from_slice(&std::fs::read(b.join("sbom.spdx.json")).unwrap()).unwrap();
    assert_eq!(sbom["spdxVersion"], "SPDX-2.3");
    assert_eq!(
        sbom["packages"].as_array().unwrap().len(),
        m["artifacts"].as_array().unwrap().len() + 1
    );
}

#[test]
fn two_builds_from_one_lock_are_byte_identical_and_default_is_amd64_only() {
    if !have_tools("reproducible", PEERS) {
        return;
    }
    let env = DemoEnv::start().unwrap();
    let t = tempfile::tempdir().unwrap();
    ok(&bundle_args(&env, t.path(), "one.tar.zst", &[]));
    // Fresh cache, same lock, a while later.
    std::fs::rename(t.path().join("cache"), t.path().join("cache-1")).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1100));
    ok(&bundle_args(&env, t.path(), "two.tar.zst", &[]));
    let (a, b) = (
        std::fs::read(t.path().join("one.tar.zst")).unwrap(),
        std::fs::read(t.path().join("two.tar.zst")).unwrap(),
    );
    assert!(a == b, "two builds from one lock differ");
    let src = airgap_bundle::reader::BundleSource::open(&t.path().join("one.tar.zst")).unwrap();
    let m: serde_json::Value =
        serde_json::from_slice(&src.read_file("bundle.json").unwrap()).unwrap();
    let multi = m["artifacts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"].as_str().unwrap().contains("multi"))
        .unwrap();
    assert_eq!(multi["platforms"], serde_json::json!(["linux/amd64"]));
}

#[test]
fn survives_resets_server_errors_and_429() {
    if !have_tools("faults", PEERS) {
        return;
    }
    let env = DemoEnv::start().unwrap();
    let clean = tempfile::tempdir().unwrap();
    ok(&bundle_args(&env, clean.path(), "b", &[]));
    for fault in [
        Fault::ResetMidBlob,
        Fault::ServerErrorOnce,
        Fault::TooManyOnce,
    ] {
        let reg = servers::fault_proxy(&env.registry.addr, fault).unwrap();
        let files = servers::fault_proxy(&env.files.addr, fault).unwrap();
        let t = tempfile::tempdir().unwrap();
        let mut a = s(&["bundle", "--platform", "demo", "-q", "--lock"]);
        a.push(t.path().join("demo.lock").to_string_lossy().into());
        a.extend(s(&[
            "--cache-dir",
            &t.path().join("cache").to_string_lossy(),
            "--out",
            &t.path().join("b").to_string_lossy(),
        ]));
        a.extend(env.mirror_args_to(&reg.addr, &files.addr));
        ok(&a);
        assert!(
            reg.faults_injected
                .load(std::sync::atomic::Ordering::SeqCst)
                > 0,
            "{fault:?} was never injected"
        );
        ok(&s(&["verify", &t.path().join("b").to_string_lossy()]));
        assert_eq!(
            bundle_json(&t.path().join("b"))["artifacts"],
            bundle_json(&clean.path().join("b"))["artifacts"],
            "{fault:?}"
        );
    }
}

#[test]
fn bearer_token_auth_with_docker_config_credentials() {
    if !have_tools("bearer", PEERS) {
        return;
    }
    let env = DemoEnv::start().unwrap();
    let front = servers::fault_proxy(&env.registry.addr, Fault::BearerAuth).unwrap();
    let t = tempfile::tempdir().unwrap();
    let mut a = s(&["bundle", "--platform", "demo", "-q", "--lock"]);
    a.push(t.path().join("l").to_string_lossy().into());
    a.extend(s(&[
        "--cache-dir",
        &t.path().join("c").to_string_lossy(),
        "--out",
        &t.path().join("b").to_string_lossy(),
    ]));
    a.extend(env.mirror_args_to(&front.addr, &env.files.addr));
    // Without credentials the token endpoint refuses.
    let e = fail(&a);
    assert!(e.contains("token request") && e.contains("401"), "{e}");
    let cfg = t.path().join("docker.json");
    std::fs::write(
        &cfg,
        format!(
            r#"{{"auths":{{"{}":{{"username":"kpaas","password":"s3cret"}}}}}}"#,
            front.addr
        ),
    )
    .unwrap();
    a.extend(s(&["--docker-config", &cfg.to_string_lossy()]));
    ok(&a);
    assert!(
        front
            .faults_injected
            .load(std::sync::atomic::Ordering::SeqCst)
            > 0,
        "no bearer challenge was issued"
    );
    ok(&s(&["verify", &t.path().join("b").to_string_lossy()]));
}

#[test]
fn killed_mid_fetch_resumes_to_the_same_bytes() {
    if !have_tools("resume", PEERS) {
        return;
    }
    let env = DemoEnv::start().unwrap();
    let t = tempfile::tempdir().unwrap();
    // A clean reference build; its lock is shared so both resolve the same.
    ok(&bundle_args(&env, t.path(), "clean.tar", &[]));
    std::fs::rename(t.path().join("cache"), t.path().join("cache-clean")).unwrap();
    let slow = servers::fault_proxy(&env.registry.addr, Fault::Slow).unwrap();
    let mut a = bundle_args(&env, t.path(), "resumed.tar", &["--jobs", "2"]);
    let i = a
        .iter()
        .position(|x| x.starts_with("registry.demo.kpaas.test="))
        .unwrap();
    a[i] = format!("registry.demo.kpaas.test={}", slow.addr);
    a.extend(s(&["--insecure-registry", slow.addr.as_str()]));
    let mut child = Command::new(env!("CARGO_BIN_EXE_kpaas-builder"))
        .args(&a)
        .spawn()
        .unwrap();
    let partial = t.path().join("cache/partial");
    let started = std::time::Instant::now();
    loop {
        let some = std::fs::read_dir(&partial)
            .map(|d| {
                d.flatten()
                    .any(|e| e.metadata().map(|m| m.len() > 100_000).unwrap_or(false))
            })
            .unwrap_or(false);
        if some {
            break;
        }
        assert!(started.elapsed().as_secs() < 60, "no partial blob appeared");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        !t.path().join("resumed.tar").exists(),
        "a killed build must leave no bundle"
    );
    ok(&bundle_args(&env, t.path(), "resumed.tar", &[]));
    assert!(
        std::fs::read(t.path().join("clean.tar")).unwrap()
            == std::fs::read(t.path().join("resumed.tar")).unwrap()
    );
}

#[test]
fn tampering_is_caught_and_named() {
    if !have_tools("tampering", PEERS) {
        return;
    }
    let env = DemoEnv::start().unwrap();
    let t = tempfile::tempdir().unwrap();
    let key = t.path().join("k");
    ok(&s(&["keygen", "--out", &key.to_string_lossy()]));
    ok(&s(&[
        "keygen",
        "--out",
        &t.path().join("other").to_string_lossy(),
    ]));
    ok(&bundle_args(
        &env,
        t.path(),
        "b",
        &["--sign-key", &t.path().join("k.key").to_string_lossy()],
    ));
    let b = t.path().join("b");
    let pubk = t.path().join("k.pub").to_string_lossy().to_string();
    assert!(ok(&s(&["verify", &b.to_string_lossy(), "--key", &pubk])).contains("signature OK"));
    let copy = |name: &str| -> PathBuf {
        let d = t.path().join(name);
        assert!(
            Command::new("cp")
                .args(["-a", &b.to_string_lossy(), &d.to_string_lossy()])
                .status()
                .unwrap()
                .success()
        );
        d
    };
    // The app-a layer that is not shared: flip one byte.
    let m = bundle_json(&b);
    let app_a = m["artifacts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"].as_str().unwrap().ends_with("app-a:1.0"))
        .unwrap();
    let man: serde_json::Value = serde_json::from_slice(
        &std::fs::read(
            b.join("oci/blobs/sha256")
                .join(&app_a["digest"].as_str().unwrap()[7..]),
        )
        .unwrap(),
    )
    .unwrap();
    let own_layer = man["layers"][1]["digest"].as_str().unwrap()[7..].to_string();
    let flipped = copy("flipped");
    let p = flipped.join("oci/blobs/sha256").join(&own_layer);
    let mut bytes = std::fs::read(&p).unwrap();
    bytes[10] ^= 1;
    std::fs::write(&p, bytes).unwrap();
    let e = fail(&s(&["verify", &flipped.to_string_lossy(), "--key", &pubk]));
    assert!(
        e.contains("image registry.demo.kpaas.test/demo/app-a:1.0") && e.contains("is corrupt"),
        "{e}"
    );
    assert!(!e.contains("app-b"), "only app-a uses that layer:\n{e}");

    let removed = copy("removed");
    std::fs::remove_file(removed.join("oci/blobs/sha256").join(&own_layer)).unwrap();
    let e = fail(&s(&["verify", &removed.to_string_lossy(), "--key", &pubk]));
    assert!(e.contains("app-a:1.0") && e.contains("is missing"), "{e}");

    let edited = copy("edited");
    let bj = std::fs::read_to_string(edited.join("bundle.json"))
        .unwrap()
        .replace("\"component\": \"apps\"", "\"component\": \"appz\"");
    std::fs::write(edited.join("bundle.json"), bj).unwrap();
    let e = fail(&s(&["verify", &edited.to_string_lossy(), "--key", &pubk]));
    assert!(
        e.contains("does not match bundle.json")
            && e.contains("bundle.json does not match SHA256SUMS"),
        "{e}"
    );

    let e = fail(&s(&[
        "verify",
        &b.to_string_lossy(),
        "--key",
        &t.path().join("other.pub").to_string_lossy(),
    ]));
    assert!(e.contains("signed by key"), "{e}");
}

#[test]
fn json_events_and_inspect_json_are_machine_readable() {
    if !have_tools("json", PEERS) {
        return;
    }
    let env = DemoEnv::start().unwrap();
    let t = tempfile::tempdir().unwrap();
    let mut a = bundle_args(&env, t.path(), "b", &["--json"]);
    a.retain(|x| x != "-q");
    let o = builder(&a);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let events: Vec<serde_json::Value> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("every stdout line is JSON"))
        .collect();
    let kinds: Vec<&str> = events
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    // The demo catalog: 17 kit artifacts (7 node files, the flannel
    // manifest, 9 images), 2 core images, 6 apps artifacts, the
    // pipelines' kustomization archive, and the later waves' 6 manifests
    // and 5 images (local-path-provisioner, busybox, Vault, the registry,
    // MariaDB).
    assert_eq!(
        kinds.iter().filter(|k| **k == "resolved").count(),
        37,
        "{kinds:?}"
    );
    let summary = events
        .iter()
        .find(|e| e["event"] == "summary")
        .expect("a summary event");
    assert_eq!(summary["artifacts"], 37);
    assert!(summary["fetched_bytes"].as_u64().unwrap() > 1_000_000);
    assert_eq!(
        summary["dedup_saved_bytes"].as_u64().unwrap(),
        summary["referenced_bytes"].as_u64().unwrap() - summary["unique_bytes"].as_u64().unwrap()
    );
    let inspect: serde_json::Value = serde_json::from_str(
        &ok(&s(&[
            "inspect",
            "--json",
            &t.path().join("b").to_string_lossy(),
        ]))
        .lines()
        .take_while(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("\n"),
    )
    .unwrap();
    assert_eq!(inspect["artifacts"].as_array().unwrap().len(), 37);
}

#[test]
fn volumes_rejoin_and_a_bad_volume_is_named() {
    if !have_tools("volumes", PEERS) {
        return;
    }
    let env = DemoEnv::start().unwrap();
    let t = tempfile::tempdir().unwrap();
    ok(&bundle_args(
        &env,
        t.path(),
        "v.tar",
        &["--volume-size", "2M"],
    ));
    let list = std::fs::read_to_string(t.path().join("v.tar.volumes")).unwrap();
    let n = list.lines().filter(|l| !l.starts_with('#')).count();
    assert!(n >= 3, "expected several volumes:\n{list}");
    ok(&s(&["verify", &t.path().join("v.tar").to_string_lossy()]));
    ok(&s(&[
        "verify",
        &t.path().join("v.tar.002").to_string_lossy(),
    ]));
    let p = t.path().join("v.tar.002");
    let mut b = std::fs::read(&p).unwrap();
    b[1000] ^= 0xff;
    std::fs::write(&p, b).unwrap();
    let e = fail(&s(&[
        "verify",
        &t.path().join("v.tar.volumes").to_string_lossy(),
    ]));
    assert!(e.contains("volume ") && e.contains("v.tar.002"), "{e}");
}

#[test]
fn offline_builds_from_cache_or_lists_what_is_missing() {
    if !have_tools("offline", PEERS) {
        return;
    }
    let env = DemoEnv::start().unwrap();
    let t = tempfile::tempdir().unwrap();
    ok(&bundle_args(&env, t.path(), "a.tar", &[]));
    // Warm cache: offline works and gives the same bytes.
    ok(&bundle_args(&env, t.path(), "b.tar", &["--offline"]));
    assert!(
        std::fs::read(t.path().join("a.tar")).unwrap()
            == std::fs::read(t.path().join("b.tar")).unwrap()
    );
    // Empty cache: every missing piece is listed, nothing is written.
    let mut a = bundle_args(&env, t.path(), "c.tar", &["--offline"]);
    let i = a.iter().position(|x| x == "--cache-dir").unwrap();
    a[i + 1] = t.path().join("empty-cache").to_string_lossy().into();
    let e = fail(&a);
    for what in [
        "app-a:1.0",
        "app-b:1.0",
        "multi:1.0",
        "kubeadm",
        "demo-app:0.1.0",
        "not in the cache",
    ] {
        assert!(e.contains(what), "missing {what:?} in:\n{e}");
    }
    assert!(!t.path().join("c.tar").exists());
}

#[test]
fn tls_basic_auth_and_docker_config_credentials() {
    if !have_tools("tls_auth", PEERS) {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let (ca, crt, key) = servers::make_tls(t.path()).unwrap();
    let env = DemoEnv::start().unwrap();
    let secure = servers::registry(&RegistryOpts {
        basic_auth: Some(("kpaas".into(), "s3cret".into())),
        tls: Some((crt, key)),
        readonly_data: None,
    })
    .unwrap();
    let certs = t.path().join("certs");
    std::fs::create_dir_all(&certs).unwrap();
    std::fs::copy(&ca, certs.join("ca.crt")).unwrap();
    for p in &env.demo.pushes {
        let st = Command::new("skopeo")
            .args([
                "copy",
                "--quiet",
                "--all",
                "--dest-cert-dir",
                &certs.to_string_lossy(),
                "--dest-creds",
                "kpaas:s3cret",
            ])
            .args(p.format.iter().flat_map(|f| ["--format", *f]))
            .arg(format!("oci:{}:{}", p.layout.display(), p.r))
            .arg(format!("docker://{}/{}", secure.addr, p.dest))
            .status()
            .unwrap();
        assert!(st.success());
    }
    let args = |extra: &[&str]| {
        let mut a = s(&[
            "bundle",
            "--platform",
            "demo",
            "-q",
            "--lock",
            &t.path().join("l").to_string_lossy(),
            "--cache-dir",
            &t.path().join("c").to_string_lossy(),
            "--out",
            &t.path().join("b").to_string_lossy(),
        ]);
        a.extend(s(&[
            "--mirror",
            &format!("registry.demo.kpaas.test={}", secure.addr),
            "--mirror",
            &format!("registry.k8s.io={}/registry.k8s.io", secure.addr),
            "--mirror",
            &format!("docker.io={}/docker.io", secure.addr),
            "--mirror",
            &format!("http://files.demo.kpaas.test=http://{}", env.files.addr),
        ]));
        a.extend(s(extra));
        a
    };
    let e = fail(&args(&[]));
    assert!(
        e.contains("certificate")
            || e.contains("UnknownIssuer")
            || e.contains("error sending request"),
        "{e}"
    );
    let e = fail(&args(&["--ca-cert", &ca.to_string_lossy()]));
    assert!(e.contains("requires credentials"), "{e}");
    let cfg = t.path().join("docker.json");
    std::fs::write(
        &cfg,
        format!(
            r#"{{"auths":{{"{}":{{"auth":"a3BhYXM6czNjcmV0"}}}}}}"#,
            secure.addr
        ),
    )
    .unwrap();
    ok(&args(&[
        "--ca-cert",
        &ca.to_string_lossy(),
        "--docker-config",
        &cfg.to_string_lossy(),
    ]));
    ok(&s(&["verify", &t.path().join("b").to_string_lossy()]));
}

#[test]
fn wrong_digests_and_missing_artifacts_fail_hard_without_retries() {
    if !have_tools("hard_errors", PEERS) {
        return;
    }
    let env = DemoEnv::start().unwrap();
    let t = tempfile::tempdir().unwrap();
    let cat = t.path().join("catalog.yaml");
    let wrong = "0000000000000000000000000000000000000000000000000000000000000000";
    std::fs::write(
        &cat,
        format!(
            "schema_version: 1\nplatform: {{name: hard, version: \"1\"}}\ncomponents:\n  - name: a\n    artifacts:\n      - {{kind: file, name: kubeadm, url: 'http://files.demo.kpaas.test/files/v1.25.6/amd64/kubeadm', sha256: '{wrong}'}}\n      - {{kind: image, ref: 'registry.demo.kpaas.test/demo/app-a:no-such-tag'}}\n      - {{kind: image, ref: 'registry.demo.kpaas.test/demo/app-b:1.0'}}\n"
        ),
    )
    .unwrap();
    let out = t.path().join("out");
    let a = args_for(
        &env,
        &cat.to_string_lossy(),
        t.path(),
        "out",
        "l",
        "c",
        &["--json"],
    );
    let o = builder(&a);
    assert!(!o.status.success());
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(
        e.contains("digest mismatch for file files.kpaas.local/kubeadm:any")
            && e.contains(&format!("expected sha256:{wrong}"))
            && e.contains(&format!("sha256:{}", env.demo.kubeadm_sha256())),
        "{e}"
    );
    assert!(e.contains("app-a:no-such-tag") && e.contains("404"), "{e}");
    assert!(
        !String::from_utf8_lossy(&o.stdout).contains("\"retry\""),
        "a 4xx or a bad digest must not be retried"
    );
    assert!(
        !out.exists() && !t.path().join("l").exists(),
        "nothing may be written"
    );
    let partial = std::fs::read_dir(t.path().join("c/partial"))
        .unwrap()
        .count();
    assert_eq!(
        partial, 0,
        "the bad download must not stay behind as a partial"
    );
}

#[test]
fn a_bad_catalog_reports_everything_and_writes_nothing() {
    let t = tempfile::tempdir().unwrap();
    let cat = t.path().join("catalog.yaml");
    std::fs::write(
        &cat,
        "schema_version: 1\nplatform: {name: bad, version: \"1\"}\ncomponents:\n  - name: a\n    artifacts:\n      - {kind: image, ref: busybox:1, sise: 3}\n      - {kind: image, ref: 'busybox@sha256:123'}\n      - {kind: file, url: 'http://x/k', sha256: e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855}\n      - {kind: file, url: 'http://x/k', sha256: e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855}\n  - {name: b, depends_on: [nope]}\n",
    )
    .unwrap();
    let out = t.path().join("out");
    let e = fail(&s(&[
        "bundle",
        "--platform",
        &cat.to_string_lossy(),
        "--out",
        &out.to_string_lossy(),
        "--lock",
        &t.path().join("l").to_string_lossy(),
        "--cache-dir",
        &t.path().join("c").to_string_lossy(),
        "--offline",
    ]));
    for needle in [
        "catalog.yaml",
        "unknown field `sise`",
        "artifacts[1]: ref:",
        "duplicate artifact file:files.kpaas.local/k:any",
        "\"nope\" is not a component",
    ] {
        assert!(e.contains(needle), "missing {needle:?} in:\n{e}");
    }
    assert!(!out.exists() && !t.path().join("l").exists());
}

#[test]
fn supplied_artifacts_come_from_local_files_and_are_listed_when_missing() {
    if !have_tools("supply", PEERS) {
        return;
    }
    let env = DemoEnv::start().unwrap();
    let t = tempfile::tempdir().unwrap();
    let cat = t.path().join("catalog.yaml");
    std::fs::write(
        &cat,
        format!("schema_version: 1\nplatform: {{name: vendor, version: \"1\"}}\ncomponents:\n  - name: portal\n    artifacts:\n      - {{kind: image, ref: 'vendor.k-paas.local/cp-portal-repository/cp-portal-ui:latest', supplied: true, unverified: true}}\n      - {{kind: chart, name: cp-portal-ui, version: vendor, supplied: true}}\n      - {{kind: file, name: portal-tool, supplied: true}}\n      - {{kind: file, name: kubeadm, url: 'http://files.demo.kpaas.test/files/v1.25.6/amd64/kubeadm', sha256: '{}'}}\n", env.demo.kubeadm_sha256()),
    )
    .unwrap();
    let base =
        |extra: &[&str]| args_for(&env, &cat.to_string_lossy(), t.path(), "b", "l", "c", extra);
    let e = fail(&base(&[]));
    for k in [
        "image:vendor.k-paas.local/cp-portal-repository/cp-portal-ui:latest",
        "chart:charts.kpaas.local/cp-portal-ui:vendor",
        "file:files.kpaas.local/portal-tool:any",
        "3 artifact(s)",
    ] {
        assert!(e.contains(k), "missing {k:?} in:\n{e}");
    }
    // The vendor's image as an OCI archive, its chart as a .tgz, a tool as a file.
    let archive = t.path().join("ui.tar");
    let st = Command::new("skopeo")
        .args([
            "copy",
            "--quiet",
            &format!("oci:{}:app-a", env.demo.layout.display()),
            &format!(
                "oci-archive:{}:vendor.k-paas.local/cp-portal-repository/cp-portal-ui:latest",
                archive.display()
            ),
        ])
        .status()
        .unwrap();
    assert!(st.success());
    let tgz = env.demo.www.join("charts/demo-app-0.1.0.tgz");
    let tool = t.path().join("portal-tool");
    std::fs::write(&tool, b"#!/bin/sh\necho vendor tool\n").unwrap();
    let mine = t.path().join("my-kubeadm");
    std::fs::copy(kpaas_testkit::kit::bin_dir().join("kubeadm"), &mine).unwrap();
    ok(&base(&[
        "--supply",
        &format!(
            "image:vendor.k-paas.local/cp-portal-repository/cp-portal-ui:latest={}",
            archive.display()
        ),
        "--supply",
        &format!(
            "chart:charts.kpaas.local/cp-portal-ui:vendor={}",
            tgz.display()
        ),
        "--supply",
        &format!("files.kpaas.local/portal-tool:any={}", tool.display()),
        // An override of a downloadable artifact must still match its pinned sha256.
        "--supply",
        &format!("file:files.kpaas.local/kubeadm:any={}", mine.display()),
    ]));
    ok(&s(&["verify", &t.path().join("b").to_string_lossy()]));
    // A supply that names no artifact is a mistake, not something to ignore.
    let e = fail(&base(&[
        "--supply",
        &format!("file:files.kpaas.local/kubeadm:amd64={}", mine.display()),
    ]));
    assert!(
        e.contains("matches no artifact") && e.contains("kubeadm:amd64"),
        "{e}"
    );
    let m = bundle_json(&t.path().join("b"));
    let srcs: Vec<&str> = m["artifacts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["source"].as_str().unwrap())
        .collect();
    assert_eq!(
        srcs.iter().filter(|s| s.starts_with("local:")).count(),
        4,
        "{srcs:?}"
    );
    // The lock remembers them: a rebuild without --supply works from the cache.
    ok(&base(&[]));
    // A supply that contradicts a pinned digest is refused.
    std::fs::write(&mine, b"not kubeadm").unwrap();
    let e = fail(&base(&[
        "--supply",
        &format!("file:files.kpaas.local/kubeadm:any={}", mine.display()),
    ]));
    assert!(e.contains("is expected"), "{e}");
}

#[test]
fn the_offline_check_passes_on_the_demo_and_names_what_is_missing() {
    if !have_tools("offline_check", PEERS) {
        return;
    }
    let env = DemoEnv::start().unwrap();
    let t = tempfile::tempdir().unwrap();
    ok(&bundle_args(&env, t.path(), "demo.tar.zst", &[]));
    // Without the plan the verdict is partial: said, and a failure unless
    // accepted.
    let e = fail(&s(&[
        "check-offline",
        &t.path().join("demo.tar.zst").to_string_lossy(),
    ]));
    assert!(
        e.contains("partial: no --cluster") && e.contains("give --cluster FILE"),
        "{e}"
    );
    let out = ok(&s(&[
        "check-offline",
        &t.path().join("demo.tar.zst").to_string_lossy(),
        "--allow-partial",
    ]));
    assert!(out.contains("verdict PARTIAL"), "{out}");
    // demo-app.yaml's two images, kube-flannel.yml's three (its flannel
    // image twice: install-cni and flanneld), and one each in the later
    // waves' six manifests, plus the provisioner's helper pod, whose
    // manifest is inside its ConfigMap.
    assert!(
        out.contains("8 manifest file(s), 12 image reference(s), 0 missing"),
        "{out}"
    );
    // Without the plan, both bundled copies of the chart (repository and
    // OCI) with their defaults: a Deployment and a hook Job each.
    assert!(
        out.contains("2 release(s) rendered, 4 image reference(s), 0 missing"),
        "{out}"
    );
    // With the plan: the chart with its values, the kustomization and the
    // seven manifests the plan applies.
    let cluster = t.path().join("cluster.yaml");
    std::fs::write(
        &cluster,
        airgap_bundle::cluster::EXAMPLE.replace("platform: k-paas-1.4.1", "platform: demo"),
    )
    .unwrap();
    let out = ok(&s(&[
        "check-offline",
        &t.path().join("demo.tar.zst").to_string_lossy(),
        "--cluster",
        &cluster.to_string_lossy(),
    ]));
    // Every release of the plan, the manifests with their placeholders
    // filled included, rendered as the agent renders them.
    assert!(
        out.contains("9 release(s) rendered, 12 image reference(s), 0 missing")
            && out.contains("verdict complete"),
        "{out}"
    );
    // A manifest that uses an image the bundle lacks.
    std::fs::write(
        env.demo.www.join("files/v1/leaky.yaml"),
        "kind: Pod\nspec:\n  containers:\n    - {name: a, image: 'registry.demo.kpaas.test/demo/app-a:1.0'}\n    - {name: b, image: 'docker.io/library/nginx:1.23.2-alpine'}\n    - {name: c, image: 'registry.demo.kpaas.test/demo/app-a@sha256:0000000000000000000000000000000000000000000000000000000000000000'}\n",
    )
    .unwrap();
    let cat = t.path().join("leaky.yaml");
    std::fs::write(
        &cat,
        "schema_version: 1\nplatform: {name: leaky, version: \"1\"}\ncomponents:\n  - name: a\n    deploy:\n      - install:\n          - chart: {chart: demo-app, release: leaky, namespace: web, set: {image: 'docker.io/library/nginx:1.23.2-alpine'}}\n    artifacts:\n      - {kind: image, ref: 'registry.demo.kpaas.test/demo/app-a:1.0'}\n      - {kind: file, name: leaky.yaml, url: 'http://files.demo.kpaas.test/files/v1/leaky.yaml', unverified: true}\n      - {kind: file, name: helm, url: 'http://files.demo.kpaas.test/files/v1.25.6/amd64/helm', arch: amd64, unverified: true}\n      - {kind: chart, repo: 'http://files.demo.kpaas.test/charts', name: demo-app, version: 0.1.0, unverified: true}\n",
    )
    .unwrap();
    let a = args_for(
        &env,
        &cat.to_string_lossy(),
        t.path(),
        "leaky",
        "leaky.lock",
        "c2",
        &[],
    );
    ok(&a);
    let e = fail(&s(&[
        "check-offline",
        &t.path().join("leaky").to_string_lossy(),
    ]));
    assert!(e.contains("MISSING docker.io/library/nginx:1.23.2-alpine in files.kpaas.local/leaky.yaml:any at doc[0].spec.containers[1].image"), "{e}");
    assert!(
        e.contains("app-a@sha256:0000")
            && !e.contains("MISSING registry.demo.kpaas.test/demo/app-a:1.0"),
        "{e}"
    );
    assert!(
        e.contains("2 image reference(s) are not in the bundle"),
        "{e}"
    );
    // The plan's values put an image the bundle lacks into the chart's
    // objects: the rendered chart names chart, object and image.
    let leaky_cluster = t.path().join("leaky-cluster.yaml");
    std::fs::write(
        &leaky_cluster,
        airgap_bundle::cluster::EXAMPLE.replace("platform: k-paas-1.4.1", "platform: leaky"),
    )
    .unwrap();
    let e = fail(&s(&[
        "check-offline",
        &t.path().join("leaky").to_string_lossy(),
        "--cluster",
        &leaky_cluster.to_string_lossy(),
        "--platform",
        &cat.to_string_lossy(),
    ]));
    for object in [
        "Deployment/leaky.spec.template.spec.containers[0].image",
        "Job/leaky-pre-install.spec.template.spec.containers[0].image",
    ] {
        let want = format!(
            "MISSING docker.io/library/nginx:1.23.2-alpine in a: chart files.demo.kpaas.test/charts/demo-app:0.1.0 as web/leaky at {object}"
        );
        assert!(e.contains(&want), "{want}\nin:\n{e}");
    }
    assert!(
        e.contains("4 image reference(s) are not in the bundle"),
        "{e}"
    );
    // Seeds bound to a bundle: planned against it, its digest in every
    // node config; a bundle of another platform is refused, naming both.
    let seeds = t.path().join("seeds");
    let out = ok(&s(&[
        "seeds",
        "--cluster",
        &cluster.to_string_lossy(),
        "--bundle",
        &t.path().join("demo.tar.zst").to_string_lossy(),
        "--out",
        &seeds.to_string_lossy(),
    ]));
    let digest = kpaas_testkit::content::digest(&bundle_json_bytes(
        &t.path().join("unpacked-demo"),
        &t.path().join("demo.tar.zst"),
    ));
    assert!(out.contains(&format!("bound to bundle {digest}")), "{out}");
    for node in ["kpaas-master", "kpaas-worker1", "universal"] {
        let cfg = std::fs::read_to_string(seeds.join(node).join("kpaas-node.yaml")).unwrap();
        assert!(
            cfg.contains(&format!("bundle_digest: {digest}")),
            "{node}: {cfg}"
        );
    }
    let e = fail(&s(&[
        "seeds",
        "--cluster",
        &cluster.to_string_lossy(),
        "--bundle",
        &t.path().join("leaky").to_string_lossy(),
        "--out",
        &t.path().join("seeds2").to_string_lossy(),
    ]));
    assert!(
        e.contains("the bundle is leaky 1, the catalog demo 0.1.0"),
        "{e}"
    );
    // The plan reads real sizes from a bundle.
    let plan = ok(&s(&[
        "plan",
        "--platform",
        "demo",
        "--cluster",
        &cluster.to_string_lossy(),
        "--bundle",
        &t.path().join("demo.tar.zst").to_string_lossy(),
    ]));
    let line = plan
        .lines()
        .find(|l| l.contains("image: 19 artifacts, "))
        .unwrap_or_default();
    assert!(
        line.ends_with(" MiB") && !plan.contains("unknown until bundled"),
        "{plan}"
    );
}

/// Sends `body` to `path` on the registry at `addr` and returns the reply,
/// failing unless the registry answers `want`.
fn registry_send(
    addr: &str,
    method: &str,
    path: &str,
    content_type: &str,
    body: &[u8],
    want: u16,
) -> kpaas_testkit::http::Reply {
    let r = kpaas_testkit::http::send(addr, method, path, &[("Content-Type", content_type)], body)
        .unwrap();
    assert_eq!(
        r.status,
        want,
        "{method} {path}: {}",
        String::from_utf8_lossy(&r.body)
    );
    r
}

/// Pushes an image whose manifest has no `mediaType` field, as umoci and
/// older buildah write them. By hand rather than with skopeo, so the registry
/// holds exactly these bytes under exactly the Content-Type umoci would PUT.
/// Returns the manifest's digest.
fn push_manifest_without_media_type(addr: &str, dir: &Path, repo: &str, tag: &str) -> String {
    let layout = kpaas_testkit::content::Layout::new(dir).unwrap();
    let layer = kpaas_testkit::content::layer(&[("etc/bare", b"no mediaType\n", 0o644)]).unwrap();
    let (full, _) = layout.image(&[layer], "amd64", &["/bin/true"]).unwrap();
    let mut m: serde_json::Value = serde_json::from_slice(&full).unwrap();
    m.as_object_mut().unwrap().remove("mediaType").unwrap();
    for d in std::iter::once(&m["config"]).chain(m["layers"].as_array().unwrap()) {
        let d = d["digest"].as_str().unwrap();
        let blob = std::fs::read(dir.join("blobs/sha256").join(&d[7..])).unwrap();
        let start = registry_send(
            addr,
            "POST",
            &format!("/v2/{repo}/blobs/uploads/"),
            "application/octet-stream",
            b"",
            202,
        );
        let loc = start.header("Location").unwrap();
        // distribution answers with an absolute URL; the raw client wants a path.
        let loc = loc.find("/v2/").map_or(loc, |i| &loc[i..]);
        let sep = if loc.contains('?') { '&' } else { '?' };
        registry_send(
            addr,
            "PUT",
            &format!("{loc}{sep}digest={d}"),
            "application/octet-stream",
            &blob,
            201,
        );
    }
    let bytes = serde_json::to_vec(&m).unwrap();
    registry_send(
        addr,
        "PUT",
        &format!("/v2/{repo}/manifests/{tag}"),
        "application/vnd.oci.image.manifest.v1+json",
        &bytes,
        201,
    );
    // The premise: what a client gets back still names no type of its own.
    let served = kpaas_testkit::http::get(addr, &format!("/v2/{repo}/manifests/{tag}")).unwrap();
    assert_eq!(served.body, bytes);
    kpaas_testkit::content::digest(&bytes)
}

#[test]
fn a_manifest_without_media_type_bundles_by_tag_by_digest_and_from_the_lock() {
    if !have_tools("no_media_type", &["docker-registry"]) {
        return;
    }
    let reg = servers::registry(&RegistryOpts::default()).unwrap();
    let t = tempfile::tempdir().unwrap();
    let digest =
        push_manifest_without_media_type(&reg.addr, &t.path().join("src"), "demo/bare", "1.0");
    let oci_manifest = "application/vnd.oci.image.manifest.v1+json";
    let image = "registry.demo.kpaas.test/demo/bare";
    // By tag; by digest from a fresh cache (the registry's Content-Type is all
    // there is to go on); by digest from the tag run's cache (no header at all,
    // only the document's shape).
    for (name, r, cache) in [
        ("tag", format!("{image}:1.0"), "c1"),
        ("digest", format!("{image}@{digest}"), "c2"),
        ("cached", format!("{image}@{digest}"), "c1"),
    ] {
        let cat = t.path().join(format!("{name}.yaml"));
        std::fs::write(
            &cat,
            format!("schema_version: 1\nplatform: {{name: {name}, version: \"1\"}}\ncomponents:\n  - name: a\n    artifacts:\n      - {{kind: image, ref: '{r}'}}\n"),
        )
        .unwrap();
        let lock = t.path().join(format!("{name}.lock"));
        let build = |out: &str, extra: &[&str]| {
            let mut a = s(&[
                "bundle",
                "-q",
                "--platform",
                &cat.to_string_lossy(),
                "--lock",
                &lock.to_string_lossy(),
                "--cache-dir",
                &t.path().join(cache).to_string_lossy(),
                "--out",
                &t.path().join(out).to_string_lossy(),
                "--mirror",
                &format!("registry.demo.kpaas.test={}", reg.addr),
                "--insecure-registry",
                &reg.addr,
            ]);
            a.extend(s(extra));
            ok(&a);
            t.path().join(out)
        };
        let b = build(name, &[]);
        let out = ok(&s(&["verify", &b.to_string_lossy()]));
        assert!(out.contains("OK"), "{name}: {out}");
        let l = airgap_bundle::lock::Lock::read(&lock).unwrap();
        let la = l.artifacts.values().next().unwrap();
        assert_eq!(
            (la.digest.as_str(), la.media_type.as_str()),
            (digest.as_str(), oci_manifest),
            "{name}"
        );
        let m = bundle_json(&b);
        let a = &m["artifacts"][0];
        assert_eq!(
            (a["digest"].as_str(), a["media_type"].as_str()),
            (Some(digest.as_str()), Some(oci_manifest)),
            "{name}"
        );
        let index = std::fs::read(b.join("oci/index.json")).unwrap();
        let idx: serde_json::Value = serde_json::from_slice(&index).unwrap();
        let top = &idx["manifests"][0];
        assert_eq!(
            (top["digest"].as_str(), top["mediaType"].as_str()),
            (Some(digest.as_str()), Some(oci_manifest)),
            "{name}"
        );
        // Rebuilt from the lock alone: offline, so the registry is not asked
        // again and the type recorded in the lock is what the layout gets.
        let again = build(&format!("{name}-again"), &["--offline"]);
        assert_eq!(
            std::fs::read(again.join("oci/index.json")).unwrap(),
            index,
            "{name}"
        );
        ok(&s(&["verify", &again.to_string_lossy()]));
    }
}

/// Identical files under several names, fetched on a cold cache: resolving
/// fetches them at once, and they once shared one partial file (`moving
/// …/partial/<hex> into the cache: No such file or directory` about one run
/// in three, and once a corrupt entry). Repeated so the race would show.
#[test]
fn identical_files_on_a_cold_cache_are_fetched_once_and_stored_whole() {
    if !have_tools("identical_files", PEERS) {
        return;
    }
    let env = DemoEnv::start().unwrap();
    let t = tempfile::tempdir().unwrap();
    let body = kpaas_testkit::content::noise(7, 6 << 20);
    let hex = kpaas_testkit::content::sha256_hex(&body);
    let dir = env.demo.www.join("files/same");
    std::fs::create_dir_all(&dir).unwrap();
    let mut cat = String::from(
        "schema_version: 1\nplatform: {name: same, version: \"1\"}\ncomponents:\n  - name: a\n    artifacts:\n",
    );
    for i in 0..6 {
        std::fs::write(dir.join(format!("copy-{i}.bin")), &body).unwrap();
        cat.push_str(&format!(
            "      - {{kind: file, name: copy-{i}, url: 'http://files.demo.kpaas.test/files/same/copy-{i}.bin', sha256: {hex}}}\n"
        ));
    }
    let catalog = t.path().join("same.yaml");
    std::fs::write(&catalog, cat).unwrap();
    for run in 0..5 {
        let cache = format!("cache-{run}");
        ok(&args_for(
            &env,
            &catalog.to_string_lossy(),
            t.path(),
            &format!("out-{run}"),
            &format!("same-{run}.lock"),
            &cache,
            &["--jobs", "6"],
        ));
        let stored = std::fs::read(t.path().join(&cache).join("blobs/sha256").join(&hex))
            .unwrap_or_else(|e| panic!("run {run}: the blob is not in the cache: {e}"));
        assert_eq!(
            kpaas_testkit::content::sha256_hex(&stored),
            hex,
            "run {run}: the cache holds a corrupt entry under the digest"
        );
        let partial: Vec<_> = std::fs::read_dir(t.path().join(&cache).join("partial"))
            .unwrap()
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().to_string())
            .collect();
        assert!(
            partial.is_empty(),
            "run {run}: partial files left: {partial:?}"
        );
    }
}

/// What a new user's hand-made content hits (issue: hostile inputs): a
/// chart whose image follows the cluster's Kubernetes version, a manifest
/// in JSON, a CR naming images as a structure and by RELATED_IMAGE_*, a
/// workload pinned to one platform's manifest of a bundled index, Docker
/// Hub's legacy name, and a kustomization that names a remote resource.
#[test]
fn the_offline_check_renders_as_the_site_will_and_refuses_the_network() {
    if !have_tools("offline_check_hostile", PEERS) {
        return;
    }
    let env = DemoEnv::start().unwrap();
    let t = tempfile::tempdir().unwrap();
    let www = &env.demo.www;
    std::fs::create_dir_all(www.join("files/hostile")).unwrap();
    std::fs::create_dir_all(www.join("hostile-charts")).unwrap();
    // The image tag is the cluster's version: helm's default (v1.25.0 in
    // the kit's build) names an image the bundle lacks.
    let (chart, _) = kpaas_testkit::content::layer(&[
        (
            "kv-app/Chart.yaml",
            b"apiVersion: v2\nname: kv-app\nversion: 0.1.0\n",
            0o644,
        ),
        (
            "kv-app/templates/pod.yaml",
            b"apiVersion: v1\nkind: Pod\nmetadata: {name: kv}\nspec:\n  containers:\n    - name: c\n      image: \"registry.k8s.io/kube-apiserver:{{ .Capabilities.KubeVersion.Version }}\"\n",
            0o644,
        ),
    ])
    .unwrap();
    std::fs::write(www.join("hostile-charts/kv-app-0.1.0.tgz"), &chart).unwrap();
    std::fs::write(
        www.join("hostile-charts/index.yaml"),
        format!(
            "apiVersion: v1\nentries:\n  kv-app:\n    - apiVersion: v2\n      name: kv-app\n      version: 0.1.0\n      digest: {}\n      urls: [kv-app-0.1.0.tgz]\n",
            kpaas_testkit::content::sha256_hex(&chart)
        ),
    )
    .unwrap();
    let (remote, _) = kpaas_testkit::content::layer(&[
        (
            "remote/kustomization.yaml",
            b"resources:\n  - local.yaml\n  - https://raw.example.invalid/app/deploy.yaml\n",
            0o644,
        ),
        (
            "remote/local.yaml",
            b"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: local}\n",
            0o644,
        ),
    ])
    .unwrap();
    std::fs::write(www.join("files/hostile/remote.tar.gz"), &remote).unwrap();
    let cat = t.path().join("hostile.yaml");
    let write_catalog = |pod_json: &str| {
        std::fs::write(www.join("files/hostile/pod.json"), pod_json).unwrap();
        std::fs::write(
            &cat,
            "schema_version: 1\nplatform: {name: hostile, version: \"1\"}\ncomponents:\n  - name: a\n    namespace: hostile\n    deploy:\n      - install:\n          - chart: {chart: kv-app, release: kv, namespace: hostile}\n          - manifest: pod.json\n          - kustomize: {file: remote.tar.gz, path: remote}\n    artifacts:\n      - {kind: image, ref: 'registry.k8s.io/kube-apiserver:v1.25.6'}\n      - {kind: image, ref: 'registry.demo.kpaas.test/demo/multi:1.0'}\n      - {kind: image, ref: 'docker.io/library/busybox:1.35'}\n      - {kind: file, name: pod.json, url: 'http://files.demo.kpaas.test/files/hostile/pod.json', unverified: true}\n      - {kind: file, name: remote.tar.gz, url: 'http://files.demo.kpaas.test/files/hostile/remote.tar.gz', unverified: true}\n      - {kind: file, name: helm, url: 'http://files.demo.kpaas.test/files/v1.25.6/amd64/helm', arch: amd64, unverified: true}\n      - {kind: file, name: kustomize, url: 'http://files.demo.kpaas.test/files/v1.25.6/amd64/kustomize', arch: amd64, unverified: true}\n      - {kind: chart, repo: 'http://files.demo.kpaas.test/hostile-charts', name: kv-app, version: 0.1.0, unverified: true}\n",
        )
        .unwrap();
    };
    let pod = |images: &[&str], related: &str, structured: &str| {
        let containers: Vec<String> = images
            .iter()
            .enumerate()
            .map(|(i, im)| format!(r#"{{"name": "c{i}", "image": "{im}"}}"#))
            .collect();
        format!(
            r#"{{"apiVersion": "v1", "kind": "List", "items": [
  {{"apiVersion": "v1", "kind": "Pod", "metadata": {{"name": "p"}},
   "spec": {{"containers": [{}], "initContainers": [{{"name": "op", "image": "docker.io/library/busybox:1.35",
     "env": [{{"name": "RELATED_IMAGE_DB", "value": "{related}"}}]}}]}}}},
  {{"apiVersion": "example.com/v1", "kind": "Database", "metadata": {{"name": "db"}},
   "spec": {{"image": {structured}}}}}]}}"#,
            containers.join(", ")
        )
    };
    let check = |dir: &str, extra: &[&str]| {
        let mut a = s(&["check-offline", &t.path().join(dir).to_string_lossy()]);
        a.extend(s(extra));
        builder(&a)
    };
    let cluster = t.path().join("cluster.yaml");
    std::fs::write(
        &cluster,
        airgap_bundle::cluster::EXAMPLE.replace("platform: k-paas-1.4.1", "platform: hostile"),
    )
    .unwrap();
    let with_plan = [
        "--cluster",
        &cluster.to_string_lossy(),
        "--platform",
        &cat.to_string_lossy(),
    ]
    .map(String::from);
    let with_plan: Vec<&str> = with_plan.iter().map(String::as_str).collect();

    // Everything missing: the JSON manifest's images (read by content, by
    // the deploy item too), the CR's structured image, the RELATED_IMAGE_,
    // and the remote kustomize resource refused by name.
    write_catalog(&pod(
        &["docker.io/library/nginx:1.23.2-alpine"],
        "quay.io/example/db:9",
        r#"{"registry": "quay.io", "repository": "example/cache", "tag": "2"}"#,
    ));
    ok(&args_for(
        &env,
        &cat.to_string_lossy(),
        t.path(),
        "b1",
        "h1.lock",
        "cache",
        &[],
    ));
    let o = check("b1", &with_plan);
    let e = String::from_utf8_lossy(&o.stderr).to_string();
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(!o.status.success(), "{out}\n{e}");
    for want in [
        "MISSING docker.io/library/nginx:1.23.2-alpine in files.kpaas.local/pod.json:any",
        "MISSING docker.io/library/nginx:1.23.2-alpine in a: manifest files.kpaas.local/pod.json:any",
        "MISSING quay.io/example/db:9 in files.kpaas.local/pod.json:any at Pod/p.spec.initContainers[0].env[0].value",
        "MISSING quay.io/example/cache:2 in files.kpaas.local/pod.json:any at Database/db.spec.image",
        "NOT RENDERED a: kustomization remote.tar.gz/remote",
        "remote/kustomization.yaml: resources: https://raw.example.invalid/app/deploy.yaml",
    ] {
        assert!(e.contains(want), "{want}\nin:\n{e}");
    }
    // The chart rendered at the bundle's version, with 1.25's APIs.
    assert!(!e.contains("MISSING registry.k8s.io/kube-apiserver"), "{e}");
    assert!(out.contains("verdict FAILS"), "{out}");

    // All held: a platform's manifest of the bundled index by digest, Docker
    // Hub's legacy name, every structured and RELATED_IMAGE_ name.
    let b1: serde_json::Value = bundle_json(&t.path().join("b1"));
    let multi = b1["artifacts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == "registry.demo.kpaas.test/demo/multi:1.0")
        .unwrap()["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let index: serde_json::Value = serde_json::from_slice(
        &std::fs::read(t.path().join("b1/oci/blobs/sha256").join(&multi[7..])).unwrap(),
    )
    .unwrap();
    let amd64 = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["platform"]["architecture"] == "amd64")
        .unwrap()["digest"]
        .as_str()
        .unwrap()
        .to_string();
    write_catalog(&pod(
        &[
            &format!("registry.demo.kpaas.test/demo/multi@{amd64}"),
            "index.docker.io/library/busybox:1.35",
        ],
        "busybox:1.35",
        r#"{"registry": "registry.k8s.io", "repository": "kube-apiserver", "tag": "v1.25.6"}"#,
    ));
    // The kustomization without its remote resource.
    let (local, _) = kpaas_testkit::content::layer(&[
        (
            "remote/kustomization.yaml",
            b"resources: [local.yaml]\n",
            0o644,
        ),
        (
            "remote/local.yaml",
            b"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: local}\n",
            0o644,
        ),
    ])
    .unwrap();
    std::fs::write(www.join("files/hostile/remote.tar.gz"), &local).unwrap();
    ok(&args_for(
        &env,
        &cat.to_string_lossy(),
        t.path(),
        "b2",
        "h2.lock",
        "cache",
        &[],
    ));
    let o = check("b2", &with_plan);
    let out = String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{out}");
    assert!(
        out.contains("3 release(s) rendered") && out.contains("verdict complete"),
        "{out}"
    );

    // Without the plan: partial, said, and a failure unless accepted.
    let o = check("b2", &[]);
    let out = String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{out}");
    assert!(
        out.contains("verdict PARTIAL") && out.contains("give --cluster FILE"),
        "{out}"
    );
    let o = check("b2", &["--allow-partial"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

/// bundle.json's bytes out of a `.tar.zst` bundle (unpacked into `dir`).
fn bundle_json_bytes(dir: &Path, archive: &Path) -> Vec<u8> {
    std::fs::create_dir_all(dir).unwrap();
    let st = Command::new("tar")
        .arg("--zstd")
        .arg("-xf")
        .arg(archive)
        .arg("-C")
        .arg(dir)
        .arg("bundle.json")
        .status()
        .unwrap();
    assert!(
        st.success(),
        "unpacking bundle.json from {}",
        archive.display()
    );
    std::fs::read(dir.join("bundle.json")).unwrap()
}

/// Every blob file of a bundle directory: digest hex → size.
fn blobs_of(dir: &Path) -> std::collections::BTreeMap<String, u64> {
    std::fs::read_dir(dir.join("oci/blobs/sha256"))
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().to_string_lossy().to_string(),
                e.metadata().unwrap().len(),
            )
        })
        .collect()
}

/// The inventory a master running `base` writes (`kpaas-agent inventory`):
/// the blobs it holds, its bundle, serial and platform.
fn inventory_of(base: &Path, blobs: impl Iterator<Item = String>) -> serde_json::Value {
    let m = bundle_json(base);
    let bj = std::fs::read(base.join("bundle.json")).unwrap();
    serde_json::json!({
        "inventory_version": 1, "cluster": "lab", "taken": "2026-12-07T00:00:00Z",
        "platform": m["platform"], "platform_version": m["platform_version"],
        "serial": m["serial"],
        "bundle": format!("sha256:{}", kpaas_testkit::content::sha256_hex(&bj)),
        "blobs": blobs.map(|h| format!("sha256:{h}")).collect::<Vec<_>>(),
        "releases": [], "nodes": []
    })
}

#[test]
fn a_delta_carries_only_what_the_site_lacks_names_its_base_and_refuses_rollback() {
    if !have_tools("delta", PEERS) {
        return;
    }
    let env = DemoEnv::start().unwrap();
    let t = tempfile::tempdir().unwrap();
    let p = |n: &str| t.path().join(n).to_string_lossy().to_string();
    ok(&s(&["keygen", "--out", &p("k")]));
    let sign = p("k.key");
    ok(&bundle_args(&env, t.path(), "base", &["--sign-key", &sign]));
    let base = t.path().join("base");
    assert_eq!(bundle_json(&base)["serial"], 1);
    let inv = t.path().join("inventory.json");
    let write_inv = |v: &serde_json::Value| std::fs::write(&inv, v.to_string()).unwrap();
    write_inv(&inventory_of(&base, blobs_of(&base).into_keys()));
    let next = |out: &str, extra: &[&str]| {
        let mut e = vec!["--sign-key", sign.as_str()];
        e.extend(extra);
        args_for(&env, "demo-0.2.0", t.path(), out, "next.lock", "cache", &e)
    };
    ok(&next("full", &[]));
    let inv_s = inv.to_string_lossy().to_string();
    let said = ok(&next("delta", &["--since", &inv_s]));
    assert!(said.contains("delta against demo 0.1.0 serial 1"), "{said}");
    let (full, delta) = (t.path().join("full"), t.path().join("delta"));

    // It describes the whole 0.2.0, as the full bundle does, signed.
    let (mf, md) = (bundle_json(&full), bundle_json(&delta));
    assert_eq!(md["serial"], 2);
    assert_eq!(mf["artifacts"], md["artifacts"]);
    assert_eq!(mf["totals"], md["totals"]);
    // It carries exactly the blobs the site lacks, and the manifests (so
    // it walks and verifies without its base); bundle.json names every
    // blob it left out.
    let (bf, bb, bd) = (blobs_of(&full), blobs_of(&base), blobs_of(&delta));
    let new: Vec<&String> = bf.keys().filter(|h| !bb.contains_key(*h)).collect();
    assert!(!new.is_empty());
    for h in &new {
        assert!(bd.contains_key(*h), "the new blob {h} is carried");
    }
    let omitted: Vec<String> = md["delta"]["omitted"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["digest"].as_str().unwrap()[7..].to_string())
        .collect();
    for (h, size) in &bd {
        if new.contains(&h) {
            continue;
        }
        let v: serde_json::Value =
            serde_json::from_slice(&std::fs::read(delta.join("oci/blobs/sha256").join(h)).unwrap())
                .unwrap_or_default();
        assert!(
            v["mediaType"].as_str().unwrap_or("").contains("manifest") || v["manifests"].is_array(),
            "{h} ({size} bytes) is held by the site and is no manifest, yet carried"
        );
    }
    let mut left: Vec<&String> = bf.keys().filter(|h| !bd.contains_key(*h)).collect();
    left.sort();
    let mut o: Vec<&String> = omitted.iter().collect();
    o.sort();
    assert_eq!(left, o, "bundle.json lists what was left out");
    let new_bytes: u64 = new.iter().map(|h| bf[*h]).sum();
    let carried: u64 = bd.values().sum();
    let full_bytes: u64 = bf.values().sum();
    assert!(
        carried < full_bytes / 4 && carried >= new_bytes,
        "the delta carries {carried} bytes of the full {full_bytes} (new blobs: {new_bytes})"
    );

    // verify and inspect say which base it needs and what it saved.
    let pubk = p("k.pub");
    let d = delta.to_string_lossy().to_string();
    let v = ok(&s(&["verify", &d, "--key", &pubk]));
    assert!(
        v.contains("a delta of demo 0.1.0 serial 1") && v.contains("not checked: no --base"),
        "{v}"
    );
    for b in [inv_s.clone(), base.to_string_lossy().to_string()] {
        let v = ok(&s(&["verify", &d, "--key", &pubk, "--base", &b]));
        assert!(v.contains("checked against") && v.contains("OK"), "{v}");
    }
    let i = ok(&s(&["inspect", &d]));
    assert!(
        i.contains("demo 0.2.0 serial 2")
            && i.contains("a delta: needs the base demo 0.1.0 serial 1"),
        "{i}"
    );
    // A base that lacks a left-out blob: named, with the artifacts using it.
    // app-a 2.0's first layer: busybox, which the site holds.
    let a2 = mf["artifacts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == "registry.demo.kpaas.test/demo/app-a:2.0")
        .unwrap();
    let man: serde_json::Value = serde_json::from_slice(
        &std::fs::read(
            full.join("oci/blobs/sha256")
                .join(&a2["digest"].as_str().unwrap()[7..]),
        )
        .unwrap(),
    )
    .unwrap();
    let layer = man["layers"][0]["digest"].as_str().unwrap()[7..].to_string();
    assert!(omitted.contains(&layer));
    let short = inventory_of(&base, blobs_of(&base).into_keys().filter(|h| *h != layer));
    write_inv(&short);
    let e = fail(&s(&["verify", &d, "--key", &pubk, "--base", &inv_s]));
    assert!(
        e.contains(&format!(
            "blob sha256:{layer} is left to the delta's base, but the inventory of site lab"
        )) && e.contains("image registry.demo.kpaas.test/demo/app-a:2.0"),
        "{e}"
    );
    // A carried blob removed: missing, whatever the base.
    let cut = t.path().join("cut");
    assert!(
        Command::new("cp")
            .args(["-a", &d, &cut.to_string_lossy()])
            .status()
            .unwrap()
            .success()
    );
    std::fs::remove_file(cut.join("oci/blobs/sha256").join(new[0])).unwrap();
    let e = fail(&s(&[
        "verify",
        &cut.to_string_lossy(),
        "--key",
        &pubk,
        "--base",
        &base.to_string_lossy(),
    ]));
    assert!(
        e.contains(&format!("blob sha256:{} is missing", new[0])),
        "{e}"
    );

    // A site already at serial 2 (or another platform) gets no delta, and
    // both reasons are named before anything is fetched.
    let mut at2 = inventory_of(&base, blobs_of(&base).into_keys());
    at2["serial"] = 2.into();
    at2["platform"] = "k-paas-1.4.1".into();
    write_inv(&at2);
    let e = fail(&next("refused", &["--since", &inv_s]));
    assert!(
        e.contains("no delta was built")
            && e.contains("the site runs platform \"k-paas-1.4.1\"")
            && e.contains("serial 2 is not above it"),
        "{e}"
    );
    assert!(!t.path().join("refused").exists());
}
