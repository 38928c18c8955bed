//! The command layer: one file per subcommand, each its arguments and the
//! glue from them to the bundle side, the image side or the seeds.

pub mod bundle;
pub mod check_offline;
pub mod cluster;
pub mod image;
pub mod inspect;
pub mod keygen;
pub mod plan;
pub mod resolve;
pub mod rootfs;
pub mod seeds;
pub mod verify;
