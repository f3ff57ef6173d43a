#!/bin/sh
# PgBouncer refuses to run as root and its userlist must be readable by it alone (0600):
# place the lab's files with the right owner, then drop privileges without a shell in between.
#
# Start gate: with /etc/lab/start-gate present (the lab's orchestrator adds it; compose does
# not), the first start of the container waits for SIGUSR2 before PgBouncer runs. The lab
# starts the container while PostgreSQL is still starting and signals it once PostgreSQL
# answers: PgBouncer itself never runs before that (a failed server login would make it
# refuse every client for server_login_retry), and the container's start is no longer on the
# critical path. The lab repeats the signal until PgBouncer answers: one sent before the trap
# below exists is ignored (PID 1 gets only signals it handles), and to a running PgBouncer
# SIGUSR2 means RESUME, which changes nothing unless it was paused (SIGUSR1 would PAUSE it).
# Later starts (restart scenarios) do not wait.
set -eu
opened=""
trap 'opened=1' USR2
install -o postgres -g postgres -m 0600 /etc/lab/userlist.txt /etc/pgbouncer/userlist.txt
install -o postgres -g postgres -m 0644 /etc/lab/pgbouncer.ini /etc/pgbouncer/pgbouncer.ini
install -d -o postgres -g postgres /var/run/postgresql
if [ -e /etc/lab/start-gate ] && [ ! -e /var/lib/lab-start-gate-opened ]; then
    while [ -z "$opened" ]; do
        # `wait` returns as soon as the trapped signal arrives.
        sleep 5 &
        wait $! || true
        kill $! 2>/dev/null || true
    done
    touch /var/lib/lab-start-gate-opened
fi
trap - USR2
exec setpriv --reuid=postgres --regid=postgres --init-groups pgbouncer /etc/pgbouncer/pgbouncer.ini
