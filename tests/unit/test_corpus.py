"""The corpus of real configurations (tests/corpus/) is complete, attributed and readable."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from lab.config import load_config
from lab.errors import ConfigError
from lab.topology.nginx_tree import (
    Directive,
    read_host_files,
    resolve_includes,
    walk,
)
from lab.topology.pgbouncer_ini import read_ini
from tests.corpus import (
    KINDS,
    LICENCES,
    MANIFEST,
    NGINX_SHAPES,
    PGBOUNCER_SHAPES,
    ROOT,
    SHAPES,
    Entry,
    entries,
    gaps,
)

ENTRIES = entries()
NGINX = [e for e in ENTRIES if e.kind == "nginx"]
PGBOUNCER = [e for e in ENTRIES if e.kind == "pgbouncer"]
CONFIG_FILES = [(e, f) for e in ENTRIES for f in e.config_files]

_SHA = r"[0-9a-f]{40}"
_HEADER = (
    re.compile(rf"^# source: https://github\.com/(?P<repo>[^/\s]+/[^/\s]+)/blob/(?P<commit>{_SHA})/"
               r"(?P<path>.+)$"),
    re.compile(rf"^# repository: (?P<repo>\S+); path: (?P<path>.+); commit: (?P<commit>{_SHA})$"),
    re.compile(r"^# licence: (?P<licence>\S+) \(\S.*\)$"),
    re.compile(r"^# adapted: \S.*$"),
)


def _rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def _header(path: Path) -> list[re.Match]:
    lines = path.read_text(encoding="utf-8").splitlines()[:len(_HEADER)]
    return [pattern.match(line) for pattern, line in zip(_HEADER, lines, strict=False)]


def _tree(entry: Entry) -> tuple[Directive, ...]:
    files = read_host_files(entry.path)
    return resolve_includes(files, str(entry.path), missing_ok=True)


def _upstreams(tree: tuple[Directive, ...]) -> dict[str, Directive]:
    return {d.args[0]: d for d in walk(tree) if d.name == "upstream" and d.args}


def _root_pool(tree: tuple[Directive, ...], upstreams: dict[str, Directive]) -> str | None:
    """The one upstream block, or the one every `location /` proxies to; None otherwise.

    Deliberately plain (no location matching, no redirect following): lab.toml must name the
    pool whenever this simple reading is not enough, so that no entry depends on how the lab
    chooses one today."""
    if len(upstreams) == 1:
        return next(iter(upstreams))
    targets = {re.sub(r"^https?://", "", p.args[0]).split("/")[0]
               for loc in walk(tree) if loc.name == "location" and loc.args == ("/",)
               for p in loc.block or () if p.name == "proxy_pass" and p.args}
    return targets.pop() if len(targets) == 1 and targets <= set(upstreams) else None


def test_the_manifest_lists_every_corpus_file_and_nothing_else():
    """Every file under tests/corpus belongs to exactly one entry, and every listed file exists."""
    on_disk = {_rel(p) for p in ROOT.rglob("*") if p.is_file()
               and "__pycache__" not in p.parts and p not in (MANIFEST, ROOT / "__init__.py")}
    listed = [_rel(p) for e in ENTRIES for p in (*e.config_files, *((e.lab,) if e.lab else ()))]
    assert len(listed) == len(set(listed)), "a file is listed by two entries"
    assert set(listed) - on_disk == set(), "listed but missing"
    assert on_disk - set(listed) == set(), "on disk but in no entry"


def test_entries_are_well_formed():
    """Each entry has a known kind, its files in its own folder, a lab.toml iff NGINX, and an
    expectation of the form "runs" or "refused: <why>"."""
    for e in ENTRIES:
        assert e.kind in KINDS, e.name
        assert e.expect == "runs" or re.fullmatch(r"refused: \S.{8,}", e.expect), e.name
        assert e.today.strip(), e.name
        if e.kind == "nginx":
            assert e.lab == ROOT / "nginx" / e.name / "lab.toml", e.name
            assert all(f.is_relative_to(ROOT / "nginx" / e.name) for f in e.config_files), e.name
        else:
            assert e.lab is None and not e.files, e.name
            assert e.path == ROOT / "pgbouncer" / f"{e.name}.ini", e.name


def test_there_are_enough_entries():
    """At least 22 NGINX load balancers and 6 pgbouncer.ini files."""
    assert len(NGINX) >= 22
    assert len(PGBOUNCER) >= 6


@pytest.mark.parametrize(("entry", "path"), CONFIG_FILES, ids=[_rel(f) for _, f in CONFIG_FILES])
def test_each_file_names_its_source_licence_and_adaptation(entry: Entry, path: Path):
    """Each configuration file opens with its source URL, repository/path/commit, licence and an
    `adapted:` line, and the manifest's source is the header of the entry's main file."""
    matches = _header(path)
    assert len(matches) == len(_HEADER) and all(matches), f"{_rel(path)}: header lines 1-4"
    url, ids = matches[0], matches[1]
    assert (url["repo"], url["commit"], url["path"]) == (ids["repo"], ids["commit"], ids["path"])
    if path == entry.path:
        assert entry.source == f"github.com/{ids['repo']}/{ids['path']}@{ids['commit']}"


@pytest.mark.parametrize(("entry", "path"), CONFIG_FILES, ids=[_rel(f) for _, f in CONFIG_FILES])
def test_each_file_carries_an_open_source_licence(entry: Entry, path: Path):
    """The licence line names a licence that allows redistribution (and, in brackets, where it
    was read): a repository without one keeps all rights, so its files cannot be shipped."""
    licence = _header(path)[2]
    assert licence and licence["licence"] in LICENCES, f"{_rel(path)}: {licence and licence[0]}"


def test_entries_claim_only_shapes_of_the_vocabulary():
    """NGINX entries claim NGINX shapes, PgBouncer entries PgBouncer shapes."""
    for e in ENTRIES:
        allowed = NGINX_SHAPES if e.kind == "nginx" else PGBOUNCER_SHAPES
        assert e.shapes <= allowed, f"{e.name}: unknown shapes {sorted(e.shapes - allowed)}"


def test_every_shape_is_covered_or_declared_a_gap():
    """Every shape of the vocabulary is exercised by some entry, except the declared gaps (and a
    declared gap that an entry now covers must leave the list)."""
    covered = set().union(*(e.shapes for e in ENTRIES))
    missing = SHAPES - covered
    declared = set(gaps())
    assert declared <= SHAPES, f"gaps outside the vocabulary: {sorted(declared - SHAPES)}"
    assert missing - declared == set(), f"shapes no entry covers: {sorted(missing - declared)}"
    stale = declared & covered
    assert stale == set(), f"covered, still listed as gaps: {sorted(stale)}"


def test_both_outcomes_are_represented():
    """Both kinds hold configurations the lab should run and ones it should refuse."""
    for group in (NGINX, PGBOUNCER):
        assert any(e.refused for e in group) and any(not e.refused for e in group)


@pytest.mark.parametrize("entry", NGINX, ids=[e.name for e in NGINX])
def test_each_nginx_config_parses_with_the_lab_parser(entry: Entry):
    """The lab's parser reads the config and its includes (a syntax error is a corpus bug unless
    the entry expects refusal), and the files it includes are exactly the entry's files."""
    try:
        files = read_host_files(entry.path)
        resolve_includes(files, str(entry.path), missing_ok=True)
    except ConfigError:
        if entry.refused:
            return
        raise
    assert set(files) == {str(p) for p in entry.config_files}


