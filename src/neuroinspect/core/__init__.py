"""What every stage stands on, in four layers; each imports only the layers above it in this list.

- ``base``     torch-free: errors, configs, atomic files, metrics, typed records, versions, HTML helpers
- ``runtime``  where work runs: the device policy, torchrun's process group, progress bars
- ``data``     data sources (a registry: folders, CSV manifests, torchvision, Waterbirds, MetaShift,
               in-memory data) and the ``ImageData`` they give
- ``model``    model sources (a registry), the features / decision-layer split, cached features

Nothing here imports a stage (``find``, ``show``, ``fix``), the report or the command line.
"""
