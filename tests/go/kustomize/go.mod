// Wrapper module: builds kustomize v5.0.0 (package
// sigs.k8s.io/kustomize/kustomize/v5, the binary `kustomize`) from the module
// proxy. Upstream's go.mod has no replace directives, so nothing needs copying.
//
// Build (CGO_ENABLED=0, GOTOOLCHAIN=local): go build -trimpath
//   -ldflags "-s -w -X sigs.k8s.io/kustomize/api/provenance.version=kustomize/v5.0.0
//   -X sigs.k8s.io/kustomize/api/provenance.buildDate=2023-02-02T16:32:41Z"
//   sigs.k8s.io/kustomize/kustomize/v5
// (release form of version; buildDate = the v5.0.0 tag's commit time, for a
// reproducible build; gitCommit comes from VCS build info and reads "unknown")
module kpaas.test/kustomize

go 1.19

require sigs.k8s.io/kustomize/kustomize/v5 v5.0.0

require (
	github.com/davecgh/go-spew v1.1.1 // indirect
	github.com/evanphx/json-patch v4.11.0+incompatible // indirect
	github.com/go-errors/errors v1.4.2 // indirect
	github.com/go-openapi/jsonpointer v0.19.6 // indirect
	github.com/go-openapi/jsonreference v0.20.1 // indirect
	github.com/go-openapi/swag v0.22.3 // indirect
	github.com/golang/protobuf v1.5.2 // indirect
	github.com/google/gnostic v0.5.7-v3refs // indirect
	github.com/google/go-cmp v0.5.5 // indirect
	github.com/google/gofuzz v1.1.0 // indirect
	github.com/google/shlex v0.0.0-20191202100458-e7afc7fbc510 // indirect
	github.com/imdario/mergo v0.3.6 // indirect
	github.com/inconshreveable/mousetrap v1.0.0 // indirect
	github.com/josharian/intern v1.0.0 // indirect
	github.com/mailru/easyjson v0.7.7 // indirect
	github.com/monochromegane/go-gitignore v0.0.0-20200626010858-205db1a8cc00 // indirect
	github.com/pkg/errors v0.9.1 // indirect
	github.com/spf13/cobra v1.4.0 // indirect
	github.com/spf13/pflag v1.0.5 // indirect
	github.com/xlab/treeprint v1.1.0 // indirect
	go.starlark.net v0.0.0-20200306205701-8dd3e2ee1dd5 // indirect
	golang.org/x/sys v0.3.0 // indirect
	golang.org/x/text v0.6.0 // indirect
	google.golang.org/protobuf v1.28.0 // indirect
	gopkg.in/inf.v0 v0.9.1 // indirect
	gopkg.in/yaml.v2 v2.4.0 // indirect
	gopkg.in/yaml.v3 v3.0.1 // indirect
	k8s.io/kube-openapi v0.0.0-20230109183929-3758b55a6596 // indirect
	sigs.k8s.io/kustomize/api v0.13.1 // indirect
	sigs.k8s.io/kustomize/cmd/config v0.11.0 // indirect
	sigs.k8s.io/kustomize/kyaml v0.14.0 // indirect
	sigs.k8s.io/yaml v1.3.0 // indirect
)
