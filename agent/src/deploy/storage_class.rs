//! The `default-storage-class` install kind: a StorageClass annotated as
//! the cluster's default, as upstream's scripts patch it (K-PaaS renames
//! its class and marks it afterwards).

use super::{Apply, At, Engine};
use crate::boot::StepId;
use crate::boot::cluster::{self, wait};
use crate::events::Sink;
use airgap_bundle::kinds::default_storage_class::DefaultStorageClass;
use anyhow::Result;
use k8s_openapi::api::storage::v1::StorageClass;

impl Apply for DefaultStorageClass {
    /// StorageClass `name` annotated as the default, as upstream patches it
    /// (waiting while its manifest's class is not there yet).
    fn apply(&self, e: &Engine, events: &mut Sink, _at: &At) -> Result<String> {
        let name = &self.0;
        let patch = serde_json::json!({"metadata": {"annotations": {
            "storageclass.kubernetes.io/is-default-class": "true"}}});
        wait(
            events,
            StepId::Deploy,
            &format!("StorageClass {name} to exist"),
            cluster::APPLY_WAIT,
            || match e.kube.api.merge_patch_cluster::<StorageClass>(name, &patch) {
                Ok(_) => Ok(Some(Ok(()))),
                Err(f) if f.passes() => Err(f.to_string()),
                Err(f) => Ok(Some(Err(anyhow::anyhow!("{f}")))),
            },
        )??;
        Ok(format!("StorageClass {name} is the default"))
    }
}
