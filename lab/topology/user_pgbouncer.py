"""The user's pgbouncer.ini (``[pgbouncer] ini``), made runnable in the lab (pure, no Docker).

The file is kept, except what points at a database or authenticates against it: each
``[databases]`` entry gets the lab's host, port, database and user; listen address and port,
``auth_file``, log and pid file are the lab's; the lab's admin user is added to
``admin_users``/``stats_users``. The userlist's credentials are the lab's own. What the lab
cannot provide is refused with the file, line and reason (``ConfigError``).
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lab.errors import ConfigError
from lab.topology.pgbouncer_ini import IniEntry, IniFile, read_ini
from lab.topology.render import PGBOUNCER_ADMIN_USER, PGBOUNCER_PORT
from lab.topology.user_files import existing_file

_REFUSED_AUTH = {"hba": "needs an auth_hba_file the lab does not have",
                 "cert": "needs client certificates the lab does not issue",
                 "pam": "needs PAM in the pooler's container"}


@dataclass(frozen=True)
class UserPgBouncer:
    """A user's pgbouncer.ini as the lab runs it."""

    ini: str
    source: str
    notes: tuple[str, ...] = field(default_factory=tuple)


def _databases(path: Path, ini: IniFile, database: str) -> list[IniEntry]:
    """The ``[databases]`` entries; ConfigError when none serves the lab's database."""
    databases = [e for e in ini.entries if e.section == "databases"]
    if not any(e.name in (database, "*") for e in databases):
        names = ", ".join(e.name for e in databases) or "none"
        raise ConfigError(f"{path}: [databases] serves {names}, not the lab's database "
                          f"{database!r}", hint=f"set [postgres] database = "
                          f"{databases[0].name!r} in lab.toml" if databases else
                          "add a [databases] entry")
    return databases


def _point_at_lab(path: Path, lines: list[str], databases: Sequence[IniEntry], pg: Any) -> None:
    """Each ``[databases]`` line with the lab's host, port, user (and database)."""
    for entry in databases:
        try:
            words = shlex.split(entry.value)
        except ValueError as exc:
            raise ConfigError(f"{path} line {entry.line}: {exc}") from None
        kept = [w for w in words if w.partition("=")[0] not in
                ("host", "port", "dbname", "user", "password", "auth_user")]
        dbname = pg.database if entry.name != "*" else None
        lab = ["host=postgres", "port=5432", f"user={pg.user}"] + \
              ([f"dbname={dbname}"] if dbname else [])
        lines[entry.line - 1] = f"{entry.name} = {' '.join(lab + kept)}"


def _refuse_lookups(path: Path, settings: Mapping[str, IniEntry]) -> None:
    """ConfigError for authentication the lab's PostgreSQL and pooler cannot give."""
    auth = settings.get("auth_type")
    if auth is not None and auth.value in _REFUSED_AUTH:
        raise ConfigError(f"{path} line {auth.line}: auth_type = {auth.value}: "
                          f"{_REFUSED_AUTH[auth.value]}", hint="use md5 or scram-sha-256")
    for name in ("auth_query", "auth_user", "auth_hba_file"):
        if name in settings:
            raise ConfigError(f"{path} line {settings[name].line}: {name}: the lab's PostgreSQL "
                              "has no such lookup; PgBouncer authenticates from the userlist")


def _lab_settings(settings: Mapping[str, IniEntry]) -> dict[str, str]:
    """The ``[pgbouncer]`` settings the lab's own values replace (or add)."""
    def users(name: str) -> list[str]:
        listed = [a.strip() for a in settings[name].value.split(",")] \
            if name in settings else []
        return [a for a in listed if a] + [PGBOUNCER_ADMIN_USER]

    replaced = {
        "listen_addr": "0.0.0.0", "listen_port": str(PGBOUNCER_PORT),
        "auth_file": "/etc/pgbouncer/userlist.txt",
        "admin_users": ", ".join(users("admin_users")),
        "stats_users": ", ".join(users("stats_users")),
        # The container's log is PgBouncer's stderr; a log file's folder may not exist there.
        "logfile": "", "pidfile": "",
    }
    auth = settings.get("auth_type")
    if auth is None or auth.value not in ("md5", "scram-sha-256", "plain", "trust", "any"):
        replaced["auth_type"] = "scram-sha-256"
    return replaced


def _place_settings(lines: list[str], ini: IniFile, settings: Mapping[str, IniEntry],
                    replaced: Mapping[str, str], notes: list[str]) -> None:
    """Each replaced setting on its own line; the missing ones after the section's last."""
    for name, value in replaced.items():
        if name in settings:
            lines[settings[name].line - 1] = f"{name} = {value}"
    missing = [f"{k} = {v}" for k, v in replaced.items() if k not in settings]
    if not missing:
        return
    # After the [pgbouncer] section's last setting (PgBouncer ignores a second section of
    # the same name): only lines of a later section move.
    last = max(e.line for e in ini.entries if e.section == "pgbouncer") \
        if settings else next(line for name, line in ini.sections if name == "pgbouncer")
    lines[last:last] = missing
    later = [name for name, line in ini.sections if line > last]
    if later:
        notes.append(f"{len(missing)} settings added at the end of [pgbouncer]: lines of "
                     f"[{later[0]}] and after move down by {len(missing)}")


def user_pgbouncer(config: Any) -> UserPgBouncer | None:
    """The user's pgbouncer.ini with the lab's database address and credentials substituted."""
    p, pg = config.pgbouncer, config.postgres
    if p.userlist is not None:
        existing_file(p.userlist, "[pgbouncer] userlist")
    if p.ini is None:
        return None
    path = existing_file(p.ini, "[pgbouncer] ini")
    text = path.read_text(encoding="utf-8")
    ini = read_ini(text, file=str(path))
    if not any(name == "pgbouncer" for name, _ in ini.sections):
        raise ConfigError(f"{path}: no [pgbouncer] section")
    databases = _databases(path, ini, pg.database)
    notes = ["[databases]: host, port, dbname, user and password are the lab's PostgreSQL's",
             "the userlist's credentials are the lab's own"]
    lines = text.split("\n")
    _point_at_lab(path, lines, databases, pg)
    settings = {e.name.lower(): e for e in ini.entries if e.section == "pgbouncer"}
    _refuse_lookups(path, settings)
    _place_settings(lines, ini, settings, _lab_settings(settings), notes)
    return UserPgBouncer("\n".join(lines) + "\n", str(path), tuple(notes))
