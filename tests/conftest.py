import contextlib
import os
import sys
from pathlib import Path

# One CPU thread for torch/OpenMP/MKL, set before anything imports torch (child processes inherit it).
# The tests run tiny models and matrices: on a 2-core machine that other jobs share, a second thread
# only spins, and the suite takes several times the CPU (measured: fast tier ~86 s of CPU with one
# thread against ~280 s with torch's default). A value already set in the environment wins. The few
# tests that run the real EfficientNet-Lite0 over hundreds of images take every core for that work
# (all_cores below): there the convolutions are large enough for threads to pay.
for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")
CORES = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


@contextlib.contextmanager
def all_cores():
    """Torch on every core of this machine inside the block (real-model work), one thread again after it."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(CORES)
    try:
        yield
    finally:
        torch.set_num_threads(before)

import pytest  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))  # makes `planted:planted_cnn` an importable model spec


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    """Never touch the user's feature cache from a test."""
    monkeypatch.setenv("NEUROINSPECT_CACHE", str(tmp_path / "cache"))
