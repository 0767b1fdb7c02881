"""The report's matplotlib charts, written as PNG files.

Figures are built with ``matplotlib.figure.Figure`` (no pyplot, no backend switch) inside
``matplotlib.rc_context(STYLE)``: the report's style applies to its own charts only and the
caller's ``rcParams`` are left as they were.

A run rebuilds its report after each stage; a chart whose inputs have not changed since it was
last drawn is not drawn again (:func:`_unchanged`): the key is a digest of everything the chart
is drawn from, kept beside the PNG, so a changed input always redraws.
"""
from __future__ import annotations

import contextlib
import functools
import hashlib
from pathlib import Path
from typing import Callable, Iterator, Mapping, Sequence

import matplotlib
from matplotlib.figure import Figure

from neuroinspect.core.base.io import atomic_path, write_text
from neuroinspect.core.base.records import ComparisonRow, CurvePoint
from neuroinspect.report.format import chart_label, method_label, num

#: Bar charts draw at most this many classes/groups (the lowest).
MAX_BARS = 30
STYLE = {"font.size": 10, "axes.spines.top": False, "axes.spines.right": False, "svg.fonttype": "none"}
# one colour per series, enough for the original head and every registered fix method (15), so that no two
# bars of a chart share one; a chart with more series than colours repeats them in order
PALETTE = ["#4C72B0", "#DD8452", "#55A868", "#C44E52", "#8172B3", "#937860", "#DA8BC3", "#8C8C8C", "#CCB974",
           "#64B5CD", "#1B3A5C", "#A6761D", "#2E8B57", "#6B2E5F", "#E7B800", "#9C9EDE"]


#: Bumped whenever the drawing code changes, so that charts drawn by an older version are redrawn.
CHART_VERSION = "2"


def _key_file(path: Path) -> Path:
    return path.with_name(f".{path.name}.key")


def _unchanged(draw: Callable[..., Path | None]) -> Callable[..., Path | None]:
    """Skip ``draw(..., path, ...)`` when ``path`` exists and was drawn from the same inputs.

    The inputs' ``repr`` (plain data and dataclass records: deterministic) and :data:`STYLE` are
    hashed; the digest is written beside the PNG after it, so an interrupted draw is redrawn."""
    @functools.wraps(draw)
    def wrapper(*args, **kwargs):
        bound = [a for a in args if not isinstance(a, Path)] + sorted(kwargs.items())
        path = next(a for a in (*args, *kwargs.values()) if isinstance(a, Path))
        key = hashlib.sha256(repr((draw.__name__, CHART_VERSION, STYLE, bound)).encode()).hexdigest()
        key_file = _key_file(path)
        try:
            if path.is_file() and key_file.read_text() == key:
                return path
        except OSError:
            pass
        drawn = draw(*args, **kwargs)
        if drawn is not None:
            write_text(key_file, key)
        return drawn

    return wrapper


@contextlib.contextmanager
def _figure(path: Path, figsize: tuple[float, float], ncols: int = 1, tight: bool = False) -> Iterator:
    """A figure with ``ncols`` axes in the report's style, saved atomically to ``path`` on leaving."""
    with matplotlib.rc_context(STYLE):
        fig = Figure(figsize=figsize)
        axes = fig.subplots(1, ncols)
        yield fig, axes
        if tight:
            fig.tight_layout()
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight", metadata={"Software": None})


@_unchanged
def bar_chart(series: Mapping[str, Mapping[str, float | None]], title: str, path: Path,
              highlight: str | None = None) -> Path:
    """Horizontal bars, one row per name, one bar per series (e.g. before/after).

    With more than ``MAX_BARS`` names only the ones lowest in the first series are drawn.
    """
    first = next(iter(series.values()))
    names = list(first.keys())
    if len(names) > MAX_BARS:
        keep = set(sorted(names, key=lambda n: num(first.get(n)) if num(first.get(n)) is not None else 2.0)[:MAX_BARS])
        names = [n for n in names if n in keep]
        title = f"{title}: the {MAX_BARS} lowest"
    k = len(series)
    h = max(1.8, 0.3 * len(names) * max(k, 1) + 1.0)
    with _figure(path, (6.4, h)) as (fig, ax):
        bar_h = 0.8 / k
        for si, (label, vals) in enumerate(series.items()):
            ys = [i + (si - (k - 1) / 2) * bar_h for i in range(len(names))]
            xs = [100 * (num(vals.get(n)) or 0.0) for n in names]
            ax.barh(ys, xs, height=bar_h * 0.92, color=PALETTE[si % len(PALETTE)], label=chart_label(label))
            for y, x in zip(ys, xs):
                ax.text(x + 0.8, y, f"{x:.1f}", va="center", fontsize=8, color="#333")
        ax.set_yticks(range(len(names)))
        ax.set_yticklabels([chart_label(n) for n in names])
        for tick, n in zip(ax.get_yticklabels(), names):
            if n == highlight:
                tick.set_color("#C44E52")
                tick.set_fontweight("bold")
        ax.invert_yaxis()
        ax.set_xlim(0, 109)
        ax.set_xlabel("accuracy (%)")
        ax.set_title(chart_label(title, 80), loc="left", fontsize=11)
        if k > 1:
            ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=9, frameon=False)
        ax.grid(axis="x", color="#ddd", linewidth=0.6)
        ax.set_axisbelow(True)
    return path


