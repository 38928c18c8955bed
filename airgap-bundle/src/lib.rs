//! The air-gapped bundle: the contract between `kpaas-builder` (which writes
//! bundles) and `kpaas-agent` (which verifies and serves them). It owns the
//! platform catalog schema, the lock file, the bundle manifest
//! (`bundle.json`), the OCI image-layout conventions, signatures, the SBOM,
//! and reading and verifying a bundle in any of its shapes.

pub mod catalog;
pub mod cidata;
pub mod cluster;
pub mod day2;
pub mod deploy;
pub mod digest;
pub mod fsutil;
pub mod ident;
pub mod inventory;
pub mod join;
pub mod kinds;
pub mod kube_settings;
pub mod lock;
pub mod manifest;
pub mod node;
pub mod oci;
pub mod oci_walk;
pub mod offline;
pub mod plan;
pub mod platforms;
pub mod problems;
pub mod reader;
pub mod readiness;
pub mod reference;
pub mod render;
pub mod run;
pub mod sbom;
pub mod seed;
pub mod sign;
pub mod template;
pub mod update;
pub mod verify;

pub use digest::Digest;
pub use reference::ImageRef;
