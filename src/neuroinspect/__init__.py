"""NeuroInspect: find, show and fix the neurons behind an image classifier's mistakes."""
from .errors import NeuroInspectError
from .featureset import FeatureSet
from .models import LoadedModel, Preprocess, build_model
from .probe import Probe

__version__ = "0.1.0"
__all__ = ["NeuroInspectError", "FeatureSet", "LoadedModel", "Preprocess", "Probe", "build_model", "__version__"]
