"""The steps every table recipe shares: train → explain → visualize → pick neurons → compare → report.

Each step is one ``neuroinspect`` sub-command run in-process (the same command line a person
would type), so a run folder holds the usual ``train/``, ``explain/``, ``visualize/`` and
``compare/`` sub-folders and ``neuroinspect report`` reads it. The table scripts
(``table2_metashift.py``, ``table3_waterbirds.py``, ``table4_finegrained.py``) describe their
cases with :class:`Case` and format the rows in the paper's layout.
"""
from __future__ import annotations

import argparse
import json
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path

from neuroinspect.cli import main as cli_main
from neuroinspect.core.base.io import write_json, write_text

TINY = "neuroinspect.synthetic.fakedata:tiny_cnn"


class RecipeError(RuntimeError):
    """A step of the recipe failed (its command printed why)."""


@dataclass
class Variant:
    """One ``compare`` run: the methods it trains and the validation metric that keeps an epoch."""

    label: str  # sub-folder suffix and row suffix ("" for the main run, "C" for select-by class)
    methods: list[str]
    select_by: str = "accuracy"


@dataclass
class Case:
    """One model to debug: its data, how to train it, which classes to fix and how to edit."""

    name: str
    data: str
    model: str
    train_args: list[str]
    classes: list[str] | None  # None: the worst class on val
    edit_args: list[str]
    variants: list[Variant]
    pick_by: str = "crs"  # crs: lowest core relevance score among the inspected neurons; rank: ranking order
    init_weights: str | None = None


@dataclass
class Settings:
    out: Path
    smoke: bool = False
    seeds: tuple[int, ...] = (0, 1, 2)  # seeds of every fit in compare (rows: mean ± std)
    device: str = "cpu"
    seed: int = 0
    inspect: int = 30  # top neurons visualised per class (the paper looked at the top 30)
    pick: int = 3  # neurons edited per class
    vis_steps: int = 300
    vis_size: int = 224
    clip: str = "none"
    neurons: dict[str, list[int]] = field(default_factory=dict)  # a person's choice: {class: neurons}
    cache_dir: str | None = None
    workers: int = 0
    explain_steps: int = 1000
    progress: bool = True


def add_common_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, help="folder for every step's results and the table")
    p.add_argument("--smoke", action="store_true",
                   help="run every step end to end on tiny generated copies of the data layouts with a tiny CNN "
                        "(a few seconds on a CPU; the numbers mean nothing)")
    p.add_argument("--methods", help="comma-separated compare methods (default: the paper's methods that this "
                                     "version has; see `neuroinspect compare --help`)")
    p.add_argument("--device", default="auto", help="cpu, cuda or auto (default auto)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--inspect", type=int, default=30, help="top insufficient neurons visualised per class (default 30)")
    p.add_argument("--pick", type=int, default=3, help="neurons edited per class (default 3)")
    p.add_argument("--neurons", action="append", default=[], metavar="CLASS=1,2,3",
                   help="edit these neurons of CLASS instead of picking them automatically (repeatable); "
                        "the paper chose its neurons by looking at the visualisations")
    p.add_argument("--clip", default="none",
                   help="CLIP for the visualisations: open_clip:ViT-B-32/laion2b_s34b_b79k (downloads), "
                        "open_clip:MODEL@CHECKPOINT or none (default none: the class-conditional recipe)")
    p.add_argument("--vis-steps", type=int, default=300, help="visualisation steps (default 300)")
    p.add_argument("--cache-dir", help="feature cache (default: $NEUROINSPECT_CACHE or ~/.cache/neuroinspect)")
    p.add_argument("--workers", type=int, default=8, help="DataLoader workers for the image passes (default 8)")
    p.add_argument("--no-progress", action="store_true")


