//! The demo catalog pins digests of content kpaas-testkit builds; they must agree.

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use kpaas_testkit::{content, fixtures_dir, have_tools};

#[test]
fn demo_catalog_pins_match_the_fixtures() {
    if !have_tools("demo_pins", &["busybox"])
        || !fixtures_dir().join("arm64/busybox").exists()
            && !have_tools("demo_pins", &["no-arm64-busybox-run-just-setup"])
    {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let d = content::build_demo(t.path(), &fixtures_dir().join("arm64/busybox")).unwrap();
    let cat = airgap_bundle_catalog();
    for pin in [
        &d.pinned_digest[7..],
        &d.chart_tgz_sha256,
        &d.kubeadm_sha256,
    ] {
        assert!(cat.contains(pin), "demo catalog does not pin {pin}");
    }
}

fn airgap_bundle_catalog() -> String {
    std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../airgap-bundle/platforms/demo/catalog.yaml"
    ))
    .unwrap()
}