@pytest.mark.parametrize("entry", NGINX, ids=[e.name for e in NGINX])
def test_each_lab_toml_is_minimal_and_matches_its_pool(entry: Entry):
    """lab.toml names the config; it names an upstream only where the file has several, and its
    replica count (3 by default) is the number of server lines of the pool it rehearses."""
    text = entry.lab.read_text(encoding="utf-8")
    keys = set(re.findall(r"^(\w+) = ", text, re.MULTILINE))
    assert keys <= {"conf", "upstream", "replicas"}, keys
    config = load_config(entry.lab)
    assert Path(entry.lab.parent, config.nginx.conf).resolve() == entry.path
    tree = _tree(entry)
    upstreams = _upstreams(tree)
    if config.nginx.upstream is not None:
        assert len(upstreams) > 1 and config.nginx.upstream in upstreams
    pool = config.nginx.upstream or _root_pool(tree, upstreams)
    if pool is None:
        # No upstream the lab could pick: only a configuration the lab must refuse.
        assert entry.refused, f"{entry.name}: name the pool in lab.toml ([nginx] upstream)"
        return
    servers = [d for d in upstreams[pool].block or () if d.name == "server"]
    assert config.backend.replicas == len(servers), f"{entry.name}: pool {pool}"


@pytest.mark.parametrize("entry", PGBOUNCER, ids=[e.name for e in PGBOUNCER])
def test_each_pgbouncer_ini_parses_with_the_lab_reader(entry: Entry):
    """The lab's reader reads every pgbouncer.ini line (a malformed line is a corpus bug unless
    the entry expects refusal) and finds a [pgbouncer] and a [databases] section."""
    try:
        ini = read_ini(entry.path.read_text(encoding="utf-8"), file=str(entry.path))
    except ConfigError:
        if entry.refused:
            return
        raise
    sections = {name for name, _ in ini.sections}
    assert {"pgbouncer", "databases"} <= sections, entry.name
