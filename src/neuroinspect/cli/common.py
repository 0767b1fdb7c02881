"""Options and helpers shared by the sub-commands."""
from __future__ import annotations

import argparse
import math
import os
import sys
import textwrap
import time
from pathlib import Path

from neuroinspect.core.base.config import PRECISIONS, InspectorConfig
from neuroinspect.core.base.errors import NeuroInspectError
from neuroinspect.core.model.sources import model_spec_help
from neuroinspect.core.data.registry import spec_help

_I = InspectorConfig()  # every default below is read from here


class HelpLayout(argparse.HelpFormatter):
    """argparse's help layout, except that a line never breaks inside a hyphenated name (``pooled-refit``)."""

    def _split_lines(self, text, width):
        return textwrap.wrap(self._whitespace_matcher.sub(" ", text).strip(), width, break_on_hyphens=False)

    def _fill_text(self, text, width, indent):
        return textwrap.fill(self._whitespace_matcher.sub(" ", text).strip(), width, initial_indent=indent,
                             subsequent_indent=indent, break_on_hyphens=False)


class OneLineParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are one line on stderr (what is wrong and where to look) and exit 2,
    and whose help keeps hyphenated names whole (:class:`HelpLayout`)."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", HelpLayout)
        super().__init__(*args, **kwargs)

    def error(self, message: str):  # noqa: D401 - argparse API
        print(f"{self.prog}: error: {message} (see {self.prog} --help)", file=sys.stderr)
        raise SystemExit(2)


# --------------------------------------------------------------------------- argument types
def _number(text: str, kind, what: str):
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what}, got '{text}'") from None
    if isinstance(value, float) and not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected {what}, got '{text}' (not a finite number)")
    return value


MAX_SEED = 2**32 - 1  # NumPy's seeds stop here; every seed of a command lies in [0, MAX_SEED]


def seed_int(text: str) -> int:
    value = _number(text, int, f"a seed (an integer from 0 to {MAX_SEED})")
    if not 0 <= value <= MAX_SEED:
        raise argparse.ArgumentTypeError(f"must be a seed from 0 to {MAX_SEED}, got {value}")
    return value


def input_px(text: str) -> int:
    value = _number(text, int, "a size in pixels")
    if value < MIN_INPUT_PX:
        raise argparse.ArgumentTypeError(f"must be at least {MIN_INPUT_PX} px, got {value}")
    return value


MIN_INPUT_PX = 16  # below this a classifier's downsampling leaves nothing to look at


def positive_int(text: str) -> int:
    value = _number(text, int, "a positive integer")
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer (1 or more), got {value}")
    return value


def nonneg_int(text: str) -> int:
    value = _number(text, int, "an integer, 0 or more")
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def positive_float(text: str) -> float:
    value = _number(text, float, "a positive number")
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def nonneg_float(text: str) -> float:
    value = _number(text, float, "a number, 0 or more")
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text}")
    return value


def finite_float(text: str) -> float:
    return _number(text, float, "a number")


def fraction(text: str) -> float:
    value = _number(text, float, "a number in [0, 1)")
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"must be in [0, 1), got {text}")
    return value


def percent(text: str) -> float:
    value = _number(text, float, "a percentage in [0, 100]")
    if not 0 <= value <= 100:
        raise argparse.ArgumentTypeError(f"must be a percentage in [0, 100], got {text}")
    return value


def check_out(args: argparse.Namespace) -> None:
    """Fail at once (before loading a model or extracting anything) if ``--out`` cannot be written."""
    out = getattr(args, "out", None)
    if out:
        from neuroinspect.core.base.io import check_writable_dir

        check_writable_dir(out, "--out")


def data_root(spec: str | None) -> Path | None:
    """The folder a data spec reads its images from by listing it (an image folder, or the ROOT of
    ``torchvision:NAME:ROOT``, ``waterbirds:ROOT``, ``metashift:ROOT:…``); None for a CSV manifest."""
    if not spec:
        return None
    path = Path(spec).expanduser()
    if not path.exists() and ":" in spec:
        kind, _, rest = spec.partition(":")
        path = Path((rest.partition(":")[2] if kind == "torchvision" else rest.partition(":")[0]) or ".").expanduser()
    return path.resolve() if path.is_dir() else None


def check_paths(args: argparse.Namespace) -> None:
    """Refuse an ``--out`` or ``--cache-dir`` inside the data, and data inside ``--out``: what a run writes
    there would become images of the data (new classes), or be replaced by the next run."""
    root = data_root(getattr(args, "data", None))
    if root is None:
        return
    for flag in ("out", "cache_dir"):
        given = getattr(args, flag, None)
        if not given:
            continue
        name, where = f"--{flag.replace('_', '-')}", Path(given).expanduser().resolve()
        if where == root or root in where.parents:
            raise NeuroInspectError(f"{name} '{given}' lies inside the data '{args.data}': what is written there would "
                                    f"become part of the data; choose a folder outside it")
        if flag == "out" and where in root.parents:
            raise NeuroInspectError(f"the data '{args.data}' lies inside --out '{given}': a run's results would mix "
                                    "with the images; choose an --out outside the data")


