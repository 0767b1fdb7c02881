"""What the notebook API returns: results held in memory, each with a readable ``repr``, an HTML
``_repr_html_`` (thumbnails where there are pictures; every user text escaped) and a ``save``.

>>> exp = ins.find("cat")                  # find.ranking.Explanation: .table(), .top(3), .save(dir)
>>> pics = ins.show(exp.top(3), "cat")     # Pictures: PIL images in memory, .save(dir)
>>> fix = ins.fix(exp)                     # Fix: .compare(methods, seeds) -> ComparisonTable, .apply(), .save(dir)
>>> run = ins.debug("runs/mine")           # DebugRun: the pipeline's headline and its report's path

The work is done by the stages' own functions (``visualize_neurons``, ``run_methods``,
``compare_methods``, ``run_pipeline``); these types only hold what they return.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path

import torch
from PIL import Image
from torch import nn
from torchvision.transforms.functional import to_tensor

from neuroinspect.core.base.errors import NeuroInspectError
from neuroinspect.core.base.html import esc, figure, img, pct, table
from neuroinspect.core.base.io import publish_dir, save_png, staging_dir
from neuroinspect.core.base.records import (Comparison, ComparisonRow, EditRecord, Metrics, RunInfo, VisImage,
                                            VisualizationSet)
from neuroinspect.core.model.featureset import FeatureSet
from neuroinspect.core.runtime.device import DevicePolicy
from neuroinspect.fix.compare import comparison_record, compare_methods, fix_record, format_table, runnable_methods
from neuroinspect.fix.config import DEFAULT_COMPARE, FixConfig
from neuroinspect.fix.edit import edited_state_dict, save_edited_model
from neuroinspect.fix.methods import FixResult

MODEL_FILE = "model_edited.safetensors"


# --------------------------------------------------------------------------- stage 2: pictures
@dataclass
class Picture:
    """One rendered (neuron, class) image: the picture, the picture dimmed outside the neuron's mask, its scores."""

    info: VisImage
    image: Image.Image
    masked: Image.Image | None = None

    @property
    def neuron(self) -> int:
        return self.info.neuron

    @property
    def class_name(self) -> str:
        return self.info.class_name

    def tensor(self) -> torch.Tensor:
        """The picture as a float tensor [3, H, W] in [0, 1]."""
        return to_tensor(self.image.convert("RGB"))

    def caption(self) -> str:
        a = self.info.activation
        return (f"neuron {self.neuron} · {self.class_name}" + (f" · a={a:.2f}" if a is not None else "")
                + (f" · p={self.info.prob:.2f}" if self.info.prob is not None else ""))

    def __repr__(self) -> str:
        return f"Picture({self.caption()}, {self.image.width}x{self.image.height})"

    def _repr_html_(self) -> str:
        return figure(self.masked or self.image, self.caption(), 160)


@dataclass
class Pictures:
    """What ``Inspector.show`` rendered, in memory: ``pictures`` (one per (neuron, class)), ``record`` (the
    ``visualizations.json`` record: settings, scores, exemplars) and every image file by its relative path."""

    record: VisualizationSet
    files: dict[str, Image.Image]
    pictures: list[Picture] = field(default_factory=list)

    @classmethod
    def read(cls, folder: str | Path) -> "Pictures":
        """Everything a visualisation folder holds, read into memory."""
        folder = Path(folder)
        record = VisualizationSet.read(folder / VisualizationSet.FILE)
        files = {}
        for p in sorted(folder.rglob("*.png")):
            with Image.open(p) as im:
                im.load()
                files[p.relative_to(folder).as_posix()] = im.copy()
        pictures = [Picture(rec, files[rec.image], files.get(rec.masked) if rec.masked else None)
                    for rec in record.images if rec.image in files]
        return cls(record, files, pictures)

    def __len__(self) -> int:
        return len(self.pictures)

    def __iter__(self):
        return iter(self.pictures)

    def __getitem__(self, i: int) -> Picture:
        return self.pictures[i]

    def get(self, neuron: int, cls: str | None = None) -> Picture:
        """The picture of ``neuron`` (inside class ``cls`` when the neuron was rendered in several)."""
        for p in self.pictures:
            if p.neuron == neuron and (cls is None or p.class_name == cls):
                return p
        raise NeuroInspectError(f"no picture of neuron {neuron}{f' in class {cls!r}' if cls else ''}; there are: "
                                + ", ".join(f"{p.neuron}/{p.class_name}" for p in self.pictures))

    def save(self, out_dir: str | Path) -> Path:
        """Write the images and ``visualizations.json`` into ``out_dir`` (the layout ``neuroinspect visualize``
        writes; published at once)."""
        staging = staging_dir(out_dir)
        for rel, image in self.files.items():
            save_png(staging / rel, image)
        self.record.write(staging / VisualizationSet.FILE)
        return publish_dir(staging, out_dir, VisualizationSet.FILE)

    def __repr__(self) -> str:
        r = self.record
        return (f"Pictures({len(self)} images, recipe {r.recipe}, {r.steps} steps at {r.size} px: "
                + "; ".join(p.caption() for p in self.pictures[:8]) + (" …" if len(self) > 8 else "") + ")")

    def _repr_html_(self) -> str:
        r = self.record
        head = f"<p>{len(self)} pictures, recipe {esc(r.recipe)}, {r.steps} steps at {r.size} px</p>"
        if r.clip_fallback_reason:
            head += f"<p>note: {esc(r.clip_fallback_reason)}</p>"
        notes = "".join(f"<li>{esc(p.caption())}: {esc(p.info.note)}</li>" for p in self.pictures if p.info.note)
        return head + "<div>" + "".join(p._repr_html_() for p in self.pictures) + "</div>" + (
            f"<ul>{notes}</ul>" if notes else "")


