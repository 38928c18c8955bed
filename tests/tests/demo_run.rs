//! The README's demo, up to the bundle and its offline check (`--no-boot`):
//! the check it shows must be the complete verdict, with the lab's cluster
//! file, not the partial one of a bundle checked without its plan.

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use kpaas_testkit::{fixtures_dir, have_tools, kit, workspace_bin};
use std::process::Command;

#[test]
fn the_demo_shows_the_complete_offline_verdict() {
    if !have_tools("demo_run", &["docker-registry", "nginx", "skopeo"])
        || !fixtures_dir().join("arm64/busybox").exists()
            && !have_tools("demo_run", &["no-arm64-busybox-run-just-setup"])
        || !kit::have_programs("demo_run", &["kubeadm", "helm", "kustomize"])
    {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_kpaas-demo"))
        .arg("--builder")
        .arg(workspace_bin("kpaas-builder"))
        .arg("--out")
        .arg(t.path())
        .arg("--no-boot")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(
        stderr.contains("check-offline") && stderr.contains("--cluster"),
        "{stderr}"
    );
    assert!(
        stdout.contains("verdict complete") && !stdout.contains("PARTIAL"),
        "{stdout}\n{stderr}"
    );
    assert!(stdout.contains(", 0 missing"), "{stdout}");
}
