"""Stage 2: show what a neuron responds to inside a class (CLIP-Illusion feature visualisation).

One call does the common thing::

    from neuroinspect.show.visualize import visualize_neurons
    report = visualize_neurons(inspector, neurons=[12, 40], classes=["tabby"], out_dir="vis/",
                               clip="open_clip:ViT-B-32/laion2b_s34b_b79k", steps=300)

It renders one image per (neuron, class) pair in batches, masks each image with the neuron's
spatial map, scores it (a_k, s_c, p(c), CLIP similarity, core relevance score), compares it with
the neuron's top dataset images when features are cached, and writes PNGs plus
``visualizations.json`` into ``out_dir``. The pieces are importable on their own:
parameterisations (``param``), augmentations (``augment``), objectives and recipes
(``objectives``), CLIP loading (``clip``), the batched optimiser (``render``), masks and the
core relevance score (``masks``) and dataset exemplars (``exemplars``).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Sequence

import torch

from neuroinspect.core.base.config import configured
from neuroinspect.core.base.errors import NeuroInspectError
from neuroinspect.core.base.io import publish_dir, save_png, staging_dir
from neuroinspect.core.base.records import VisualizationSet
from neuroinspect.core.data.images import class_index
from neuroinspect.core.model.models import LoadedModel
from neuroinspect.core.model.probe import Probe
from neuroinspect.core.model.session_api import InspectedModel
from neuroinspect.core.runtime import distributed
from neuroinspect.core.runtime.device import DevicePolicy
from neuroinspect.show.augment import Augmentation, ModelInput, default_augmentation
from neuroinspect.show.clip import ClipChoice, ClipModel, load_clip, parse_clip_spec, resolve_clip
from neuroinspect.show.config import (DEFAULT_EPSILON, DEFAULT_GAMMA, DEFAULT_LR, DEFAULT_WEIGHT_DECAY,  # noqa: F401
                                      PAPER_CLIP, RenderConfig)
from neuroinspect.show.exemplars import dataset_activation, neuron_top_classes, save_strip, top_exemplars
from neuroinspect.show.heatmaps import HeatmapRequest, _Images, exemplar_heatmaps
from neuroinspect.show.masks import class_means, core_relevance_score, dim_outside, neuron_mask, to_pil, to_rgba
from neuroinspect.show.objectives import (FALLBACK_RECIPE, RECIPES, ClassLogit, ClipSimilarity, Context, NeuronActivation,
                                          Objective, get_recipe, recipe)
from neuroinspect.show.render import Rendered, RenderResult, render

__all__ = [
    "visualize_neurons", "visualize_ranked", "render", "recipe", "resolve_clip", "load_clip", "parse_clip_spec",
    "NeuronActivation", "ClassLogit", "ClipSimilarity", "Objective", "Context", "RECIPES", "PAPER_CLIP",
    "default_augmentation", "Augmentation", "ClipModel", "Rendered", "RenderResult", "RenderConfig", "render_estimate",
    "warn_if_long",
]

log = logging.getLogger(__name__)

#: Seconds one image takes per optimisation step at 224 px on a CPU: 3 neurons × 3 classes × 300 steps with CLIP
#: took 8.6 min on a laptop CPU (about 0.19 s). Scaled by the pixel count; an estimate, not a promise.
CPU_SECONDS_PER_IMAGE_STEP = 0.19
LONG_RENDER_S = 60.0  # a CPU render expected to take longer than this is announced with one warning line


def render_estimate(images: int, steps: int, size: int, device: torch.device | str) -> float | None:
    """The expected seconds of optimising ``images`` pictures for ``steps`` steps at ``size`` px on ``device``
    (:data:`CPU_SECONDS_PER_IMAGE_STEP` scaled by the pixel count); ``None`` off the CPU, where it is quick."""
    if torch.device(device).type != "cpu":
        return None
    return images * steps * CPU_SECONDS_PER_IMAGE_STEP * (size / 224) ** 2


def warn_if_long(images: int, steps: int, size: int, device: torch.device | str) -> float | None:
    """One warning line when the render is expected to take more than :data:`LONG_RENDER_S` on a CPU;
    returns the estimate in seconds (``None`` off the CPU)."""
    seconds = render_estimate(images, steps, size, device)
    if seconds is not None and seconds > LONG_RENDER_S:
        log.warning("warning: rendering %d image(s) × %d steps at %d px on the CPU takes about %.0f min; fewer steps, "
                    "a smaller size or a GPU is quicker", images, steps, size, seconds / 60)
    return seconds


def _unpack(source, preprocess=None, class_names=None):
    """(probe, preprocess, class names, model spec, data-or-None) from an Inspector, LoadedModel or Probe."""
    if isinstance(source, InspectedModel):  # an Inspector
        return source.probe, source.loaded.preprocess, list(class_names or source.class_names), source.loaded.spec, source
    if isinstance(source, LoadedModel):
        probe = Probe(source.model, input_size=source.preprocess.input_size)
        names = class_names or source.class_names or [f"class_{i}" for i in range(probe.C)]
        return probe, source.preprocess, list(names), source.spec, None
    if isinstance(source, Probe):
        if preprocess is None:
            raise NeuroInspectError("visualising a bare Probe needs preprocess= (the classifier's Preprocess)")
        names = class_names or [f"class_{i}" for i in range(source.C)]
        return source, preprocess, list(names), type(source.model).__name__, None
    raise NeuroInspectError(f"cannot visualise a {type(source).__name__}: pass an Inspector, a LoadedModel or a Probe")


def _features_for(ins, features, split):
    if features is not None or ins is None or getattr(ins, "data", None) is None:
        return features
    data = ins.data
    if split is None:
        split = "train" if "train" in data.splits else data.splits[0]
    return ins.features(split)


def _class_index(names: list[str], value, C: int) -> int:
    idx = class_index(names, value)
    if idx >= C:
        raise NeuroInspectError(f"class {value!r} is index {idx}, but the model has only {C} outputs")
    return idx


def visualize_neurons(
    source,
    neurons: Sequence[int],
    classes: Sequence[str | int] | dict[int, Sequence[str | int]] | None = None,
    out_dir: str | Path = "visualize",
    config: RenderConfig | None = None,
    *,
    policy: DevicePolicy | None = None,
    features=None,
    preprocess=None,
    class_names: list[str] | None = None,
    cache_dir: str | Path | None = None,
    **overrides,
) -> VisualizationSet:
    """Render, mask and score neurons inside classes; write PNGs and ``visualizations.json`` into ``out_dir``.

    ``source``: an ``Inspector`` (its data, when it has some, gives exemplars and the class means
    for the core relevance score), a ``LoadedModel``, or a ``Probe`` with ``preprocess=``.
    ``classes``: names or indices to condition every neuron on, or a dict giving each neuron its
    own list; ``None``: each neuron's ``top_classes`` classes by decision-layer weight.
    ``config``: a :class:`RenderConfig` (or its fields as keyword ``overrides``). Its ``recipe``:
    "clip-illusion", "class" or "fv"; ``clip``: a CLIP spec, a loaded ``ClipModel`` or "none"
    (without CLIP, clip-illusion becomes "class"). ``features``: a ``FeatureSet`` for
    exemplars/CRS (default: the Inspector's ``split``, "train" when there is one). ``heatmaps``:
    the top-k images per class (the classes rendered, plus the neuron's ``vote_classes``
    largest-weight classes) shown with where the neuron fires in them (0: none); their maps are
    cached in ``cache_dir`` (default: the Inspector's cache). ``start``: what to do for an image
    whose neuron is silent on the starting noise: "exemplar" (start from the neuron's top image of
    that class), "preact" (push its pre-activation until it fires), "auto" (the default: exemplar
    where the neuron fires on an image of the class, preact elsewhere; it left the fewest silent
    images on Lite0) or "noise" (nothing). ``policy``: device, precision and channels_last (default:
    the Inspector's device and precision, else the model's device in fp32; see ``render``).
    ``input_size``, ``schedule`` and ``warmup``: see ``render``. Returns the
    :class:`~neuroinspect.core.base.records.VisualizationSet` written as ``visualizations.json``. Under
    torchrun every rank calls this: each renders its share of the batches, rank 0 writes the rest
    and publishes, and every rank gets the same report back.
    """
    cfg = configured(RenderConfig, config, overrides)
    recipe, clip, class_text, gamma, epsilon, steps, size, lr, seed = (
        cfg.recipe, cfg.clip, cfg.class_text, cfg.gamma, cfg.epsilon, cfg.steps, cfg.size, cfg.lr, cfg.seed)
    top_classes, split, exemplars, start = cfg.top_classes, cfg.split, cfg.exemplars, cfg.start
    heatmaps, vote_classes, param, input_size, schedule, warmup = (
        cfg.heatmaps, cfg.vote_classes, cfg.param, cfg.input_size, cfg.schedule, cfg.warmup)
    chosen = get_recipe(recipe)  # an unknown name fails here, listing the registered recipes
    probe, pre, names, model_spec, ins = _unpack(source, preprocess, class_names)
    if policy is None:  # the Inspector's device and precision; a bare model keeps its device, in fp32
        own = getattr(ins, "config", None)
        policy = (DevicePolicy.resolve(ins.policy.device, own.precision, backward=True) if own is not None
                  else DevicePolicy(probe.head.weight.device))
    policy = policy.for_backward()
    neurons = [int(n) for n in neurons]
    if not neurons:
        raise NeuroInspectError("no neurons to visualise; pass --neurons like 12,40")
    for n in neurons:
        if not 0 <= n < probe.D:
            raise NeuroInspectError(f"neuron {n} is out of range: the model has {probe.D} features (0–{probe.D - 1})")
    if isinstance(classes, dict):  # neuron -> its own classes
        missing = [n for n in neurons if n not in classes]
        if missing:
            raise NeuroInspectError(f"classes given per neuron, but none for neurons {missing}")
        given_per = {n: [_class_index(names, c, probe.C) for c in classes[n]] for n in neurons}
        given = None
    else:
        given_per = None
        given = [_class_index(names, c, probe.C) for c in classes] if classes else None
    if given is None and given_per is None and top_classes < 1:
        raise NeuroInspectError("--top-classes must be at least 1 (or pass --classes)")
    if not isinstance(clip, ClipModel):
        parse_clip_spec(clip)  # a spec that does not parse fails before any work
    class_text = dict(class_text or {})
    unknown = [k for k in class_text if k not in names]
    if unknown:
        _class_index(names, unknown[0], probe.C)  # raises with suggestions

    # which images: neuron × class
    per_neuron = given_per or {
        n: (given if given is not None else [c for c, _ in neuron_top_classes(probe.weight, n, top_classes)])
        for n in neurons
    }
    pairs = []
    for n in neurons:
        for c in per_neuron[n][: None if chosen.per_class else 1]:  # fv ignores the class: one image per neuron
            if (n, c) not in pairs:
                pairs.append((n, c))

    choice = resolve_clip(clip, policy.device) if chosen.needs_clip and cfg.optimise else ClipChoice(None)
    used = chosen.name if (not chosen.needs_clip or choice.model is not None or not cfg.optimise) else FALLBACK_RECIPE
    texts = [class_text.get(name, name) for name in names]
    fs = _features_for(ins, features, split)

    precision, channels_last = policy.precision, policy.channels_last
    if cfg.optimise and distributed.is_main():
        warn_if_long(len(pairs), steps, size, policy.device)
    init = (_start_images(probe, pre, fs, pairs, getattr(ins, "data", None))
            if start in ("exemplar", "auto") and fs is not None and cfg.optimise else None)
    result = render(
        probe, pre, pairs, replace(cfg, recipe=used, start=start if (start != "exemplar" or init is not None) else "noise"),
        policy=policy, clip=choice.model, class_texts=texts,
        init_images=[i[0] if i else None for i in init] if init else None,
    ) if cfg.optimise else None  # heatmaps only: nothing is optimised
    starts = {(pairs[j][0], pairs[j][1]): init[j] for j in range(len(pairs))} if init else {}

    # everything is written into a staging folder, then published into out_dir at once; under torchrun
    # rank 0 makes it, every rank writes its own images into it and rank 0 writes the rest
    out = distributed.broadcast(staging_dir(out_dir) if distributed.is_main() else None)
    means = None
    if fs is not None and len(fs):
        counts = torch.bincount(fs.labels.long().clamp_min(0), minlength=probe.C)[: probe.C]
        present = (counts > 0).nonzero().flatten()
        means = _ClassMeans(class_means(fs.features, fs.labels.long().clamp_min(0), probe.C)[present], present)
    records = _save_images(result, probe, pre, names, out, replace(cfg, recipe=used), means,
                           choice.model is not None, starts) if result is not None else []
    shares = distributed.gather((records, bool(result and result.interrupted)))  # in rank order: the pairs' order
    if not distributed.is_main():
        return distributed.broadcast(None)
    records = [rec for theirs, _ in shares for rec in theirs]
    interrupted = any(stopped for _, stopped in shares)
    silent = sorted({rec["neuron"] for rec in records if rec["activation"] <= 1e-6})
    if silent:
        hint = ("their exemplar heatmaps show where they fire" if fs is not None
                else "pass --data: silent images then start from the neuron's top image of the class")
        log.warning("warning: neuron(s) %s never fired, so their gradient stayed zero; %s",
                    ", ".join(map(str, silent)), hint)
    heat_rows, heat_stats = {}, None
    if fs is not None and len(fs) and heatmaps > 0:
        requests = []
        for n in neurons:
            inspected = per_neuron[n] if (given is not None or given_per is not None) else []
            votes = [c for c, w in neuron_top_classes(probe.weight, n, max(vote_classes, 0)) if w > 0] if vote_classes else []
            if not inspected:  # no class given: the classes rendered are the ones it votes for
                votes = list(dict.fromkeys(per_neuron[n][: None if chosen.per_class else 1] + votes))
            for c in inspected:
                requests.append(HeatmapRequest(n, c, "inspected"))
            for c in votes:
                if c not in inspected:
                    requests.append(HeatmapRequest(n, c, "votes for"))
        cache = cache_dir if cache_dir is not None else getattr(ins, "cache_dir", None)
        heat_rows, heat_stats = exemplar_heatmaps(
            probe, pre, fs, requests, out, cfg, policy=policy, class_names=names, data=getattr(ins, "data", None),
            cache_dir=cache)
    neuron_rows = []
    for n in neurons:
        top = neuron_top_classes(probe.weight, n, max(3, top_classes))
        row = {"neuron": n, "top_classes": [{"class": names[c], "weight": w} for c, w in top],
               "dataset_top_activation": None, "dataset_mean_top_activation": None,
               "exemplar_strip": None, "exemplars": [], "exemplar_heatmaps": heat_rows.get(n, [])}
        if fs is not None and len(fs):
            row["dataset_top_activation"], row["dataset_mean_top_activation"] = dataset_activation(fs, n, exemplars)
            row["exemplars"] = top_exemplars(fs, n, exemplars)
            strip = save_strip([e["id"] for e in row["exemplars"]], out / "exemplars" / f"neuron{n}.png")
            row["exemplar_strip"] = strip.relative_to(out).as_posix() if strip else None
        neuron_rows.append(row)

    report = {
        "model": model_spec,
        "recipe": used,
        "recipe_requested": recipe,
        "clip": choice.spec,
        "clip_requested": choice.requested,
        "clip_fallback": choice.fallback,
        "clip_fallback_reason": choice.reason if choice.fallback else None,
        "steps": steps,
        "size": size,
        "seed": seed,
        "gamma": gamma,
        "epsilon": epsilon,
        "lr": lr,
        "param": param,
        "precision": precision,
        "channels_last": channels_last,
        "input_size": cfg.classifier_size(),
        "schedule": schedule,
        "warmup": warmup,
        "start": start,
        "interrupted": interrupted,
        "optimised": cfg.optimise,
        "features_split": getattr(fs, "split", None),
        "heatmaps": heat_stats,
        "images": records,
        "neurons": neuron_rows,
    }
    manifest = VisualizationSet.from_dict(report)  # checked against the record the report reads
    manifest.write(out / VisualizationSet.FILE)
    publish_dir(out, out_dir, VisualizationSet.FILE)
    return distributed.broadcast(manifest)  # every rank returns the same record


def _start_images(probe, pre, fs, pairs, data) -> list[tuple[torch.Tensor, str, float] | None] | None:
    """Per pair: (the neuron's top image of the class as the model sees it, its id, activation), if it fires there."""
    if fs is None or not len(fs):
        return None
    images = _Images(data, getattr(fs, "split", None) or None)
    mean = torch.tensor(pre.mean).view(3, 1, 1)
    std = torch.tensor(pre.std).view(3, 1, 1)
    out = []
    for n, c in pairs:
        rows = (fs.labels.long() == c).nonzero().flatten()
        found = None
        if len(rows):
            vals = fs.features[rows, n].float()
            for j in vals.argsort(descending=True)[:3].tolist():  # the best readable one
                if vals[j] <= 0:
                    break
                pil = images.pil(fs.ids[int(rows[j])])
                if pil is not None:
                    found = ((pre.transform(pil) * std + mean).clamp(0, 1), fs.ids[int(rows[j])], float(vals[j]))
                    break
        out.append(found)
    return out


def _image_note(r, names, start) -> str | None:
    """Why an image may look empty: said on its card instead of leaving it blank."""
    cname = names[r.cls]
    if r.activation > 1e-6:
        if r.started_from == "preact":
            return "silent on the starting noise: its pre-activation was pushed up until it fired"
        if r.started_from == "exemplar":
            return (f"silent on the starting noise: started from its top '{cname}' image"
                    + (f" ({Path(start[1]).name})" if start else ""))
        return None
    if r.started_from == "exemplar":
        return (f"silent: neuron {r.neuron} stayed at 0 even from its top '{cname}' image; "
                "the exemplar heatmaps show where it fires")
    if r.started_from == "preact":
        return (f"silent: neuron {r.neuron} stayed at 0 although its pre-activation was pushed up; "
                "the exemplar heatmaps show where it fires")
    if start is None:
        return (f"silent: neuron {r.neuron} never fired, so no gradient reached the image, and it fires on no "
                f"'{cname}' image to start from; the image shows only the class logit's pull")
    return f"silent: neuron {r.neuron} never fired on this image; the exemplar heatmaps show where it fires"


@dataclass
class _ClassMeans:
    """The mean feature vector of each class the data has: ``means[i]`` is that of class ``present[i]``."""

    means: torch.Tensor
    present: torch.Tensor


def _save_images(result: RenderResult, probe, pre, names, out: Path, config: RenderConfig, means: _ClassMeans | None,
                 clip_used: bool, starts=None) -> list[dict]:
    """Write each rendered image (plain, masked, RGBA) and return its record; ``config`` gives the recipe used,
    the mask's ``threshold`` and the ``dim`` outside it; ``means`` (when there are features) the class means
    for the core relevance score."""
    threshold, dim, recipe_used = config.threshold, config.dim, config.recipe
    records = []
    model_input = ModelInput.for_classifier(pre).to(probe.head.weight.device)
    for r in result.images:
        stem = f"images/neuron{r.neuron}_class{r.cls}"
        size = r.image.shape[-1]
        mask = neuron_mask(r.spatial, size, threshold) if r.spatial is not None else None
        save_png(out / f"{stem}.png", to_pil(r.image))
        rec = {
            "neuron": r.neuron, "class": names[r.cls], "class_index": r.cls, "recipe": recipe_used,
            "clip_used": clip_used, "activation": r.activation, "start_activation": r.start_activation,
            "logit": r.logit, "prob": r.prob, "clip_similarity": r.clip_similarity, "crs": None,
            "steps_done": r.steps_done, "seed": r.seed, "image": f"{stem}.png", "masked": None, "rgba": None,
            "start": r.started_from, "start_image": None, "note": None,
        }
        start = (starts or {}).get((r.neuron, r.cls))
        if r.started_from == "exemplar" and start:
            rec["start_image"] = start[1]
        rec["note"] = _image_note(r, names, start)
        if mask is not None:
            save_png(out / f"{stem}_masked.png", to_pil(dim_outside(r.image, mask, dim)))
            save_png(out / f"{stem}_rgba.png", to_rgba(r.image, mask))
            rec["masked"], rec["rgba"] = f"{stem}_masked.png", f"{stem}_rgba.png"
            rec["mask_fraction"] = float(mask.float().mean())
            if means is not None and (means.present == r.cls).any():
                with torch.no_grad():  # f(x) and f(x ⊙ M) the same way, each alone: the CRS depends on the image only
                    x = r.image.unsqueeze(0).to(model_input.mean.device)
                    m = mask.to(x.device, x.dtype).view(1, 1, *mask.shape)
                    f = probe(model_input(x.clone())).features.float().cpu()
                    fm = probe(model_input(x * m)).features.float().cpu()
                c = int((means.present == r.cls).nonzero()[0])
                rec["crs"] = float(core_relevance_score(f[0], fm[0], means.means, c))
        records.append(rec)
    return records


def visualize_ranked(inspector, explanation, n: int, out_dir: str | Path, config: RenderConfig | None = None,
                     **overrides) -> dict:
    """Render the top-``n`` insufficient and top-``n`` excessive neurons of an ``Explanation`` inside its class.

    Exemplars and class means come from the explained split's (cached) features. ``config`` and
    ``overrides`` (including ``features=`` and ``policy=``) go to ``visualize_neurons``; without a
    config, no CLIP is loaded (``clip="none"``) unless one is given.
    """
    neurons = explanation.top_neurons(n)
    if not neurons:
        log.warning("no ranked neurons to visualise for class '%s'", explanation.class_name)
        return {}
    if config is None:
        overrides.setdefault("clip", "none")
    features = overrides.pop("features", None)
    if features is None and getattr(inspector, "data", None) is not None:
        features = inspector.features(explanation.split)
    return visualize_neurons(inspector, neurons, [explanation.class_index], out_dir, config, features=features,
                             **overrides)


visualize = visualize_neurons
