"""The ``neuroinspect`` command line: one sub-command per stage.

Each sub-command lives in its own module of this package and exposes
``register(subparsers)``, which adds its parser and sets ``func=run``.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import sys

from ..errors import NeuroInspectError

COMMANDS = ["classes", "train", "explain", "visualize", "edit", "compare", "report", "demo"]


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    parser = argparse.ArgumentParser(
        prog="neuroinspect",
        description="Find, show and fix the neurons behind an image classifier's mistakes.",
    )
    parser.add_argument("--version", action="version", version=f"neuroinspect {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log more detail")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as err:  # a stage whose module is absent from this install
            if err.name != f"{__name__}.{name}":
                raise
            continue
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except NeuroInspectError as err:
        print(f"neuroinspect {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"neuroinspect {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
