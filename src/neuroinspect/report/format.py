"""How numbers, deltas, labels and paths are written in the report (no matplotlib, no Jinja)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any
from urllib.parse import quote

from neuroinspect.core.base.metrics import finite_or_none
from neuroinspect.fix.config import FIX_METHODS

ORIGINAL_LABEL = "original (ERM head)"


def method_label(method: str | None) -> str | None:
    """A method's name in tables: the label of its entry in the name table (``FIX_METHODS``)."""
    if method is None:
        return None
    if method == "original":
        return ORIGINAL_LABEL
    return FIX_METHODS.info(method).label if method in FIX_METHODS else method


def num(x: Any) -> float | None:
    """``x`` as a finite float, else None."""
    return finite_or_none(x)


def fmt_pct(x: Any, digits: int = 1) -> str:
    """0.8123 -> '81.2 %' (accuracies are fractions in the JSON files)."""
    v = num(x)
    return "–" if v is None else f"{100 * v:.{digits}f} %"


def fmt_num(x: Any, digits: int = 3) -> str:
    v = num(x)
    return "–" if v is None else f"{v:.{digits}f}"


def fmt_delta(before: Any, after: Any) -> str:
    """Change of a fraction in percentage points: '+3.4 pts'."""
    b, a = num(before), num(after)
    if a is None or b is None:
        return ""
    d = 100 * (a - b)
    return f"{'+' if d >= 0 else '−'}{abs(d):.1f} pts"


def trend(before: Any, after: Any) -> str:
    """'up', 'down' or 'flat' (within 0.05 points): the CSS class of a change."""
    b, a = num(before), num(after)
    if a is None or b is None or abs(a - b) < 5e-4:
        return "flat"
    return "up" if a > b else "down"


def rel_url(path: Path, run_dir: Path) -> str:
    """A URL (relative to ``run_dir``) for a file, percent-encoded."""
    rel = os.path.relpath(path, run_dir)
    return "/".join(quote(part) for part in Path(rel).as_posix().split("/"))


def chart_label(label: Any, width: int = 30) -> str:
    """A chart label: no mathtext, not too long (cut in the middle, so 'long class/B-indoor' keeps its end)."""
    label = str(label)
    if len(label) > width:
        head = (width - 1) // 2
        label = label[:head] + "…" + label[len(label) - (width - 1 - head):]
    return label.replace("$", r"\$")


#: regroup's groupings (its ``groups_from``), in words.
GROUPINGS = {"mistakes": "held-out mistakes (all neurons)", "neurons": "ranked neurons",
             "head": "score under the head being debugged"}

#: What a fix's chosen settings mean, in words (unknown ones are shown as ``key = value``).
SETTING_WORDS = {
    "l2": lambda v: f"L2 penalty {v:g}" if isinstance(v, (int, float)) else f"L2 penalty {v}",
    "q": lambda v: ("pseudo-groups split at the midpoint of each class's scores" if v is None
                    else f"pseudo-groups: each class's lowest {100 * v:g} % of scores"),
    "upweight": lambda v: f"errors up-weighted {v:g}×",
    "n_errors": lambda v: f"{v} training errors up-weighted",
    "lr": lambda v: f"learning rate {v:g}",
    "lam": lambda v: f"λ = {v:g}",
    "inv_l1": lambda v: f"L1 inverse penalty {v:g}, averaged over balanced subsamples",
    "groups_from": lambda v: "pseudo-groups from " + ", ".join(
        f"{c}'s {GROUPINGS.get(how, how)}" for c, how in v.items()),
    "min_gain": lambda v: (f"a change needs {100 * v:g} points over no change" if v
                           else "any gain over no change suffices: val brings images of the kind the model lacked"),
    "val_enrichment_p": lambda v: ("val's share of minority pseudo-groups not tested (no val, or grouped by the head)"
                                   if v is None else
                                   f"val's share of minority pseudo-groups against train's: one-sided p = {v:.2g}"),
    "held_out_mistakes": lambda v: ", ".join(f"{n} held-out mistakes of {c}" for c, n in v.items()),
    "pseudo_minority": lambda v: f"{v} images in minority pseudo-groups",
    "held_out_worst": lambda v: f"held-out worst pseudo-group accuracy {100 * v:.1f} %",
    "no_change_worst": lambda v: f"{100 * v:.1f} % when keeping the model",
    "compared_with": lambda v: f"(no change: {v})",
    "kept_original": lambda v: "the original head was kept" if v else "the fix beat no change",
    "top_neurons": lambda v: "; ".join(f"neurons that moved most for {c}: {', '.join(map(str, ns[:5]))}" for c, ns in v.items()),
}


def settings_text(chosen: dict) -> str:
    """A fix's chosen settings in words, e.g. ``L2 penalty 0.001; pseudo-groups split at the midpoint ...``."""
    out = []
    for k, v in chosen.items():
        try:
            out.append(SETTING_WORDS[k](v) if k in SETTING_WORDS else f"{k} = {v}")
        except (TypeError, ValueError):
            out.append(f"{k} = {v}")
    return "; ".join(out)
