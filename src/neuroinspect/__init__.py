"""NeuroInspect: find, show and fix the neurons behind an image classifier's mistakes.

The public names are imported on first use, so that ``import neuroinspect`` (and the command
line's ``--help``) does not pay for importing torch.
"""
from __future__ import annotations

import importlib

from .errors import NeuroInspectError

__version__ = "0.1.0"
_LAZY = {
    "Explanation": ".explain", "explain_class": ".explain", "FeatureSet": ".featureset", "ImageData": ".data",
    "load_data": ".data", "LoadedModel": ".models", "Preprocess": ".models", "build_model": ".models",
    "Probe": ".probe", "Inspector": ".session",
}
__all__ = [
    "Explanation", "FeatureSet", "ImageData", "Inspector", "LoadedModel", "NeuroInspectError", "Preprocess", "Probe",
    "build_model", "explain_class", "load_data", "__version__",
]


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'neuroinspect' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
