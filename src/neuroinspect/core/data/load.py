"""Open data: a spec (a folder, a CSV manifest, ``torchvision:NAME:ROOT``, ``waterbirds:ROOT``,
``metashift:ROOT:SCENARIO[:SEED]``, or any registered ``NAME:…``) or in-memory data, as an ``ImageData``.

The sources are listed in :mod:`neuroinspect.core.data.registry`; importing this module imports
the modules of the built-in ones, which registers their loaders.
"""
from __future__ import annotations

import os
from pathlib import Path

from neuroinspect.core.base.errors import NeuroInspectError
from neuroinspect.core.data import files, memory, paper, torchvision_data  # noqa: F401  (they register the built-in loaders)
from neuroinspect.core.data.images import ImageData
from neuroinspect.core.data.registry import FOLDER, PREFIX, find_source, memory_source

CLASSES_FILE = "classes.txt"


def parse_class_names(text: str | os.PathLike | list[str]) -> list[str]:
    """``--class-names``: a file with one name per line, or ``a,b,c``."""
    if isinstance(text, (list, tuple)):
        return [str(t) for t in text]
    text = str(text)
    p = Path(text).expanduser()
    if p.is_file():
        try:
            lines = p.read_text(encoding="utf-8-sig").splitlines()  # a byte-order mark is not part of a name
        except (OSError, UnicodeDecodeError) as err:
            raise NeuroInspectError(f"cannot read the class names file '{p}': {err}") from None
        names = [ln.strip() for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]
    elif "," in text or not (os.sep in text or text.endswith(".txt")):
        names = [t.strip() for t in text.split(",") if t.strip()]
    else:
        raise NeuroInspectError(f"class names file '{text}' does not exist; give a file with one name per line or a,b,c")
    if not names:
        raise NeuroInspectError(f"--class-names '{text}' holds no names; give a file with one name per line or a,b,c")
    return names


def load_data(spec, download: bool = False, class_names: str | list[str] | None = None) -> ImageData:
    """Open the data named by ``spec`` (a spec string or path; or in-memory data, see :mod:`.memory`).

    Classes are ordered alphabetically (folders) or naturally (CSV labels) unless ``class_names``
    (a list, a file with one name per line, or ``a,b,c``) or a ``classes.txt`` beside the data
    gives the order; that order is the model's output order. For in-memory data ``class_names``
    names the classes of integer labels, or orders string labels.
    """
    if not isinstance(spec, (str, os.PathLike)):
        source = memory_source()
        return source.load(spec, parse_class_names(class_names) if class_names is not None else None)
    spec = str(spec)
    source, target = find_source(spec)
    if source.load is None:
        raise NeuroInspectError(f"data source '{source.name}' ({source.usage}) has no loader registered")
    data = source.load(target, download)
    beside = None
    if source.kind != PREFIX:  # a path on disk: a classes.txt beside it gives the class order
        path = Path(target)
        beside = (path if source.kind == FOLDER else path.parent) / CLASSES_FILE
        data.spec = spec
    if class_names is not None:
        data = data.with_class_order(parse_class_names(class_names))
        data.class_order = "--class-names"
    elif beside is not None and beside.is_file():
        data = data.with_class_order(parse_class_names(str(beside)), source=str(beside))
        data.class_order = str(beside)
    return data
