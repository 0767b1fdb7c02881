"""The model: model sources (``@model_source``), its features / decision-layer split (``Probe``),
and the cached features it gives on data (``FeatureSet``)."""
