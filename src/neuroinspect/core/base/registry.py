"""A named table of pluggable parts (fix methods, recipes, model sources) that reads without importing torch.

Each entry holds a name, a small torch-free record of what the part needs and reads (its *info*:
flags, a label, a usage line), and its implementation. A built-in part is *declared* with the
place of its implementation (``"package.module:attribute"``), imported on first use; a part a user
adds is *registered* with the implementation itself. So the command line lists the names and reads
the flags without loading the implementations, and a part registered anywhere shows up everywhere
the table is read::

    SOURCES = Registry("model source")
    SOURCES.declare("zoo", SourceInfo(usage="zoo:NAME"), "my_package.zoo:build")
    SOURCES.info("zoo").usage        # no import
    SOURCES.get("zoo")               # imports my_package.zoo, returns build
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Generic, Iterator, TypeVar

from neuroinspect.core.base.errors import NeuroInspectError

I = TypeVar("I")


@dataclass
class Entry(Generic[I]):
    """One part: its name, its torch-free info, and its implementation (or where to import it from)."""

    name: str
    info: I
    where: str | None = None  # "package.module:attribute" of a declared part, imported on first use
    obj: object = None  # the implementation, once imported or as registered
    aliases: tuple[str, ...] = ()

    def load(self) -> object:
        """The implementation (imported from ``where`` the first time)."""
        if self.obj is None:
            module, _, attr = str(self.where).partition(":")
            self.obj = getattr(importlib.import_module(module), attr)
        return self.obj


class Registry(Generic[I]):
    """Names → :class:`Entry`, in the order they were added; aliases resolve to their entry.

    ``name in registry`` and iteration read names only (never an implementation), so a registry
    can serve as argparse ``choices``.
    """

    def __init__(self, kind: str):
        self.kind = kind  # what an entry is, for messages: "method", "recipe", "model source"
        self._entries: dict[str, Entry[I]] = {}
        self._aliases: dict[str, str] = {}

    # adding ---------------------------------------------------------------------------------
    def declare(self, name: str, info: I, where: str, aliases: tuple[str, ...] = ()) -> None:
        """Add a built-in part whose implementation is ``where`` (``module:attribute``), imported when first used."""
        self._add(Entry(name, info, where, None, tuple(aliases)))

    def register(self, name: str, info: I, obj: object, aliases: tuple[str, ...] = ()) -> None:
        """Add (or replace) the part ``name`` with its implementation ``obj``."""
        self._add(Entry(name, info, None, obj, tuple(aliases)))

    def _add(self, entry: Entry[I]) -> None:
        old = self._entries.pop(entry.name, None)
        for alias in old.aliases if old else ():
            self._aliases.pop(alias, None)
        self._entries[entry.name] = entry
        self._aliases.update({alias: entry.name for alias in entry.aliases})

    def __delitem__(self, name: str) -> None:
        entry = self._entries.pop(name)
        for alias in entry.aliases:
            self._aliases.pop(alias, None)

    # reading (no import) --------------------------------------------------------------------
    def __contains__(self, name: object) -> bool:
        return name in self._entries or name in self._aliases

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._entries))

    def __len__(self) -> int:
        return len(self._entries)

    def names(self, aliases: bool = False) -> list[str]:
        """Every name (and, with ``aliases``, every alias after them)."""
        return list(self._entries) + (list(self._aliases) if aliases else [])

    @property
    def aliases(self) -> dict[str, str]:
        """``{alias: name}``."""
        return dict(self._aliases)

    def entries(self) -> list[Entry[I]]:
        return list(self._entries.values())

    def canonical(self, name: str) -> str:
        """``name`` itself, or the name an alias stands for; an unknown name raises one line listing the choices."""
        if name in self._entries:
            return name
        if name in self._aliases:
            return self._aliases[name]
        raise self.unknown(name)

    def entry(self, name: str) -> Entry[I]:
        return self._entries[self.canonical(name)]

    def info(self, name: str) -> I:
        """What the part ``name`` needs and reads (no import)."""
        return self.entry(name).info

    def select(self, **flags) -> list[str]:
        """The names whose info has every attribute of ``flags`` at the given value."""
        return [e.name for e in self._entries.values() if all(getattr(e.info, k) == v for k, v in flags.items())]

    def choices(self) -> str:
        """The names (and aliases) as one line for messages and ``--help``."""
        aliases = [f"{a} (= {n})" for a, n in self._aliases.items()]
        return ", ".join(list(self._entries) + aliases)

    def unknown(self, name: str) -> NeuroInspectError:
        return NeuroInspectError(f"unknown {self.kind} '{name}'; choose one of {self.choices()}")

    # the implementation ---------------------------------------------------------------------
    def get(self, name: str) -> object:
        """The implementation of ``name`` (imported on first use)."""
        return self.entry(name).load()