def settings_from(args) -> Settings:
    neurons = {}
    for item in args.neurons:
        cls, sep, text = item.partition("=")
        if not sep:
            raise SystemExit(f"--neurons expects CLASS=1,2,3; got '{item}'")
        neurons[cls.strip()] = [int(t) for t in text.split(",") if t.strip()]
    s = Settings(Path(args.out), smoke=args.smoke, device=args.device, seed=args.seed, inspect=args.inspect,
                 pick=args.pick, vis_steps=args.vis_steps, clip=args.clip, neurons=neurons, cache_dir=args.cache_dir,
                 workers=args.workers, progress=not args.no_progress)
    if args.smoke:  # the same steps, scaled down
        s.device, s.inspect, s.pick, s.vis_steps, s.vis_size, s.clip = "cpu", 2, 1, 2, 32, "none"
        s.workers, s.explain_steps, s.progress, s.seeds = 0, 100, False, (0,)
    return s


def available_methods() -> list[str]:
    """The methods ``neuroinspect compare`` accepts in this version."""
    from neuroinspect.fix.config import FIX_METHODS

    return list(FIX_METHODS)


def choose_methods(paper: list[str], given: str | None) -> tuple[list[str], list[str]]:
    """(methods to run, paper methods this version lacks). ``given`` overrides the paper's list."""
    if given:
        return [m.strip() for m in given.split(",") if m.strip()], []
    have = available_methods()
    return [m for m in paper if m in have], [m for m in paper if m not in have]


def run_cli(argv: list[str]) -> None:
    rc = cli_main([str(a) for a in argv])
    if rc != 0:
        raise RecipeError(f"`neuroinspect {' '.join(map(str, argv))}` failed with exit code {rc}")


# --------------------------------------------------------------------------- the steps
def run_case(case: Case, s: Settings, weights: str | None = None) -> dict:
    """Run every step for one case into ``s.out / case.name``; return what the table needs."""
    out = s.out / case.name
    common = ["--device", s.device, "--seed", s.seed, *(["--no-progress"] if not s.progress else [])]
    data_args = ["--data", case.data, "--workers", s.workers, *(["--cache-dir", s.cache_dir] if s.cache_dir else [])]
    timings: dict[str, float] = {}
    t = time.perf_counter()

    # 1. the ERM model (or the user's own, given with --weights)
    if weights is None:
        init = ["--init-weights", case.init_weights] if case.init_weights else []
        run_cli(["train", "--model", case.model, *init, *data_args, *case.train_args, *common, "--out", out / "train"])
        reload = json.loads((out / "train" / "train.json").read_text())["reload"]
        spec, weights, n_classes = reload["model"], reload["weights"], int(reload["num_classes"])
    else:
        from neuroinspect.core.data.load import load_data
        from neuroinspect.train import reload_spec

        spec, n_classes = reload_spec(case.model), len(load_data(case.data).class_names)
    model_args = ["--model", spec, "--weights", weights, "--num-classes", n_classes]
    timings["train"] = time.perf_counter() - t

    # 2. which classes to fix (the worst on val, unless the case names them)
    from neuroinspect.session import Inspector

    ins = Inspector(spec, case.data, weights=weights, num_classes=n_classes, device=s.device, cache_dir=s.cache_dir,
                    seed=s.seed, workers=s.workers, progress=s.progress)
    val = ins.metrics("val")
    classes = case.classes or [val.worst_class]
    del ins

    # 3. explain, visualise and pick neurons for each class
    t = time.perf_counter()
    picked: dict[str, list[int]] = {}
    notes: list[str] = []
    for k, cls in enumerate(classes):
        tag = "" if k == 0 else f"-{cls}"
        ex = out / f"explain{tag}"
        run_cli(["explain", *model_args, *data_args, "--class", cls, "--split", "val", "--max-steps", s.explain_steps,
                 *common, "--out", ex])
        ranking = json.loads((ex / "ranking.json").read_text())
        top = [int(r["neuron"]) for r in ranking.get("insufficient", [])][: s.inspect]
        if not top:
            top = [int(r["neuron"]) for r in ranking.get("excessive", [])][: s.inspect]
            if top:
                notes.append(f"{cls}: no insufficient neuron ranked; looked at the excessive ones")
        given = s.neurons.get(cls)
        shown = list(dict.fromkeys([*(given or []), *top]))
        if not shown:
            notes.append(f"{cls}: not edited — explain ranked no neuron ({ranking.get('n_mistakes')} mistakes on val)")
            continue
        vis = out / f"visualize{tag}"
        run_cli(["visualize", *model_args, *data_args, "--neurons", ",".join(map(str, shown)), "--classes", cls,
                 "--clip", s.clip, "--recipe", "clip-illusion" if s.clip != "none" else "class",
                 "--steps", s.vis_steps, "--size", s.vis_size, *common, "--out", vis])
        if given:
            picked[cls] = given
            notes.append(f"{cls}: neurons {given} given on the command line")
            continue
        picked[cls] = pick_neurons(top, json.loads((vis / "visualizations.json").read_text()), cls, s.pick, case.pick_by)
        notes.append(f"{cls}: picked {picked[cls]} by {case.pick_by} among the top {len(top)} ranked neurons")
    timings["explain+visualize"] = time.perf_counter() - t

    # 4. the edit and the baselines, once per variant
    classes = [c for c in classes if c in picked]
    if not classes:
        raise RecipeError(f"{case.name}: no class has neurons to edit ({'; '.join(notes)})")
    t = time.perf_counter()
    rows: dict[str, dict] = {}
    targets = [a for cls in classes for a in ("--class", cls, "--neurons", ",".join(map(str, picked[cls])))]
    for v in case.variants:
        if not v.methods:
            continue
        folder = out / ("compare" if not v.label else f"compare-{v.label}")
        run_cli(["compare", *model_args, *data_args, *targets, "--methods", ",".join(v.methods),
                 "--select-by", v.select_by, "--seeds", ",".join(map(str, s.seeds)), *case.edit_args, *common,
                 "--out", folder])
        comp = json.loads((folder / "compare.json").read_text())
        for row in comp["rows"]:
            name = row["method"] if not v.label or row["method"] == "original" else f"{row['method']} ({v.label})"
            rows.setdefault(name, row)
    timings["compare"] = time.perf_counter() - t

    # 5. the HTML report of the run
    run_cli(["report", out])
    return {"case": case.name, "data": case.data, "classes": classes, "neurons": picked, "rows": rows,
            "val_worst_class": val.worst_class, "notes": notes, "model_args": [str(a) for a in model_args],
            "seconds": {k: round(v, 1) for k, v in timings.items()}}


