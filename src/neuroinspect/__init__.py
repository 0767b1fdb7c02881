"""NeuroInspect: find, show and fix the neurons behind an image classifier's mistakes."""
from .data import ImageData, load_data
from .errors import NeuroInspectError
from .explain import Explanation, explain_class
from .featureset import FeatureSet
from .models import LoadedModel, Preprocess, build_model
from .probe import Probe
from .session import Inspector

__version__ = "0.1.0"
__all__ = [
    "Explanation", "FeatureSet", "ImageData", "Inspector", "LoadedModel", "NeuroInspectError", "Preprocess", "Probe",
    "build_model", "explain_class", "load_data", "__version__",
]
