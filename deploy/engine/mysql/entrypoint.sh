#!/bin/sh
# The mysql image's start-up contract, over MariaDB (see the Dockerfile).
set -eu

# VAR from $VAR or from the file named by ${VAR}_FILE, not both.
file_env() {
  var="$1"
  eval "value=\${$var:-}; file=\${${var}_FILE:-}"
  if [ -n "$value" ] && [ -n "$file" ]; then
    echo "error: both $var and ${var}_FILE are set" >&2
    exit 1
  fi
  if [ -n "$file" ]; then
    value="$(cat "$file")"
  fi
  eval "$var=\$value"
}

# SQL string literal contents: backslashes and quotes escaped.
sql_escape() {
  printf '%s' "$1" | sed -e 's/\\/\\\\/g' -e "s/'/\\\\'/g"
}

if [ "${1:-mysqld}" = mysqld ] || [ "${1#-}" != "${1:-}" ]; then
  [ "${1:-}" = mysqld ] && shift
  datadir=/var/lib/mysql
  if [ ! -d "$datadir/mysql" ]; then
    file_env MYSQL_ROOT_PASSWORD
    file_env MYSQL_PASSWORD
    MYSQL_DATABASE="${MYSQL_DATABASE:-}"
    MYSQL_USER="${MYSQL_USER:-}"
    if [ -z "$MYSQL_ROOT_PASSWORD" ] && [ -z "${MYSQL_ALLOW_EMPTY_PASSWORD:-}" ]; then
      echo "error: database is uninitialized and MYSQL_ROOT_PASSWORD is not set" >&2
      exit 1
    fi
    echo "first start: initialising $datadir"
    chown mysql:mysql "$datadir"
    mariadb-install-db --user=mysql --datadir="$datadir" --skip-test-db \
      --auth-root-authentication-method=normal >/dev/null
    mariadbd --user=mysql --datadir="$datadir" --skip-networking --socket=/run/mysqld/init.sock &
    pid=$!
    i=0
    until mariadb-admin --socket=/run/mysqld/init.sock ping >/dev/null 2>&1; do
      i=$((i + 1))
      [ "$i" -lt 60 ] || { echo "error: the server did not start for initialisation" >&2; exit 1; }
      sleep 1
    done
    root="$(sql_escape "$MYSQL_ROOT_PASSWORD")"
    {
      echo "SET @@SESSION.SQL_LOG_BIN=0;"
      echo "DELETE FROM mysql.global_priv WHERE user NOT IN ('mysql.sys', 'mariadb.sys', 'root') OR host NOT IN ('localhost');"
      echo "ALTER USER 'root'@'localhost' IDENTIFIED BY '$root';"
      echo "CREATE USER 'root'@'%' IDENTIFIED BY '$root';"
      echo "GRANT ALL ON *.* TO 'root'@'%' WITH GRANT OPTION;"
      if [ -n "$MYSQL_DATABASE" ]; then
        echo "CREATE DATABASE IF NOT EXISTS \`$MYSQL_DATABASE\`;"
      fi
      if [ -n "$MYSQL_USER" ] && [ -n "$MYSQL_PASSWORD" ]; then
        echo "CREATE USER '$MYSQL_USER'@'%' IDENTIFIED BY '$(sql_escape "$MYSQL_PASSWORD")';"
        [ -z "$MYSQL_DATABASE" ] || echo "GRANT ALL ON \`$MYSQL_DATABASE\`.* TO '$MYSQL_USER'@'%';"
      fi
      echo "FLUSH PRIVILEGES;"
    } | mariadb --socket=/run/mysqld/init.sock -uroot
    MYSQL_PWD="$MYSQL_ROOT_PASSWORD" mariadb-admin --socket=/run/mysqld/init.sock -uroot shutdown
    wait "$pid"
    echo "first start: done; starting the server"
  fi
  exec mariadbd --user=mysql --datadir="$datadir" --bind-address=0.0.0.0 --skip-name-resolve "$@"
fi
exec "$@"
