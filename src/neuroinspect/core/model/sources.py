"""The model sources' name table, without importing torch: what ``--model`` accepts, for the command line.

Each source names models one way: ``NAME:REST`` (``exact=False``; the builder reads ``REST``) or
the whole spec ``NAME`` (``exact=True``). The builders live in :mod:`neuroinspect.core.model.models` and
are imported when a model is built; ``@model_source`` there adds a source to this same table.
"""
from __future__ import annotations

from dataclasses import dataclass

from neuroinspect.core.base.registry import Registry


@dataclass(frozen=True)
class SourceInfo:
    """How a source is written in a model spec."""

    usage: str  # e.g. "torchvision:NAME[/WEIGHTS]", shown in --help and in errors
    exact: bool = False  # True: the whole spec is the source's name


CALLABLE_SOURCE = "MODULE:CALLABLE"  # any other ``a.b:c`` spec: an importable factory
MODEL_SOURCES: Registry[SourceInfo] = Registry("model source")
_M = "neuroinspect.core.model.models"
MODEL_SOURCES.declare("torchvision", SourceInfo("torchvision:NAME[/WEIGHTS]"), f"{_M}:_torchvision")
MODEL_SOURCES.declare("timm", SourceInfo("timm:NAME[/pretrained]"), f"{_M}:_timm")
MODEL_SOURCES.declare("efficientnet-lite0", SourceInfo("efficientnet-lite0", exact=True), f"{_M}:_lite")
MODEL_SOURCES.declare("efficientnet-lite2", SourceInfo("efficientnet-lite2", exact=True), f"{_M}:_lite")
MODEL_SOURCES.declare("hf", SourceInfo("hf:NAME_OR_DIR"), f"{_M}:_hf")
MODEL_SOURCES.declare(CALLABLE_SOURCE, SourceInfo(CALLABLE_SOURCE), f"{_M}:_callable")


def model_spec_help() -> str:
    """Every way to write ``--model``, from the table (the importable factory last)."""
    usages = [e.info.usage for e in MODEL_SOURCES.entries() if e.name != CALLABLE_SOURCE]
    return ", ".join(usages) + f", or {CALLABLE_SOURCE}"
