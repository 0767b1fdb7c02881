"""One pipeline for any classifier and data: find → fix → compare → report, then show.

``neuroinspect debug --model M --data D`` runs it on a user's model; the built-in demo runs it on
its benchmark (:mod:`neuroinspect.demo`). Into one run folder it writes:

======================================  ==============================================================
``metrics.json``                        accuracy per class and group on the evaluation split
``metrics/SPLIT.json``                  the same for every split used
``ranking.json``, ``mistakes.csv``      stage 1 for the first class debugged (``find/CLASS/`` for the others)
``evidence/evidence.json``, ``gallery/``  where the evidence behind the first class's mistakes sits, in words
``visualize/``                          stage 2: each picked neuron inside its class and the class it votes for
``edit/edit.json``, ``edit/*.safetensors``  stage 3: the chosen fix, applied to the model
``compare/compare.json``                every method of stage 3 (mean ± std over seeds)
``run.json``, ``report.html``           what ran, and the HTML report of all of it
======================================  ==============================================================

The answer comes first: ``report.html`` is written once find, fix and compare are done, then rebuilt
after the exemplar heatmaps and after the optimised pictures (``pictures`` says how far to go).

Which classes: the ones named, or the ``worst_classes`` worst on the explanation split. Which
neurons are fixed: the top ``n_edit`` insufficient neurons of each class's ranking (its excessive
ones when it has no insufficient one), each edited in the class it is a false correlation of
(:func:`edit_targets`). Seeds vary the fixes' own randomness; a caller can also retrain the head
per seed (``retrain_head``), as the demo does, and the classes and neurons are then chosen again
for each seed's head by the same rule.
"""
from __future__ import annotations

import logging
import math
import re
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable

import torch

from neuroinspect.core.base.errors import NeuroInspectError
from neuroinspect.core.base.io import check_writable_dir
from neuroinspect.core.base.metrics import evaluate
from neuroinspect.core.base.records import (Comparison, ComparisonRow, EditRecord, EvidenceRecord, GalleryItem, Metrics,
                                            RunInfo)
from neuroinspect.core.base.runinfo import versions
from neuroinspect.core.data.images import class_index as class_index_of
from neuroinspect.core.model.featureset import FeatureSet
from neuroinspect.core.model.session_api import InspectedModel
from neuroinspect.core.runtime import distributed
from neuroinspect.core.runtime.device import DevicePolicy
from neuroinspect.core.runtime.progress import progress_bar
from neuroinspect.find.evidence import gallery_neuron, map_place, measure_evidence
from neuroinspect.find.ranking import Explanation, explain_class
from neuroinspect.find.shortcut import shortcut_tails
from neuroinspect.fix.compare import (MethodRun, aggregate_seeds, comparison_record, fix_record, fix_splits,
                                      kept_original_note, run_methods, runnable_methods)
from neuroinspect.fix.edit import save_edited_model
from neuroinspect.fix.regroup import pooled, shortcut_scores
from neuroinspect.pipeline_config import CHOOSE_BY, PICTURES, PipelineConfig  # noqa: F401 (re-exported)
from neuroinspect.report import build_report
from neuroinspect.show.heatmaps import dataset_maps, save_overlays
from neuroinspect.show.visualize import visualize_neurons

log = logging.getLogger(__name__)

GALLERY = 24  # mistakes (and correct images) whose maps are measured; the gallery shows the mistakes


HeadFn = Callable[[int], tuple[torch.Tensor, torch.Tensor]]


def resolve_pictures(pictures: str, device: torch.device) -> str:
    """``auto``: every picture on a GPU; on a CPU the exemplar heatmaps only (the optimised images are most
    of a run's time there, and the heatmaps are what a person reads). Any other setting is kept."""
    if pictures != "auto":
        return pictures
    return "all" if torch.device(device).type == "cuda" else "heatmaps"


def pick_neurons(explanation: Explanation, n: int) -> list[int]:
    """The top ``n`` insufficient neurons of the ranking (excessive ones when there are none)."""
    pool = explanation.insufficient or explanation.excessive
    if not pool:
        raise NeuroInspectError(f"class '{explanation.class_name}' has no ranked neurons; nothing to fix "
                                f"(try another class, or --min-ratio lower)")
    return [s.neuron for s in pool[:n]]


