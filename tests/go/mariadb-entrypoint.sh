#!/bin/sh
# Entrypoint of the test kit's MariaDB image (tests/go/debian-mariadb.sh's
# tree + busybox): initialises /var/lib/mysql on first start, with the root
# password from MARIADB_ROOT_PASSWORD for root@localhost and root@'%', then
# execs mariadbd listening on 0.0.0.0:3306. Arguments are appended to
# mariadbd's (later options win). Run as root, it chowns the data and socket
# directories and drops to the mysql user; run as any other user, it runs as
# that user.
set -eu
datadir=/var/lib/mysql
user=
if [ "$(id -u)" = 0 ]; then
    mkdir -p "$datadir" /run/mysqld
    chown mysql:mysql "$datadir" /run/mysqld
    user=--user=mysql
fi
if [ ! -d "$datadir/mysql" ]; then
    : "${MARIADB_ROOT_PASSWORD:?MARIADB_ROOT_PASSWORD must be set to initialise $datadir}"
    # As an SQL string literal: double backslashes, double quotes.
    pw=$(printf '%s' "$MARIADB_ROOT_PASSWORD" | sed -e 's/\\/\\\\/g' -e "s/'/''/g")
    sql=$(mktemp)
    # Bootstrap mode starts with the grant tables unloaded: load them first.
    cat > "$sql" <<EOF
FLUSH PRIVILEGES;
ALTER USER 'root'@'localhost' IDENTIFIED BY '$pw';
CREATE USER 'root'@'%' IDENTIFIED BY '$pw';
GRANT ALL PRIVILEGES ON *.* TO 'root'@'%' WITH GRANT OPTION;
EOF
    # --force: go on when the host name does not resolve (no /etc/hosts).
    if ! /usr/bin/mariadb-install-db $user --datadir="$datadir" --skip-test-db --force \
            --extra-file="$sql"; then
        rm -f "$sql"
        rm -rf "${datadir:?}"/* "$datadir"/.[!.]*
        echo "mariadb-entrypoint: initialising $datadir failed" >&2
        exit 1
    fi
    rm -f "$sql"
fi
exec /usr/sbin/mariadbd $user --datadir="$datadir" --skip-networking=0 \
    --bind-address=0.0.0.0 --port=3306 --skip-name-resolve "$@"
