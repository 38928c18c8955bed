//! Deterministic content: the same inputs give the same digests, so the demo
//! catalog can pin them and tests can compare against them.

use anyhow::{Context, Result};
use serde_json::json;
use sha2::{Digest as _, Sha256};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

pub fn sha256_hex(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

pub fn digest(b: &[u8]) -> String {
    format!("sha256:{}", sha256_hex(b))
}

/// A file in a layer: path, content, mode.
pub type Entry<'a> = (&'a str, &'a [u8], u32);

/// A gzip'd tar layer with fixed metadata; returns (gz bytes, diff_id).
pub fn layer(entries: &[Entry]) -> Result<(Vec<u8>, String)> {
    let mut b = tar::Builder::new(Vec::new());
    let mut sorted: Vec<&Entry> = entries.iter().collect();
    sorted.sort_by_key(|e| e.0);
    for (path, data, mode) in sorted {
        let mut h = tar::Header::new_ustar();
        h.set_path(path)?;
        h.set_size(data.len() as u64);
        h.set_mode(*mode);
        h.set_mtime(0);
        h.set_uid(0);
        h.set_gid(0);
        h.set_entry_type(tar::EntryType::Regular);
        h.set_cksum();
        b.append(&h, *data)?;
    }
    gzip_layer(&b.into_inner()?)
}

/// A tar as a gzip'd layer (no name or time in the gzip header); returns
/// (gz bytes, diff_id).
pub fn gzip_layer(tar: &[u8]) -> Result<(Vec<u8>, String)> {
    let diff_id = digest(tar);
    let mut gz = flate2::GzBuilder::new()
        .mtime(0)
        .write(Vec::new(), flate2::Compression::new(6));
    gz.write_all(tar)?;
    Ok((gz.finish()?, diff_id))
}

/// An OCI image layout being filled; blobs land on disk as they are made.
pub struct Layout {
    pub dir: std::path::PathBuf,
    refs: BTreeMap<String, serde_json::Value>,
}

impl Layout {
    pub fn new(dir: &Path) -> Result<Layout> {
        std::fs::create_dir_all(dir.join("blobs/sha256"))?;
        std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)?;
        Ok(Layout {
            dir: dir.to_path_buf(),
            refs: BTreeMap::new(),
        })
    }

    pub fn blob(&self, b: &[u8]) -> Result<String> {
        let d = digest(b);
        std::fs::write(self.dir.join("blobs/sha256").join(&d[7..]), b)?;
        Ok(d)
    }

    fn desc(&self, media_type: &str, b: &[u8]) -> Result<serde_json::Value> {
        Ok(json!({"mediaType": media_type, "digest": self.blob(b)?, "size": b.len()}))
    }

    /// A single-platform image from layers; returns (manifest bytes, digest).
    pub fn image(
        &self,
        layers: &[(Vec<u8>, String)],
        arch: &str,
        cmd: &[&str],
    ) -> Result<(Vec<u8>, String)> {
        self.image_with(layers, arch, json!({"Cmd": cmd, "Env": ["PATH=/bin"]}))
    }

    /// A single-platform image whose runtime config (Entrypoint, Cmd, Env…)
    /// is `config`; returns (manifest bytes, digest).
    pub fn image_with(
        &self,
        layers: &[(Vec<u8>, String)],
        arch: &str,
        config: serde_json::Value,
    ) -> Result<(Vec<u8>, String)> {
        let config = json!({
            "architecture": arch, "os": "linux",
            "config": config,
            "rootfs": {"type": "layers", "diff_ids": layers.iter().map(|l| l.1.clone()).collect::<Vec<_>>()},
        });
        let config = serde_json::to_vec(&config)?;
        let mut ls = Vec::new();
        for (gz, _) in layers {
            ls.push(self.desc("application/vnd.oci.image.layer.v1.tar+gzip", gz)?);
        }
        let m = json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": self.desc("application/vnd.oci.image.config.v1+json", &config)?,
            "layers": ls,
        });
        let b = serde_json::to_vec(&m)?;
        let d = self.blob(&b)?;
        Ok((b, d))
    }

    pub fn index(&self, manifests: &[(&[u8], &str)]) -> Result<(Vec<u8>, String)> {
        let mut list = Vec::new();
        for (m, arch) in manifests {
            let mut d = self.desc("application/vnd.oci.image.manifest.v1+json", m)?;
            d["platform"] = json!({"os": "linux", "architecture": arch});
            list.push(d);
        }
        let b = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": list,
        }))?;
        let d = self.blob(&b)?;
        Ok((b, d))
    }

    /// A Helm chart as an OCI artifact, the way `helm push` lays it out.
    pub fn helm_chart(
        &self,
        tgz: &[u8],
        chart_yaml_json: &serde_json::Value,
    ) -> Result<(Vec<u8>, String)> {
        let cfg = serde_json::to_vec(chart_yaml_json)?;
        let b = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": self.desc("application/vnd.cncf.helm.config.v1+json", &cfg)?,
            "layers": [self.desc("application/vnd.cncf.helm.chart.content.v1.tar+gzip", tgz)?],
        }))?;
        let d = self.blob(&b)?;
        Ok((b, d))
    }

    pub fn tag(&mut self, name: &str, media_type: &str, b: &[u8]) {
        self.refs.insert(
            name.to_string(),
            json!({"mediaType": media_type, "digest": digest(b), "size": b.len(),
                   "annotations": {"org.opencontainers.image.ref.name": name}}),
        );
    }

    pub fn write_index(&self) -> Result<()> {
        let idx = json!({"schemaVersion": 2, "manifests": self.refs.values().collect::<Vec<_>>()});
        std::fs::write(self.dir.join("index.json"), serde_json::to_vec(&idx)?)?;
        Ok(())
    }
}

