//go:build tools
// +build tools

// Package tools pins the upstream command this wrapper builds, so that
// `go mod tidy` keeps its module and go.sum stays complete.
package tools

import (
	_ "github.com/rancher/local-path-provisioner"
)
