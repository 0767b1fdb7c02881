"""Data: what a data spec names, read as an :class:`~neuroinspect.core.data.images.ImageData`.

``registry`` (torch-free) lists the sources; ``load.load_data`` opens one; ``images`` holds the
types every source returns; ``files``, ``torchvision_data``, ``paper`` and ``memory`` read the
built-in layouts.
"""
