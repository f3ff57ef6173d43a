"""An NGINX configuration as a syntax tree: files parsed, includes resolved, values read.

The text is either one nginx.conf (the rendered one) or what ``nginx -T`` prints in the
running container: every file NGINX loaded, each after a ``# configuration file PATH:`` line.
crossplane (the maintained ``nginx-crossplane`` fork) lexes and parses each file into a
syntax tree; includes are resolved here against the files the dump holds, because a dump is
exactly what NGINX loaded (globs already expanded, absolute paths of the container). A
configuration on this host is read with the files its relative includes name.

What the directives *mean* is ``lab.topology.nginx_policy``'s reading; this module knows only
their shape and the units of their values (nginx's time units, a rate's stored integer), so
that an unbalanced brace, an unterminated quote or a bad value is an error with its file:line.
"""

from __future__ import annotations

import fnmatch
import glob
import os
import posixpath
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

import crossplane

from lab.errors import ConfigError

HINT = "render nginx.conf from lab.toml again, or fix the directive named above"
_DUMP_HEADER = re.compile(r"^# configuration file (.+):$", re.MULTILINE)


# --- syntax tree --------------------------------------------------------------------------


@dataclass(frozen=True)
class Directive:
    """One directive of the tree: its name, arguments, where it is written, and its block."""

    name: str
    args: tuple[str, ...]
    line: int
    block: tuple[Directive, ...] | None = None
    file: str = ""

    @property
    def where(self) -> str:
        """``file:line`` (or ``line N`` for text without a file name)."""
        return f"{self.file}:{self.line}" if self.file else f"line {self.line}"


def _tree(payload: Sequence[Mapping], file: str) -> tuple[Directive, ...]:
    return tuple(Directive(d["directive"], tuple(d.get("args", ())), d["line"],
                           _tree(d["block"], file) if "block" in d else None, file)
                 for d in payload if d["directive"] != "#")


def _crossplane_error(error: Mapping, shown: str) -> ConfigError:
    # crossplane appends " in FILE:LINE"; the lab names the file the user knows.
    message = re.sub(r" in \S+:\d+$", "", str(error.get("error", "parse error")))
    return ConfigError(f"{shown}:{error.get('line', '?')}: {message}", hint=HINT)


def parse_file_text(text: str, file: str = "nginx.conf", *, shown: str | None = None
                    ) -> tuple[Directive, ...]:
    """One file's directives (its includes left unresolved); ConfigError on a syntax error."""
    payload = crossplane.parse_string(text, filename=file, single=True, check_ctx=False,
                                      check_args=False, catch_errors=False)
    config = payload["config"][0]
    if payload["errors"] or config["errors"]:
        raise _crossplane_error((payload["errors"] or config["errors"])[0], shown or file)
    return _tree(config["parsed"], shown or file)


def split_dump(text: str) -> dict[str, str]:
    """``nginx -T`` output as {path: content}, in the order NGINX loaded the files."""
    heads = list(_DUMP_HEADER.finditer(text))
    files: dict[str, str] = {}
    for index, head in enumerate(heads):
        end = heads[index + 1].start() if index + 1 < len(heads) else len(text)
        # nginx separates files with one blank line after each file's content.
        body = text[head.end() + 1:end]
        files[head.group(1)] = body[:-1] if body.endswith("\n\n") else body
    return files


def is_dump(text: str) -> bool:
    """Whether ``text`` is ``nginx -T`` output rather than one nginx.conf."""
    return _DUMP_HEADER.search(text) is not None and text.lstrip().startswith("# configuration")


def resolve_includes(files: Mapping[str, str], main: str, *,
                     shown: Mapping[str, str] | None = None,
                     missing_ok: bool = False) -> tuple[Directive, ...]:
    """The main file's tree with every ``include`` replaced by the included files' directives.

    Relative include paths are relative to the main file's folder (NGINX's conf prefix when
    started with ``-c``). An include that names no file in ``files`` is an error, except with
    ``missing_ok`` for absolute paths (left to the image: ``/etc/nginx/mime.types``)."""
    shown = shown or {}
    prefix = posixpath.dirname(main)
    parsed: dict[str, tuple[Directive, ...]] = {}

    def tree_of(path: str) -> tuple[Directive, ...]:
        if path not in parsed:
            parsed[path] = parse_file_text(files[path], path, shown=shown.get(path))
        return parsed[path]

    def expand(block: Sequence[Directive], stack: tuple[str, ...]) -> tuple[Directive, ...]:
        out: list[Directive] = []
        for d in block:
            if d.name == "include" and d.args:
                pattern = d.args[0]
                absolute = posixpath.isabs(pattern)
                target = pattern if absolute else posixpath.normpath(
                    posixpath.join(prefix, pattern))
                if glob.has_magic(target):
                    matched = sorted(p for p in files if fnmatch.fnmatchcase(p, target))
                else:
                    matched = [target] if target in files else []
                if not matched and not glob.has_magic(target):
                    if missing_ok and absolute:
                        continue
                    raise ConfigError(f"{d.where}: include {pattern}: no such file",
                                      hint="includes are resolved relative to the main file's "
                                      "folder")
                for path in matched:
                    if path in stack:
                        raise ConfigError(f"{d.where}: include {pattern} includes itself")
                    out.extend(expand(tree_of(path), (*stack, path)))
                continue
            if d.block is not None:
                d = Directive(d.name, d.args, d.line, expand(d.block, stack), d.file)
            out.append(d)
        return tuple(out)

    return expand(tree_of(main), (main,))


