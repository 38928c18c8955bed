// Wrapper module: builds the `flannel` CNI meta plugin (package
// github.com/containernetworking/plugins/plugins/meta/flannel) from the module
// proxy, for the image docker.io/flannel/flannel-cni-plugin:v1.1.2 that
// flannel v0.22.0's manifest names.
//
// Source deviation: upstream builds that image from flannel-io/cni-plugin
// v1.1.2, which the module proxy here does not serve. The plugin lived in
// containernetworking/plugins until it moved there: v0.9.1 is the last
// release with plugins/meta/flannel (v1.0.0 removed it), the proxy serves it,
// and it is the release flannel v0.22.0's own go.mod requires. Same plugin,
// older dependencies: it speaks CNI spec 0.1.0-0.4.0, enough for the 0.3.1
// conflist flannel's manifest installs, and reports its version as v0.9.1.
//
// Build (CGO_ENABLED=0, GOTOOLCHAIN=local): go build -trimpath
//   -ldflags "-s -w -X github.com/containernetworking/plugins/pkg/utils/buildversion.BuildVersion=v0.9.1"
//   github.com/containernetworking/plugins/plugins/meta/flannel
// (containernetworking/plugins' release ldflags, as tests/go/cni-plugins)
module kpaas.test/flannel-cni-plugin

go 1.17

require github.com/containernetworking/plugins v0.9.1

require (
	github.com/Microsoft/go-winio v0.4.11 // indirect
	github.com/Microsoft/hcsshim v0.8.6 // indirect
	github.com/buger/jsonparser v0.0.0-20180808090653-f4dd9f5a6b44 // indirect
	github.com/containernetworking/cni v0.8.1 // indirect
	github.com/sirupsen/logrus v1.0.6 // indirect
	golang.org/x/crypto v0.0.0-20200622213623-75b288015ac9 // indirect
	golang.org/x/sys v0.0.0-20201117170446-d9b008d0a637 // indirect
)
