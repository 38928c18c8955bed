#!/usr/bin/env bash
# Unpacks Debian's iptables and conntrack, with the libraries they load, into
# FIXTURES_DIR/debian-iptables/root: the userland of the test kit's kube-proxy
# image (kube-proxy execs iptables-restore and conntrack inside its container;
# upstream bases that image on distroless-iptables, Debian too).
# Usage: tests/go/debian-iptables.sh FIXTURES_DIR
set -euo pipefail
fx="${1:?usage: debian-iptables.sh FIXTURES_DIR}"
out="$fx/debian-iptables"
[ -e "$out/.done" ] && exit 0
pkgs="iptables conntrack libip4tc2 libip6tc2 libxtables12 libmnl0 libnetfilter-conntrack3
      libnfnetlink0 libnftnl11 libnetfilter-cthelper0 libnetfilter-queue1 libc6 libgcc-s1 netbase"
rm -rf "$out.tmp"
mkdir -p "$out.tmp/debs" "$out.tmp/root"
(cd "$out.tmp/debs" && apt-get download -qq -o APT::Sandbox::User=root $pkgs) || {
    apt-get update -qq
    (cd "$out.tmp/debs" && apt-get download -qq -o APT::Sandbox::User=root $pkgs)
}
for d in "$out.tmp"/debs/*.deb; do dpkg-deb -x "$d" "$out.tmp/root"; done
rm -rf "$out.tmp/root/usr/share/doc" "$out.tmp/root/usr/share/man" \
    "$out.tmp/root/usr/share/locale" "$out.tmp/root/usr/share/lintian"
# What update-alternatives would do in a real install: Debian 12's default is
# the nft backend, the one the node's own iptables (and kubelet) use.
for t in iptables ip6tables; do
    for s in "" -save -restore; do
        ln -sfn "xtables-nft-multi" "$out.tmp/root/usr/sbin/$t$s"
    done
done
mkdir -p "$out.tmp/root/run"
ls "$out.tmp/debs" > "$out.tmp/packages.txt"
rm -rf "$out.tmp/debs"
touch "$out.tmp/.done"
rm -rf "$out"
mv "$out.tmp" "$out"
