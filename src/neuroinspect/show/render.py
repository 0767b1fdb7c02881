"""Render many (neuron, class) pairs at once: batched, chunked optimisation of images.

Each image in a batch has its own neuron, class and seed; the loss is the sum of the
per-image losses, and since an image only affects its own loss the images are optimised
independently, just in one forward/backward pass per step instead of one per image.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Sequence

import torch

from neuroinspect.core.base.config import configured
from neuroinspect.core.base.errors import NeuroInspectError
from neuroinspect.core.runtime import distributed
from neuroinspect.core.runtime.device import DevicePolicy
from neuroinspect.core.runtime.progress import progress_bar
from neuroinspect.show.augment import Augmentation, ModelInput, default_augmentation
from neuroinspect.show.clip import ClipModel
from neuroinspect.show.config import DEFAULT_LR, DEFAULT_WEIGHT_DECAY, STARTS, RenderConfig  # noqa: F401 (re-exported)
from neuroinspect.show.objectives import Context, Objective, recipe as make_recipe
from neuroinspect.show.param import make_image

log = logging.getLogger(__name__)


@dataclass
class Rendered:
    """One finished image and what the classifier (and CLIP) say about it."""

    neuron: int
    cls: int
    seed: int
    image: torch.Tensor  # [3, H, W] in [0, 1], CPU
    activation: float  # a_k on the final image (no augmentation)
    logit: float  # s_c
    prob: float  # p(c | x)
    start_activation: float  # a_k on the starting noise
    clip_similarity: float | None = None
    spatial: torch.Tensor | None = None  # [h, w]: neuron k's map on the final image (for the mask)
    steps_done: int = 0
    started_from: str = "noise"  # "noise", "exemplar" or "preact" (how a silent start was handled)
    features: torch.Tensor | None = None  # [D]: all features of the final image (for the CRS)


@dataclass
class RenderResult:
    images: list[Rendered] = field(default_factory=list)
    interrupted: bool = False
    steps: int = 0

    def __iter__(self):
        return iter(self.images)

    def __len__(self):
        return len(self.images)


def image_seed(seed: int, index: int) -> int:
    """The seed of the ``index``-th image of a run (independent of how the run is batched)."""
    return (int(seed) * 1_000_003 + int(index)) % (2**63 - 1)


class _PreActivation:
    """Captures the input of the probe's spatial module when it is an element-wise activation.

    For a CNN whose features are ``pool(act(z))`` that input is the pre-activation map ``z``: a
    silent ReLU neuron still has a gradient there, so an image can be pushed until it fires.
    """

    def __init__(self, probe):
        self.value = None
        self.handle = None
        module = dict(probe.model.named_modules()).get(probe.spatial_name) if probe.spatial_name else None
        if module is not None and probe.spatial_layout == "nchw":
            self.handle = module.register_forward_hook(self._grab)
        self.D = probe.D

    def _grab(self, module, inputs, output):
        x = inputs[0] if inputs and isinstance(inputs[0], torch.Tensor) else None
        if x is not None and x.dim() == 4 and x.shape[1] == self.D and x.shape == getattr(output, "shape", None):
            self.value = x

    def remove(self):
        if self.handle is not None:
            self.handle.remove()


def render(
    probe,
    preprocess,
    pairs: Sequence[tuple[int, int]],
    config: RenderConfig | None = None,
    *,
    policy: DevicePolicy | None = None,
    objective: Objective | None = None,
    clip: ClipModel | None = None,
    class_texts: Sequence[str] | None = None,
    augmentation: Augmentation | None = None,
    init_images: Sequence[torch.Tensor | None] | None = None,
    **overrides,
) -> RenderResult:
    """Optimise one image per ``(neuron, class_index)`` pair; return them with their final scores.

    ``probe`` is a ``neuroinspect.core.model.probe.Probe``; ``preprocess`` the classifier's ``Preprocess``
    (its input size, mean and std). ``config``: a :class:`RenderConfig` (or its fields as keyword
    ``overrides``: recipe, steps, size, batch, lr, seed, ...). ``objective`` (a loss) overrides the
    recipe. With a CLIP objective, ``clip`` (a loaded ``ClipModel``) and ``class_texts`` (the text of
    every class, by index) are needed. Ctrl-C stops early and returns the images finished so far plus
    the current batch as it is.
    Under torchrun each process renders its share of the batches (``core.runtime.distributed``) and gets
    its own images back, each exactly as one process would have rendered it.

    ``policy`` (a :class:`DevicePolicy`; default: the classifier's device in fp32): its precision
    "bf16" autocasts the classifier's forward and backward (never CLIP); fp16 is refused (its image
    gradients would need loss scaling); ``channels_last`` stores its activations NHWC. Cost:
    ``cfg.classifier_size()`` runs the classifier at that size during optimisation (default: the image's
    size; None: its own input size); the final scores always use the classifier's own input size in fp32. ``schedule``:
    "cosine" or "constant", after a linear ``warmup`` (a fraction of the steps).

    Silent neurons (a_k = 0 on the starting image, so no gradient reaches the image): ``start``
    "exemplar" starts those images from ``init_images[i]`` (one per pair, e.g. the neuron's top
    dataset image of the class; ``None`` where there is none); "preact" optimises the neuron's
    pre-activation map until it fires, then the objective; "auto" does the first where it has an
    image and the second elsewhere; "noise" does neither.

    ``freeze``: turn off the models' parameter gradients while optimising (restored after); only
    a timing comparison with the unfrozen way wants ``False``.
    """
    cfg = configured(RenderConfig, config, overrides)
    policy = DevicePolicy.of(policy, probe.head.weight.device).for_backward()
    steps, batch, seed, start, input_size, progress = cfg.steps, cfg.batch, cfg.seed, cfg.start, cfg.classifier_size(), cfg.progress
    if start not in STARTS:
        raise NeuroInspectError(f"unknown start '{start}'; choose one of: {', '.join(STARTS)}")
    pairs = [(int(n), int(c)) for n, c in pairs]
    if steps < 1:
        raise NeuroInspectError(f"steps must be at least 1, got {steps}")
    if batch < 1:
        raise NeuroInspectError(f"batch must be at least 1, got {batch}")
    for n, c in pairs:
        if not 0 <= n < probe.D:
            raise NeuroInspectError(f"neuron {n} is out of range: the model has {probe.D} features (0–{probe.D - 1})")
        if not 0 <= c < probe.C:
            raise NeuroInspectError(f"class index {c} is out of range: the model has {probe.C} classes (0–{probe.C - 1})")
    loss_fn = objective if objective is not None else make_recipe(cfg.recipe, gamma=cfg.gamma, epsilon=cfg.epsilon)
    use_clip = "clip" in loss_fn.needs
    if use_clip and (clip is None or class_texts is None):
        raise NeuroInspectError("the CLIP-Illusion objective needs a CLIP model and the class texts")
    device = policy.device
    model_input = ModelInput.for_classifier(preprocess).to(device)
    train_input = model_input if not input_size else ModelInput(int(input_size), preprocess.mean, preprocess.std).to(device)
    aug = augmentation if augmentation is not None else default_augmentation()
    aug = aug.to(device)
    policy.place(probe.model)

    preact = _PreActivation(probe) if start in ("preact", "auto") else None
    # freeze the models while optimising images: autograd then keeps no weight-gradient paths
    # (3-4x cheaper backward for Lite0 on a CPU); restored in the finally block below
    frozen = [p for m in (probe.model, getattr(clip, "model", None)) if isinstance(m, torch.nn.Module)
              for p in m.parameters() if p.requires_grad] if cfg.freeze else []
    for p in frozen:
        p.requires_grad_(False)
    result = RenderResult(steps=steps)
    chunks = [list(range(i, min(i + batch, len(pairs)))) for i in range(0, len(pairs), batch)]
    # under torchrun each rank renders a contiguous run of whole batches: the same batches, seeds and
    # augmentation draws as in one process, so the same pixels; ``result.images`` holds this rank's images
    mine = distributed.shard(range(len(chunks)))
    distributed.record("pairs", None, [list(pairs[i]) for k in mine for i in chunks[k]])
    bar = progress_bar(sum(len(chunks[k]) for k in mine) * steps, "visualize", "img-step", enabled=progress)
    try:
        for chunk_no, index in ((k, chunks[k]) for k in mine):
            state = _ChunkState(pairs, index, cfg, device)
            aug.seed(torch.Generator().manual_seed(image_seed(seed, 7919 + chunk_no)))
            text = None
            if use_clip:
                text = clip.class_embeddings([class_texts[c] for c in state.classes.tolist()]).to(device)
            state.start = _own_layout(policy, probe, _evaluate, model_input, state, None, None, device, False)["activation"]
            silent = state.start <= 1e-6
            if start in ("exemplar", "auto") and init_images is not None and silent.any():
                for j, i in enumerate(index):
                    if silent[j] and init_images[i] is not None:
                        state.param.set_image(j, init_images[i].to(device))
                        state.started_from[j] = "exemplar"
                state.start = _own_layout(policy, probe, _evaluate, model_input, state, None, None, device,
                                          False)["activation"]
            waking = silent.clone() if preact is not None and preact.handle is not None else None
            if waking is not None and start == "auto":  # only those without an exemplar to start from
                waking &= torch.tensor([f != "exemplar" for f in state.started_from], device=waking.device)
            if waking is not None:
                for j in waking.nonzero().flatten().tolist():
                    state.started_from[j] = "preact"
            try:
                for step in range(steps):
                    aug.set_progress(step / max(1, steps - 1))
                    images = state.image()
                    x = aug(images)
                    xin = policy.place(train_input(x))
                    with policy.autocast():
                        out = probe(xin)
                    ctx = Context(out.features.float(), out.logits.float(), state.neurons, state.classes)
                    if use_clip:
                        ctx.image_embeddings = clip.encode_image(x.float())
                        ctx.text_embeddings = text
                    loss = loss_fn(ctx).float()
                    if waking is not None and waking.any():
                        a = ctx.features.gather(1, state.neurons.view(-1, 1)).squeeze(1)
                        waking = waking & (a.detach() <= 1e-6)  # awake for good once it fires
                        if preact.value is not None and waking.any():
                            z = preact.value.float()
                            z = z[torch.arange(z.shape[0], device=z.device), state.neurons.to(z.device)]
                            loss = torch.where(waking, -z.flatten(1).mean(1), loss)
                    if not torch.isfinite(loss).all():
                        raise NeuroInspectError("the visualisation loss became NaN or infinite; lower --lr")
                    state.opt.zero_grad(set_to_none=True)
                    loss.sum().backward(inputs=list(state.param.parameters()))
                    state.opt.step()
                    state.sched.step()
                    state.steps_done = step + 1
                    bar.update(len(index))
            except KeyboardInterrupt:
                result.interrupted = True
            result.images.extend(_own_layout(policy, probe, _finish, model_input, state, clip, text, device))
            if result.interrupted:
                break
    except KeyboardInterrupt:
        result.interrupted = True
    finally:
        bar.close()
        for p in frozen:
            p.requires_grad_(True)
        if preact is not None:
            preact.remove()
        policy.release(probe.model)
    if result.interrupted:
        log.warning("interrupted: returning %d of %d images (the last batch stopped early)", len(result.images), len(pairs))
    return result


class _ChunkState:
    """One batch of pairs being optimised: their seeds, neurons and classes, images, optimiser and schedule.

    ``config`` gives the image parameterisation (``param``, ``param_options``, ``size``, ``seed``) and the
    optimiser (``lr``, ``weight_decay``, ``steps``, ``schedule``, ``warmup``).
    """

    def __init__(self, pairs, index, config: RenderConfig, device):
        self.index = index
        self.seeds = [image_seed(config.seed, i) for i in index]
        self.neurons = torch.tensor([pairs[i][0] for i in index], device=device)
        self.classes = torch.tensor([pairs[i][1] for i in index], device=device)
        self.param = make_image(config.param, self.seeds, config.size, device=device, **(config.param_options or {}))
        self.opt = torch.optim.AdamW(self.param.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        self.sched = make_schedule(self.opt, config.steps, config.schedule, config.warmup)
        self.steps_done = 0
        self.started_from = ["noise"] * len(index)
        self.start = None

    def image(self) -> torch.Tensor:
        return self.param()


def make_schedule(opt, steps: int, schedule: str = "cosine", warmup: float = 0.0):
    """Linear warm-up over ``warmup`` × steps, then cosine decay to 10 % (or a constant rate)."""
    if schedule not in ("cosine", "constant"):
        raise NeuroInspectError(f"unknown schedule '{schedule}'; choose cosine or constant")
    w = int(round(max(0.0, min(0.9, warmup)) * steps))

    def factor(step: int) -> float:
        if step < w:
            return (step + 1) / (w + 1)
        if schedule == "constant":
            return 1.0
        t = (step - w) / max(1, steps - w)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))

    return torch.optim.lr_scheduler.LambdaLR(opt, factor)


@torch.no_grad()
def _evaluate(probe, model_input, state, clip, text, device, spatial=True) -> dict:
    """The scores of the chunk's current images, each image scored alone in fresh memory: a score is then a
    function of its image only, not of the batch the image sits in or of where its pixels lie in memory (CPU
    kernels round a row differently with the batch's size and the buffer's alignment, and a start activation
    that rounds to 0 in one batch and not in another changes how the image is optimised)."""
    images = state.image()
    outs = [probe(model_input(images[j:j + 1].clone()), spatial=spatial) for j in range(images.shape[0])]
    feats = torch.cat([o.features.float() for o in outs])
    logits = torch.cat([o.logits.float() for o in outs])
    n, c = state.neurons.view(-1, 1), state.classes.view(-1, 1)
    res = {
        "images": images,
        "features": feats,
        "activation": feats.gather(1, n).squeeze(1),
        "logit": logits.gather(1, c).squeeze(1),
        "prob": logits.softmax(1).gather(1, c).squeeze(1),
        "spatial": None,
        "clip": None,
    }
    if spatial and outs[0].spatial is not None:
        sp = torch.cat([o.spatial.float() for o in outs])
        res["spatial"] = sp[torch.arange(sp.shape[0], device=sp.device), state.neurons.to(sp.device)]
    if clip is not None and text is not None:
        res["clip"] = torch.cat([clip.encode_image(images[j:j + 1].clone()) for j in range(images.shape[0])])
        res["clip"] = (res["clip"] * text).sum(-1)
    return res


def _own_layout(policy: DevicePolicy, probe, score, *args):
    """``score(probe, *args)`` with the classifier in its own memory layout (not channels-last) and fp32, as the
    final scores are reported: a score then depends on the image alone, not on the run's cost options."""
    policy.release(probe.model)
    try:
        return score(probe, *args)
    finally:
        policy.place(probe.model)


