"""Test helper: the JSON files a run folder holds load as their typed records, losslessly."""
from __future__ import annotations

import json
from pathlib import Path

from neuroinspect.core.records import RECORDS


def load_run_files(folder: Path) -> dict:
    """``{file name: record}`` of every record file in ``folder``; each carries the current schema and
    writes back to the same JSON (nothing lost, nothing added)."""
    out = {}
    for name, kind in RECORDS.items():
        path = Path(folder) / name
        if path.is_file():
            data = json.loads(path.read_text(encoding="utf-8"))
            assert data["schema"] == kind.SCHEMA, name
            record = kind.read(path)
            assert json.loads(record.to_json()) == data, name
            assert list(json.loads(record.to_json())) == list(data), name  # same key order
            out[name] = record
    return out
