"""Named registries for the lab's extension points: checks, faults, steps, probes, load profiles.

One name per entry, used alike in scenario files, results and code. A registry refuses a
second entry under a taken name and a parameter model that would accept unknown keys, when
the entry registers (at import), not when a run reaches it; a lookup of an unknown name
raises ``ConfigError`` listing the known names and the nearest one, never a default::

    CHECKS: Registry[CheckDef] = Registry("check")
    CHECKS.add(CheckDef(name="ejection", params=EjectionParams, ...))
    CHECKS.get("ejecton")   # ConfigError: unknown check 'ejecton' (did you mean 'ejection'?)
"""

from __future__ import annotations

import difflib
import functools
import importlib
import operator
import pkgutil
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, Generic, Protocol, TypeVar

from pydantic import BaseModel

from lab.errors import ConfigError


class Named(Protocol):
    """What a registry holds: an entry with its one name."""

    @property
    def name(self) -> str: ...


T = TypeVar("T", bound=Named)


def strict_model(model: type[BaseModel], owner: str) -> type[BaseModel]:
    """``model``, if it refuses unknown keys and is frozen; a programming error otherwise."""
    config = model.model_config
    if config.get("extra") != "forbid" or not config.get("frozen"):
        raise TypeError(f"{owner}: parameter model {model.__name__} must be frozen and forbid "
                        "extra keys, so a misspelt parameter is refused instead of ignored")
    return model


def tagged_union(members: tuple[Any, ...]) -> Any:
    """One type of a registry's tagged members (``Annotated[Model, Tag(name)]``), for a
    pydantic discriminator to pick from."""
    return functools.reduce(operator.or_, members)


class Registry(Generic[T]):
    """Entries by name, in registration order."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, T] = {}

    def add(self, entry: T) -> T:
        """Register ``entry``; a taken name is a programming error, raised at import."""
        if entry.name in self._entries:
            raise TypeError(f"{self.kind} {entry.name!r} is registered twice")
        if not entry.name or entry.name != entry.name.strip():
            raise TypeError(f"{self.kind} name {entry.name!r} is empty or padded")
        self._entries[entry.name] = entry
        return entry

    def get(self, name: str) -> T:
        """The entry named ``name``; ``ConfigError`` naming the known ones otherwise."""
        try:
            return self._entries[name]
        except KeyError:
            raise ConfigError(self.unknown(name)) from None

    def unknown(self, name: str) -> str:
        """The message for an unknown name: every known name, and the closest one."""
        close = difflib.get_close_matches(name, list(self._entries), n=1)
        guess = f"; did you mean {close[0]!r}?" if close else ""
        return f"unknown {self.kind} {name!r} ({self.kind}s: {', '.join(self._entries)}){guess}"

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[T]:
        return iter(self._entries.values())

    def __len__(self) -> int:
        return len(self._entries)

    def names(self) -> tuple[str, ...]:
        return tuple(self._entries)


def discover(package: str, path: Iterable[str]) -> tuple[str, ...]:
    """Import every module of ``package`` (its ``__path__``), in sorted order, so each registers
    its entries: a new check or fault is a new file, with no import list to edit. Modules whose
    name starts with ``_`` are left alone. Returns the names imported."""
    names = sorted(m.name for m in pkgutil.iter_modules(list(path)) if not m.name.startswith("_"))
    for name in names:
        importlib.import_module(f"{package}.{name}")
    return tuple(names)


# -- how parameter errors are worded (scenario files and `lab break` alike) -----------------------


def takes(owner: str, model: type[BaseModel], *, exclude: tuple[str, ...] = ()) -> str:
    """What an entry accepts, as errors say it: "fault loss takes target, peers, ..."."""
    fields = [name for name in model.model_fields if name not in exclude]
    return f"{owner} takes {', '.join(fields) or 'no parameters'}"


def parameter_message(error: Mapping[str, Any], takes: str | None = None) -> str:
    """One pydantic error on an entry's parameters, worded for a person: an unknown key is
    "unknown parameter 'percent' (fault kill takes target)", anything else pydantic's message."""
    if error["type"] == "extra_forbidden":
        return f"unknown parameter {error['loc'][-1]!r}" + (f" ({takes})" if takes else "")
    return str(error["msg"]).removeprefix("Value error, ")
