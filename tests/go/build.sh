#!/usr/bin/env bash
# Builds the test kit's real upstream programs from their Go modules, at the
# versions K-PaaS 1.4.1 pins, into the fixtures cache:
#   $FX/go/<component>-<version>-<go version>/bin/...
# A finished build is never redone (a warm `just setup` builds nothing); one
# that was interrupted leaves only a .tmp directory, removed at the next try.
#
# Usage: tests/go/build.sh FIXTURES_DIR [COMPONENT...]   (default: all)
# Prints, per component, "built|cached <dir> <seconds>".
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
fx="${1:?usage: build.sh FIXTURES_DIR [COMPONENT...]}"
shift
# Go is only a build tool here: never fetch another toolchain, build from the
# committed go.sum only (-mod=readonly), and keep paths out of the binaries.
export GOTOOLCHAIN=local GOFLAGS="-mod=readonly -buildvcs=false" CGO_ENABLED=0
gov="$(go env GOVERSION)"

# The -X flags are each upstream's own release stamping (its Makefile or
# release script); each wrapper's go.mod says where a version deviates.
k8s_ld() {
    local ld="-s -w"
    for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
        ld="$ld -X $p.gitVersion=v1.25.6 -X $p.gitMajor=1 -X $p.gitMinor=25"
        ld="$ld -X $p.gitCommit=ff2c119726cc1f8926fb0585c74b25921e866a28"
        ld="$ld -X $p.gitTreeState=clean -X $p.buildDate=2023-01-18T15:51:25Z"
    done
    echo "$ld"
}

start() { # out: false (after linking it) when already built, else a fresh out.tmp
    if [ -e "$1/.done" ]; then
        link "$1"
        echo "cached $1 0"
        return 1
    fi
    rm -rf "$1.tmp"
    mkdir -p "$1.tmp/bin"
}

