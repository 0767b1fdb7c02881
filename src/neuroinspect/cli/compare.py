"""``neuroinspect compare``: every fix against the others on the same splits, over several seeds."""
from __future__ import annotations

from pathlib import Path

from neuroinspect.core.base.errors import NeuroInspectError
from neuroinspect.fix.config import DEFAULT_COMPARE, FIX_METHODS
from neuroinspect.cli.common import (add_data_args, add_model_args, add_run_args, parse_name_list, parse_seeds,
                                     write_run_json)
from neuroinspect.cli.edit import add_edit_args, fix_config, head_of, methods_help, prepare


def register(sub) -> None:
    p = sub.add_parser(
        "compare", help="compare the fixes (regroup, the paper's ratio edit, baselines, references) over seeds",
        description="Run each method with the same classes, neurons and splits, once per seed, and print one table "
                    "(rows: methods, with the data they are fitted on and whether they read group labels; columns: "
                    "average, edited-class, worst-class and worst-group accuracy on test, mean ± std over seeds). "
                    "The methods that read group labels (dfr, dfr-half) come last, and are left out without them. Writes "
                    "compare.json, compare.md and run.json.",
    )
    add_model_args(p)
    add_data_args(p)
    add_edit_args(p, single_method=False)
    p.add_argument("--methods", default=",".join(DEFAULT_COMPARE),
                   help=f"comma-separated methods to run (default {','.join(DEFAULT_COMPARE)}); any of: {methods_help()}")
    p.add_argument("--seeds", default="0,1,2",
                   help="comma-separated seeds of the fits (data halves, shuffling); rows show mean ± std (default 0,1,2)")
    add_run_args(p)
    p.set_defaults(func=run)


def parse_methods(text: str) -> list[str]:
    methods = parse_name_list(text)
    bad = [m for m in methods if m not in FIX_METHODS]
    if bad or not methods:
        raise NeuroInspectError(f"unknown method(s) {', '.join(bad) or '(none)'}; choose from {','.join(FIX_METHODS)}")
    return list(dict.fromkeys(methods))


def run(args) -> int:
    from neuroinspect.core.base.io import write_text
    from neuroinspect.fix.compare import compare_methods, comparison_record, format_table, runnable_methods

    methods = parse_methods(args.methods)
    seeds = parse_seeds(args.seeds)
    if not seeds:
        raise NeuroInspectError("--seeds is empty; give e.g. --seeds 0,1,2")
    out = Path(args.out)
    cfg = fix_config(args, method=methods[0])
    setup = prepare(args, methods)
    methods, left_out = runnable_methods(methods, setup.val, setup.targets)  # the pipeline's check
    notes = [*setup.notes, *left_out]
    if not methods:
        raise NeuroInspectError("no method left to run; pass --neurons, or group labels for dfr")
    W, b = head_of(setup)
    rows, _ = compare_methods(W, b, setup.splits, setup.targets, methods, seeds, cfg,
                              policy=setup.ins.policy, progress=not getattr(args, "no_progress", False))
    table = format_table(rows)
    names = setup.class_names
    neurons = {setup.ins.class_names[c]: s for c, s in setup.targets.items()}
    comparison_record(rows, setup.targets, setup.ins.class_names, setup.test_split, seeds, notes,
                      config=cfg).write(out / "compare.json")
    header = (f"# Fixes compared\n\nclasses: {', '.join(names)}; neurons: "
              f"{'; '.join(f'{k}: {v}' for k, v in neurons.items())}; seeds {','.join(map(str, seeds))}; "
              f"metrics on '{setup.test_split}' (percent, mean ± std over seeds)\n")
    write_text(out / "compare.md", header + "".join(f"\nNote: {n}\n" for n in notes) + f"\n{table}\n")
    write_run_json(out, args, model=args.model, data=args.data, probe=setup.ins.probe.describe())
    for n in notes:
        print(f"note: {n}")
    print(table)
    print(f"\nresults in {out}/ (compare.json, compare.md)")
    return 0
