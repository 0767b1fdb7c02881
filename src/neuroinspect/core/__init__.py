"""The layer every stage stands on: models and their decision layer, data, cached features, files.

Nothing here imports a stage (``find``, ``show``, ``fix``), the report or the command line.
"""
