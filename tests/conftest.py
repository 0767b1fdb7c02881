import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # makes `planted:planted_cnn` an importable model spec


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    """Never touch the user's feature cache from a test."""
    monkeypatch.setenv("NEUROINSPECT_CACHE", str(tmp_path / "cache"))