build_go() { # name version moddir ldflags pkg...
    local name=$1 version=$2 moddir=$3 ld=$4
    shift 4
    local out="$fx/go/$name-$version-$gov"
    start "$out" || return 0
    local t0=$SECONDS
    # NAME=PKG builds PKG as bin/NAME (a module path ending in /v3 would
    # otherwise name the binary "v3"'s parent); plain packages share one go
    # build, so common packages compile once.
    local plain=()
    for p in "$@"; do
        case "$p" in
        *=*) (cd "$here/$moddir" && go build -trimpath -ldflags "$ld" -o "$out.tmp/bin/${p%%=*}" "${p#*=}") ;;
        *) plain+=("$p") ;;
        esac
    done
    if [ ${#plain[@]} -gt 0 ]; then
        (cd "$here/$moddir" && go build -trimpath -ldflags "$ld" -o "$out.tmp/bin/" "${plain[@]}")
    fi
    finish "$out" $((SECONDS - t0))
}

finish() { # out seconds: atomically publish a finished build
    date -u +%FT%TZ > "$1.tmp/.done"
    rm -rf "$1"
    mv "$1.tmp" "$1"
    link "$1"
    echo "built $1 $2"
}

link() { # every program of a finished build, linked from $fx/go/bin
    mkdir -p "$fx/go/bin"
    for p in "$1"/bin/*; do ln -sfn "$p" "$fx/go/bin/$(basename "$p")"; done
}

build_pause() {
    local out="$fx/go/pause-3.8-gcc$(gcc -dumpfullversion)"
    start "$out" || return 0
    local t0=$SECONDS
    # pause.c ships in the kubernetes module (build/pause/linux); upstream's
    # Makefile builds it the same way, static and small.
    local src
    src="$(cd "$here/kubernetes" && go list -m -f '{{.Dir}}' k8s.io/kubernetes)/build/pause/linux/pause.c"
    gcc -Os -Wall -Werror -static -DVERSION=v3.8-kpaas -o "$out.tmp/bin/pause" "$src"
    strip "$out.tmp/bin/pause"
    finish "$out" $((SECONDS - t0))
}

want() { [ ${#selected[@]} -eq 0 ] || printf '%s\n' "${selected[@]}" | grep -qx "$1"; }
selected=("$@")

if want kubernetes; then
    # `providerless`: upstream's own build tag that leaves out the in-tree
    # cloud providers (AWS, Azure, GCE, vSphere, OpenStack), which an
    # on-prem site never uses: 40% less source to compile (a fresh setup's
    # longest step) and smaller control-plane images in every test guest.
    GOFLAGS="$GOFLAGS -tags=providerless" build_go kubernetes-providerless v1.25.6 kubernetes "$(k8s_ld)" \
        k8s.io/kubernetes/cmd/kubeadm k8s.io/kubernetes/cmd/kubelet \
        k8s.io/kubernetes/cmd/kubectl k8s.io/kubernetes/cmd/kube-apiserver \
        k8s.io/kubernetes/cmd/kube-controller-manager \
        k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kube-proxy
fi
if want pause; then
    build_pause
fi
if want cni-plugins; then
    # The plugins a bridge network between nodes needs (upstream's tarball has
    # more; these are the ones the demo's CNI configuration uses).
    p=github.com/containernetworking/plugins
    build_go cni-plugins v1.2.0 cni-plugins \
        "-s -w -X $p/pkg/utils/buildversion.BuildVersion=v1.2.0" \
        $p/plugins/main/bridge $p/plugins/main/loopback \
        $p/plugins/ipam/host-local $p/plugins/meta/portmap
fi
if want flannel; then
    # flanneld with cgo, as upstream builds it on amd64 (flannel/go.mod says
    # why); the `flannel` CNI plugin from containernetworking/plugins v0.9.1
    # (flannel-cni-plugin/go.mod says why not flannel-io/cni-plugin v1.1.2).
    CGO_ENABLED=1 build_go flannel v0.22.0 flannel \
        '-s -w -X github.com/flannel-io/flannel/pkg/version.Version=v0.22.0 -extldflags "-static"' \
        flanneld=github.com/flannel-io/flannel
    build_go flannel-cni-plugin v0.9.1 flannel-cni-plugin \
        "-s -w -X github.com/containernetworking/plugins/pkg/utils/buildversion.BuildVersion=v0.9.1" \
        flannel=github.com/containernetworking/plugins/plugins/meta/flannel
fi
if want etcd; then
    # The etcd main is the server module's root package (its root module
    # replaces sub-modules with local paths, so it cannot be built as is).
    build_go etcd v3.5.6 etcd "-s -w -X go.etcd.io/etcd/api/v3/version.GitSHA=cecbe35ce" \
        etcd=go.etcd.io/etcd/server/v3 etcdctl=go.etcd.io/etcd/etcdctl/v3
fi
if want coredns; then
    build_go coredns v1.9.3 coredns "-s -w -X github.com/coredns/coredns/coremain.GitCommit=45b0a11" \
        coredns=github.com/coredns/coredns
fi
if want crictl; then
    # Nearest version: see crictl/go.mod (the proxy serves no cri-tools 1.2x).
    build_go crictl v1.30.0 crictl \
        "-s -w -X github.com/kubernetes-sigs/cri-tools/pkg/version.Version=v1.30.0" \
        github.com/kubernetes-sigs/cri-tools/cmd/crictl
fi
if want helm; then
    v=helm.sh/helm/v3/internal/version
    build_go helm v3.10.3 helm \
        "-s -w -X $v.version=v3.10.3 -X $v.metadata= -X $v.gitCommit=835b7334cfe2e5e27870ab3ed4135f136eecc704 -X $v.gitTreeState=clean
         -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor=25
         -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=25" \
        helm.sh/helm/v3/cmd/helm
fi
if want kustomize; then
    v=sigs.k8s.io/kustomize/api/provenance
    build_go kustomize v5.0.0 kustomize \
        "-s -w -X $v.version=kustomize/v5.0.0 -X $v.buildDate=2023-02-02T16:32:41Z" \
        kustomize=sigs.k8s.io/kustomize/kustomize/v5
fi
if want kwok; then
    # A test tool only (fake nodes for the loopback tier); see kwok/go.mod.
    c=sigs.k8s.io/kwok/pkg/consts
    build_go kwok v0.4.0 kwok \
        "-s -w -X $c.Version=v0.4.0 -X $c.KubeVersion=v1.28.0 -X $c.ImagePrefix=registry.k8s.io/kwok -X $c.PreRelease=GA" \
        sigs.k8s.io/kwok/cmd/kwok
fi
if want vault; then
    # Without the web UI (-tags ui needs a yarn build); see vault/go.mod.
    v=github.com/hashicorp/vault/sdk/version
    build_go vault v1.11.3 vault \
        "-s -w -X $v.Version=1.11.3 -X $v.GitCommit=17250b25303c6418c283c95b1d5a9c9f16174fe8 -X $v.BuildDate=2022-08-26T17:27:10Z" \
        vault=github.com/hashicorp/vault
fi
if want local-path-provisioner; then
    # Nearest version the proxy serves; see local-path-provisioner/go.mod.
    build_go local-path-provisioner v0.0.30 local-path-provisioner \
        "-s -w -X main.VERSION=v0.0.30" \
        local-path-provisioner=github.com/rancher/local-path-provisioner
fi
if want oci-conformance; then
    # A test tool only: the distribution spec's conformance suite, run
    # against the seed registry (see oci-conformance/go.mod).
    build_go oci-conformance v0.0.0-20260831232431 oci-conformance "-s -w" \
        oci-conformance=github.com/opencontainers/distribution-spec/conformance
fi
