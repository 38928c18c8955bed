//! The endpoint nodes read from each other, beside the seed registry and
//! apart from the status page people read: `GET /node/v1/<what>`, JSON,
//! read-only, nothing secret. Its shape is a contract between the agents of
//! one site (a worker may run another build than its master after an
//! update), so a field is only ever added; a change of meaning is a new
//! version path, served beside the old one.
//!
//! | path | answer |
//! |---|---|
//! | `/node/v1/handoff` | `{"api": "kpaas.node/v1", "registry": "HOST:PORT/PROJECT" \| null}`: the platform's registry once the master's hand-off has filled it |
//! | `/node/v1/inventory` | the site's inventory (`airgap_bundle::inventory`), on the master: the bundle it runs, every blob it holds, its releases and nodes (what `kpaas-builder bundle --since` reads) |
//! | `/node/v1/join/<token id>` | `{"api": "kpaas.node/v1", "honoured": true \| false \| null, "detail": "..."}`: whether the master lets a node join with that credential (`null`: it never issued it), and why not |

use crate::deploy::journal::DeployJournal;
use axum::body::Body;
use axum::http::{Response, StatusCode, header};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub const API: &str = "kpaas.node/v1";
pub const HANDOFF_PATH: &str = "/node/v1/handoff";
pub const JOIN_PATH: &str = "/node/v1/join";
pub const INVENTORY_PATH: &str = "/node/v1/inventory";

/// Gathers the site's inventory (the master's; other nodes have none).
pub type InventoryFn =
    Arc<dyn Fn() -> anyhow::Result<airgap_bundle::inventory::Inventory> + Send + Sync>;

/// What a worker needs for its half of the hand-off.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct Handoff {
    pub api: String,
    /// The platform's registry, once filled: workers' mirrors go there first.
    pub registry: Option<String>,
}

impl Handoff {
    /// From the master's deploy journal (no journal yet: not filled).
    pub fn of(state_dir: &Path) -> Handoff {
        Handoff {
            api: API.into(),
            registry: DeployJournal::open(state_dir).ok().and_then(|j| j.registry),
        }
    }

    /// A master's answer, refused when it speaks another version.
    pub fn parse(body: &[u8]) -> Result<Handoff, String> {
        let h: Handoff = serde_json::from_slice(body)
            .map_err(|e| format!("the master's {HANDOFF_PATH}: {e}"))?;
        if h.api != API {
            return Err(format!(
                "the master answers {HANDOFF_PATH} as {}, this agent speaks {API}",
                h.api
            ));
        }
        Ok(h)
    }
}

/// What the master says of a join credential, by its public half: a worker
/// asks before it joins, so a refused one says why at once instead of
/// after kubeadm's five-minute discovery timeout.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct Join {
    pub api: String,
    pub honoured: Option<bool>,
    pub detail: String,
}

impl Join {
    /// From the site's record (none yet: the keeper has not run; unknown).
    pub fn of(state_dir: &Path, token_id: &str) -> Join {
        let site = crate::site::Site::load(state_dir).unwrap_or_default();
        let (honoured, detail) = match site.credential(token_id) {
            Some(c) => (Some(c.state.honoured()), c.describe()),
            None if site.seeds.is_none() => (
                None,
                "the master has not checked its join credentials yet".into(),
            ),
            None => (
                Some(false),
                format!("token {token_id} was never issued by this master"),
            ),
        };
        Join {
            api: API.into(),
            honoured,
            detail,
        }
    }

    pub fn parse(body: &[u8]) -> Result<Join, String> {
        let j: Join =
            serde_json::from_slice(body).map_err(|e| format!("the master's {JOIN_PATH}: {e}"))?;
        if j.api != API {
            return Err(format!(
                "the master answers {JOIN_PATH} as {}, this agent speaks {API}",
                j.api
            ));
        }
        Ok(j)
    }
}

fn json_reply<T: Serialize, E: std::fmt::Display>(v: Result<T, E>) -> Response<Body> {
    match v {
        Ok(v) => Response::builder()
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::CACHE_CONTROL, "no-store")
            .body(Body::from(serde_json::to_vec(&v).unwrap_or_default()))
            .unwrap_or_default(),
        Err(e) => Response::builder()
            .status(StatusCode::INTERNAL_SERVER_ERROR)
            .body(Body::from(format!("reading the agent's state: {e}")))
            .unwrap_or_default(),
    }
}

pub fn routes(state_dir: PathBuf, inventory: Option<InventoryFn>) -> axum::Router {
    let join_dir = state_dir.clone();
    let r = match inventory {
        Some(f) => axum::Router::new().route(
            INVENTORY_PATH,
            axum::routing::get(move || {
                let f = f.clone();
                async move {
                    json_reply(
                        tokio::task::spawn_blocking(move || f().map_err(|e| format!("{e:#}")))
                            .await
                            .map_err(|e| e.to_string())
                            .and_then(|r| r),
                    )
                }
            }),
        ),
        None => axum::Router::new(),
    };
    r
        .route(
            &format!("{JOIN_PATH}/{{id}}"),
            axum::routing::get(move |axum::extract::Path(id): axum::extract::Path<String>| {
                let dir = join_dir.clone();
                async move { json_reply(tokio::task::spawn_blocking(move || Join::of(&dir, &id)).await) }
            }),
        )
        .route(
        HANDOFF_PATH,
        axum::routing::get(move || {
            let dir = state_dir.clone();
            async move { json_reply(tokio::task::spawn_blocking(move || Handoff::of(&dir)).await) }
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_handoff_comes_from_the_journal_and_names_its_version() {
        let t = tempfile::tempdir().unwrap();
        let h = Handoff::of(t.path());
        assert_eq!(h.registry, None);
        let mut j = DeployJournal::open(t.path()).unwrap();
        j.set_registry("10.0.0.1:30002/cp-portal-repository")
            .unwrap();
        let body = serde_json::to_vec(&Handoff::of(t.path())).unwrap();
        assert_eq!(
            Handoff::parse(&body).unwrap().registry.as_deref(),
            Some("10.0.0.1:30002/cp-portal-repository")
        );
        let e = Handoff::parse(br#"{"api": "kpaas.node/v2", "registry": null}"#).unwrap_err();
        assert!(e.contains("this agent speaks kpaas.node/v1"), "{e}");
    }
}