def edit_targets(neurons: list[int], explanation: Explanation, W: torch.Tensor) -> dict[int, list[int]]:
    """Which class each neuron is a false correlation *of*.

    An insufficient neuron of class c is one c relies on: edit c. An excessive neuron pushes
    c's mistakes toward another class: edit the class the mistakes are most often taken for
    when the neuron votes for it, else the class it votes for most.
    """
    c = explanation.class_index
    insufficient = {s.neuron for s in explanation.insufficient}
    predicted = explanation.mistakes.predictions
    confused = int(predicted.bincount(minlength=W.shape[0]).argmax()) if len(predicted) else None
    targets: dict[int, list[int]] = {}
    for j in neurons:
        if j in insufficient:
            k = c
        elif confused is not None and confused != c and W[confused, j] > 0:
            k = confused
        else:
            column = W[:, j].detach().clone()
            column[c] = -float("inf")
            k = int(column.argmax())
        targets.setdefault(k, []).append(j)
    return targets


SHORTCUT_CANDIDATES = 20  # --choose-by mistakes: with more classes, only the least accurate ones are scored


def choose_classes(fs: FeatureSet, cfg: PipelineConfig, class_index: Callable[[str], int], *,
                   train: FeatureSet | None = None, head=None, why: list[str] | None = None) -> list[int]:
    """The classes named in ``cfg.classes``, else ``cfg.worst_classes`` classes chosen on ``fs`` by ``cfg.choose_by``.

    ``"tails"`` (the default; needs ``train`` and ``head``): the classes the other classes' images lean towards on
    the head's own score (:func:`neuroinspect.find.shortcut.shortcut_tails`), each standing for itself when it
    has held-out mistakes, else for the class its false positives come from (:func:`by_tails`). It reads the
    head, not the mistakes, so a shortcut that causes few mistakes (a small stamp) is still found.
    ``"mistakes"``: the classes on whose held-out pseudo-minority the head does worst
    (:func:`neuroinspect.fix.regroup.shortcut_scores`); accuracy breaks ties and ranks classes without one.
    ``"accuracy"``: the least accurate classes, which a validation split drawn like a biased training split
    misleads (most of a class's images carry the shortcut there).

    ``why``: when given, one line per chosen class is appended, saying in words why it was chosen."""
    why = [] if why is None else why
    if cfg.classes:
        return list(dict.fromkeys(class_index(c) for c in cfg.classes))
    per_class = evaluate(fs).per_class
    names = fs.class_names
    by_accuracy = sorted(per_class, key=lambda n: (per_class[n], names.index(n)))  # ties: the lower index first
    on = f"on '{fs.split}'"
    if cfg.choose_by == "accuracy" or train is None or head is None:
        chosen = [names.index(n) for n in by_accuracy[: cfg.worst_classes]]
        why += [f"'{names[c]}' was debugged: the least accurate class {on} ({100 * per_class[names[c]]:.1f} %)"
                for c in chosen]
        return chosen
    held_out = None if fs.split == "train" else fs  # explaining the training split: scored out of fold instead
    if cfg.choose_by == "tails":
        # held-out mistakes: the head's own on val; out of fold on the training split, which the head has seen
        predicted = fs.logits.argmax(1) if held_out is not None else pooled(train, None, 0).predicted
        tails = shortcut_tails(head[0], train, held_out)
        pairs = by_tails(tails, fs.labels, predicted, [names.index(n) for n in by_accuracy], cfg.worst_classes)
        why += [tails_reason(names, tails, c, t, on, per_class[names[c]]) for c, t in pairs]
        return [c for c, _ in pairs]
    candidates = [names.index(n) for n in by_accuracy[:SHORTCUT_CANDIDATES]]
    scores = shortcut_scores(*head, train, held_out, candidates)
    rank = {c: (2.0 if math.isnan(scores[c]) else scores[c], i) for i, c in enumerate(candidates)}  # no score: last
    chosen = sorted(candidates, key=rank.get)[: cfg.worst_classes]
    why += [f"'{names[c]}' was debugged: the model does worst on its held-out pseudo-minority (its images without "
            f"what it usually has, and other classes' images with it): "
            + ("no such image" if math.isnan(scores[c]) else f"{100 * scores[c]:.1f} %") for c in chosen]
    return chosen


