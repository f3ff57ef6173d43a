#!/bin/sh
# First start of a lab: set its generated passwords and, unless the image already has them
# (lab-baked: "<user> <database>"), create the application role and database (single-user
# mode, no network). Later starts (restart scenarios) reuse the data.
set -eu
. /etc/lab/postgres.env
if [ ! -e "$PGDATA/lab-initialised" ]; then
    if [ "$(cat "$PGDATA/lab-baked" 2>/dev/null)" = "$LAB_DB_USER $LAB_DB_NAME" ]; then
        create=""
    else
        create="CREATE ROLE \"$LAB_DB_USER\" LOGIN;
CREATE DATABASE \"$LAB_DB_NAME\" OWNER \"$LAB_DB_USER\";"
    fi
    postgres --single -D "$PGDATA" postgres >/dev/null <<SQL
$create
ALTER ROLE postgres PASSWORD '$LAB_SUPERUSER_PASSWORD';
ALTER ROLE "$LAB_DB_USER" PASSWORD '$LAB_DB_PASSWORD';
SQL
    touch "$PGDATA/lab-initialised"
    echo "lab-postgres: set the passwords of postgres and $LAB_DB_USER (database $LAB_DB_NAME)"
fi
exec postgres -D "$PGDATA"
