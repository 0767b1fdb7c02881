"""``neuroinspect compare``: the edit against its baselines on the same splits (paper Tables III–IV)."""
from __future__ import annotations

from pathlib import Path

from ..errors import NeuroInspectError
from .common import add_data_args, add_model_args, add_run_args, write_run_json
from .edit import add_edit_args, edit_args, prepare

ALL_METHODS = ["ratio", "con", "class-weight", "focal", "erm"]


def register(sub) -> None:
    p = sub.add_parser(
        "compare", help="compare the edit with its baselines (con, class-weight, focal, erm)",
        description="Run the decision-layer edit and the chosen baselines with the same classes, neurons, splits "
                    "and training settings, and print one table (rows: methods; columns: average, class, "
                    "worst-class and worst-group accuracy on test). Writes compare.json, compare.md and run.json.",
    )
    add_model_args(p)
    add_data_args(p)
    add_edit_args(p, single_method=False)
    p.add_argument("--methods", default=",".join(ALL_METHODS),
                   help=f"comma-separated methods to run (default {','.join(ALL_METHODS)})")
    add_run_args(p)
    p.set_defaults(func=run)


def parse_methods(text: str) -> list[str]:
    methods = [m.strip() for m in str(text).split(",") if m.strip()]
    bad = [m for m in methods if m not in ALL_METHODS]
    if bad or not methods:
        raise NeuroInspectError(f"unknown method(s) {', '.join(bad) or '(none)'}; choose from {','.join(ALL_METHODS)}")
    return list(dict.fromkeys(methods))


def run(args) -> int:
    from ..edit import compare_methods, format_table
    from ..io import write_json, write_text

    methods = parse_methods(args.methods)
    out = Path(args.out)
    setup = prepare(args, need_neurons=any(m in ("ratio", "con") for m in methods))
    names = setup.class_names
    rows, results = compare_methods(setup.test, methods, setup.ins.class_names, **edit_args(setup, args))
    details = {}
    for row in rows[1:]:
        result = results[row["method"]][0]
        row["best_epoch"] = result.best_epoch
        details[row["method"]] = {"best_epoch": result.best_epoch, "epochs_run": result.epochs_run,
                                  "tau": {setup.ins.class_names[c]: t for c, t in result.tau.items()}}
    table = format_table(rows)
    neurons = {setup.ins.class_names[c]: s for c, s in setup.targets.items()}
    write_json(out / "compare.json", {
        "classes": names, "split": setup.test_split, "rows": rows, "neurons": neurons, "lam": args.lam,
        "select_by": args.select_by, "notes": setup.notes, "details": details,
    })
    header = (f"# Decision-layer edit vs baselines\n\nclasses: {', '.join(names)}; neurons: "
              f"{'; '.join(f'{k}: {v}' for k, v in neurons.items())}; lambda {args.lam}; select by {args.select_by}; "
              f"metrics on '{setup.test_split}'\n")
    notes = "".join(f"\nNote: {n}\n" for n in setup.notes)
    write_text(out / "compare.md", f"{header}{notes}\n{table}\n")
    write_run_json(out, args, model=args.model, data=args.data, probe=setup.ins.probe.describe())
    for n in setup.notes:
        print(f"note: {n}")
    print(table)
    print(f"\nresults in {out}/ (compare.json, compare.md)")
    return 0
