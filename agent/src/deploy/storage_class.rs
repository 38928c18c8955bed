//! The `default-storage-class` install kind: a StorageClass annotated as
//! the cluster's default, as upstream's scripts patch it (K-PaaS renames
//! its class and marks it afterwards).

use super::Engine;
use crate::boot::StepId;
use crate::boot::cluster::{self, last_line, wait};
use crate::events::Sink;
use anyhow::Result;

impl Engine {
    /// StorageClass `name` annotated as the default, as upstream patches it
    /// (waiting while its manifest's class is not there yet).
    pub(super) fn default_class(&self, events: &mut Sink, name: &str) -> Result<String> {
        let patch = r#"{"metadata":{"annotations":{"storageclass.kubernetes.io/is-default-class":"true"}}}"#;
        wait(
            events,
            StepId::Deploy,
            &format!("StorageClass {name} to exist"),
            cluster::APPLY_WAIT,
            || {
                self.kubectl()
                    .args([
                        "patch",
                        "storageclass",
                        name,
                        "--type",
                        "merge",
                        "-p",
                        patch,
                    ])
                    .ok_on(self.runner.as_ref())
                    .map(Some)
                    .map_err(|e| last_line(&e))
            },
        )?;
        Ok(format!("StorageClass {name} is the default"))
    }
}
