#!/usr/bin/env bash
# Fetches Debian's busybox-static for arm64 (real arm64 content for the
# multi-arch test image) into $1, with a private apt state so the system's
# dpkg architectures are left alone. Runs at setup, never inside a test.
set -euo pipefail
dest=${1:?usage: fetch-arm64-busybox.sh DEST_DIR}
[ -x "$dest/busybox" ] && exit 0
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work"/{etc/apt.conf.d,etc/preferences.d,state/lists/partial,cache/archives/partial}
cat > "$work/etc/apt.conf" <<CONF
APT::Architecture "arm64";
APT::Architectures { "arm64"; };
Dir::State "$work/state";
Dir::State::status "$work/state/status";
Dir::Cache "$work/cache";
Dir::Etc::SourceList "/etc/apt/sources.list";
Dir::Etc::SourceParts "/etc/apt/sources.list.d";
Dir::Etc::Parts "$work/etc/apt.conf.d";
Dir::Etc::Preferences "$work/etc/preferences.d";
CONF
touch "$work/state/status"
export APT_CONFIG="$work/etc/apt.conf"
apt-get -qq update
(cd "$work" && apt-get -qq download busybox-static:arm64)
dpkg-deb -x "$work"/busybox-static_*_arm64.deb "$work/x"
mkdir -p "$dest"
install -m 0755 "$work/x/bin/busybox" "$dest/busybox"
file "$dest/busybox" 2>/dev/null || true
