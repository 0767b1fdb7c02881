"""The data sources: every kind of data a spec (or an in-memory object) can name, in one table.

This module does not import torch: the command line lists the sources in its ``--data`` help
from :data:`DATA_SOURCES` without loading any of them.

Kinds of source
---------------
``prefix``    a spec ``NAME:REST`` (``torchvision:NAME:ROOT``, ``waterbirds:ROOT`` …); the loader gets ``REST``
``folder``    a spec that is an existing folder; the loader gets its absolute path
``.csv``      (any suffix) a spec that is an existing file with that suffix; the loader gets its absolute path
``memory``    Python objects (tensors, a torch ``Dataset``, PIL images), not a spec

The built-in sources are declared in the table below, and their loaders attach themselves with
``@data_source(NAME)`` in the module that reads that layout (:mod:`.files`, :mod:`.torchvision_data`,
:mod:`.paper`, :mod:`.memory`). A new source is one decorated function, anywhere::

    @data_source("toy", "toy:N", "N generated images per class")
    def _toy(rest: str, download: bool) -> ImageData:
        ...

after which ``load_data("toy:8")``, ``Inspector(model, "toy:8")`` and ``--data toy:8`` open it.
A spec is resolved in this order: a registered ``NAME:`` prefix, then an existing file (by its
suffix) or folder, else one error that lists every usage.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

from neuroinspect.core.base.errors import NeuroInspectError

PREFIX, FOLDER, MEMORY = "prefix", "folder", "memory"


@dataclass(frozen=True)
class DataSource:
    """One kind of data: its name, how a spec for it reads, one phrase about it, and its loader.

    ``load(target, download)`` returns an ``ImageData`` (``load(data, class_names)`` for ``memory``);
    it is ``None`` until the module that reads this layout has been imported.
    """

    name: str
    usage: str
    about: str
    kind: str = PREFIX  # PREFIX, FOLDER, MEMORY, or a file suffix such as ".csv"
    load: Callable | None = None

    @property
    def on_disk(self) -> bool:
        return self.kind != MEMORY


DATA_SOURCES: dict[str, DataSource] = {
    s.name: s for s in (
        DataSource("folder", "ROOT", "an image folder: ROOT/CLASS/*.jpg or ROOT/{train,val,test}/CLASS/*", FOLDER),
        DataSource("csv", "FILE.csv", "a CSV manifest: path,label,split[,group]", ".csv"),
        DataSource("torchvision", "torchvision:NAME:ROOT",
                   "a torchvision dataset; Flowers102 and Food101 in the paper's splits"),
        DataSource("waterbirds", "waterbirds:ROOT", "Waterbirds as released, with ROOT/metadata.csv"),
        DataSource("metashift", "metashift:ROOT:SCENARIO[:SEED]", "a MetaShift scenario of the paper's Table II"),
        DataSource("memory", "in memory",
                   "a torch Dataset, tensors (images, labels[, groups]), (PIL images, labels) or {split: one of these}",
                   MEMORY),
    )
}


def data_source(name: str, usage: str | None = None, about: str | None = None, kind: str = PREFIX):
    """Register ``load`` as the loader of the data source ``name`` (a decorator).

    For a built-in source (already in :data:`DATA_SOURCES`) only the name is given; a new one also
    gives its ``usage`` (how a spec for it reads, e.g. ``"toy:N"``), one phrase ``about`` it, and its
    ``kind`` (see the module docstring). Registering a name again replaces its loader.
    """
    known = DATA_SOURCES.get(name)
    if known is None and not usage:
        raise ValueError(f"data source '{name}' is new: give its usage (how a spec for it reads)")
    if kind != PREFIX and kind not in (FOLDER, MEMORY) and not kind.startswith("."):
        raise ValueError(f"data source kind '{kind}' is not one of prefix, folder, memory or a file suffix like .csv")

    def register(load: Callable) -> Callable:
        base = known if known is not None and usage is None else DataSource(name, usage, about or "", kind)
        DATA_SOURCES[name] = replace(base, load=load)
        return load

    return register


def spec_help() -> str:
    """The sources a ``--data`` spec can name, in one line for the command line's help."""
    return "; ".join(f"{s.usage} ({s.about})" if s.about else s.usage for s in DATA_SOURCES.values() if s.on_disk)


def find_source(spec: str) -> tuple[DataSource, str]:
    """The source a spec names and what its loader gets: the rest after ``NAME:``, or the absolute path."""
    name, colon, rest = spec.partition(":")
    source = DATA_SOURCES.get(name)
    if colon and source is not None and source.kind == PREFIX:
        return source, rest
    path = Path(spec).expanduser().absolute()
    if not path.exists():
        raise NeuroInspectError(f"data '{spec}' does not exist; give {spec_help()}")
    kind = FOLDER if path.is_dir() else path.suffix.lower()
    for source in DATA_SOURCES.values():
        if source.kind == kind:
            return source, str(path)
    suffixes = sorted(s.kind for s in DATA_SOURCES.values() if s.kind.startswith("."))
    raise NeuroInspectError(f"data file '{spec}' is not a {' or '.join(suffixes)} manifest")


def memory_source() -> DataSource:
    """The source of in-memory data (the first registered with the kind ``memory``)."""
    return next(s for s in DATA_SOURCES.values() if s.kind == MEMORY)

