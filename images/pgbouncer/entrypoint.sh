#!/bin/sh
# PgBouncer refuses to run as root and its userlist must be readable by it alone (0600):
# place the lab's files with the right owner, then drop privileges without a shell in between.
set -eu
install -o postgres -g postgres -m 0600 /etc/lab/userlist.txt /etc/pgbouncer/userlist.txt
install -o postgres -g postgres -m 0644 /etc/lab/pgbouncer.ini /etc/pgbouncer/pgbouncer.ini
install -d -o postgres -g postgres /var/run/postgresql
exec setpriv --reuid=postgres --regid=postgres --init-groups pgbouncer /etc/pgbouncer/pgbouncer.ini