def _finish(probe, model_input, state, clip, text, device) -> list[Rendered]:
    ev = _evaluate(probe, model_input, state, clip, text, device, spatial=True)
    out = []
    for j in range(len(state.index)):
        out.append(Rendered(
            neuron=int(state.neurons[j]),
            cls=int(state.classes[j]),
            seed=state.seeds[j],
            image=ev["images"][j].detach().float().cpu().clamp(0, 1),
            activation=float(ev["activation"][j]),
            logit=float(ev["logit"][j]),
            prob=float(ev["prob"][j]),
            start_activation=float(state.start[j]),
            clip_similarity=None if ev["clip"] is None else float(ev["clip"][j]),
            spatial=None if ev["spatial"] is None else ev["spatial"][j].detach().cpu(),
            steps_done=state.steps_done,
            started_from=state.started_from[j],
            features=ev["features"][j].detach().float().cpu(),
        ))
    return out


def memory_batch(probe, preprocess, policy: DevicePolicy, *, size: int = 224, clip: ClipModel | None = None,
                 limit: int = 64) -> int:
    """The largest render batch (≤ ``limit``) whose optimisation fits in the free memory of the policy's CUDA device.

    Measures the peak memory of one render step at batch 1 and 2 (with ``clip`` as guide when given:
    the CLIP-Illusion recipe), takes the difference as the cost of one image and leaves 20 % of
    the free memory spare. On other devices there is nothing to measure: returns ``limit``.
    """
    device = policy.device
    if device.type != "cuda":
        return limit
    texts = [str(c) for c in range(probe.C)]
    peaks = []
    for b in (1, 2):
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        render(probe, preprocess, [(0, 0)] * b, recipe="clip-illusion" if clip is not None else "class", clip=clip,
               class_texts=texts, steps=1, size=size, batch=b, policy=policy, progress=False)
        torch.cuda.synchronize(device)
        peaks.append(torch.cuda.max_memory_allocated(device) - before)
    per_image = max(1, peaks[1] - peaks[0])
    fixed = max(0, peaks[0] - per_image)
    free, _ = torch.cuda.mem_get_info(device)
    return int(max(1, min(limit, (0.8 * free - fixed) // per_image)))