def tails_reason(names: list[str], tails: dict[int, float], c: int, tail: int | None, on: str, accuracy: float) -> str:
    """Why ``by_tails`` chose ``c`` (standing for ``tail``, or for nobody), in one line."""
    if tail is None:
        return (f"'{names[c]}' was debugged: the least accurate class {on} ({100 * accuracy:.1f} %) that no class "
                f"the others lean towards stood for")
    others = [k for k in tails if k != tail and not math.isnan(tails[k])]
    runner = max(others, key=tails.get, default=None)
    lean = (f"the other classes' images lean towards '{names[tail]}' on the model's own '{names[tail]}' score (tail "
            f"skewness {tails[tail]:.2f}" + (f", next '{names[runner]}' {tails[runner]:.2f}" if runner is not None
                                             else "") + "), as a shortcut shared across classes makes them")
    if tail == c:
        return f"'{names[c]}' was debugged: {lean}"
    return (f"'{names[c]}' was debugged for '{names[tail]}': {lean}; '{names[tail]}' has no mistakes of its own {on}, "
            f"and '{names[c]}' images are the ones most often taken for it")


def by_tails(tails: dict[int, float], labels: torch.Tensor, predicted: torch.Tensor, by_accuracy: list[int],
             n: int) -> list[tuple[int, int | None]]:
    """``n`` classes to debug as ``(class, the tail class it stands for)``, from the classes the others lean towards
    most (``tails``, highest first; accuracy breaks ties). A class with held-out mistakes of its own (``labels``,
    ``predicted``) is debugged itself. One without (the shortcut pulls other classes' images *into* it, as a red
    patch turns apples into berries) stands for the class whose images are most often taken for it: the mistakes
    to explain are that class's. Classes neither way, or without a score (NaN), are skipped, and the least
    accurate classes fill what is left (standing for no tail class: ``None``)."""
    wrong = predicted != labels
    rank = {c: i for i, c in enumerate(by_accuracy)}
    order = sorted((c for c in by_accuracy if not math.isnan(tails[c])), key=lambda c: (-tails[c], rank[c]))
    chosen: dict[int, int | None] = {}
    for t in order:
        c = t
        if not (wrong & (labels == t)).any():
            victims = labels[wrong & (predicted == t)].bincount(minlength=len(rank))
            if not victims.any():
                continue
            c = min(rank, key=lambda k: (-int(victims[k]), rank[k]))
        chosen.setdefault(c, t)
    for c in by_accuracy:
        chosen.setdefault(c, None)
    return list(chosen.items())[:n]


def merge_targets(parts: list[dict[int, list[int]]]) -> dict[int, list[int]]:
    merged: dict[int, list[int]] = {}
    for part in parts:
        for k, js in part.items():
            merged.setdefault(k, [])
            merged[k] += [j for j in js if j not in merged[k]]
    return merged


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "class"


def ranks_neurons(explanation: Explanation) -> bool:
    """Whether the explanation ranks at least one neuron (a class without mistakes ranks none)."""
    return bool(explanation.insufficient or explanation.excessive)


def with_neurons(explanations: list[Explanation]) -> list[Explanation]:
    """The explanations that rank at least one neuron; one line if none does."""
    kept = [e for e in explanations if ranks_neurons(e)]
    if not kept:
        names = ", ".join(f"'{e.class_name}' ({e.n_mistakes} mistakes)" for e in explanations)
        raise NeuroInspectError(f"no ranked neurons for {names}; nothing to show or fix (debug another class with "
                                f"--class, or lower explain's --min-ratio)")
    return kept


def explain_classes(W, b, fs: FeatureSet, cfg: PipelineConfig, class_index: Callable[[str], int], *,
                    train: FeatureSet | None = None, policy: DevicePolicy | None = None,
                    progress: bool = False, why: list[str] | None = None) -> list[Explanation]:
    """Choose the classes (:func:`choose_classes`, which appends to ``why`` why) on ``fs`` rescored by ``W, b`` and
    explain each one (``policy``: where the counterfactual edits are solved; default the CPU)."""
    fs = fs.with_logits(W, b)
    return [explain_class(W, b, fs, c, ranking=cfg.ranking, policy=policy, progress=progress)
            for c in choose_classes(fs, cfg, class_index, train=train, head=(W, b), why=why)]


