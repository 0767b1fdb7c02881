"""``neuroinspect edit``: fix false correlations by retraining only the decision layer.

The backbone stays frozen, so the edit trains on cached features of the ``train`` split,
early-stops on ``val`` and reports metrics before and after on ``test``. The edited model
(the original weights with the new head) is saved as ``OUT/edited.safetensors`` and reloads
with the same ``--model`` plus ``--weights OUT/edited.safetensors``.

Several classes can be edited at once, each with its own neurons:
``--class waterbird --neurons 12,40 --class landbird --neurons 7``. Without ``--neurons``, a
``--ranking ranking.json`` written by ``explain`` supplies them: its top ``--top-k``
insufficient and top ``--top-k`` excessive neurons.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path

from neuroinspect.core.base.errors import NeuroInspectError
from neuroinspect.fix.config import (DEFAULT_METHOD, FIT_ON, FIX_METHODS, L2_GRID, LAM_GRID, LR_GRID, SELECT_BY,
                                     FixConfig)
from neuroinspect.cli.common import (add_data_args, add_model_args, add_run_args, make_inspector, nonneg_float, nonneg_int,
                     parse_int_list, positive_float, positive_int, write_run_json)

MODEL_FILE = "edited.safetensors"


def add_edit_args(p: argparse.ArgumentParser, single_method: bool = True) -> None:
    """Options shared by ``edit`` and ``compare``."""
    g = p.add_argument_group("edit")
    g.add_argument("--class", dest="cls", action="append", metavar="NAME|INDEX",
                   help="class to fix; repeat for several classes, each followed by its --neurons")
    g.add_argument("--neurons", action="append", metavar="LIST",
                   help="comma-separated neurons S to edit for the matching --class (e.g. 12,40)")
    g.add_argument("--ranking", action="append", metavar="FILE",
                   help="ranking.json from explain; used when --neurons is not given (top --top-k insufficient "
                        "and top --top-k excessive neurons); gives the class too when --class is absent")
    g.add_argument("--top-k", type=positive_int, default=3, help="neurons taken from each list of a --ranking (default 3)")
    if single_method:
        g.add_argument("--method", default=DEFAULT_METHOD, choices=FIX_METHODS, metavar="METHOD",
                       help=f"the fix (default {DEFAULT_METHOD}): {methods_help()}")
    g.add_argument("--tau", default="auto", help="ratio: tau, 'auto' (1 + (min importance - 1)/3) or a positive number (default auto)")
    g.add_argument("--lam", type=positive_float, default=None,
                   help=f"ratio/con: regulariser weight lambda (default: searched over {', '.join(map(str, LAM_GRID))} on val)")
    g.add_argument("--lr", type=positive_float, default=None,
                   help=f"gradient methods: Adam learning rate after warm-up (default: searched over "
                        f"{', '.join(map(str, LR_GRID))} on val)")
    g.add_argument("--select-by", default=FixConfig.select_by, choices=list(SELECT_BY),
                   help="validation metric for the kept epoch and the search: auto (worst pseudo-group from the chosen "
                        "neurons when there are any, else worst class; no group labels), pseudo-group, accuracy, class, "
                        "worst-class, worst-group (reads the true group labels)")
    g.add_argument("--fit-on", default=FixConfig.fit_on, choices=list(FIT_ON),
                   help="rebalance: refit on one half of val (default; the other half selects), the training split, or both")
    g.add_argument("--quantile", type=positive_float, default=None,
                   help="rebalance: pseudo-groups from each class's lowest QUANTILE of spuriosity scores (default: "
                        "searched over the midpoint rule and 0.25)")
    g.add_argument("--l2", type=positive_float, default=None,
                   help=f"rebalance/dfr/jtt: L2 penalty on standardised features (default: searched over "
                        f"{', '.join(map(str, L2_GRID))})")
    g.add_argument("--epochs", type=positive_int, default=FixConfig.epochs,
                   help=f"gradient methods: training epochs (default {FixConfig.epochs})")
    g.add_argument("--patience", type=nonneg_int, default=FixConfig.patience,
                   help="gradient methods: stop after this many epochs without improvement on val; 0 trains all epochs "
                        f"and needs no val split (default {FixConfig.patience})")
    g.add_argument("--warmup", type=nonneg_float, default=FixConfig.warmup,
                   help=f"linear warm-up length in epochs (default {FixConfig.warmup:g})")
    g.add_argument("--train-batch-size", type=positive_int, default=FixConfig.batch_size,
                   help=f"batch size for training the head (default {FixConfig.batch_size})")


def methods_help() -> str:
    """Every registered fix method with its label and what it reads, for ``--help`` (from the name table)."""
    def reads(info) -> str:
        needs = [w for w, on in (("needs --neurons", info.needs_neurons), ("uses group labels", info.uses_group_labels))
                 if on]
        return f" [{', '.join(needs)}]" if needs else ""

    return "; ".join(f"{e.name}: {e.info.label}{reads(e.info)}" for e in FIX_METHODS.entries())


# --------------------------------------------------------------------------- shared preparation
@dataclass
class EditSetup:
    ins: object
    targets: dict[int, list[int]]
    train: object
    val: object | None
    test: object
    test_split: str
    notes: list[str] = field(default_factory=list)

    @property
    def class_names(self) -> list[str]:
        return [self.ins.class_names[c] for c in self.targets]

    @property
    def splits(self) -> dict:
        """The features by role (``train``, ``val``, ``test``), as the fixes read them."""
        return {"train": self.train, "val": self.val, "test": self.test}


def _ranking_neurons(path: str, k: int) -> tuple[str | int, list[int]]:
    from neuroinspect.core.base.records import ExplanationRecord

    if not Path(path).is_file():
        raise NeuroInspectError(f"ranking file '{path}' does not exist; run 'neuroinspect explain' first or pass --neurons")
    ranking = ExplanationRecord.read(path)
    return ranking.class_name, ranking.top_neurons(k)


def resolve_targets(ins, args, need_neurons: bool) -> dict[int, list[int]]:
    """``{class_index: neurons}`` from --class/--neurons/--ranking (paired by position)."""
    classes = list(args.cls or [])
    neuron_lists = [parse_int_list(t, "--neurons", unique=True) for t in (args.neurons or [])]
    rankings = list(args.ranking or [])
    if not classes and not rankings:
        raise NeuroInspectError("say which class to fix: --class NAME (with --neurons) or --ranking ranking.json")
    if neuron_lists and len(neuron_lists) != len(classes):
        raise NeuroInspectError(
            f"{len(classes)} --class but {len(neuron_lists)} --neurons; give one --neurons list after each --class"
        )
    if not neuron_lists and rankings:
        if classes and len(rankings) != len(classes):
            raise NeuroInspectError(f"{len(classes)} --class but {len(rankings)} --ranking; give one ranking per class")
        pairs = [_ranking_neurons(r, args.top_k) for r in rankings]
        if not classes:
            classes = [cls for cls, _ in pairs]
        neuron_lists = [n for _, n in pairs]
    if not neuron_lists:
        if need_neurons:
            raise NeuroInspectError("no neurons chosen: pass --neurons 12,40 (or --ranking ranking.json from explain)")
        neuron_lists = [[] for _ in classes]
    targets: dict[int, list[int]] = {}
    for cls, neurons in zip(classes, neuron_lists):
        c = ins.class_index(cls)
        if c in targets:
            raise NeuroInspectError(f"class '{ins.class_names[c]}' is given twice; list all its neurons in one --neurons")
        if need_neurons and not neurons:
            raise NeuroInspectError(f"no neurons for class '{ins.class_names[c]}' (S is empty); pass --neurons 12,40")
        D = ins.probe.D
        bad = [j for j in neurons if not 0 <= j < D]
        if bad:
            raise NeuroInspectError(f"neurons {bad} are out of range: the model has D={D} penultimate neurons (0–{D - 1})")
        targets[c] = neurons
    return targets


def parse_tau(text) -> float | None:
    if text is None or str(text).lower() == "auto":
        return None
    try:
        tau = float(text)
    except ValueError:
        raise NeuroInspectError(f"--tau must be 'auto' or a number like 1.02; got '{text}'") from None
    if not tau > 0:
        raise NeuroInspectError(f"--tau must be positive; got {text}")
    return tau


def prepare(args, methods: list[str]) -> EditSetup:
    """Build the inspector, check the splits (:func:`~neuroinspect.fix.compare.fix_splits`: ``val`` optional, metrics
    on ``val`` when there is no ``test``, data with only ``all`` serving every role) and the targets for ``methods``,
    and load the cached features."""
    from neuroinspect.fix.compare import fix_splits

    need_neurons = any(FIX_METHODS.info(m).needs_neurons for m in methods)
    ins = make_inspector(args)
    if ins.data is None:
        raise NeuroInspectError("edit needs data: pass --data")
    splits, notes = fix_splits(ins.data, {"train": "train", "val": "val", "test": "test"}, optional=("val",),
                               fallback={"test": "val"})
    if args.patience and splits["val"] is None and any(FIX_METHODS.info(m).by_gradient for m in methods):
        raise NeuroInspectError(
            f"early stopping needs a 'val' split and the data has only: {', '.join(ins.data.splits)}; add ROOT/val/CLASS/* "
            "(or rows with split=val in the manifest), or pass --patience 0 to train all epochs without it"
        )
    targets = resolve_targets(ins, args, need_neurons)
    train = ins.features(splits["train"])
    val = ins.features(splits["val"]) if splits["val"] is not None else None
    test_split = splits["test"]
    test = ins.features(test_split)
    return EditSetup(ins, targets, train, val, test, test_split, notes)


def fix_config(args, method: str | None = None) -> FixConfig:
    """The :class:`FixConfig` of the parsed options (``method`` overrides ``--method``)."""
    return FixConfig(
        method=method or args.method, lr=args.lr, lam=args.lam, tau=parse_tau(args.tau), epochs=args.epochs,
        patience=args.patience, warmup=args.warmup, batch_size=args.train_batch_size, select_by=args.select_by,
        fit_on=args.fit_on, quantile=args.quantile, l2=args.l2, seed=args.seed,
    ).validate()


def head_of(setup: EditSetup):
    probe = setup.ins.probe
    bias = probe.head.bias
    return probe.weight.detach().cpu(), None if bias is None else bias.detach().cpu()


# --------------------------------------------------------------------------- the command
def register(sub) -> None:
    p = sub.add_parser(
        "edit", help="fix false correlations by retraining only the decision layer",
        description="Refit the decision layer (W, b) on cached features for the chosen neurons of each class and "
                    "report test metrics before and after. The default method, regroup, sorts every image by where the "
                    "class's held-out mistakes sit in feature space (or, when that sorts nothing, by the head's own "
                    "score for the class) and refits train and val so that images with and without what the class "
                    "usually has count the same (no group labels), keeping the original head unless that is 10 "
                    "points better on held-out data; ratio is the paper's probability-ratio edit. Settings left unset (lr, "
                    "lambda, l2, quantile) are searched on val. Writes edit.json, run.json and edited.safetensors "
                    "(reload it with --model SPEC --weights OUT/edited.safetensors) into --out.",
    )
    add_model_args(p)
    add_data_args(p)
    add_edit_args(p)
    add_run_args(p)
    p.set_defaults(func=run)


def check_finite_head(weight, bias, method: str) -> None:
    """Never write a decision layer with NaN/inf in it: fail with one line instead."""
    import torch

    if not bool(torch.isfinite(weight).all()) or (bias is not None and not bool(torch.isfinite(bias).all())):
        raise NeuroInspectError(
            f"the {method} edit produced NaN/inf weights (nothing was written); lower --lr or --lam, or check the "
            "features for extreme values"
        )


def run(args) -> int:
    from neuroinspect.core.base.metrics import evaluate
    from neuroinspect.fix.compare import fix_head, fix_record, format_table, kept_original_note, scalar_settings, summary_row
    from neuroinspect.fix.edit import save_edited_model

    out = Path(args.out)
    cfg = fix_config(args)
    setup = prepare(args, [cfg.method])
    ins = setup.ins
    W, b = head_of(setup)
    result = fix_head(W, b, setup.train, setup.val, setup.targets, cfg, policy=ins.policy,
                      progress=not getattr(args, "no_progress", False))
    check_finite_head(result.weight, result.bias, cfg.method)
    before = evaluate(setup.test)
    after = evaluate(result.apply(setup.test))
    names = ins.class_names
    save_edited_model(ins.loaded.model, ins.probe.head_name, result.weight, result.bias, out / MODEL_FILE)
    fix_record(
        result, names, before, after, MODEL_FILE, split=setup.test_split, notes=setup.notes,
        reload={"model": args.model, "weights": MODEL_FILE, "num_classes": ins.probe.C, "head": args.head},
    ).write(out / "edit.json")
    write_run_json(out, args, model=args.model, data=args.data, probe=ins.probe.describe())
    for note in setup.notes:
        print(f"note: {note}")
    rows = [summary_row("original", before, setup.class_names), summary_row(cfg.method, after, setup.class_names)]
    kept = kept_original_note(result)
    if kept:
        print(kept)
    chosen = scalar_settings(result.chosen)
    print(f"edited {', '.join(setup.class_names)} with {cfg.method} ({chosen or 'no settings'}; fit on "
          f"{result.fit_on}; selected by {result.select_by}); metrics on '{setup.test_split}':")
    print(format_table(rows))
    print(f"\nresults in {out}/ (edit.json, {MODEL_FILE}); reload with: --model {args.model} "
          f"--weights {out / MODEL_FILE} --num-classes {ins.probe.C}")
    return 0
