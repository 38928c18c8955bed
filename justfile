# kpaas-appliance tasks. `just setup` once on a fresh machine (CI does it).

export CARGO_TERM_COLOR := "never"

default: test

# Install the Debian packages the real-peer tests use, and the arm64 fixture.
setup:
    #!/usr/bin/env bash
    set -euo pipefail
    fx="${KPAAS_FIXTURES_DIR:-/var/cache/kpaas-fixtures}"
    # The kit's Kubernetes is setup's longest compile and needs nothing apt
    # brings (no cgo): it compiles while the packages download and unpack.
    command -v go >/dev/null || export PATH="/usr/local/go/bin:$PATH"
    mkdir -p "$fx/go"
    tests/go/build.sh "$fx" kubernetes > "$fx/go/kubernetes.log" 2>&1 &
    k8s=$!
    pkgs="docker-registry apache2-utils skopeo busybox-static nginx-light openssl zstd file ca-certificates containerd runc podman conmon catatonit mmdebstrap ovmf grub-efi-amd64-bin grub-efi-amd64-signed shim-signed sbsigntool grub-pc-bin grub-common xorriso mtools dosfstools e2fsprogs fdisk cpio cloud-init gcc libc6-dev binutils"
    missing=$(for p in $pkgs; do dpkg -s "$p" >/dev/null 2>&1 || echo "$p"; done)
    if [ -n "$missing" ]; then
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing
    fi
    # From bookworm-backports, through a private source list (/etc/apt is
    # untouched): qemu (the machine's qemu-utils comes from there and blocks
    # bookworm's qemu), and e2fsprogs >= 1.47.1, whose `mkfs.ext4 -d` clamps
    # every inode time to SOURCE_DATE_EPOCH (reproducible images).
    bpo=""
    command -v qemu-system-x86_64 >/dev/null || bpo="qemu-system-x86"
    # qemu-img (qcow2 images, test disks): a machine may come without it.
    command -v qemu-img >/dev/null || bpo="$bpo qemu-utils"
    dpkg --compare-versions "$(dpkg-query -W -f='${Version}' e2fsprogs)" ge 1.47.1 || bpo="$bpo e2fsprogs"
    if [ -n "$bpo" ]; then
        mkdir -p "$fx/apt-bpo/lists/partial"
        printf 'deb http://deb.debian.org/debian bookworm main\ndeb http://deb.debian.org/debian bookworm-backports main\n' > "$fx/apt-bpo/sources.list"
        o="-o Dir::Etc::sourcelist=$fx/apt-bpo/sources.list -o Dir::Etc::sourceparts=- -o Dir::State::lists=$fx/apt-bpo/lists -o DPkg::Lock::Timeout=600"
        apt-get $o update -qq
        DEBIAN_FRONTEND=noninteractive apt-get $o install -y -qq --no-install-recommends -t bookworm-backports $bpo
    fi
    tests/fetch-arm64-busybox.sh "$fx/arm64"
    # Real Helm (SDK v4 behind helm-python-sdk) and an SPDX validator, for interop tests.
    if [ ! -x "$fx/venv/bin/pyspdxtools" ] || ! "$fx/venv/bin/python" -c 'import helm_python' 2>/dev/null; then
        python3 -m venv "$fx/venv"
        "$fx/venv/bin/pip" install --quiet helm-python-sdk==0.2.2 spdx-tools==0.8.5
    fi
    # The debian-12 base rootfs, built once from Debian's archive and cached:
    # image tests then run with --offline and never reach the network.
    cargo build -q -p kpaas-builder -p kpaas-testkit
    ./target/debug/kpaas-builder rootfs --profile images/debian-12.yaml --cache-dir "$fx/cache"
    # The bare-metal profile's (generic kernel, firmware): the installer test's.
    ./target/debug/kpaas-builder rootfs --profile images/debian-12-metal.yaml --cache-dir "$fx/cache"
    # The test kit's Kubernetes: upstream programs built from their Go modules
    # at K-PaaS 1.4.1's versions (cached per component, version and Go
    # version: a warm setup builds nothing), then their images.
    wait "$k8s" || { cat "$fx/go/kubernetes.log"; exit 1; }
    cat "$fx/go/kubernetes.log"
    tests/go/build.sh "$fx"
    tests/go/debian-iptables.sh "$fx"
    tests/go/debian-registry.sh "$fx"
    tests/go/debian-mariadb.sh "$fx"
    ./target/debug/kpaas-kit images

build:
    cargo build --workspace

# Build the demo bundle from loopback servers (no internet), verify and list it.
demo: build
    ./target/debug/kpaas-demo --builder ./target/debug/kpaas-builder --out target/demo

# Every test tier this machine supports. Every test binary runs (a failure in
# one does not hide the others); at the end, every skipped tier and why.
test:
    #!/usr/bin/env bash
    set -uo pipefail
    mkdir -p target
    log="$PWD/target/skipped.log"
    : > "$log"
    KPAAS_SKIP_LOG="$log" cargo test --workspace --no-fail-fast
    rc=$?
    if [ -s "$log" ]; then
        echo "== $(wc -l < "$log") test tier(s) SKIPPED (\`just setup\` installs the missing peers):"
        sort "$log" | sed 's/^/   /'
    else
        echo "== no test skipped a tier"
    fi
    exit $rc

lint:
    cargo fmt --all -- --check
    cargo clippy --workspace --all-targets -- -D warnings

# Bundle ~20 images with shared layers: us vs skopeo, warm re-run, verify vs sha256sum.
bench-bundle:
    cargo build --release -p kpaas-builder -p kpaas-testkit
    ./target/release/kpaas-bench-bundle --builder ./target/release/kpaas-builder

# Seed registry vs docker-registry (read-only) under concurrent pulls.
bench-seed:
    cargo build --release -p kpaas-builder -p kpaas-agent -p kpaas-testkit
    ./target/release/kpaas-bench-seed --builder ./target/release/kpaas-builder --agent ./target/release/kpaas-agent

# Image build stages from a warm rootfs cache, and power-on to "seed registry ready".
bench-image:
    cargo build --release -p kpaas-builder -p kpaas-agent -p kpaas-testkit
    ./target/release/kpaas-bench-image --builder ./target/release/kpaas-builder

# Master + worker powered on together (TCG, 2 vCPUs): to a two-node Ready
# cluster and to worker joined, median of three, with each step's time.
bench-cluster:
    cargo build --release -p kpaas-builder -p kpaas-agent -p kpaas-testkit
    ./target/release/kpaas-bench-cluster

# Power-on to the demo platform ready (two TCG nodes), per wave, and the
# Harbor hand-off's push rate against the seed's read rate (same run).
bench-platform:
    cargo build --release -p kpaas-builder -p kpaas-agent -p kpaas-testkit
    ./target/release/kpaas-bench-platform

# Day 2 is a phase of bench-platform (the same lab, before its limit takes
# it apart): node add on the master, a third guest booted with its seed.
bench-grow: bench-platform

# The update is a phase of bench-platform too (delta vs full bundle bytes,
# the update's apply vs the first boot's deploy of the same component).
bench-update: bench-platform

bench: bench-bundle bench-seed bench-image bench-cluster bench-platform
