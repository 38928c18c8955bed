//! The container runtime, the one place where containerd and CRI-O differ
//! for the agent: the config it writes for kubelet (and whether the image
//! carries the runtime at all), and how a change of mirrors reaches it. The
//! mirrors themselves are written for both (`crate::mirrors`): the files of
//! the runtime not in use harm nothing.

use crate::kube;
use airgap_bundle::node::Runtime;
use airgap_bundle::run::{Runner, run};
use anyhow::{Result, bail};
use std::path::Path;

/// The runtime's config for kubelet: (path under the root, text). Refused,
/// saying what to do, when the image lacks the runtime.
pub fn config(rt: Runtime, root: &Path, pause: &str) -> Result<(&'static str, String)> {
    match rt {
        Runtime::Containerd => Ok((kube::CONTAINERD_CONFIG, kube::containerd_config(pause))),
        Runtime::Crio => {
            if !["usr/bin/crio", "usr/local/bin/crio"]
                .iter()
                .any(|p| root.join(p).exists())
            {
                bail!(
                    "the cluster file's container_manager is crio, but this image has no CRI-O (no /usr/bin/crio or /usr/local/bin/crio; Debian has no CRI-O package): build the image with CRI-O, or set container_manager: containerd"
                );
            }
            Ok((kube::CRIO_DROPIN, kube::crio_dropin(pause)))
        }
    }
}

/// After the mirrors changed: containerd reads `hosts.toml` at each pull;
/// CRI-O reads `registries.conf` at start and on reload.
pub fn mirrors_changed(rt: Runtime, r: &dyn Runner) -> Result<()> {
    match rt {
        Runtime::Containerd => Ok(()),
        Runtime::Crio => run("systemctl").args(["reload", "crio"]).ok_on(r),
    }
}
