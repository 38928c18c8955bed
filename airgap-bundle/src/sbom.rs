//! An SPDX 2.3 JSON document listing every artifact of a bundle with its digest
//! and, where a purl type exists, its package URL.

use crate::manifest::BundleManifest;
use crate::reference::ImageRef;
use serde_json::{Value, json};

fn spdx_id(i: usize, kind: &str) -> String {
    format!("SPDXRef-{kind}-{i}")
}

fn pct(s: &str) -> String {
    s.replace('%', "%25")
        .replace(':', "%3A")
        .replace('@', "%40")
        .replace('/', "%2F")
}

/// purl for an artifact, when one of the purl types fits it.
pub fn purl(kind: &str, name: &str, source: &str, digest: &str) -> Option<String> {
    match kind {
        "image" | "chart" => {
            // pkg:oci is the purl type for anything in an OCI registry (charts too).
            let r = ImageRef::parse(name).ok()?;
            let last = r.repository.rsplit('/').next()?.to_string();
            let mut q = format!("repository_url={}", pct(&r.name()));
            if let Some(t) = &r.tag {
                q.push_str(&format!("&tag={}", pct(t)));
            }
            Some(format!("pkg:oci/{last}@{}?{q}", pct(digest)))
        }
        "file" => {
            let file = source.rsplit('/').next().unwrap_or(source);
            Some(format!(
                "pkg:generic/{}?download_url={}&checksum={}",
                pct(file),
                pct(source),
                digest.replace("sha256:", "sha256%3A")
            ))
        }
        _ => None,
    }
}

pub fn spdx(m: &BundleManifest, bundle_id: &str) -> Value {
    let root = "SPDXRef-platform";
    let mut packages = vec![json!({
        "SPDXID": root,
        "name": m.platform,
        "versionInfo": m.platform_version,
        "downloadLocation": "NOASSERTION",
        "filesAnalyzed": false,
        "primaryPackagePurpose": "APPLICATION",
    })];
    let mut relationships = vec![json!({
        "spdxElementId": "SPDXRef-DOCUMENT",
        "relationshipType": "DESCRIBES",
        "relatedSpdxElement": root,
    })];
    for (i, a) in m.artifacts.iter().enumerate() {
        let id = spdx_id(i, &a.kind);
        let digest = a.content_digest.as_ref().unwrap_or(&a.digest);
        let download = if a.source.starts_with("http://") || a.source.starts_with("https://") {
            a.source.clone()
        } else {
            "NOASSERTION".to_string()
        };
        let mut p = json!({
            "SPDXID": id,
            "name": a.name,
            "versionInfo": a.name.rsplit_once(':').map(|(_, v)| v).unwrap_or("NOASSERTION"),
            "downloadLocation": download,
            "filesAnalyzed": false,
            "checksums": [{"algorithm": "SHA256", "checksumValue": digest.hex()}],
            "primaryPackagePurpose": match a.kind.as_str() { "image" => "CONTAINER", "file" => "FILE", _ => "ARCHIVE" },
            "comment": format!("{} from {} in component {}{}", a.kind, a.source, a.component,
                if a.unverified { "; digest not verified against an upstream file" } else { "" }),
        });
        if let Some(purl) = purl(&a.kind, &a.name, &a.source, digest.as_str()) {
            p["externalRefs"] = json!([{
                "referenceCategory": "PACKAGE-MANAGER",
                "referenceType": "purl",
                "referenceLocator": purl,
            }]);
        }
        packages.push(p);
        relationships.push(json!({
            "spdxElementId": root,
            "relationshipType": "CONTAINS",
            "relatedSpdxElement": id,
        }));
    }
    json!({
        "spdxVersion": "SPDX-2.3",
        "dataLicense": "CC0-1.0",
        "SPDXID": "SPDXRef-DOCUMENT",
        "name": format!("{}-{}", m.platform, m.platform_version),
        "documentNamespace": format!("https://kpaas-appliance.invalid/spdx/{}-{}-{bundle_id}", m.platform, m.platform_version),
        "creationInfo": {
            "created": m.created,
            "creators": [format!("Tool: kpaas-builder-{}", env!("CARGO_PKG_VERSION"))],
        },
        "packages": packages,
        "relationships": relationships,
    })
}
