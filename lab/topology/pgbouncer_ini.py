"""The pool settings a pgbouncer.ini file gives, with PgBouncer 1.18's defaults where a setting
is absent (docs/semantics.md §3). The running pooler's own ``SHOW CONFIG`` is read instead
where there is one (``lab.topology.expect``); this reads files: the rendered one and a user's.

The reader is the lab's own, not ``configparser``: PgBouncer's dialect is line by line (an
indented line is a setting of its own, where configparser would append it to the previous
value; ``%include`` is a directive), and every error must name its line, which configparser
does not keep for values.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass

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


@dataclass(frozen=True)
class IniEntry:
    """One ``name = value`` line of a pgbouncer.ini, with its section and line number."""

    section: str          # lower case: "pgbouncer", "databases", "users", ...
    name: str
    value: str
    line: int


@dataclass(frozen=True)
class IniFile:
    """A pgbouncer.ini read line by line: its settings and where each section starts."""

    entries: tuple[IniEntry, ...]
    sections: tuple[tuple[str, int], ...]      # (section, line of its header)
    line_count: int

    def get(self, section: str, name: str) -> IniEntry | None:
        """The last entry of ``name`` in ``section`` (PgBouncer keeps the last)."""
        found = [e for e in self.entries if e.section == section
                 and (e.name if section != "pgbouncer" else e.name.lower()) == name]
        return found[-1] if found else None


def read_ini(text: str, *, file: str = "pgbouncer.ini") -> IniFile:
    """Every setting of a pgbouncer.ini; ConfigError naming the line for what PgBouncer refuses."""
    section = ""
    sections: list[tuple[str, int]] = []
    entries: list[IniEntry] = []
    lines = text.splitlines()
    for number, raw in enumerate(lines, start=1):
        line = raw.strip()
        if not line or line[0] in ";#":
            continue
        if line.startswith("%include"):
            raise ConfigError(f"{file} line {number}: %include is not supported by the lab",
                              hint="put the included settings into the one file")
        if line.startswith("["):
            if not line.endswith("]"):
                raise ConfigError(f"{file} line {number}: unterminated section header",
                                  hint=_HINT)
            section = line[1:-1].strip().lower()
            sections.append((section, number))
            continue
        name, sep, value = line.partition("=")
        if not sep:
            raise ConfigError(f"{file} line {number}: expected 'name = value'", hint=_HINT)
        entries.append(IniEntry(section, name.strip(), value.strip(), number))
    return IniFile(tuple(entries), tuple(sections), len(lines))


def parse_pgbouncer_ini(text: str, *, database: str | None = None,
                        file: str = "pgbouncer.ini") -> PgBouncerPolicy:
    """The pool settings of a pgbouncer.ini; with ``database``, its own overrides apply."""
    ini = read_ini(text, file=file)
    seen = {name for name, _ in ini.sections}
    settings = {e.name.lower(): (e.value, e.line) for e in ini.entries if e.section == "pgbouncer"}
    databases = {e.name: (e.value, e.line) for e in ini.entries if e.section == "databases"}
    if "pgbouncer" not in seen:
        raise ConfigError(f"{file}: no [pgbouncer] section", hint=_HINT)

    def setting(name: str, default: int, *, minimum: int = 0) -> int:
        if name not in settings:
            return default
        value, number = settings[name]
        return _int(value, f"{file} line {number}: {name}", minimum=minimum)

    pool_mode = DEFAULT_POOL_MODE
    if "pool_mode" in settings:
        value, number = settings["pool_mode"]
        pool_mode = _mode(value, f"{file} line {number}")
    pool_size = setting("default_pool_size", DEFAULT_POOL_SIZE)
    reserve = setting("reserve_pool_size", DEFAULT_RESERVE_POOL_SIZE)
    max_client = setting("max_client_conn", DEFAULT_MAX_CLIENT_CONN, minimum=1)
    login_retry = setting("server_login_retry", DEFAULT_SERVER_LOGIN_RETRY_S)
    query_wait = setting("query_wait_timeout", DEFAULT_QUERY_WAIT_TIMEOUT_S)

    if database is not None:
        entry = databases.get(database) or databases.get("*")
        if entry is None:
            raise ConfigError(f"{file}: database {database!r} is not in [databases]",
                              hint=_HINT)
        value, number = entry
        where = f"{file} line {number}"
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