def read_tree(text: str) -> tuple[Directive, ...]:
    """The whole configuration tree of one nginx.conf or of an ``nginx -T`` dump."""
    if is_dump(text):
        files = split_dump(text)
        return resolve_includes(files, next(iter(files)))
    return parse_file_text(text, "", shown="nginx.conf")


def read_host_files(main: str | os.PathLike[str]) -> dict[str, str]:
    """A configuration on this host: the main file and every file its relative includes name
    (relative to the main file's folder), as {path: text}. Absolute includes are left to the
    image NGINX runs in (``/etc/nginx/mime.types``)."""
    main = os.path.abspath(main)
    files: dict[str, str] = {}
    prefix = os.path.dirname(main)

    def visit(path: str) -> None:
        if path in files:
            return
        with open(path, encoding="utf-8") as handle:
            files[path] = handle.read()
        for d in walk(parse_file_text(files[path], path)):
            if d.name != "include" or not d.args or os.path.isabs(d.args[0]):
                continue
            pattern = os.path.join(prefix, d.args[0])
            for found in sorted(glob.glob(pattern)) if glob.has_magic(pattern) else [pattern]:
                if os.path.isfile(found):
                    visit(os.path.normpath(found))
                else:
                    raise ConfigError(f"{d.where}: include {d.args[0]}: no such file "
                                      f"({found})", hint="includes are resolved relative to "
                                      "the main file's folder")

    visit(main)
    return files


def walk(block: Sequence[Directive]) -> Iterator[Directive]:
    """Every directive of a tree, depth first."""
    for d in block:
        yield d
        if d.block is not None:
            yield from walk(d.block)


def children(block: Sequence[Directive] | None, name: str) -> list[Directive]:
    """The directives named ``name`` directly in ``block``."""
    return [d for d in (block or ()) if d.name == name]


def last(block: Sequence[Directive] | None, name: str) -> Directive | None:
    """The last directive named ``name`` directly in ``block`` (the one NGINX keeps)."""
    found = children(block, name)
    return found[-1] if found else None


def one_arg(directive: Directive) -> str:
    """A directive's only argument; ConfigError when it has none or several."""
    if len(directive.args) != 1:
        raise ConfigError(f"{directive.where}: {directive.name} takes one value",
                          hint=HINT)
    return directive.args[0]


# --- values -------------------------------------------------------------------------------

# nginx's ngx_parse_time units; a bare number is seconds.
_TIME_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0,
               "M": 2592000.0, "y": 31536000.0}
_TIME_PART = re.compile(r"(\d+)(ms|s|m|h|d|w|M|y)?")


def parse_time_s(value: str, *, where: str = "time") -> float:
    """An nginx time value ("500ms", "10s", "1m30s", "5") in seconds; ConfigError otherwise."""
    pos, total = 0, 0.0
    if not value:
        raise ConfigError(f"{where}: empty time value", hint=HINT)
    while pos < len(value):
        match = _TIME_PART.match(value, pos)
        if match is None:
            raise ConfigError(f"{where}: invalid time value {value!r}", hint=HINT)
        number, unit = match.groups()
        if unit is None and match.end() != len(value):
            raise ConfigError(f"{where}: invalid time value {value!r}", hint=HINT)
        total += int(number) * _TIME_UNITS[unit or "s"]
        pos = match.end()
    return total


def parse_int(value: str, where: str, *, minimum: int = 0) -> int:
    """A whole number of at least ``minimum``; ConfigError otherwise."""
    if not value.isdigit() or int(value) < minimum:
        raise ConfigError(f"{where}: expected an integer >= {minimum}, got {value!r}",
                          hint=HINT)
    return int(value)


def parse_rate_per_s(value: str, where: str) -> float:
    """A rate ("10r/s", "30r/m") in requests per second, as nginx stores it."""
    match = re.fullmatch(r"(\d+)r/([sm])", value)
    if match is None:
        raise ConfigError(f"{where}: invalid rate {value!r} (want N r/s or N r/m)",
                          hint=HINT)
    milli = int(match.group(1)) * 1000
    if match.group(2) == "m":
        # nginx stores milli-requests per second as an integer: the remainder is lost.
        milli //= 60
    if milli <= 0:
        raise ConfigError(f"{where}: rate {value!r} is zero", hint=HINT)
    return milli / 1000