def add_model_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model")
    g.add_argument("--model", required=True, metavar="SPEC", help=model_spec_help())
    g.add_argument("--weights", metavar="FILE", help="weights: a state_dict, a checkpoint holding one, or .safetensors")
    g.add_argument("--num-classes", type=positive_int, metavar="N", help="resize the decision layer to N classes before loading weights")
    g.add_argument("--head", metavar="MODULE", help="name of the decision layer (nn.Linear) if it cannot be found automatically")
    g.add_argument("--allow-pickle", action="store_true", help="allow checkpoints that hold pickled objects (only for files you trust)")


def add_data_args(p: argparse.ArgumentParser, required: bool = True) -> None:
    g = p.add_argument_group("data")
    g.add_argument("--data", required=required, metavar="SPEC", help=spec_help())
    g.add_argument("--download", action="store_true", help="let torchvision datasets download into ROOT")
    g.add_argument("--cache-dir", metavar="DIR", help="feature cache (default: $NEUROINSPECT_CACHE or ~/.cache/neuroinspect)")
    g.add_argument("--class-names", metavar="FILE|A,B,C",
                   help="the model's class order: a file with one name per line, or a,b,c (default: a classes.txt "
                        "beside the data, else the model's own category list, else alphabetical folders / natural CSV labels)")
    g.add_argument("--batch-size", type=positive_int, default=_I.batch_size,
                   help=f"images per batch for feature extraction (default {_I.batch_size})")
    g.add_argument("--workers", type=nonneg_int, default=_I.workers, help=f"DataLoader worker processes (default {_I.workers})")
    g.add_argument("--chunk-size", type=positive_int, default=_I.chunk_size, metavar="N",
                   help=f"save extraction progress every N images at most (default {_I.chunk_size}) ...")
    g.add_argument("--chunk-seconds", type=positive_float, default=_I.chunk_seconds, metavar="S",
                   help="... or every S seconds, whichever comes first; an interrupted run resumes from there "
                        f"(default {_I.chunk_seconds:g})")
    g.add_argument("--verify-cache", action="store_true",
                   help="re-hash every image's bytes instead of trusting the per-file hash index (slower)")


def add_run_args(p: argparse.ArgumentParser, out_required: bool = True, precision: bool = True) -> None:
    g = p.add_argument_group("run")
    g.add_argument("--device", default=_I.device,
                   help=f"auto (a CUDA GPU when there is one, else the CPU), cpu, cuda or cuda:N (default {_I.device}); "
                        "run.json records the device used")
    if precision:
        g.add_argument("--precision", choices=["auto", *PRECISIONS], default=_I.precision,
                       help="autocast precision of the classifier: auto (default: bf16 on a CUDA GPU that supports it, "
                            "fp32 on a CPU), fp32, bf16 (also on CPUs with bf16 instructions) or fp16 (forward "
                            "passes only: feature extraction); results are always stored in fp32")
    g.add_argument("--seed", type=seed_int, default=_I.seed, help=f"random seed (default {_I.seed})")
    add_threads_arg(g)
    g.add_argument("--out", required=out_required, metavar="DIR", help="folder for the results")
    g.add_argument("--no-progress", action="store_true", help="hide progress bars")


def add_threads_arg(p) -> None:
    p.add_argument("--threads", type=nonneg_int, default=0, metavar="N",
                   help="CPU threads for torch and OpenMP (default 0: torch's choice, one per core); on a machine "
                        "other jobs share, 1 is often several times faster (see the README)")


def apply_threads(n: int | None) -> None:
    """Use ``n`` CPU threads: torch's intra-op pool, and OpenMP/MKL in the processes it starts (0/None: leave them)."""
    if not n:
        return
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(n)
    import torch  # lazy: --help and argument errors must not import torch

    torch.set_num_threads(n)


def used_device(args: argparse.Namespace) -> str:
    """The device ``--device`` resolves to (``auto``: a CUDA GPU when there is one, else the CPU)."""
    from neuroinspect.core.runtime.device import resolve_device  # lazy: imports torch

    return str(resolve_device(getattr(args, "device", None) or "auto"))


def threads_in_use() -> int:
    import torch  # lazy: only once a command runs

    return torch.get_num_threads()


def parse_name_list(text: str | None) -> list[str]:
    """``a, b,c`` as ``["a", "b", "c"]`` (empty items dropped; nothing given: ``[]``)."""
    return [t.strip() for t in str(text).split(",") if t.strip()] if text else []


def parse_int_list(text: str | None, flag: str = "", unique: bool = False) -> list[int]:
    """``12, 40`` as ``[12, 40]``; with ``unique``, an integer given twice is refused (naming ``flag``)."""
    if not text:
        return []
    try:
        values = [int(t) for t in str(text).replace(" ", "").split(",") if t]
    except ValueError:
        raise NeuroInspectError(f"expected comma-separated integers like 12,40; got '{text}'") from None
    twice = sorted({v for v in values if values.count(v) > 1})
    if unique and twice:
        raise NeuroInspectError(f"{flag or 'the list'} gives {', '.join(map(str, twice))} more than once; "
                                "give each one once")
    return values


