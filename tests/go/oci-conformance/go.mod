// Wrapper module: builds the OCI distribution-spec conformance suite (the
// program `oci-conformance`), a test tool only: agent/tests/conformance.rs
// runs it against the seed registry. The module proxy serves it only as a
// pseudo-version (no tagged release of the module path).
//
// Build (CGO_ENABLED=0, GOTOOLCHAIN=local): go build -trimpath
//   github.com/opencontainers/distribution-spec/conformance
module kpaas.test/oci-conformance

go 1.24.0

tool github.com/opencontainers/distribution-spec/conformance

require (
	github.com/goccy/go-yaml v1.18.0 // indirect
	github.com/opencontainers/distribution-spec/conformance v0.0.0-20260831232431-97274622c111 // indirect
	github.com/opencontainers/distribution-spec/specs-go v0.0.0-20240926185104-8376368dd8aa // indirect
	github.com/opencontainers/go-digest v1.0.0 // indirect
	github.com/opencontainers/image-spec v1.1.1 // indirect
)
