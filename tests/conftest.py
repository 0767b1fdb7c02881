import os
import sys
from pathlib import Path

# One CPU thread for torch/OpenMP/MKL, set before anything imports torch (child processes inherit it).
# The tests run tiny models and matrices: on a 2-core machine that other jobs share, a second thread
# only spins, and the suite takes several times the CPU (measured: fast tier ~86 s of CPU with one
# thread against ~280 s with torch's default). A value already set in the environment wins.
for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import pytest  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))  # makes `planted:planted_cnn` an importable model spec


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    """Never touch the user's feature cache from a test."""
    monkeypatch.setenv("NEUROINSPECT_CACHE", str(tmp_path / "cache"))
