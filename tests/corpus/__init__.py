"""Real NGINX and PgBouncer configurations from public repositories, and their manifest.

Each NGINX entry is a folder ``nginx/<name>/`` holding the configuration file(s) as found
(plus the files it includes from the same repository) and a minimal ``lab.toml``; each
PgBouncer entry is one ``pgbouncer/<name>.ini``. Every file opens with four comment lines
naming its source (repository, path, commit), its licence (one of ``LICENCES``, with the file
it was read from) and what was adapted to make it a loadable file on its own.

``corpus.toml`` holds one table per entry: its files, its source, the shapes it exercises
(``SHAPES``), what the lab should do with it (``expect``: ``runs`` or ``refused: <why>``) and
what the lab did with it when the entry was added (``today``). Tests iterate ``entries()``.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent
MANIFEST = ROOT / "corpus.toml"
KINDS = ("nginx", "pgbouncer")

# The fixed vocabulary of shapes an entry may claim. NGINX: how the pool is built and how
# requests fail over; PgBouncer: pool mode and the limits that bound a pool.
NGINX_SHAPES = frozenset({
    "redirect",                        # port 80 only redirects to HTTPS; 443 proxies
    "ip-upstreams",                    # upstream servers named by IP address
    "least_conn", "ip_hash", "hash", "random",
    "weight", "backup", "down", "max_conns",
    "keepalive",                       # upstream keepalive connections
    "next-upstream-off",               # proxy_next_upstream off
    "next-upstream-no-error-timeout",  # a proxy_next_upstream list without both error and timeout
    "non_idempotent",                  # proxy_next_upstream ... non_idempotent
    "tries",                           # proxy_next_upstream_tries
    "next-upstream-timeout",           # proxy_next_upstream_timeout
    "several-upstreams",
    "per-location-timeouts",           # proxy timeouts that differ between locations
    "include",                         # include of a file of the same repository
    "defaults",                        # no max_fails, fail_timeout or proxy timeouts at all
    "per-worker-counters",             # no zone and worker_processes != 1
})
# Licences a corpus file may carry: open-source licences that allow redistributing the file
# verbatim with attribution. A repository without one (all rights reserved) or with a
# source-available licence (FSL, BSL, the Amazon Software License) does not qualify.
LICENCES = frozenset({
    "MIT", "BSD-2-Clause", "BSD-3-Clause", "ISC", "Apache-2.0", "MPL-2.0", "ECL-2.0",
    "GPL-2.0-or-later", "GPL-3.0", "LGPL-3.0", "AGPL", "AGPL-3.0", "Unlicense", "CC0-1.0",
})
PGBOUNCER_SHAPES = frozenset({
    "session", "statement", "transaction", "reserve_pool", "max_db_connections",
    "server_lifetime", "query_wait_timeout",
})
SHAPES = NGINX_SHAPES | PGBOUNCER_SHAPES

_KEYS = frozenset({"kind", "path", "files", "lab", "source", "shapes", "expect", "today",
                   "notes"})


@dataclass(frozen=True)
class Entry:
    """One corpus entry as the manifest describes it (paths absolute)."""

    name: str
    kind: str
    path: Path                  # the configuration file the lab is given
    files: tuple[Path, ...]     # the files it includes, from the same repository
    lab: Path | None            # lab.toml beside an NGINX configuration
    source: str                 # github.com/<owner>/<repo>/<path>@<commit> of `path`
    shapes: frozenset[str]
    expect: str                 # "runs" or "refused: <why>"
    today: str                  # what the lab did with it when the entry was added
    notes: str

    @property
    def refused(self) -> bool:
        """Whether the lab should refuse this configuration before starting anything."""
        return self.expect.startswith("refused: ")

    @property
    def config_files(self) -> tuple[Path, ...]:
        """The entry's configuration files, the one the lab is given first."""
        return (self.path, *self.files)


def _entry(name: str, table: dict) -> Entry:
    unknown = set(table) - _KEYS
    if unknown:
        raise ValueError(f"{MANIFEST}: [entries.{name}] has unknown keys {sorted(unknown)}")
    lab = table.get("lab")
    return Entry(name=name, kind=table["kind"], path=ROOT / table["path"],
                 files=tuple(ROOT / f for f in table.get("files", ())),
                 lab=ROOT / lab if lab else None, source=table["source"],
                 shapes=frozenset(table["shapes"]), expect=table["expect"],
                 today=table["today"], notes=table.get("notes", ""))


def _manifest() -> dict:
    with MANIFEST.open("rb") as handle:
        return tomllib.load(handle)


def entries() -> tuple[Entry, ...]:
    """Every corpus entry, in manifest order."""
    return tuple(_entry(name, table) for name, table in _manifest()["entries"].items())


def gaps() -> dict[str, str]:
    """Shapes of the vocabulary no entry covers yet, each with the reason."""
    return dict(_manifest().get("gaps", {}))
