"""What ran: the package's version and those of its engines, recorded in every run folder."""
from __future__ import annotations

import platform

__version__ = "0.1.0"


def versions() -> dict:
    """``{"neuroinspect", "torch", "torchvision", "python", "platform"}`` of this process."""
    # the package's root (and so `neuroinspect --help`/`--version`) imports this module: keep it torch-free
    import torch  # lazy: see above
    import torchvision  # lazy: see above

    return {"neuroinspect": __version__, "torch": torch.__version__, "torchvision": torchvision.__version__,
            "python": platform.python_version(), "platform": platform.platform()}