@dataclass
class SeedRun:
    """One seed of find → pick → fix: its head, explanations, targets and ``{method: MethodRun}``."""

    seed: int
    head: tuple[torch.Tensor, torch.Tensor]
    explanations: list[Explanation]
    targets: dict[int, list[int]]
    results: dict[str, MethodRun]


def find_and_fix(feats: dict[str, FeatureSet], cfg: PipelineConfig, seed: int, *, head, explanations=None,
                 class_index: Callable[[str], int] | None = None, policy: DevicePolicy | None = None) -> SeedRun:
    """One seed on cached features (``feats``: ``train``, ``val``, ``test``): the classes explained on val with
    ``head`` (unless ``explanations`` are given), their top ``cfg.n_edit`` neurons picked, every method run
    (``policy``: where the edits are solved and the heads trained; default the CPU)."""
    if explanations is None:  # explain_classes rescores val by the head itself
        names = feats["val"].class_names
        explanations = explain_classes(*head, feats["val"], cfg, class_index or (lambda c: class_index_of(names, c)),
                                       train=feats["train"], policy=policy)
    fs = {k: v.with_logits(*head) for k, v in feats.items()}
    targets = merge_targets([edit_targets(pick_neurons(e, cfg.n_edit), e, head[0]) for e in with_neurons(explanations)])
    results = run_methods(*head, fs, targets, cfg.methods, seed, policy=policy)
    return SeedRun(seed, head, explanations, targets, results)


