#!/usr/bin/env bash
# Unpacks Debian's iptables and conntrack, with the libraries they load, into
# FIXTURES_DIR/debian-iptables/root: the userland of the test kit's kube-proxy
# image (kube-proxy execs iptables-restore and conntrack inside its container;
# upstream bases that image on distroless-iptables, Debian too).
# Usage: tests/go/debian-iptables.sh FIXTURES_DIR
set -euo pipefail
. "$(dirname "$0")/debian-debs.sh"
fx="${1:?usage: debian-iptables.sh FIXTURES_DIR}"
out="$fx/debian-iptables"
[ -e "$out/.done" ] && exit 0
pkgs="iptables conntrack libip4tc2 libip6tc2 libxtables12 libmnl0 libnetfilter-conntrack3
      libnfnetlink0 libnftnl11 libnetfilter-cthelper0 libnetfilter-queue1 libc6 libgcc-s1 netbase"
debs_unpack "$out" $pkgs
# What update-alternatives would do in a real install: Debian 12's default is
# the nft backend, the one the node's own iptables (and kubelet) use.
for t in iptables ip6tables; do
    for s in "" -save -restore; do
        ln -sfn "xtables-nft-multi" "$out.tmp/root/usr/sbin/$t$s"
    done
done
mkdir -p "$out.tmp/root/run"
debs_done "$out"
