"""NeuroInspect: find, show and fix the neurons behind an image classifier's mistakes.

The public names are imported on first use, so that ``import neuroinspect`` (and the command
line's ``--help``) does not pay for importing torch.
"""
from __future__ import annotations

import importlib

from neuroinspect.core.base.errors import NeuroInspectError
from neuroinspect.core.base.runinfo import __version__

_LAZY = {
    "Explanation": ".find.ranking", "explain_class": ".find.ranking", "FeatureSet": ".core.model.featureset",
    "ImageData": ".core.data.images", "load_data": ".core.data.load", "data_source": ".core.data.registry",
    "LoadedModel": ".core.model.models", "Preprocess": ".core.model.models", "build_model": ".core.model.models",
    "model_source": ".core.model.models", "Probe": ".core.model.probe", "Inspector": ".session", "Pictures": ".results",
    "Fix": ".results", "ComparisonTable": ".results", "DebugRun": ".results",
}
_SUBMODULES = ("demo", "pipeline", "results")  # ``neuroinspect.demo.load(...)`` after a bare ``import neuroinspect``
__all__ = [
    "ComparisonTable", "DebugRun", "Explanation", "FeatureSet", "Fix", "ImageData", "Inspector", "LoadedModel",
    "NeuroInspectError", "Pictures", "Preprocess", "Probe", "build_model", "data_source", "explain_class", "load_data",
    "model_source", "__version__",
]


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    if name in _SUBMODULES:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'neuroinspect' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
