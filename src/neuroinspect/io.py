"""Atomic file writes and small serialisation helpers.

Every file the project writes goes through here: it is written to a temporary
file in the same folder and renamed into place, so a crash or Ctrl-C never leaves
a half-written file behind.
"""
from __future__ import annotations

import contextlib
import csv
import io as _io
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator


def default_cache_dir() -> Path:
    """Where features and generated data are cached: ``$NEUROINSPECT_CACHE`` or ``~/.cache/neuroinspect``."""
    return Path(os.environ.get("NEUROINSPECT_CACHE", Path.home() / ".cache" / "neuroinspect"))


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text(path: str | os.PathLike, text: str) -> Path:
    return write_bytes(path, text.encode("utf-8"))


def _clean(obj: Any) -> Any:
    """Make ``obj`` JSON-safe: tensors and numpy values become Python numbers, NaN becomes null."""
    if hasattr(obj, "tolist") and not isinstance(obj, (str, bytes)):
        obj = obj.tolist()
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    return obj


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    return write_text(path, json.dumps(_clean(obj), indent=2) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def write_csv(path: str | os.PathLike, header: list[str], rows: list[list[Any]]) -> Path:
    buf = _io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(header)
    writer.writerows(rows)
    return write_text(path, buf.getvalue())


def save_png(path: str | os.PathLike, image) -> Path:
    """Save a PIL image as PNG atomically."""
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG")
    return Path(path)
