//! The `default-storage-class` kind: StorageClass NAME made the cluster's
//! default, as upstream's scripts patch it after their storage manifests.

use super::Kind;
use crate::ident::valid_hostname;
use serde::{Deserialize, Serialize};

/// The StorageClass's name (`- default-storage-class: NAME`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(transparent)]
pub struct DefaultStorageClass(pub String);

impl Kind for DefaultStorageClass {
    fn name(&self) -> String {
        format!("default-storage-class/{}", self.0)
    }

    fn problems(&self) -> Vec<String> {
        if valid_hostname(&self.0) {
            Vec::new()
        } else {
            vec![format!(
                "default-storage-class: {:?} is not a Kubernetes object name",
                self.0
            )]
        }
    }

    fn describe(&self, _artifact: &str) -> String {
        format!("make StorageClass {} the default", self.0)
    }
}
