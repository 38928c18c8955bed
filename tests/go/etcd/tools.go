//go:build tools
// +build tools

// Package tools pins the upstream commands this wrapper builds, so that
// `go mod tidy` keeps their modules and go.sum stays complete.
package tools

import (
	_ "go.etcd.io/etcd/etcdctl/v3"
	_ "go.etcd.io/etcd/server/v3"
)