/// A Helm chart `.tgz` (deterministic) whose deployment runs `image`
/// (busybox's `sleep`, so it keeps running on a real node), after a
/// pre-install/pre-upgrade hook Job with the same image has completed.
pub fn chart_tgz(name: &str, version: &str, image: &str) -> Result<(Vec<u8>, serde_json::Value)> {
    chart_tgz_with(name, version, image, None)
}

/// As [`chart_tgz`]; with a banner (the demo's 0.2.0 chart), a value the
/// 0.1.0 chart does not have, put on the pods as an annotation.
pub fn chart_tgz_with(
    name: &str,
    version: &str,
    image: &str,
    banner: Option<&str>,
) -> Result<(Vec<u8>, serde_json::Value)> {
    let chart_yaml = format!(
        "apiVersion: v2\nname: {name}\nversion: {version}\nappVersion: \"1.0\"\ndescription: kpaas demo chart\ntype: application\n"
    );
    let mut values =
        format!("image: {image}\nreplicas: 1\ncommand: [/bin/sleep, \"2147483647\"]\nhook: true\n");
    let pod_meta = match banner {
        Some(b) => {
            values.push_str(&format!("banner: {b:?}\n"));
            "    metadata:\n      labels: {app: {{ .Release.Name }}}\n      annotations: {kpaas.demo/banner: {{ .Values.banner | quote }}}\n"
        }
        None => "    metadata:\n      labels: {app: {{ .Release.Name }}}\n",
    };
    let deploy = format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {{{{ .Release.Name }}}}\nspec:\n  replicas: {{{{ .Values.replicas }}}}\n  selector:\n    matchLabels: {{app: {{{{ .Release.Name }}}}}}\n  template:\n{pod_meta}    spec:\n      containers:\n        - name: app\n          image: {{{{ .Values.image }}}}\n          command: {{{{ toJson .Values.command }}}}\n"
    );
    let deploy = deploy.as_str();
    let hook = "{{- if .Values.hook }}\napiVersion: batch/v1\nkind: Job\nmetadata:\n  name: {{ .Release.Name }}-pre-install\n  annotations:\n    helm.sh/hook: pre-install,pre-upgrade\n    helm.sh/hook-delete-policy: before-hook-creation\nspec:\n  backoffLimit: 2\n  template:\n    spec:\n      restartPolicy: Never\n      containers:\n        - name: hook\n          image: {{ .Values.image }}\n          command: [/bin/true]\n{{- end }}\n";
    let p = |f: &str| format!("{name}/{f}");
    let (a, b, c, d) = (
        p("Chart.yaml"),
        p("values.yaml"),
        p("templates/deployment.yaml"),
        p("templates/hook.yaml"),
    );
    let (gz, _) = layer(&[
        (&a, chart_yaml.as_bytes(), 0o644),
        (&b, values.as_bytes(), 0o644),
        (&c, deploy.as_bytes(), 0o644),
        (&d, hook.as_bytes(), 0o644),
    ])?;
    let meta = json!({"apiVersion": "v2", "name": name, "version": version, "appVersion": "1.0",
                      "description": "kpaas demo chart", "type": "application"});
    Ok((gz, meta))
}