# --------------------------------------------------------------------------- stage 3: fixes
def _metrics_rows(before: Metrics, after: Metrics) -> list[list]:
    """Average, worst-class and worst-group accuracy (when the data has groups), before and after."""
    sb, sa = before.summary, after.summary
    rows = [["average", pct(sb.accuracy), pct(sa.accuracy)],
            [f"worst class ({sb.worst_class} before)", pct(sb.worst_class_acc), pct(sa.worst_class_acc)]]
    if sb.worst_group is not None:
        rows.append([f"worst group ({sb.worst_group} before)", pct(sb.worst_group_acc), pct(sa.worst_group_acc)])
    return rows


@dataclass
class ComparisonTable:
    """Several fix methods over seeds (mean ± std): ``rows`` as :func:`~neuroinspect.fix.compare.compare_methods`
    returns them, and their ``compare.json`` ``record``."""

    rows: list[ComparisonRow]
    record: Comparison

    def row(self, method: str) -> ComparisonRow:
        for r in self.rows:
            if r.method == method:
                return r
        raise NeuroInspectError(f"no row '{method}'; the rows are {', '.join(r.method for r in self.rows)}")

    def save(self, out_dir: str | Path) -> Path:
        """``compare.json`` in ``out_dir``."""
        return self.record.write(Path(out_dir) / Comparison.FILE)

    def __repr__(self) -> str:
        notes = "".join(f"\nnote: {n}" for n in self.record.notes)
        return format_table(self.rows) + notes

    def _repr_html_(self) -> str:
        def cell(r, k):
            v, sd = r.value(k), r.std(k)
            return "–" if v is None else f"{100 * v:.1f}" + (f" ± {100 * sd:.1f}" if sd and (r.n_seeds or 1) > 1 else "")

        rows = [[r.method, "yes" if r.uses_group_labels else "no", r.fit_on or "",
                 cell(r, "avg_acc"), cell(r, "class_acc"), cell(r, "worst_class_acc"), cell(r, "worst_group_acc")]
                for r in self.rows]
        seeds = ", ".join(map(str, self.record.seeds))
        notes = "".join(f"<p>note: {esc(n)}</p>" for n in self.record.notes)
        return table(["method", "group labels", "fit on", "avg %", "class %", "worst class %", "worst group %"], rows,
                     caption=f"split '{self.record.split}', seeds {seeds}") + notes


