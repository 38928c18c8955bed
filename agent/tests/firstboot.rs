//! The first-boot sequence, journaled: run against a prepared system tree
//! (`--root`: /proc and /sys files a test controls) with a real bundle, a
//! real seed registry and real files written.

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use kpaas_testkit::servers::free_port;
use kpaas_testkit::{DemoEnv, have_tools};
use std::path::Path;
use std::process::Command;

fn put(root: &Path, p: &str, s: &str) {
    let f = root.join(p);
    std::fs::create_dir_all(f.parent().unwrap()).unwrap();
    std::fs::write(f, s).unwrap();
}

fn agent(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_kpaas-agent"))
        .args(args)
        .output()
        .unwrap()
}

fn status(state: &Path) -> serde_json::Value {
    let o = agent(&["status", "--json", "--state-dir", &state.to_string_lossy()]);
    serde_json::from_slice(&o.stdout).unwrap()
}

fn states(v: &serde_json::Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|s| {
            format!(
                "{}={}",
                s["step"].as_str().unwrap(),
                s["state"].as_str().unwrap()
            )
        })
        .collect()
}

#[test]
fn first_boot_stops_at_preflight_then_completes_then_resumes_and_refuses_bad_bundles() {
    if !have_tools("firstboot", &["docker-registry", "nginx", "skopeo"]) {
        return;
    }
    let env = DemoEnv::start().unwrap();
    let t = tempfile::tempdir().unwrap();
    let (b, key) = kpaas_testkit::demo_bundle(&env, t.path()).unwrap();
    let root = t.path().join("sys");
    put(&root, "proc/sys/kernel/hostname", "unrelated-name\n");
    put(&root, "sys/class/net/eth0/address", "52:54:00:12:34:01\n");
    put(
        &root,
        "proc/net/fib_trie",
        "Main:\n  +-- 127.0.0.0/8 2 0 2\n     |-- 127.0.0.2\n        /32 host LOCAL\n",
    );
    put(&root, "proc/cpuinfo", "processor\t: 0\nprocessor\t: 1\n");
    put(&root, "proc/meminfo", "MemTotal:       16000000 kB\n");
    put(
        &root,
        "proc/swaps",
        "Filename\tType\tSize\tUsed\tPriority\n",
    );
    put(&root, "proc/modules", "overlay 151552 0 - Live 0x0\n");
    put(&root, "proc/sys/net/ipv4/ip_forward", "1\n");
    let state = t.path().join("state");
    let port = free_port();
    // The seed names the bundle it was made from (`seeds --bundle`).
    let made_for = kpaas_testkit::content::digest(&std::fs::read(b.join("bundle.json")).unwrap());
    let write_cfg_for = |bundle: &Path, state: &Path, mode: &str, digest: &str| {
        let cfg = t.path().join("node.yaml");
        std::fs::write(
            &cfg,
            format!(
                "config_version: 1\ncluster: demo\nbundle: {}\nbundle_key: {}\nbundle_digest: {digest}\nverify: {mode}\nseed_port: {port}\nstate_dir: {}\nnodes:\n  - {{hostname: kpaas-m1, ip: 127.0.0.2, mac: '52:54:00:12:34:01', role: master}}\n  - {{hostname: kpaas-w1, ip: 10.0.0.2, mac: '52:54:00:12:34:02', role: worker}}\n",
                bundle.display(),
                key.display(),
                state.display()
            ),
        )
        .unwrap();
        cfg
    };
    let write_cfg =
        |bundle: &Path, state: &Path, mode: &str| write_cfg_for(bundle, state, mode, &made_for);
    let cfg = write_cfg(&b, &state, "fast");
    let run = |cfg: &Path| {
        agent(&[
            "run",
            "--no-wait",
            "--config",
            &cfg.to_string_lossy(),
            "--root",
            &root.to_string_lossy(),
        ])
    };

    // 1. A failing check stops the boot before anything is changed.
    let o = run(&cfg);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("module br_netfilter") && err.contains("nothing was changed"),
        "{err}"
    );
    assert!(String::from_utf8_lossy(&o.stdout).contains("FAIL module br_netfilter"));
    assert_eq!(
        states(&status(&state)),
        [
            "identity=done",
            "preflight=failed",
            "verify=pending",
            "serve=pending",
            "mirrors=pending"
        ]
    );
    assert!(
        !root.join("etc").exists(),
        "preflight failure must change nothing"
    );

    // 2. Fixed: the boot completes, identity found by MAC despite the hostname.
    put(
        &root,
        "proc/modules",
        "overlay 151552 0 - Live 0x0\nbr_netfilter 32768 0 - Live 0x0\n",
    );
    put(&root, "proc/sys/net/bridge/bridge-nf-call-iptables", "1\n");
    let o = run(&cfg);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(
        err.contains("identity: kpaas-m1 (master, 127.0.0.2)")
            && err.contains("seed registry ready"),
        "{err}"
    );
    let s1 = status(&state);
    assert_eq!(
        states(&s1),
        [
            "identity=done",
            "preflight=done",
            "verify=done",
            "serve=done",
            "mirrors=done"
        ]
    );
    let hosts = root.join("etc/containerd/certs.d/registry.demo.kpaas.test/hosts.toml");
    assert!(
        std::fs::read_to_string(&hosts)
            .unwrap()
            .contains(&format!("127.0.0.1:{port}/v2/registry.demo.kpaas.test"))
    );
    let mtime = std::fs::metadata(&hosts).unwrap().modified().unwrap();

    // 3. A second run after success changes nothing.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    assert!(run(&cfg).status.success());
    assert_eq!(status(&state), s1);
    assert_eq!(
        std::fs::metadata(&hosts).unwrap().modified().unwrap(),
        mtime
    );

    // 4. A crash after `verify`: the journal lacks the last steps; the next run does only those.
    let jpath = state.join("firstboot.json");
    let mut j: serde_json::Value = serde_json::from_slice(&std::fs::read(&jpath).unwrap()).unwrap();
    j["steps"]
        .as_object_mut()
        .unwrap()
        .retain(|k, _| k != "serve" && k != "mirrors");
    std::fs::write(&jpath, serde_json::to_vec(&j).unwrap()).unwrap();
    std::fs::remove_dir_all(root.join("etc")).unwrap();
    assert!(run(&cfg).status.success());
    let s2 = status(&state);
    assert_eq!(states(&s2), states(&s1));
    for i in 0..3 {
        assert_eq!(s2[i]["at"], s1[i]["at"], "{} was redone", s2[i]["step"]);
    }
    assert!(hosts.is_file(), "mirrors were written again");

    // 5. A truncated blob stops a fast boot at verify, naming the artifact.
    let bad = t.path().join("bad");
    assert!(
        Command::new("cp")
            .args(["-a", &b.to_string_lossy(), &bad.to_string_lossy()])
            .status()
            .unwrap()
            .success()
    );
    let man: serde_json::Value = serde_json::from_slice(
        &std::fs::read(
            bad.join("oci/blobs/sha256")
                .join(&env.demo.app_a_digest[7..]),
        )
        .unwrap(),
    )
    .unwrap();
    let own = man["layers"][1]["digest"].as_str().unwrap()[7..].to_string();
    let p = bad.join("oci/blobs/sha256").join(&own);
    let bytes = std::fs::read(&p).unwrap();
    std::fs::write(&p, &bytes[..bytes.len() - 1]).unwrap();
    let cfg2 = write_cfg(&bad, &t.path().join("state2"), "fast");
    let o = run(&cfg2);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("app-a:1.0") && err.contains(&own),
        "{err}"
    );
    assert_eq!(
        states(&status(&t.path().join("state2")))[2],
        "verify=failed"
    );

    // 6. Full mode hashes every blob: one flipped byte is enough to stop it.
    let mut flipped = bytes.clone();
    flipped[30] ^= 1;
    std::fs::write(&p, flipped).unwrap();
    let cfg3 = write_cfg(&bad, &t.path().join("state3"), "full");
    let o = run(&cfg3);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("app-a:1.0") && err.contains("is corrupt"),
        "{err}"
    );

    // 7. A wrong key stops it too.
    let other = t.path().join("other");
    assert!(
        Command::new(kpaas_testkit::workspace_bin("kpaas-builder"))
            .args(["keygen", "--out", &other.to_string_lossy()])
            .status()
            .unwrap()
            .success()
    );
    let cfg4 = std::fs::read_to_string(write_cfg(&b, &t.path().join("state4"), "fast"))
        .unwrap()
        .replace(
            &key.to_string_lossy().to_string(),
            &format!("{}.pub", other.display()),
        );
    std::fs::write(t.path().join("node4.yaml"), cfg4).unwrap();
    let o = run(&t.path().join("node4.yaml"));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("signed by key"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );

    // 8. A seed made for another bundle stops at verify, naming both
    // digests, before anything is hashed or served.
    let other_digest = format!("sha256:{}", "ab".repeat(32));
    for mode in ["fast", "full"] {
        let state = t.path().join(format!("state-other-{mode}"));
        let cfg = write_cfg_for(&b, &state, mode, &other_digest);
        let o = run(&cfg);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            !o.status.success()
                && err.contains(&format!("carries bundle {made_for}"))
                && err.contains(&format!("made for bundle {other_digest}")),
            "{mode}: {err}"
        );
        assert_eq!(states(&status(&state))[2], "verify=failed", "{mode}");
    }
}
