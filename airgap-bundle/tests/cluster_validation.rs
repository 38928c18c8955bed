//! Each cluster-file failure mode, one fixture each: the error names the file,
//! the field and what would be valid. Plus one file with many mistakes: all
//! are reported at once.

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use airgap_bundle::cluster::{Cluster, EXAMPLE};

fn check(fixture: &str) -> String {
    let path = format!(
        "{}/tests/fixtures/cluster/{fixture}.yaml",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path).unwrap();
    Cluster::from_yaml(&text, &path).unwrap_err().to_string()
}

#[test]
fn each_failure_mode_is_named() {
    let cases = [
        ("bad-ip", "10.10.0.300"),
        (
            "duplicate-ip",
            "workers[1].private_ip: 10.10.0.11 is also workers[0].private_ip",
        ),
        (
            "duplicate-hostname",
            "workers[2].hostname: kpaas-worker1 is also workers[0].hostname",
        ),
        (
            "bad-hostname",
            "master.hostname: \"Kpaas_Master\" must be lowercase",
        ),
        (
            "pod-service-overlap",
            "network: pod_cidr 10.233.64.0/18 overlaps service_cidr 10.233.96.0/19",
        ),
        (
            "pod-overlaps-nodes",
            "network.pod_cidr: 10.233.64.0/18 overlaps the node network 10.233.64.0/24",
        ),
        (
            "node-outside-node-cidr",
            "workers[2].private_ip: 10.10.1.13 is outside network.node_cidr 10.10.0.0/24",
        ),
        (
            "gateway-outside-node-cidr",
            "network.gateway: 10.10.1.1 is outside network.node_cidr 10.10.0.0/24",
        ),
        (
            "cidr-host-bits",
            "has host bits set (the network is 10.233.64.0/18)",
        ),
        (
            "nfs-without-server",
            "storage.nfs.server: required when storage.type is nfs",
        ),
        (
            "rook-too-few-workers",
            "rook-ceph needs at least 3 workers for Ceph's 3 monitors (there are 2)",
        ),
        (
            "rook-without-devices",
            "storage.rook_ceph.devices: name the raw, unused disk(s)",
        ),
        (
            "bad-storage-type",
            "storage.type: \"ceph\" must be nfs or rook-ceph",
        ),
        (
            "bad-provider-type",
            "portal.provider_type: \"cloud\" must be standalone or service",
        ),
        ("unknown-field", "unknown field `region`"),
        (
            "short-password",
            "passwords.harbor_admin: at least 12 characters",
        ),
        (
            "unknown-component",
            "enable: \"monitoring\" is not an optional component",
        ),
        (
            "bad-mac",
            "master.mac: \"52:54:00:10:00\" is not a MAC address",
        ),
    ];
    for (fixture, needle) in cases {
        let e = check(fixture);
        assert!(
            e.contains(&format!("{fixture}.yaml")),
            "{fixture}: the file is not named:\n{e}"
        );
        assert!(e.contains(needle), "{fixture}: missing {needle:?} in:\n{e}");
    }
}

#[test]
fn many_mistakes_are_reported_together() {
    let text = EXAMPLE
        .replace(
            "{hostname: kpaas-worker2, private_ip: 10.10.0.12}",
            "{hostname: kpaas-worker1, private_ip: 10.10.0.11}",
        )
        .replace(
            "service_cidr: 10.233.0.0/18",
            "service_cidr: 10.233.64.0/18",
        )
        .replace("    server: 10.10.0.20\n", "")
        .replace("iaas_type: openstack", "iaas_type: azure");
    let e = Cluster::from_yaml(&text, "many.yaml").unwrap_err();
    assert_eq!(e.problems.len(), 5, "{e}");
}
