//! The `default-storage-class` install kind: a StorageClass annotated as
//! the cluster's default, as upstream's scripts patch it (K-PaaS renames
//! its class and marks it afterwards).

use super::Engine;
use crate::boot::StepId;
use crate::boot::cluster::{self, wait};
use crate::events::Sink;
use anyhow::Result;
use k8s_openapi::api::storage::v1::StorageClass;

impl Engine {
    /// StorageClass `name` annotated as the default, as upstream patches it
    /// (waiting while its manifest's class is not there yet).
    pub(super) fn default_class(&self, events: &mut Sink, name: &str) -> Result<String> {
        let patch = serde_json::json!({"metadata": {"annotations": {
            "storageclass.kubernetes.io/is-default-class": "true"}}});
        wait(
            events,
            StepId::Deploy,
            &format!("StorageClass {name} to exist"),
            cluster::APPLY_WAIT,
            || match self
                .kube
                .api
                .merge_patch_cluster::<StorageClass>(name, &patch)
            {
                Ok(_) => Ok(Some(Ok(()))),
                Err(f) if f.passes() => Err(f.to_string()),
                Err(f) => Ok(Some(Err(anyhow::anyhow!("{f}")))),
            },
        )??;
        Ok(format!("StorageClass {name} is the default"))
    }
}
