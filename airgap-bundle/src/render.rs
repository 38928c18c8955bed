//! Rendering what a release applies, the same way at build time
//! (`kpaas-builder check-offline`) and on the node (the agent, before a
//! wave): a chart with the bundled helm's `template`, a kustomization with
//! the bundled kustomize from its archive. The objects rendered are what the
//! image check reads.

use crate::fsutil;
use crate::run::{Runner, run};
use anyhow::{Context, Result};
use std::path::Path;

/// `helm template RELEASE CHART --namespace NS --values VALUES`: every
/// object of the chart, its hooks included (they run images too). Helm's
/// caches go under `helm_home`, never a `$HOME` a service may lack.
pub fn chart(
    r: &dyn Runner,
    helm: &str,
    helm_home: &Path,
    release: &str,
    namespace: &str,
    tgz: &Path,
    values: &Path,
) -> Result<Vec<u8>> {
    helm_cmd(helm, helm_home)
        .args(["template", release])
        .arg(tgz)
        .args(["--namespace", namespace, "--values"])
        .arg(values)
        .output_on(r)
}

/// The bundled helm with its state under `home`.
pub fn helm_cmd(helm: &str, home: &Path) -> crate::run::Cmd {
    let h = home.to_string_lossy();
    run(helm)
        .env("HELM_CACHE_HOME", &format!("{h}/cache"))
        .env("HELM_CONFIG_HOME", &format!("{h}/config"))
        .env("HELM_DATA_HOME", &format!("{h}/data"))
}

/// `kustomize build PATH` inside the `.tar.gz` at `archive`, unpacked
/// afresh into `tree`.
pub fn kustomization(
    r: &dyn Runner,
    kustomize: &str,
    archive: &Path,
    tree: &Path,
    path: &str,
) -> Result<Vec<u8>> {
    if tree.exists() {
        std::fs::remove_dir_all(tree).with_context(|| format!("removing {}", tree.display()))?;
    }
    fsutil::create_dir(tree)?;
    run("tar")
        .arg("-xzf")
        .arg(archive)
        .arg("-C")
        .arg(tree)
        .ok_on(r)?;
    run(kustomize)
        .arg("build")
        .arg(tree.join(path))
        .output_on(r)
}
