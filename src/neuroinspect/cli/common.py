"""Options and helpers shared by the sub-commands."""
from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

from ..errors import NeuroInspectError


def add_model_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model")
    g.add_argument("--model", required=True, metavar="SPEC",
                   help="torchvision:NAME[/WEIGHTS], timm:NAME[/pretrained], efficientnet-lite0|efficientnet-lite2, or MODULE:CALLABLE")
    g.add_argument("--weights", metavar="FILE", help="weights: a state_dict, a checkpoint holding one, or .safetensors")
    g.add_argument("--num-classes", type=int, metavar="N", help="resize the decision layer to N classes before loading weights")
    g.add_argument("--head", metavar="MODULE", help="name of the decision layer (nn.Linear) if it cannot be found automatically")
    g.add_argument("--allow-pickle", action="store_true", help="allow checkpoints that hold pickled objects (only for files you trust)")


def add_data_args(p: argparse.ArgumentParser, required: bool = True) -> None:
    g = p.add_argument_group("data")
    g.add_argument("--data", required=required, metavar="SPEC",
                   help="an image folder (ROOT/CLASS/*.jpg or ROOT/{train,val,test}/CLASS/*), a CSV manifest "
                        "(path,label,split[,group]) or torchvision:NAME:ROOT")
    g.add_argument("--download", action="store_true", help="let torchvision datasets download into ROOT")
    g.add_argument("--cache-dir", metavar="DIR", help="feature cache (default: $NEUROINSPECT_CACHE or ~/.cache/neuroinspect)")
    g.add_argument("--batch-size", type=int, default=64, help="images per batch for feature extraction (default 64)")
    g.add_argument("--workers", type=int, default=0, help="DataLoader worker processes (default 0)")


def add_run_args(p: argparse.ArgumentParser, out_required: bool = True) -> None:
    g = p.add_argument_group("run")
    g.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto (default cpu)")
    g.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    g.add_argument("--out", required=out_required, metavar="DIR", help="folder for the results")
    g.add_argument("--no-progress", action="store_true", help="hide progress bars")


def parse_int_list(text: str | None) -> list[int]:
    if not text:
        return []
    try:
        return [int(t) for t in str(text).replace(" ", "").split(",") if t]
    except ValueError:
        raise NeuroInspectError(f"expected comma-separated integers like 12,40; got '{text}'") from None


def make_inspector(args: argparse.Namespace):
    from ..session import Inspector

    return Inspector(
        args.model,
        getattr(args, "data", None),
        weights=args.weights,
        num_classes=args.num_classes,
        head=args.head,
        device=args.device,
        cache_dir=getattr(args, "cache_dir", None),
        batch_size=getattr(args, "batch_size", 64),
        workers=getattr(args, "workers", 0),
        seed=args.seed,
        allow_pickle=args.allow_pickle,
        download=getattr(args, "download", False),
        progress=not getattr(args, "no_progress", False),
    )


def versions() -> dict:
    import torch
    import torchvision

    from .. import __version__

    return {"neuroinspect": __version__, "torch": torch.__version__, "torchvision": torchvision.__version__,
            "python": platform.python_version(), "platform": platform.platform()}


def write_run_json(out: str | Path, args: argparse.Namespace, **extra) -> None:
    """Record what was run (command line, options, versions) in ``OUT/run.json``."""
    from ..io import write_json

    options = {k: v for k, v in vars(args).items() if k != "func" and not callable(v)}
    write_json(Path(out) / "run.json", {
        "command": args.command,
        "argv": sys.argv[1:],
        "options": options,
        "versions": versions(),
        "time": time.strftime("%Y-%m-%d %H:%M:%S"),
        **extra,
    })

