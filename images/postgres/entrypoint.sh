#!/bin/sh
# First start of a lab: set its generated passwords and create the application role and
# database (single-user mode, no network). Later starts (restart scenarios) reuse the data.
set -eu
. /etc/lab/postgres.env
if [ ! -e "$PGDATA/lab-initialised" ]; then
    postgres --single -D "$PGDATA" postgres >/dev/null <<SQL
ALTER ROLE postgres PASSWORD '$LAB_SUPERUSER_PASSWORD';
CREATE ROLE "$LAB_DB_USER" LOGIN PASSWORD '$LAB_DB_PASSWORD';
CREATE DATABASE "$LAB_DB_NAME" OWNER "$LAB_DB_USER";
SQL
    touch "$PGDATA/lab-initialised"
    echo "lab-postgres: created database $LAB_DB_NAME for $LAB_DB_USER"
fi
exec postgres -D "$PGDATA"
