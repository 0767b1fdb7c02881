"""The HTML report: one self-contained page per run folder.

``build_report(run_dir)`` reads whatever the stages wrote into ``run_dir`` (and its
sub-folders one level deep, e.g. ``explain/``, ``visualize/``, ``edit/``, ``compare/``),
each file through its typed record (:mod:`neuroinspect.core.base.records`):

============================  =================================================
``run.json``                  what was run, versions, seeds
``metrics.json``              accuracy per class and per group (table + chart)
``mistakes.csv``              a gallery of the mistakes (thumbnails)
``ranking.json``              the ranked neurons, insufficient and excessive
``visualizations.json``       a card per inspected neuron
``edit.json``                 the decision-layer edit: before/after and curves
``compare.json``              every method before/after (table + chart)
============================  =================================================

Missing pieces are left out; a file that does not load is named in a notice at the top.
The page opens from disk with no server and no network: charts and thumbnails are PNG
files in ``run_dir/report_assets/`` and every image is referenced by a relative path. All
text from the data (class names, paths, model specs) is HTML-escaped (Jinja autoescape).

The pieces: :mod:`.format` (numbers and labels), :mod:`.charts` (matplotlib),
:mod:`.sections` (one builder per section, and ``collect``), ``templates/report.html``.
"""
from __future__ import annotations

import datetime as _dt
import logging
import os
from pathlib import Path

from jinja2 import Environment, FileSystemLoader

from neuroinspect.core.base.errors import NeuroInspectError
from neuroinspect.core.base.io import write_text
from neuroinspect.core.base.runinfo import __version__
from neuroinspect.report.format import fmt_delta, fmt_num, fmt_pct, num
from neuroinspect.report.sections import ASSETS_DIR, RUN_FILES, collect, locate

log = logging.getLogger(__name__)

__all__ = ["build_report", "collect", "render_html", "REPORT_NAME", "ASSETS_DIR", "fmt_pct", "fmt_num", "fmt_delta"]

REPORT_NAME = "report.html"
#: Tables longer than this many rows are folded away.
FOLD_ROWS = 40


def _environment():
    env = Environment(
        loader=FileSystemLoader(str(Path(__file__).parent / "templates")),
        autoescape=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["pct"] = fmt_pct
    env.filters["num"] = fmt_num
    env.filters["raw_value"] = lambda x: "" if num(x) is None else repr(num(x))
    return env


def render_html(ctx: dict, title: str = "NeuroInspect report") -> str:
    template = _environment().get_template("report.html")
    return template.render(
        title=title, version=__version__, fold_rows=FOLD_ROWS,
        generated=_dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
        **ctx,
    )


def build_report(run_dir: str | os.PathLike) -> Path:
    """Write ``run_dir/report.html`` (and its charts under ``run_dir/report_assets/``); returns its path."""
    run_dir = Path(run_dir)
    if run_dir.is_file():
        raise NeuroInspectError(f"'{run_dir}' is a file; give the run folder that holds it (the --out folder of a run)")
    if not run_dir.is_dir():
        raise NeuroInspectError(f"run folder '{run_dir}' does not exist; give the --out folder of explain, visualize, edit, compare or demo")
    if not any(locate(run_dir, name) for name in RUN_FILES):
        raise NeuroInspectError(
            f"'{run_dir}' holds none of {', '.join(RUN_FILES)} (nor do its sub-folders); give the --out folder of a run"
        )
    ctx = collect(run_dir)
    for note in ctx["notes"]:  # each file left out of the page, also said where the command was run
        log.warning("warning: %s", note)
    title = "NeuroInspect report"
    if ctx.get("ranking") and ctx["ranking"]["class"] is not None:
        title = f"NeuroInspect report — class {ctx['ranking']['class']}"
    page = render_html(ctx, title=title)
    out = run_dir / REPORT_NAME
    write_text(out, page)
    return out