class Pipeline:
    """The stages over one :class:`~neuroinspect.session.Inspector`, writing into one run folder."""

    def __init__(self, inspector: InspectedModel, out: str | Path, config: PipelineConfig | None = None, *,
                 retrain_head: HeadFn | None = None, progress: bool = True):
        self.ins = inspector
        self.out = check_writable_dir(out, "run folder")  # created by the first file written
        self.cfg = (config or PipelineConfig()).validate()
        # the classifier's device and precision while rendering: resolved (and an fp16 backward refused) before any work
        self.render_policy = DevicePolicy.resolve(inspector.device, self.cfg.render_precision,
                                                  self.cfg.render_channels_last, backward=True)
        self.pictures = resolve_pictures(self.cfg.pictures, self.render_policy.device)
        self.retrain_head = retrain_head
        self.progress = progress
        self.timings: dict[str, float] = {}
        self._split_notes: list[str] = []  # set by _splits (e.g. data with only an 'all' split)
        self.chosen_because: list[str] = []  # set by run: why each class was chosen, a line each

    # ------------------------------------------------------------------ helpers
    def _lap(self, name: str, t0: float) -> None:
        self.timings[name] = round(time.perf_counter() - t0, 2)

    def _splits(self) -> dict[str, FeatureSet]:
        """Features by role: ``train``, ``val`` (the explanation split) and ``test`` (the evaluation split)."""
        wanted = {"train": "train", "val": self.cfg.explain_split, "test": self.cfg.eval_split}
        splits, self._split_notes = fix_splits(self.ins.data, wanted,  # every split and class name checked first
                                               flags={"val": "--explain-split", "test": "--eval-split"})
        for name in self.cfg.classes:
            self.ins.class_index(name)
        return {role: self.ins.features(split) for role, split in splits.items()}

    def _methods(self, val: FeatureSet) -> tuple[tuple[str, ...], list[str]]:
        """The methods to compare: the fix first, the references that read group labels last (left out
        when the data has none)."""
        return runnable_methods((self.cfg.fix, *self.cfg.methods), val)

    # ------------------------------------------------------------------ the run
    def run(self, run_info: dict | None = None) -> dict:
        """Run every stage; returns the headline (also in ``run.json``).

        The answer comes first: ``report.html`` is written as soon as find, fix and compare are done,
        before any picture, then rebuilt after the exemplar heatmaps and after the optimised pictures
        (``cfg.pictures`` says how far to go), so an interrupted or failed rendering still leaves a
        complete report of what was done. Under torchrun every rank shares extraction,
        counterfactuals and rendering; fixing and the report are short and rank 0 does them alone
        while the others wait: the other ranks return ``{}``."""
        cfg, out, ins = self.cfg, self.out, self.ins
        started = time.perf_counter()
        distributed.new_record()  # run.json's shards: this run's alone
        phases = {"none": 0, "heatmaps": 1, "all": 2}[self.pictures]
        bar = progress_bar(4 + phases, "debug", "stage", enabled=self.progress)

        def stage(text: str) -> None:
            bar.set_postfix_str(text)
            if not self.progress:
                log.info("debug: %s", text)

        # 1. features and metrics -----------------------------------------------------------
        t0 = time.perf_counter()
        stage("features and metrics")
        feats = self._splits()
        W, b = ins.probe.weight.detach().cpu(), ins.probe.bias.detach().cpu()
        metrics = {split: evaluate(fs) for split, fs in
                   {cfg.explain_split: feats["val"], "train": feats["train"], cfg.eval_split: feats["test"]}.items()}
        self._lap("features", t0)
        bar.update()

        # 2. find ---------------------------------------------------------------------------
        t0 = time.perf_counter()
        stage("explaining mistakes")
        self.chosen_because = []
        explanations = explain_classes(W, b, feats["val"], cfg, ins.class_index, train=feats["train"], policy=ins.policy,
                                       progress=self.progress, why=self.chosen_because)
        with_neurons(explanations)  # nothing to show or fix: one line, and nothing written
        if distributed.is_main():  # under torchrun rank 0 alone writes
            replace(metrics[cfg.eval_split], split=cfg.eval_split).write(out / Metrics.FILE)
            for split, m in metrics.items():  # every split used, each its own record
                replace(m, split=split).write(out / "metrics" / f"{_slug(split)}.json")
        for i, e in enumerate(explanations if distributed.is_main() else ()):
            e.save(out if i == 0 else out / "find" / _slug(e.class_name))
        self._lap("explain", t0)
        bar.update()

        # which neurons are shown: each class's top ones, inside the class and inside the class their edit targets
        ranked: list[int] = []
        per_neuron: dict[int, set[int]] = {}
        mine_of: dict[int, list[int]] = {}
        notes = [*self._split_notes, *self.chosen_because] + [
            f"'{e.class_name}' has no ranked neurons on '{cfg.explain_split}' ({e.n_mistakes} mistakes): "
            f"nothing to show or fix there" for e in explanations if not ranks_neurons(e)]
        for e in with_neurons(explanations):
            mine = e.top_neurons(cfg.n_insufficient, cfg.n_excessive)
            mine = mine or pick_neurons(e, 1)  # nothing asked to be rendered: still show the neuron to be fixed
            mine_of[e.class_index] = mine
            ranked += [j for j in mine if j not in ranked]
            for k, js in edit_targets(mine, e, W).items():
                for j in js:
                    per_neuron.setdefault(j, set()).update({e.class_index, k})

        headline: dict = {}
        if distributed.is_main():
            with distributed.alone():  # rank 0 alone; the other ranks wait for it at the pictures
                # 3. name the shortcut: where the evidence behind the first class's mistakes sits -------
                t0 = time.perf_counter()
                stage("measuring the evidence")
                first_e = next(e for e in explanations if ranks_neurons(e))
                self.evidence(first_e, mine_of[first_e.class_index], (W, b), feats["val"])
                self._lap("evidence", t0)
                bar.update()
                # 4. pick, fix and compare over seeds; the report with the answer ----------------------
                headline = self._fix(feats, explanations, ranked, notes, (W, b), started, run_info)
                bar.update()

        # 5. pictures: the exemplar heatmaps (cheap, what people read), then the optimised images --------
        if phases:
            jobs = [("heatmaps", replace(cfg.render, optimise=False))]
            if phases > 1:
                jobs.append(("visualize", cfg.render))
            for i, (name, render_cfg) in enumerate(jobs):
                t0 = time.perf_counter()
                stage("rendering the top neurons" if render_cfg.optimise else "exemplar heatmaps")
                visualize_neurons(ins, ranked, {j: sorted(cs) for j, cs in per_neuron.items()}, out / "visualize",
                                  render_cfg, policy=self.render_policy, features=feats["train"], progress=self.progress)
                self._lap(name, t0)
                if distributed.is_main() and i + 1 < len(jobs):  # after the last job, the report is built below
                    with distributed.alone():
                        self._write_run(headline, started, run_info)
                        self._report()
                bar.update()
        shards = distributed.run_record()  # under torchrun: what each rank took
        bar.close()
        if not distributed.is_main():
            return {}
        distributed.go_alone()
        self._write_run(headline, started, run_info, shards)
        report = self._report()
        self._write_run(headline, started, run_info, shards)  # with the last report's time
        return {**headline, "report": str(report), "seconds": self.timings["total"], "timings_s": dict(self.timings)}

    def evidence(self, e: Explanation, neurons: list[int], head, fs: FeatureSet, gallery: int = GALLERY
                 ) -> EvidenceRecord:
        """Measure where the evidence behind ``e``'s mistakes sits (:mod:`neuroinspect.find.evidence`) on ``fs``,
        with the spatial maps of up to ``gallery`` mistakes and as many correct images of the class, and write
        ``evidence/evidence.json`` with a gallery of the mistakes sorted by :func:`gallery_neuron`, its map over each."""
        W, b = head
        c = e.class_index
        lead = gallery_neuron(measure_evidence(W, b, fs, e, neurons))  # no maps yet: which neuron sorts the gallery
        pred = (fs.features.float() @ W.float().T + b.float()).argmax(1)
        wrong = ((fs.labels == c) & (pred != c)).nonzero().flatten()
        right = ((fs.labels == c) & (pred == c)).nonzero().flatten()
        wrong = wrong[fs.features[wrong, lead].float().argsort(descending=True, stable=True)][:gallery]
        right = right[torch.linspace(0, len(right) - 1, min(gallery, len(right))).round().long()] if len(right) else right
        ids = {"mistakes": [fs.ids[i] for i in wrong.tolist()], "correct": [fs.ids[i] for i in right.tolist()]}
        folder = self.out / "evidence"
        maps, inputs = {}, {}
        if self.ins.data is not None:  # one forward pass over these images (none when their maps are cached)
            maps, inputs = dataset_maps(self.ins.probe, self.ins.loaded.preprocess, ids["mistakes"] + ids["correct"],
                                        neurons, data=self.ins.data, split=fs.split or None,
                                        cache_dir=self.ins.cache_dir, policy=self.ins.policy)
        record = measure_evidence(W, b, fs, e, neurons, maps, ids)
        col = neurons.index(lead)
        images = save_overlays(maps, inputs, ids["mistakes"], col, folder) if maps else {}
        names = fs.class_names
        for i, ident in zip(wrong.tolist(), ids["mistakes"]):
            place = map_place(maps[ident][col]) if ident in maps else None
            record.gallery.append(GalleryItem(id=ident, predicted=names[int(pred[i])], activation=float(fs.features[i, lead]),
                                              place=(place or {}).get("place", "silent" if ident in maps else None),
                                              image=images.get(ident)))
        record.gallery_neuron = lead
        if not maps:
            record.notes.append("no spatial maps (the model has none at its features, or the images cannot be read): "
                                "where the neurons fire is not measured")
        record.write(folder / EvidenceRecord.FILE)
        return record

    def _fix(self, feats, explanations, ranked, notes, head, started, run_info) -> dict:
        """Stage 4 on rank 0: pick, fix and compare over seeds; edit.json, compare.json, run.json and the report."""
        cfg, out, ins, names = self.cfg, self.out, self.ins, self.ins.class_names
        W, b = head
        t0 = time.perf_counter()
        methods, method_notes = self._methods(feats["val"])
        notes += method_notes
        run_cfg = replace(cfg, methods=methods)
        runs = []
        for seed in cfg.seeds:
            again = bool(runs) and self.retrain_head is not None  # a further seed with its own head and explanations
            head = self.retrain_head(seed) if again else (W, b)
            runs.append(find_and_fix(feats, run_cfg, seed, head=head, explanations=None if again else explanations,
                                     class_index=ins.class_index, policy=ins.policy))
        first = runs[0]
        rows = aggregate_seeds([r.results for r in runs])
        before, after, res = first.results["original"].metrics, first.results[cfg.fix].metrics, first.results[cfg.fix].result
        kept = kept_original_note(res)
        if kept:  # never a worse model shipped as a fix: said in one line, and in edit.json and the report
            log.warning("seed %d: %s", first.seed, kept)
            notes.append(f"seed {first.seed}: {kept}")
        edited_file = save_edited_model(ins.loaded.model, ins.probe.head_name, res.weight, res.bias,
                                        out / "edit" / "model_edited.safetensors")
        rule = (f"the top {cfg.n_edit} insufficient neurons of " + ", ".join(f"'{e.class_name}'" for e in explanations)
                + f" by the {cfg.ranking} ranking")
        fix_record(res, names, before, after, edited_file.name, split=cfg.eval_split,
                   picked_by={"rule": rule, "ranking": cfg.ranking, "ranked": ranked},
                   ).write(out / "edit" / EditRecord.FILE)
        picked = {r.seed: {names[k]: v for k, v in r.targets.items()} for r in runs}
        if self.retrain_head is not None and len(runs) > 1:
            notes.append(f"each seed trains its own head, explains its worst class, picks its top {cfg.n_edit} "
                         f"insufficient neurons ({cfg.ranking} ranking) and runs every method")
        comparison_record(rows, first.targets, names, cfg.eval_split, cfg.seeds, notes, neurons_by_seed=picked,
                          ).write(out / "compare" / Comparison.FILE)
        self._lap("edit_and_compare", t0)

        # run.json and the report: the answer, before any picture -----------------------------------------
        headline = self.headline(rows, explanations, first.targets)
        evidence = out / "evidence" / EvidenceRecord.FILE
        if evidence.is_file():
            headline["evidence"] = EvidenceRecord.read(evidence).paragraph
        self._write_run(headline, started, run_info)
        self._report()
        return headline

    def _report(self) -> Path:
        """Build ``report.html`` from the files written so far; its time adds up under ``report`` in run.json."""
        t0 = time.perf_counter()
        path = build_report(self.out)
        self.timings["report"] = round(self.timings.get("report", 0.0) + time.perf_counter() - t0, 2)
        return path

    def _write_run(self, headline: dict, started: float, run_info: dict | None, shards: dict | None = None) -> None:
        """``run.json`` with the stage times so far (rewritten after each stage of pictures)."""
        info = {"command": "debug", **(run_info or {})}
        earlier = info.pop("timings_s", {})  # stages the caller ran before the pipeline (the demo's data and head)
        self.timings = {**earlier, **{k: v for k, v in self.timings.items() if k != "total"},
                        "total": round(time.perf_counter() - started + sum(earlier.values()), 1)}
        RunInfo.from_dict({
            **info, **(shards or {}), "pipeline": {**asdict(self.cfg), "pictures": self.pictures},  # auto: as resolved
            "device": str(self.ins.device), "threads": torch.get_num_threads(), "versions": versions(),
            "timings_s": dict(self.timings), "headline": headline, "probe": self.ins.probe.describe(),
        }).write(self.out / RunInfo.FILE)

    def headline(self, rows: list[ComparisonRow], explanations: list[Explanation], targets: dict[int, list[int]]) -> dict:
        """The run in a few numbers: worst group (worst class when the data has no groups), before and after."""
        by = {r.method: r for r in rows}
        key = "worst_group_acc" if by["original"].worst_group_acc is not None else "worst_class_acc"
        fix = by[self.cfg.fix]
        names = self.ins.class_names
        return {
            "seeds": list(self.cfg.seeds), "fix": self.cfg.fix, "metric": key, "split": self.cfg.eval_split,
            "worst_before": by["original"].value(key), "worst_after": fix.value(key), "worst_after_std": fix.std(key),
            "accuracy_before": by["original"].avg_acc, "accuracy_after": fix.avg_acc,
            "by_method": {m: r.value(key) for m, r in by.items()},
            "classes": [e.class_name for e in explanations], "worst_class": explanations[0].class_name,
            "choose_by": self.cfg.choose_by, "chosen_because": list(self.chosen_because),
            "edited": {names[k]: v for k, v in targets.items()},
        }


def run_pipeline(inspector: InspectedModel, out: str | Path, config: PipelineConfig | None = None, *,
                 retrain_head: HeadFn | None = None, run_info: dict | None = None, progress: bool = True) -> dict:
    """Run find → show → pick → fix → compare → report on ``inspector``'s model and data into ``out``."""
    return Pipeline(inspector, out, config, retrain_head=retrain_head, progress=progress).run(run_info)
