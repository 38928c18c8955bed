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

use crate::deploy::journal::DeployJournal;
use axum::body::Body;
use axum::http::{Response, StatusCode, header};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

pub const API: &str = "kpaas.node/v1";
pub const HANDOFF_PATH: &str = "/node/v1/handoff";

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

pub fn routes(state_dir: PathBuf) -> axum::Router {
    axum::Router::new().route(
        HANDOFF_PATH,
        axum::routing::get(move || {
            let dir = state_dir.clone();
            async move {
                let h = tokio::task::spawn_blocking(move || Handoff::of(&dir)).await;
                match h {
                    Ok(h) => Response::builder()
                        .header(header::CONTENT_TYPE, "application/json")
                        .header(header::CACHE_CONTROL, "no-store")
                        .body(Body::from(serde_json::to_vec(&h).unwrap_or_default()))
                        .unwrap_or_default(),
                    Err(e) => Response::builder()
                        .status(StatusCode::INTERNAL_SERVER_ERROR)
                        .body(Body::from(format!("reading the deploy journal: {e}")))
                        .unwrap_or_default(),
                }
            }
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
