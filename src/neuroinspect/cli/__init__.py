"""The ``neuroinspect`` command line: one sub-command per stage.

Each sub-command lives in its own module of this package and exposes
``register(subparsers)``, which adds its parser and sets ``func=run``.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib
import logging
import os
import sys

from neuroinspect.core.base.errors import NeuroInspectError

COMMANDS = ["classes", "train", "explain", "visualize", "edit", "compare", "debug", "report", "demo"]


def build_parser() -> argparse.ArgumentParser:
    from neuroinspect import __version__
    from neuroinspect.cli.common import OneLineParser

    parser = OneLineParser(
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
    try:
        args = parser.parse_args(argv)
    except SystemExit as done:  # --help, --version, or a one-line argument error (exit 2)
        return done.code if isinstance(done.code, int) else (0 if done.code is None else 2)
    from neuroinspect.core.runtime import distributed
    from neuroinspect.core.runtime.progress import install_log_handler

    rank = distributed.env_rank()  # under torchrun: rank 0 talks, the others stay quiet unless -v
    install_log_handler(logging.INFO if args.verbose else (logging.WARNING if rank == 0 else logging.ERROR),
                        prefix=f"[rank {rank}] " if rank else "")
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    from neuroinspect.cli.common import apply_threads

    apply_threads(getattr(args, "threads", None))  # before any work: torch's pool is sized once
    quiet = open(os.devnull, "w") if rank and not args.verbose else None
    where = f" (rank {rank})" if rank else ""
    try:
        from neuroinspect.cli.common import check_paths

        check_paths(args)  # every command: no --out or --cache-dir inside the data, no data inside --out
        distributed.new_record()  # run.json's shards: this command's alone
        with contextlib.redirect_stdout(quiet) if quiet else contextlib.nullcontext():
            return int(args.func(args) or 0)
    except NeuroInspectError as err:
        print(f"neuroinspect {args.command}: error{where}: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # a full disk outside the atomic writes (a folder, a rename): one line too
        from neuroinspect.core.base.io import NO_SPACE, no_space_message

        if err.errno not in NO_SPACE:
            raise
        print(f"neuroinspect {args.command}: error{where}: {no_space_message(err.filename or '?')}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"neuroinspect {args.command}: interrupted{where}", file=sys.stderr)
        return 130
    finally:
        distributed.shutdown()
        if quiet:
            quiet.close()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
