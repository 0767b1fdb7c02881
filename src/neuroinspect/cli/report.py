"""``neuroinspect report``: rebuild the HTML report of a run folder."""
from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser(
        "report",
        help="(re)build the HTML report of a run folder",
        description=(
            "Build RUN_DIR/report.html from the files a run wrote (run.json, metrics.json, mistakes.csv, "
            "ranking.json, visualizations.json, edit.json, compare.json, in RUN_DIR or one sub-folder deep). "
            "Works on the --out folder of explain, visualize, edit, compare or demo. The page opens from disk, "
            "with no server and no network."
        ),
    )
    p.add_argument("run_dir", metavar="RUN_DIR", help="the run folder (the --out of a previous command)")
    p.set_defaults(func=run)


def run(args) -> int:
    from neuroinspect.report import build_report

    path = build_report(args.run_dir)
    print(path)
    return 0
