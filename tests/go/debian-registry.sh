#!/usr/bin/env bash
# Unpacks Debian 12's docker-registry (distribution 2.8.2, the registry
# Harbor runs inside) with the C library it loads into
# FIXTURES_DIR/debian-registry/root: the userland of the demo platform's
# in-cluster registry image. (distribution 2.8 cannot be built from the Go
# module proxy here: it predates Go modules and one of its dependencies,
# rsc.io/letsencrypt, is refused by the proxy; Debian's build is the same
# release.)
# Usage: tests/go/debian-registry.sh FIXTURES_DIR
set -euo pipefail
. "$(dirname "$0")/debian-debs.sh"
fx="${1:?usage: debian-registry.sh FIXTURES_DIR}"
out="$fx/debian-registry"
[ -e "$out/.done" ] && exit 0
pkgs="docker-registry libc6 libgcc-s1"
debs_unpack "$out" $pkgs
# Only what the registry runs: the binary, the loader and libc; the
# package's systemd unit, config and docs are not the image's.
rm -rf "$out.tmp/root/usr/share" "$out.tmp/root/etc" "$out.tmp/root/lib/systemd" \
    "$out.tmp/root/usr/lib/systemd" "$out.tmp/root/usr/libexec" "$out.tmp/root/usr/sbin" \
    "$out.tmp/root/usr/lib/x86_64-linux-gnu/gconv" "$out.tmp/root/usr/lib/x86_64-linux-gnu/audit" \
    "$out.tmp/root/var"
find "$out.tmp/root/usr/bin" -type f ! -name docker-registry -delete
debs_done "$out"
