"""The pool settings a pgbouncer.ini file gives, with PgBouncer 1.18's defaults where a setting
is absent (docs/semantics.md §3). The running pooler's own ``SHOW CONFIG`` is read instead
where there is one (``lab.topology.expect``); this reads files: the rendered one and a user's.
"""

from __future__ import annotations

import shlex

from lab.errors import ConfigError
from lab.expectations import PgBouncerPolicy

# PgBouncer 1.18 defaults (docs/semantics.md §3, from its doc/config.md).
DEFAULT_POOL_MODE = "session"
DEFAULT_POOL_SIZE = 20
DEFAULT_RESERVE_POOL_SIZE = 0
DEFAULT_MAX_CLIENT_CONN = 100
DEFAULT_SERVER_LOGIN_RETRY_S = 15
DEFAULT_QUERY_WAIT_TIMEOUT_S = 120
POOL_MODES = ("session", "transaction", "statement")
_HINT = "render pgbouncer.ini from lab.toml again, or fix the setting named above"


def _int(value: str, where: str, *, minimum: int = 0) -> int:
    if not value.isdigit() or int(value) < minimum:
        raise ConfigError(f"{where}: expected an integer >= {minimum}, got {value!r}", hint=_HINT)
    return int(value)


def _mode(value: str, where: str) -> str:
    if value not in POOL_MODES:
        raise ConfigError(f"{where}: pool_mode must be one of {', '.join(POOL_MODES)}, got "
                          f"{value!r}", hint=_HINT)
    return value


def parse_pgbouncer_ini(text: str, *, database: str | None = None) -> PgBouncerPolicy:
    """The pool settings of a rendered pgbouncer.ini; with ``database``, its own overrides apply."""
    section = ""
    seen: set[str] = set()
    settings: dict[str, tuple[str, int]] = {}
    databases: dict[str, tuple[str, int]] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line[0] in ";#":
            continue
        if line.startswith("["):
            if not line.endswith("]"):
                raise ConfigError(f"pgbouncer.ini line {number}: unterminated section header",
                                  hint=_HINT)
            section = line[1:-1].strip().lower()
            seen.add(section)
            continue
        name, sep, value = line.partition("=")
        if not sep:
            raise ConfigError(f"pgbouncer.ini line {number}: expected 'name = value'", hint=_HINT)
        name, value = name.strip(), value.strip()
        if section == "pgbouncer":
            settings[name.lower()] = (value, number)
        elif section == "databases":
            databases[name] = (value, number)
    if "pgbouncer" not in seen:
        raise ConfigError("pgbouncer.ini: no [pgbouncer] section", hint=_HINT)

    def setting(name: str, default: int, *, minimum: int = 0) -> int:
        if name not in settings:
            return default
        value, number = settings[name]
        return _int(value, f"pgbouncer.ini line {number}: {name}", minimum=minimum)

    pool_mode = DEFAULT_POOL_MODE
    if "pool_mode" in settings:
        value, number = settings["pool_mode"]
        pool_mode = _mode(value, f"pgbouncer.ini line {number}")
    pool_size = setting("default_pool_size", DEFAULT_POOL_SIZE)
    reserve = setting("reserve_pool_size", DEFAULT_RESERVE_POOL_SIZE)
    max_client = setting("max_client_conn", DEFAULT_MAX_CLIENT_CONN, minimum=1)
    login_retry = setting("server_login_retry", DEFAULT_SERVER_LOGIN_RETRY_S)
    query_wait = setting("query_wait_timeout", DEFAULT_QUERY_WAIT_TIMEOUT_S)

    if database is not None:
        entry = databases.get(database) or databases.get("*")
        if entry is None:
            raise ConfigError(f"pgbouncer.ini: database {database!r} is not in [databases]",
                              hint=_HINT)
        value, number = entry
        where = f"pgbouncer.ini line {number}"
        try:
            words = shlex.split(value)
        except ValueError as exc:
            raise ConfigError(f"{where}: {exc}", hint=_HINT) from None
        for word in words:
            key, _, item = word.partition("=")
            if key == "pool_size":
                pool_size = _int(item, f"{where} pool_size")
            elif key == "reserve_pool":
                reserve = _int(item, f"{where} reserve_pool")
            elif key == "pool_mode":
                pool_mode = _mode(item, where)
    return PgBouncerPolicy(pool_mode, pool_size, reserve, max_client, float(login_retry),
                           float(query_wait))


