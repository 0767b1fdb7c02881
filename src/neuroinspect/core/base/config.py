"""Settings shared by every stage, and the one way a config takes keyword overrides, without importing torch
(the command line's ``--help`` reads the defaults from here).

A function that takes a config also takes its fields as keyword overrides::

    visualize_neurons(ins, [12], out_dir="vis", config=RenderConfig(steps=650), seed=3)

An override that names no field is one clear error listing the valid names.
"""
from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import TypeVar

from neuroinspect.core.base.errors import NeuroInspectError

PRECISIONS = ("fp32", "bf16", "fp16")
DEFAULT_CHUNK_SIZE = 1024  # images per saved part of a feature extraction at most
DEFAULT_CHUNK_SECONDS = 60.0  # a part is saved at the first batch boundary after this many seconds

C = TypeVar("C")


def field_names(config_type) -> list[str]:
    return [f.name for f in fields(config_type)]


def with_overrides(config: C, overrides: dict, what: str = "") -> C:
    """``config`` with ``overrides`` applied (a new object); an unknown name is a one-line error."""
    if not overrides:
        return config
    names = field_names(config)
    bad = [k for k in overrides if k not in names]
    if bad:
        label = what or type(config).__name__
        raise NeuroInspectError(f"unknown {label} setting(s) {', '.join(map(repr, bad))}; valid ones: {', '.join(names)}")
    return replace(config, **overrides)


def configured(config_type: type[C], config: C | None, overrides: dict) -> C:
    """``config`` (default: ``config_type()``) with ``overrides``: what a function taking ``config=None, **overrides`` uses."""
    if config is not None and not isinstance(config, config_type):
        raise NeuroInspectError(f"config must be a {config_type.__name__}, got a {type(config).__name__}")
    return with_overrides(config if config is not None else config_type(), overrides)


@dataclass(frozen=True)
class ExtractConfig:
    """How :func:`~neuroinspect.core.model.features.extract_features` runs over a split (where: the ``DevicePolicy``)."""

    batch_size: int = 64  # images per batch
    workers: int = 0  # DataLoader worker processes
    chunk_size: int = DEFAULT_CHUNK_SIZE  # save progress every this many images at most ...
    chunk_seconds: float = DEFAULT_CHUNK_SECONDS  # ... or every this many seconds
    verify_cache: bool = False  # re-hash every image instead of trusting the per-file hash index
    progress: bool = True


@dataclass(frozen=True)
class InspectorConfig(ExtractConfig):
    """How an :class:`~neuroinspect.session.Inspector` loads its model and data (and extracts features)."""

    weights: str | None = None  # a state_dict, a checkpoint holding one, or .safetensors
    num_classes: int | None = None  # resize the decision layer before loading weights
    head: str | None = None  # the decision layer's module name, when it cannot be found
    device: str = "auto"  # auto (a CUDA GPU when there is one, else the CPU), cpu, cuda or cuda:N
    precision: str = "auto"  # fp32, bf16, fp16 or auto (bf16 autocast on CUDA when supported; fp32 on a CPU)
    cache_dir: str | None = None  # feature cache (default: $NEUROINSPECT_CACHE or ~/.cache/neuroinspect)
    seed: int = 0  # seeds the model's random initialisation (scoped: global RNGs are left alone)
    allow_pickle: bool = False  # checkpoints holding pickled objects (only for trusted files)
    download: bool = False  # let torchvision datasets download
    class_names: str | list | None = None  # FILE or a,b,c or a list: the model's class order
    warn_chance: bool = True  # warn when accuracy is at or below chance (off for an untrained head)

    def extract_config(self) -> ExtractConfig:
        return ExtractConfig(**{f.name: getattr(self, f.name) for f in fields(ExtractConfig)})
