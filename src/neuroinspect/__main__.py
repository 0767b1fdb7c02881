"""``python -m neuroinspect``: the command line (also the way to run it under ``torchrun ... -m neuroinspect``)."""
import sys

from neuroinspect.cli import main

if __name__ == "__main__":
    sys.exit(main())