/// Everything the demo platform needs, built into `root`:
/// `root/oci` (layout to push), `root/www` (files and chart repo for nginx).
/// The demo's plain manifest: a Deployment and a suspended CronJob using two
/// bundled images (one by tag, one by digest), for the offline completeness
/// check and the apps wave.
pub fn demo_manifest(pinned_digest: &str) -> String {
    // Its own label: the demo chart's Deployment (release `demo`) selects
    // app=demo, and two Deployments with one selector fight over their
    // pods (seen: a rollout that never ended on two nodes). app-a runs
    // busybox's sleep (its image's own command, cat, ends at once); the pinned image holds only a file, so it is named by a
    // suspended CronJob: never run, but still an image the manifest uses,
    // by digest, that the offline check must find bundled.
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: demo-app, namespace: demo}}\nspec:\n  selector: {{matchLabels: {{app: demo-app}}}}\n  template:\n    metadata: {{labels: {{app: demo-app}}}}\n    spec:\n      containers:\n        - {{name: app, image: 'registry.demo.kpaas.test/demo/app-a:1.0', command: [/bin/sleep, '2147483647']}}\n---\napiVersion: batch/v1\nkind: CronJob\nmetadata: {{name: demo-pinned, namespace: demo}}\nspec:\n  schedule: '@yearly'\n  suspend: true\n  jobTemplate:\n    spec:\n      template:\n        spec:\n          restartPolicy: Never\n          containers:\n            - {{name: pinned, image: 'registry.demo.kpaas.test/demo/pinned@{pinned_digest}'}}\n"
    )
}

/// Where the demo serves its kustomization archive (Kubeflow's place).
pub const KUSTOMIZE_FILE: &str = "files/v1/demo-kustomize.tar.gz";

/// A kustomization as K-PaaS's Kubeflow comes: a base and an overlay in a
/// source archive (`demo-kustomize/overlays/demo` builds it). The overlay
/// names the namespace, a prefix and the image (by tag), so what the agent
/// applies differs from the base: kustomize really ran.
pub fn demo_kustomization() -> Result<Vec<u8>> {
    let base_k = "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources: [deployment.yaml]\n";
    let base_d = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: pipeline}\nspec:\n  selector: {matchLabels: {app: pipeline}}\n  template:\n    metadata: {labels: {app: pipeline}}\n    spec:\n      containers:\n        - name: app\n          image: app-b-placeholder\n          command: [/bin/sleep, \"2147483647\"]\n";
    let overlay = "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nnamespace: ml\nnamePrefix: demo-\nresources: [../../base]\nimages:\n  - {name: app-b-placeholder, newName: registry.demo.kpaas.test/demo/app-b, newTag: \"1.0\"}\n";
    let (gz, _) = layer(&[
        (
            "demo-kustomize/base/kustomization.yaml",
            base_k.as_bytes(),
            0o644,
        ),
        (
            "demo-kustomize/base/deployment.yaml",
            base_d.as_bytes(),
            0o644,
        ),
        (
            "demo-kustomize/overlays/demo/kustomization.yaml",
            overlay.as_bytes(),
            0o644,
        ),
    ])?;
    Ok(gz)
}

/// The demo 0.2.0's new component: app-a 2.0 kept running.
pub const EXTRAS_FILE: &str = "files/v2/extras.yaml";
pub const EXTRAS_MANIFEST: &str = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: demo-extra, namespace: extras}\nspec:\n  selector: {matchLabels: {app: demo-extra}}\n  template:\n    metadata: {labels: {app: demo-extra}}\n    spec:\n      containers:\n        - {name: app, image: 'registry.demo.kpaas.test/demo/app-a:2.0', command: [/bin/sleep, '2147483647']}\n";

/// One image to push into the demo registry.
pub struct Push {
    /// The OCI layout holding it, and its ref name there.
    pub layout: std::path::PathBuf,
    pub r: String,
    /// repository:tag in the registry.
    pub dest: String,
    /// skopeo `--format` (`v2s2` = Docker schema 2), or as stored.
    pub format: Option<&'static str>,
}

pub struct Demo {
    pub layout: std::path::PathBuf,
    pub www: std::path::PathBuf,
    pub pushes: Vec<Push>,
    pub pinned_digest: String,
    pub multi_digest: String,
    pub app_a_digest: String,
    pub chart_tgz_sha256: String,
    /// The demo 0.2.0's chart, and its new component's manifest.
    pub chart2_tgz_sha256: String,
    pub extras_sha256: String,
    pub kustomize_sha256: String,
    /// sha256 of each node file the demo serves (kubeadm, kubelet, …,
    /// cni-plugins.tgz): the test kit's real builds.
    pub file_sha256: BTreeMap<String, String>,
    pub manifest_sha256: String,
    /// sha256 of the flannel manifest the demo serves.
    pub flannel_manifest_sha256: String,
}

