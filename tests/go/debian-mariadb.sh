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
. "$(dirname "$0")/debian-debs.sh"
fx="${1:?usage: debian-mariadb.sh FIXTURES_DIR}"
out="$fx/debian-mariadb"
[ -e "$out/.done" ] && exit 0
pkgs="mariadb-server-core mariadb-client-core libc6 libgcc-s1 libstdc++6 zlib1g libssl3
      libpcre2-8-0 libcrypt1 liburing2 libaio1 libnuma1 libsystemd0 libcap2 libgcrypt20
      libgpg-error0 liblz4-1 liblzma5 libzstd1 libedit2 libbsd0 libmd0 libncurses6 libtinfo6"
debs_unpack "$out" $pkgs
# The server's runtime directories (the socket and pid file go to
# /run/mysqld, Debian's compiled-in default); the entrypoint chowns them.
mkdir -p "$out.tmp/root/run/mysqld" "$out.tmp/root/var/lib/mysql" "$out.tmp/root/tmp"
chmod 1777 "$out.tmp/root/tmp"
debs_done "$out"
