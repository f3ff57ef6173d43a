#!/bin/sh
# First start: initdb with the lab's generated password, then create the application role
# and database. Later starts (restart scenarios) reuse the data directory as it is.
set -eu
. /etc/lab/postgres.env
if [ ! -s "$PGDATA/PG_VERSION" ]; then
    pwfile=$(mktemp)
    printf '%s\n' "$LAB_SUPERUSER_PASSWORD" > "$pwfile"
    initdb -D "$PGDATA" -U postgres --pwfile="$pwfile" --auth-local=peer --auth-host=scram-sha-256 \
        --encoding=UTF8 --locale=C.UTF-8 >/dev/null
    rm -f "$pwfile"
    echo "host all all 0.0.0.0/0 scram-sha-256" >> "$PGDATA/pg_hba.conf"
    cat /etc/lab/postgresql.conf >> "$PGDATA/postgresql.conf"
    postgres --single -D "$PGDATA" postgres >/dev/null <<SQL
CREATE ROLE "$LAB_DB_USER" LOGIN PASSWORD '$LAB_DB_PASSWORD';
CREATE DATABASE "$LAB_DB_NAME" OWNER "$LAB_DB_USER";
SQL
    echo "lab-postgres: initialised database $LAB_DB_NAME for $LAB_DB_USER"
fi
exec postgres -D "$PGDATA"