impl Demo {
    pub fn kubeadm_sha256(&self) -> &str {
        self.file_sha256.get("kubeadm").map_or("", |s| s.as_str())
    }
}

/// Where the demo's file server has the Kubernetes node files.
pub const NODE_FILES_URL_DIR: &str = "files/v1.25.6/amd64";

pub fn busybox_layer(busybox: &[u8]) -> Result<(Vec<u8>, String)> {
    let links = ["sh", "ls", "cat", "echo", "sleep", "true"];
    let mut entries: Vec<(String, Vec<u8>, u32)> =
        vec![("bin/busybox".into(), busybox.to_vec(), 0o755)];
    for l in links {
        // Hard copies, not links: keeps the tar trivially deterministic.
        entries.push((format!("bin/{l}"), busybox.to_vec(), 0o755));
    }
    let e: Vec<Entry> = entries
        .iter()
        .map(|(p, d, m)| (p.as_str(), d.as_slice(), *m))
        .collect();
    layer(&e)
}

/// The machine's static busybox (Debian's busybox-static, `just setup`
/// installs it).
pub fn host_busybox() -> Result<Vec<u8>> {
    std::fs::read("/bin/busybox").context("reading /bin/busybox (apt-get install busybox-static)")
}

pub fn build_demo(root: &Path, arm64_busybox: &Path) -> Result<Demo> {
    let mut l = Layout::new(&root.join("oci"))?;
    let bb = host_busybox()?;
    let bb_arm = std::fs::read(arm64_busybox).with_context(|| {
        format!(
            "reading {} (run `just setup` to fetch the arm64 busybox)",
            arm64_busybox.display()
        )
    })?;
    let base = busybox_layer(&bb)?;
    let base_arm = busybox_layer(&bb_arm)?;
    let app = |name: &str| {
        layer(&[(
            &format!("app/{name}.txt"),
            format!("hello from {name}\n").as_bytes(),
            0o644,
        )])
    };
    let (a_m, _) = l.image(
        &[base.clone(), app("app-a")?],
        "amd64",
        &["/bin/cat", "/app/app-a.txt"],
    )?;
    let (b_m, _) = l.image(
        &[base.clone(), app("app-b")?],
        "amd64",
        &["/bin/cat", "/app/app-b.txt"],
    )?;
    let (m_amd, _) = l.image(
        std::slice::from_ref(&base),
        "amd64",
        &["/bin/echo", "hello from amd64"],
    )?;
    let (m_arm, _) = l.image(&[base_arm], "arm64", &["/bin/echo", "hello from arm64"])?;
    let (idx, idx_d) = l.index(&[(&m_amd, "amd64"), (&m_arm, "arm64")])?;
    // No busybox in the pinned image: its digest must never change with Debian's busybox.
    let (p_m, p_d) = l.image(
        &[layer(&[("etc/pinned.txt", b"pinned by digest\n", 0o644)])?],
        "amd64",
        &["/etc/pinned.txt"],
    )?;
    let man = "application/vnd.oci.image.manifest.v1+json";
    l.tag("app-a", man, &a_m);
    l.tag("app-b", man, &b_m);
    l.tag("multi", "application/vnd.oci.image.index.v1+json", &idx);
    l.tag("pinned", man, &p_m);
    let (tgz, meta) = chart_tgz(
        "demo-app",
        "0.1.0",
        "registry.demo.kpaas.test/demo/app-a:1.0",
    )?;
    let (c_m, _) = l.helm_chart(&tgz, &meta)?;
    l.tag("chart", man, &c_m);
    // The demo's 0.2.0 (the update): app-a changed, the chart upgraded
    // with a new value, a component added (its manifest).
    let (a2_m, _) = l.image(
        &[
            base.clone(),
            layer(&[("app/app-a.txt", b"hello from app-a 2.0\n", 0o644)])?,
        ],
        "amd64",
        &["/bin/cat", "/app/app-a.txt"],
    )?;
    l.tag("app-a-2", man, &a2_m);
    let (tgz2, _) = chart_tgz_with(
        "demo-app",
        "0.2.0",
        "registry.demo.kpaas.test/demo/app-a:2.0",
        Some("none"),
    )?;
    l.write_index()?;
    let a_d = digest(&a_m);
    let www = root.join("www");
    std::fs::create_dir_all(www.join("charts"))?;
    std::fs::create_dir_all(www.join("files/v1"))?;
    std::fs::write(www.join("charts/demo-app-0.1.0.tgz"), &tgz)?;
    std::fs::write(www.join("charts/demo-app-0.2.0.tgz"), &tgz2)?;
    std::fs::write(
        www.join("charts/index.yaml"),
        format!(
            "apiVersion: v1\nentries:\n  demo-app:\n    - apiVersion: v2\n      name: demo-app\n      version: 0.2.0\n      digest: {}\n      urls:\n        - demo-app-0.2.0.tgz\n    - apiVersion: v2\n      name: demo-app\n      version: 0.1.0\n      digest: {}\n      urls:\n        - demo-app-0.1.0.tgz\ngenerated: \"2026-01-01T00:00:00Z\"\n",
            sha256_hex(&tgz2),
            sha256_hex(&tgz)
        ),
    )?;
    std::fs::write(www.join("files/v1/demo-app.yaml"), demo_manifest(&p_d))?;
    std::fs::create_dir_all(www.join("files/v2"))?;
    std::fs::write(www.join(EXTRAS_FILE), EXTRAS_MANIFEST)?;
    let kustomization = demo_kustomization()?;
    std::fs::write(www.join(KUSTOMIZE_FILE), &kustomization)?;
    let flannel = www.join(crate::kit::FLANNEL_MANIFEST_PATH);
    if let Some(d) = flannel.parent() {
        std::fs::create_dir_all(d)?;
    }
    std::fs::write(&flannel, crate::kit::FLANNEL_MANIFEST)?;
    let platform = www.join(crate::kit::PLATFORM_FILES_DIR);
    std::fs::create_dir_all(&platform)?;
    for (name, text) in crate::kit::PLATFORM_FILES {
        std::fs::write(platform.join(name), text)?;
    }
    let file_sha256 = crate::kit::serve_files(&www.join(NODE_FILES_URL_DIR))?;
    let own = |r: &str, dest: &str, format| Push {
        layout: l.dir.clone(),
        r: r.into(),
        dest: dest.into(),
        format,
    };
    let mut pushes = vec![
        own("app-a", "demo/app-a:1.0", None),
        own("app-b", "demo/app-b:1.0", None),
        own("multi", "demo/multi:1.0", None),
        own("pinned", "demo/pinned:unlisted", None),
        own("chart", "charts/demo-app:0.1.0", None),
        own("app-a-2", "demo/app-a:2.0", None),
        // app-b again as Docker schema 2 (skopeo converts): both manifest
        // families must bundle and verify.
        own("app-b", "demo/app-b-docker:1.0", Some("v2s2")),
    ];
    // The kit's images, stored in the registry under their upstream names
    // (registry.k8s.io/..., docker.io/flannel/...): the builder reaches them
    // with `--mirror registry.k8s.io=<registry>/registry.k8s.io` (docker.io
    // alike), as a real build reaches registry.k8s.io.
    let kit = crate::kit::images_layout();
    for img in crate::kit::images() {
        pushes.push(Push {
            layout: kit.clone(),
            r: img.layout_ref.into(),
            dest: img.reference.into(),
            format: None,
        });
    }
    Ok(Demo {
        layout: l.dir.clone(),
        www,
        pushes,
        pinned_digest: p_d.clone(),
        multi_digest: idx_d,
        app_a_digest: a_d,
        chart_tgz_sha256: sha256_hex(&tgz),
        chart2_tgz_sha256: sha256_hex(&tgz2),
        extras_sha256: sha256_hex(EXTRAS_MANIFEST.as_bytes()),
        file_sha256,
        manifest_sha256: sha256_hex(demo_manifest(&p_d).as_bytes()),
        kustomize_sha256: sha256_hex(&kustomization),
        flannel_manifest_sha256: sha256_hex(crate::kit::FLANNEL_MANIFEST.as_bytes()),
    })
}

/// Deterministic, incompressible bytes (xorshift), like real compressed layers.
pub fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut v = Vec::with_capacity(len);
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(len);
    v
}

/// `n` images of three layers each: two of four shared 24 MiB bases and an
/// own 6 MiB layer (realistic sharing), tagged `img<i>` in `layout`.
pub fn bench_images(dir: &Path, n: usize) -> Result<Layout> {
    let mut l = Layout::new(dir)?;
    let bases: Vec<_> = (0..4)
        .map(|i| layer(&[("base/blob", &noise(i, 24 << 20), 0o644)]))
        .collect::<Result<_>>()?;
    for i in 0..n {
        let own = layer(&[("app/blob", &noise(100 + i as u64, 6 << 20), 0o644)])?;
        let (m, _) = l.image(
            &[bases[i % 4].clone(), bases[(i + 1) % 4].clone(), own],
            "amd64",
            &["/app"],
        )?;
        l.tag(
            &format!("img{i}"),
            "application/vnd.oci.image.manifest.v1+json",
            &m,
        );
    }
    l.write_index()?;
    Ok(l)
}
