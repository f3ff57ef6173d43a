"""The pgbouncer.ini reader: rendered files, PgBouncer 1.18's defaults, per-database overrides."""

from __future__ import annotations

import pytest

from lab.config import LabConfig
from lab.errors import ConfigError
from lab.expectations import PgBouncerPolicy
from lab.topology.pgbouncer_ini import parse_pgbouncer_ini
from lab.topology.render import render_pgbouncer_ini

POLICY = parse_pgbouncer_ini(render_pgbouncer_ini(LabConfig()), database="app")


def test_rendered_ini_round_trip() -> None:
    """The rendered pgbouncer.ini yields the LabConfig's pool settings."""
    config = LabConfig().pgbouncer
    assert POLICY == PgBouncerPolicy(config.pool_mode, config.default_pool_size,
                                     config.reserve_pool_size, config.max_client_conn,
                                     float(config.server_login_retry_s),
                                     float(config.query_wait_timeout_s))
    assert POLICY.server_bound == config.default_pool_size + config.reserve_pool_size


def test_overrides_round_trip() -> None:
    """A pool of 300 with a reserve in session mode reads back as such."""
    config = LabConfig().with_overrides("pgbouncer", default_pool_size=300, reserve_pool_size=5,
                                        pool_mode="session")
    policy = parse_pgbouncer_ini(render_pgbouncer_ini(config))
    assert (policy.pool_mode, policy.server_bound) == ("session", 305)


def test_defaults_where_absent() -> None:
    """Absent settings take PgBouncer 1.18's defaults: session, 20, 0, 100."""
    assert parse_pgbouncer_ini("[pgbouncer]\nlisten_port = 6432\n") == \
        PgBouncerPolicy("session", 20, 0, 100)


def test_database_overrides() -> None:
    """A database's own pool_size, reserve_pool and pool_mode win over the global ones."""
    text = ("[databases]\napp = host=pg dbname=app pool_size=5 reserve_pool=2 pool_mode=session\n"
            "* = host=pg\n[pgbouncer]\ndefault_pool_size = 30\npool_mode = transaction\n")
    assert parse_pgbouncer_ini(text, database="app") == PgBouncerPolicy("session", 5, 2, 100)
    assert parse_pgbouncer_ini(text, database="other").default_pool_size == 30
    assert parse_pgbouncer_ini(text).pool_mode == "transaction"


@pytest.mark.parametrize(("text", "message"), [
    ("[pgbouncer]\ndefault_pool_size = many\n", "line 2: default_pool_size"),
    ("[pgbouncer]\npool_mode = sometimes\n", "line 2: pool_mode must be one of"),
    ("[pgbouncer]\njust words\n", "line 2: expected 'name = value'"),
    ("[databases]\napp = host=pg\n", "no [pgbouncer] section"),
    ("[pgbouncer\n", "line 1: unterminated section header"),
])
def test_malformed_ini(text: str, message: str) -> None:
    """A malformed pgbouncer.ini is a ConfigError naming the line."""
    with pytest.raises(ConfigError, match=message.replace("[", r"\[")):
        parse_pgbouncer_ini(text, database=None)


def test_unknown_database() -> None:
    """Asking for a database pgbouncer.ini does not serve is an error."""
    with pytest.raises(ConfigError, match="'shop' is not in"):
        parse_pgbouncer_ini("[databases]\napp = host=pg\n[pgbouncer]\n", database="shop")
