#!/bin/sh
# Entrypoint of the test image baas-test/mariadb:dev (Debian bookworm's mariadb-server and
# mariadb-client), for end-to-end tests of backup commands such as
# `mysqldump -uroot -psecure --all-databases`.
#
# On the first start (no $datadir/mysql yet, as on an empty PVC mounted at /var/lib/mysql) it
# initialises the data directory with mariadb-install-db and, when MARIADB_ROOT_PASSWORD (or
# MYSQL_ROOT_PASSWORD) is set, gives root that password, for root@localhost (next to the unix
# socket login) and root@'%'; MARIADB_DATABASE (or MYSQL_DATABASE) is created when set. Then
# it runs mariadbd in the foreground as PID 1. It starts as root in the container and
# mariadbd drops to the mysql user. Arguments starting with "-" go to mariadbd; any other
# command is run instead of it.
set -eu

if [ "$#" -gt 0 ] && [ "${1#-}" = "$1" ]; then
  exec "$@"
fi

datadir=/var/lib/mysql
# The first settings are made through a socket of their own, so that clients waiting for the
# server (mysql -uroot ... on the default socket) only get in once it runs for good.
init_socket=/run/mysqld/mysqld-init.sock
password=${MARIADB_ROOT_PASSWORD:-${MYSQL_ROOT_PASSWORD:-}}
database=${MARIADB_DATABASE:-${MYSQL_DATABASE:-}}

log() { echo "mariadb-entrypoint: $*" >&2; }

# quoted STRING: STRING as an SQL string literal
quoted() { printf "'%s'" "$(printf '%s' "$1" | sed -e 's/\\/\\\\/g' -e "s/'/''/g")"; }

as_root=false
[ "$(id -u)" = 0 ] && as_root=true

mkdir -p /run/mysqld "$datadir"
if $as_root; then
  chown mysql:mysql /run/mysqld
fi

if [ ! -d "$datadir/mysql" ]; then
  log "initialising $datadir"
  if $as_root; then
    chown mysql:mysql "$datadir"
  fi
  # --cross-bootstrap: grants for "localhost", without looking up the container's host name
  mariadb-install-db --user=mysql --datadir="$datadir" --skip-test-db --cross-bootstrap \
    --auth-root-authentication-method=socket >/dev/null
  if [ -z "$password" ]; then
    log "MARIADB_ROOT_PASSWORD is not set: root logs in through the unix socket only"
  fi
  if [ -n "$password" ] || [ -n "$database" ]; then
    # A server without networking, for the first settings only.
    mariadbd --user=mysql --datadir="$datadir" --skip-networking --skip-name-resolve --socket="$init_socket" &
    pid=$!
    tries=0
    until mariadb-admin --socket="$init_socket" -uroot ping >/dev/null 2>&1; do
      if ! kill -0 "$pid" 2>/dev/null; then
        log "the first start of mariadbd failed"
        exit 1
      fi
      tries=$((tries + 1))
      if [ "$tries" -ge 120 ]; then
        log "mariadbd did not answer within 60 s"
        kill "$pid"
        exit 1
      fi
      sleep 0.5
    done
    {
      if [ -n "$password" ]; then
        pw=$(quoted "$password")
        echo "ALTER USER 'root'@'localhost' IDENTIFIED VIA unix_socket OR mysql_native_password USING PASSWORD($pw);"
        echo "CREATE USER 'root'@'%' IDENTIFIED BY $pw;"
        echo "GRANT ALL PRIVILEGES ON *.* TO 'root'@'%' WITH GRANT OPTION;"
      fi
      if [ -n "$database" ]; then
        echo "CREATE DATABASE IF NOT EXISTS \`$(printf '%s' "$database" | sed 's/`/``/g')\`;"
      fi
      echo "FLUSH PRIVILEGES;"
    } | mariadb --socket="$init_socket" -uroot
    mariadb-admin --socket="$init_socket" -uroot shutdown
    wait "$pid" || true
    if [ -n "$password" ]; then
      log "root password set"
    fi
  fi
fi

# --skip-name-resolve: clients are known by address; there is no DNS to ask for their names
exec mariadbd --user=mysql --datadir="$datadir" --bind-address=0.0.0.0 --skip-name-resolve "$@"