def pick_neurons(top: list[int], visualizations: dict, cls: str, k: int, by: str) -> list[int]:
    """``k`` neurons of ``top``: the lowest core relevance scores inside ``cls`` (``by="crs"``) or the first ``k``."""
    if by == "rank":
        return top[:k]
    crs = {int(r["neuron"]): r["crs"] for r in visualizations.get("images", [])
           if r.get("class") == cls and r.get("crs") is not None}
    order = sorted(top, key=lambda j: (crs.get(j) is None, crs.get(j, 0.0), top.index(j)))
    return order[:k]


# --------------------------------------------------------------------------- the table files
def pct(v, digits: int = 2) -> str:
    return "—" if v is None else f"{100 * v:.{digits}f}%"


def signed(v, digits: int = 2) -> str:
    return "—" if v is None else f"{100 * v:+.{digits}f}"


def write_table(out: Path, name: str, title: str, markdown_body: str, payload: dict, expected_gpu: str,
                smoke: bool) -> tuple[Path, Path]:
    """``OUT/NAME.md`` and ``OUT/NAME.json``: our numbers beside the paper's, with how they were made."""
    env = {"python": platform.python_version(), "machine": platform.machine(), "platform": platform.platform()}
    try:
        import torch

        env["torch"] = torch.__version__
        env["gpu"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except Exception:  # pragma: no cover
        pass
    warn = ("\n**Smoke run**: tiny generated images and a tiny random CNN; the measured numbers only show that "
            "every step ran and mean nothing about the paper's claims.\n" if smoke else "")
    md = (f"# {title}\n{warn}\n{markdown_body}\n\nExpected GPU time for the real data (an estimate, not a "
          f"measurement): {expected_gpu}\n\nMachine: {env.get('gpu') or 'no GPU'}, {env['platform']}, "
          f"torch {env.get('torch')}.\n")
    md_path = write_text(out / f"{name}.md", md)
    json_path = write_json(out / f"{name}.json", {**payload, "smoke": smoke, "expected_gpu_time_estimate": expected_gpu,
                                                  "environment": env})
    return md_path, json_path