@_unchanged
def grouped_columns(rows: Sequence[ComparisonRow], metrics: Sequence[tuple[str, str]], path: Path) -> Path:
    """One group of columns per metric, one column per method (mean, with the std over seeds as error bar)."""
    n = len(rows)
    with _figure(path, (8.0 if n <= 6 else 11.0, 4.6)) as (fig, ax):  # shown full width in the report
        width = 0.8 / max(n, 1)
        for ri, row in enumerate(rows):
            xs = [mi + (ri - (n - 1) / 2) * width for mi in range(len(metrics))]
            vals = [num(row.value(key)) for key, _ in metrics]
            heights = [100 * v if v is not None else 0.0 for v in vals]
            errs = [100 * (num(row.std(key)) or 0.0) for key, _ in metrics]
            bars = ax.bar(xs, heights, width=width * 0.92, color=PALETTE[ri % len(PALETTE)],
                          yerr=errs if any(errs) else None, error_kw={"elinewidth": 0.8, "capsize": 1.5},
                          label=chart_label(method_label(row.method)))
            for b, v, e in zip(bars, vals, errs):
                if v is not None:  # above the error bar, so that labels and bars do not overlap
                    ax.text(b.get_x() + b.get_width() / 2, b.get_height() + e + 1.0, f"{100 * v:.1f}", ha="center",
                            va="bottom", fontsize=7, rotation=90)
        ax.set_xticks(range(len(metrics)))
        ax.set_xticklabels([label for _, label in metrics])
        ax.set_ylim(0, 120)
        ax.set_yticks(range(0, 101, 20))
        ax.set_ylabel("accuracy (%)")
        ax.legend(fontsize=8.5, frameon=False, ncol=min(n, 3), loc="upper center", bbox_to_anchor=(0.5, -0.1))
        ax.grid(axis="y", color="#ddd", linewidth=0.6)
        ax.set_axisbelow(True)
    return path


CURVES = (("train_loss", "training loss", 0), ("regulariser", "regulariser", 0), ("val_metric", "validation", 1))


@_unchanged
def curves_chart(curves: Sequence[CurvePoint], best_epoch: int | None, select_by: str, path: Path) -> Path | None:
    """Training loss and regulariser (left) and the validation metric in % (right) per epoch."""
    if not curves:
        return None
    epochs = [c.epoch for c in curves]
    with _figure(path, (7.6, 3.0), ncols=2, tight=True) as (fig, axes):
        for ci, (key, label, ai) in enumerate(CURVES):
            ys = [num(getattr(c, key)) for c in curves]
            if all(y is None for y in ys):
                continue
            scale = 100.0 if key == "val_metric" else 1.0
            label = f"validation {select_by}" if key == "val_metric" else label
            axes[ai].plot(epochs, [y * scale if y is not None else float("nan") for y in ys], marker="o", markersize=3,
                          label=chart_label(label, 40), color=PALETTE[ci])
        for ax in axes:
            if best_epoch is not None:
                ax.axvline(best_epoch, color="#999", linestyle="--", linewidth=0.8)
            ax.set_xlabel("epoch")
            ax.grid(color="#eee", linewidth=0.6)
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=8.5, frameon=False)
        axes[0].set_title("losses", loc="left", fontsize=10)
        axes[1].set_title("validation (%)" + (", dashed: best epoch" if best_epoch is not None else ""), loc="left",
                          fontsize=10)
    return path
