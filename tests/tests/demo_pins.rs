//! The demo catalog pins digests of content kpaas-testkit builds (the kit's
//! Kubernetes binaries included: Go builds with -trimpath are reproducible
//! for one Go version); they must agree. `cargo run -p kpaas-testkit --bin
//! kpaas-kit -- pins` prints the current sums.

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use kpaas_testkit::{content, fixtures_dir, have_tools, kit};

#[test]
fn demo_catalog_pins_match_the_fixtures() {
    if !have_tools("demo_pins", &["busybox"])
        || !fixtures_dir().join("arm64/busybox").exists()
            && !have_tools("demo_pins", &["no-arm64-busybox-run-just-setup"])
        || !kit::have_programs("demo_pins", &["kubeadm", "helm", "bridge"])
    {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let d = content::build_demo(t.path(), &fixtures_dir().join("arm64/busybox")).unwrap();
    let cat = airgap_bundle_catalog();
    let mut wrong = Vec::new();
    for pin in [&d.pinned_digest[7..], &d.chart_tgz_sha256] {
        if !cat.contains(pin) {
            wrong.push(format!("demo content {pin}"));
        }
    }
    let mut files: Vec<(String, &String)> = d
        .file_sha256
        .iter()
        .map(|(name, sum)| (format!("{}/{name}", content::NODE_FILES_URL_DIR), sum))
        .collect();
    files.push((
        kit::FLANNEL_MANIFEST_PATH.to_string(),
        &d.flannel_manifest_sha256,
    ));
    files.push((content::KUSTOMIZE_FILE.to_string(), &d.kustomize_sha256));
    files.push(("files/v1/demo-app.yaml".to_string(), &d.manifest_sha256));
    let platform: Vec<(String, String)> = kit::PLATFORM_FILES
        .iter()
        .map(|(name, text)| {
            (
                format!("{}/{name}", kit::PLATFORM_FILES_DIR),
                content::sha256_hex(text.as_bytes()),
            )
        })
        .collect();
    files.extend(platform.iter().map(|(p, s)| (p.clone(), s)));
    for (path, sum) in files {
        // Each file's pin sits right under its URL in the catalog.
        let url = format!("/{path}\n");
        let at = cat
            .find(&url)
            .unwrap_or_else(|| panic!("no {url:?} in the demo catalog"));
        let next = &cat[at..];
        let pinned = next
            .lines()
            .find_map(|l| l.trim().strip_prefix("sha256: "))
            .unwrap_or_default();
        if pinned != sum {
            wrong.push(format!("{path}: catalog {pinned}, built {sum}"));
        }
    }
    // The demo's 0.2.0 (the update) pins its chart and its new manifest;
    // what it shares with 0.1.0 must agree too.
    let next = catalog("demo-0.2.0");
    if !next.contains(&d.chart2_tgz_sha256) {
        wrong.push(format!("demo 0.2.0 chart {}", d.chart2_tgz_sha256));
    }
    for (path, sum) in [
        (content::EXTRAS_FILE, &d.extras_sha256),
        ("files/v1/demo-app.yaml", &d.manifest_sha256),
    ] {
        let url = format!("/{path}\n");
        let at = next
            .find(&url)
            .unwrap_or_else(|| panic!("no {url:?} in the demo 0.2.0 catalog"));
        let pinned = next[at..]
            .lines()
            .find_map(|l| l.trim().strip_prefix("sha256: "))
            .unwrap_or_default();
        if pinned != sum {
            wrong.push(format!("0.2.0 {path}: catalog {pinned}, built {sum}"));
        }
    }
    assert!(
        wrong.is_empty(),
        "the demo catalog and the built content disagree (a different Go or \
         module version?):\n  {}\nrun `cargo run -p kpaas-testkit --bin kpaas-kit -- pins`",
        wrong.join("\n  ")
    );
}

fn airgap_bundle_catalog() -> String {
    catalog("demo")
}

fn catalog(dir: &str) -> String {
    std::fs::read_to_string(format!(
        "{}/../airgap-bundle/platforms/{dir}/catalog.yaml",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}
