"""What the stages read from a session: the explicit type of an ``Inspector`` for lower layers.

``neuroinspect.session.Inspector`` subclasses :class:`InspectedModel`, so code below it (e.g. the
visualisation) can recognise one with ``isinstance`` without importing the session module.
"""
from __future__ import annotations

from pathlib import Path
from typing import Protocol, runtime_checkable

from neuroinspect.core.data.images import ImageData
from neuroinspect.core.model.featureset import FeatureSet
from neuroinspect.core.model.models import LoadedModel
from neuroinspect.core.model.probe import Probe


@runtime_checkable
class InspectedModel(Protocol):
    """A model under inspection with its probe, class names and (optionally) a dataset."""

    loaded: LoadedModel
    probe: Probe
    data: ImageData | None
    cache_dir: Path | None

    @property
    def class_names(self) -> list[str]: ...

    def features(self, split: str) -> FeatureSet: ...