def parse_seeds(text: str | None, flag: str = "--seeds") -> list[int]:
    """Seeds as ``--seed`` takes them (0 to ``MAX_SEED``), each once: a repeated seed would count twice in a mean."""
    seeds = parse_int_list(text, flag, unique=True)
    bad = [s for s in seeds if not 0 <= s <= MAX_SEED]
    if bad:
        raise NeuroInspectError(f"{flag}: {bad[0]} is not a seed; give integers from 0 to {MAX_SEED}, like 0,1,2")
    return seeds


def inspector_config(args: argparse.Namespace) -> InspectorConfig:
    """The :class:`InspectorConfig` of the parsed options (an option a command lacks keeps its default)."""
    given = {
        "weights": args.weights, "num_classes": args.num_classes, "head": args.head, "device": args.device,
        "precision": getattr(args, "precision", _I.precision), "cache_dir": getattr(args, "cache_dir", None),
        "seed": args.seed, "allow_pickle": args.allow_pickle, "progress": not getattr(args, "no_progress", False),
    }
    for name in ("batch_size", "workers", "download", "class_names", "chunk_size", "chunk_seconds", "verify_cache"):
        if hasattr(args, name):
            given[name] = getattr(args, name)
    return InspectorConfig(**given)


def make_inspector(args: argparse.Namespace):
    check_out(args)
    from neuroinspect.session import Inspector, seed_everything

    seed_everything(args.seed)  # once, at the command's entry point; the library itself seeds only generators
    ins = Inspector(args.model, getattr(args, "data", None), inspector_config(args))
    ins.start()  # a command under torchrun: the process group now, on the command's device
    return ins


def write_run_json(out: str | Path, args: argparse.Namespace, **extra) -> None:
    """Record what was run (command line, options, versions) in ``OUT/run.json`` (a :class:`RunInfo`).

    Also how many processes shared the work (``world_size``) and the share each took (``shards``,
    gathered from every rank under torchrun): every rank calls this, rank 0 alone writes.
    """
    from neuroinspect.core.base.records import RunInfo
    from neuroinspect.core.base.runinfo import versions
    from neuroinspect.core.runtime import distributed

    extra = {**distributed.run_record(), **extra}
    if not distributed.is_main():
        return
    options = {k: v for k, v in vars(args).items() if k != "func" and not callable(v)}
    RunInfo.from_dict({
        "command": args.command,
        "argv": sys.argv[1:],
        "options": options,
        "versions": versions(),
        "threads": threads_in_use(),
        "device": used_device(args),
        "time": time.strftime("%Y-%m-%d %H:%M:%S"),
        **extra,
    }).write(Path(out) / RunInfo.FILE)


def run_record(args: argparse.Namespace, **extra) -> dict:
    """What was run (command, argv, options), for a run.json that the library writes."""
    options = {k: v for k, v in vars(args).items() if k != "func" and not callable(v)}
    return {"command": args.command, "argv": sys.argv[1:], "options": options,
            "time": time.strftime("%Y-%m-%d %H:%M:%S"), **extra}


def print_headline(h: dict, out: str | Path) -> None:
    """The few lines a pipeline run (``debug`` or ``demo``) prints: the classes, the fix, the table."""
    from neuroinspect.core.base.records import Comparison
    from neuroinspect.fix.compare import format_table

    def pct(x):
        return "n/a" if x is None else f"{100 * x:.1f}%"

    seeds, metric = h["seeds"], h["metric"].replace("_acc", "").replace("_", "-")
    if h.get("evidence"):  # the answer first: where the evidence behind the mistakes sits
        print(h["evidence"])
    print(f"debugged: {', '.join(h['classes'])}; edited (seed {seeds[0]}): "
          + "; ".join(f"{k} ← neurons {v}" for k, v in h["edited"].items()))
    for line in h.get("chosen_because", ()):  # why each class, in words
        print(f"  {line}")
    others = ", ".join(f"{m}: {pct(v)}" for m, v in h["by_method"].items() if m not in ("original", h["fix"]))
    print(f"{h['split']} {metric} accuracy, mean of {len(seeds)} seed(s): {pct(h['worst_before'])} → "
          f"{pct(h['worst_after'])} with {h['fix']}" + (f" ({others})" if others else ""))
    print(f"{h['split']} average accuracy:  {pct(h['accuracy_before'])} → {pct(h['accuracy_after'])}")
    rows = Comparison.read(Path(out) / "compare" / Comparison.FILE).rows
    print(format_table(rows))
    if h.get("timings_s"):
        print("stage times: " + ", ".join(f"{k} {v:.1f} s" for k, v in h["timings_s"].items()) + " (also in run.json)")
    print(f"report: {h['report']}  ({h['seconds']:.0f} s)")
