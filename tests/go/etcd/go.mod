// Wrapper module: builds etcd v3.5.6 (and etcdctl v3.5.6) from the module proxy.
// go.etcd.io/etcd/server/v3 is itself package main (upstream's build.sh builds
// ./server as bin/etcd); its replace block only points sibling modules at local
// paths, which here resolve to the published v3.5.6 modules instead.
//
// Build (CGO_ENABLED=0, GOTOOLCHAIN=local): go build -trimpath
//   -ldflags "-s -w -X go.etcd.io/etcd/api/v3/version.GitSHA=cecbe35ce"
//   go.etcd.io/etcd/server/v3 (-o etcd), go.etcd.io/etcd/etcdctl/v3 (-o etcdctl)
module kpaas.test/etcd

go 1.16

require (
	go.etcd.io/etcd/etcdctl/v3 v3.5.6
	go.etcd.io/etcd/server/v3 v3.5.6
)
