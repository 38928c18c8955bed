#!/usr/bin/env bash
# Unpacks Debian's MariaDB server (mariadbd, mariadb-install-db with the SQL
# files and error messages it bootstraps from, the mariadb client), with the
# libraries they load, into FIXTURES_DIR/debian-mariadb/root: the userland of
# the test kit's MariaDB image, which adds Debian's static busybox, an
# /etc/passwd and /etc/group with the mysql user (uid 999) and
# tests/go/mariadb-entrypoint.sh. mariadb-install-db is a POSIX sh script
# (it needs my_print_defaults and resolveip, both here), so no perl.
# Usage: tests/go/debian-mariadb.sh FIXTURES_DIR
set -euo pipefail
fx="${1:?usage: debian-mariadb.sh FIXTURES_DIR}"
out="$fx/debian-mariadb"
[ -e "$out/.done" ] && exit 0
pkgs="mariadb-server-core mariadb-client-core libc6 libgcc-s1 libstdc++6 zlib1g libssl3
      libpcre2-8-0 libcrypt1 liburing2 libaio1 libnuma1 libsystemd0 libcap2 libgcrypt20
      libgpg-error0 liblz4-1 liblzma5 libzstd1 libedit2 libbsd0 libmd0 libncurses6 libtinfo6"
rm -rf "$out.tmp"
mkdir -p "$out.tmp/debs" "$out.tmp/root"
(cd "$out.tmp/debs" && apt-get download -qq -o APT::Sandbox::User=root $pkgs) || {
    apt-get update -qq
    (cd "$out.tmp/debs" && apt-get download -qq -o APT::Sandbox::User=root $pkgs)
}
for d in "$out.tmp"/debs/*.deb; do dpkg-deb -x "$d" "$out.tmp/root"; done
rm -rf "$out.tmp/root/usr/share/doc" "$out.tmp/root/usr/share/man" \
    "$out.tmp/root/usr/share/locale" "$out.tmp/root/usr/share/lintian"
# The server's runtime directories (the socket and pid file go to
# /run/mysqld, Debian's compiled-in default); the entrypoint chowns them.
mkdir -p "$out.tmp/root/run/mysqld" "$out.tmp/root/var/lib/mysql" "$out.tmp/root/tmp"
chmod 1777 "$out.tmp/root/tmp"
ls "$out.tmp/debs" > "$out.tmp/packages.txt"
rm -rf "$out.tmp/debs"
touch "$out.tmp/.done"
rm -rf "$out"
mv "$out.tmp" "$out"