@dataclass
class Fix:
    """A decision layer fixed for ``targets`` ``{class: neurons}`` by one method, in memory.

    ``before``/``after``: metrics of the original and the fixed head on ``split``. ``apply()`` gives a
    new model with the fixed head (the Inspector's model is not touched), ``compare()`` runs other
    methods on the same neurons, ``save(dir)`` writes ``edit.json`` and the fixed model."""

    result: FixResult
    targets: dict[int, list[int]]
    class_names: list[str]
    before: Metrics
    after: Metrics
    split: str
    model: nn.Module  # the model under inspection (read, never changed)
    head_name: str
    head: tuple[torch.Tensor, torch.Tensor | None]  # its decision layer W, b (on the CPU)
    features: dict[str, FeatureSet]  # train, val, test: what the methods read
    config: FixConfig
    picked_by: dict = field(default_factory=dict)
    policy: DevicePolicy | None = None  # where the methods train (the Inspector's policy; None: the CPU in fp32)

    @property
    def method(self) -> str:
        return self.result.method

    @property
    def neurons(self) -> dict[str, list[int]]:
        return {self.class_names[c]: list(js) for c, js in self.targets.items()}

    def apply(self) -> nn.Module:
        """A new model: a copy of the inspected one with the fixed decision layer."""
        model = copy.deepcopy(self.model)
        model.load_state_dict(edited_state_dict(model, self.head_name, self.result.weight, self.result.bias))
        return model.eval()

    def compare(self, methods=None, seeds=(0,), config: FixConfig | None = None) -> ComparisonTable:
        """Every method of ``methods`` (default: the registered methods the pipeline compares) on the same neurons,
        once per seed; the rows are mean ± std over the seeds. Methods that read group labels are left out,
        with a note, when the data has none."""
        f = self.features
        chosen, notes = runnable_methods(tuple(methods) if methods else DEFAULT_COMPARE, f["val"])
        cfg = config or self.config
        W, b = self.head
        rows, _ = compare_methods(W, b, f, self.targets, chosen, tuple(seeds), cfg, policy=self.policy)
        return ComparisonTable(rows, comparison_record(rows, self.targets, self.class_names, self.split, seeds, notes,
                                                       config=cfg))

    def record(self, model_file: str | None = MODEL_FILE) -> EditRecord:
        """The ``edit.json`` record."""
        extra = {"picked_by": dict(self.picked_by)} if self.picked_by else {}
        return fix_record(self.result, self.class_names, self.before, self.after, model_file, split=self.split, **extra)

    def save(self, out_dir: str | Path) -> Path:
        """``edit.json`` and the fixed model (``model_edited.safetensors``; reload it with ``--weights``) in
        ``out_dir``: the folder ``neuroinspect edit`` writes."""
        out = Path(out_dir)
        save_edited_model(self.model, self.head_name, self.result.weight, self.result.bias, out / MODEL_FILE)
        self.record().write(out / EditRecord.FILE)
        return out

    def __repr__(self) -> str:
        targets = "; ".join(f"{k} ← neurons {v}" for k, v in self.neurons.items())
        rows = ", ".join(f"{label} {b} → {a}" for label, b, a in _metrics_rows(self.before, self.after))
        return f"Fix({self.method}: {targets}; on '{self.split}': {rows})"

    def _repr_html_(self) -> str:
        targets = "; ".join(f"<b>{esc(k)}</b> ← neurons {esc(v)}" for k, v in self.neurons.items())
        r = self.result
        how = (f"fit on {esc(r.fit_on)}, selected by {esc(r.select_by)}"
               + (", reads the true group labels" if r.uses_group_labels else "")
               + (f", chosen: {esc(r.chosen)}" if r.chosen else ""))
        return (f"<p>fix <b>{esc(self.method)}</b>: {targets}<br>{how}</p>"
                + table(["accuracy", "before", "after"], _metrics_rows(self.before, self.after),
                        caption=f"split '{self.split}'"))


# --------------------------------------------------------------------------- the pipeline
@dataclass
class DebugRun:
    """A finished pipeline run (``Inspector.debug``): its folder, headline and report."""

    out: Path
    headline: dict

    @property
    def report(self) -> Path:
        return Path(self.headline.get("report") or self.out / "report.html")

    @property
    def info(self) -> RunInfo:
        return RunInfo.read(self.out / RunInfo.FILE)

    @property
    def comparison(self) -> Comparison:
        return Comparison.read(self.out / "compare" / Comparison.FILE)

    def pictures(self) -> Pictures:
        return Pictures.read(self.out / "visualize")

    def save(self, out_dir: str | Path | None = None) -> Path:
        """The run is on disk already: its folder."""
        if out_dir is not None and Path(out_dir).resolve() != self.out.resolve():
            raise NeuroInspectError(f"the run is already saved in '{self.out}'; copy that folder")
        return self.out

    def _summary(self) -> list[str]:
        h = self.headline
        metric = str(h.get("metric", "")).replace("_acc", "").replace("_", " ")
        return [f"debugged: {', '.join(h.get('classes', []))}; fixed with {h.get('fix')}: "
                + "; ".join(f"{k} ← neurons {v}" for k, v in h.get("edited", {}).items()),
                *h.get("chosen_because", ()),
                f"{h.get('split')} {metric} accuracy: {pct(h.get('worst_before'))} → {pct(h.get('worst_after'))}; "
                f"average: {pct(h.get('accuracy_before'))} → {pct(h.get('accuracy_after'))}"]

    def __repr__(self) -> str:
        return "\n".join([f"DebugRun('{self.out}')", *self._summary(), f"report: {self.report}"])

    def _repr_html_(self) -> str:
        parts = [f"<p>{'<br>'.join(esc(line) for line in self._summary())}<br>report: "
                 f"<a href='{esc(self.report.resolve().as_uri())}'>{esc(self.report)}</a></p>"]
        try:
            comparison = self.comparison
            parts.append(ComparisonTable(list(comparison.rows), comparison)._repr_html_())
        except NeuroInspectError:
            pass
        vis = self.out / "visualize"
        if (vis / VisualizationSet.FILE).is_file():
            pics = Pictures.read(vis)
            parts.append("<div>" + "".join(img(p.masked or p.image, 96, p.caption()) for p in pics) + "</div>")
        return "".join(parts)


__all__ = ["Picture", "Pictures", "ComparisonTable", "Fix", "DebugRun"]
