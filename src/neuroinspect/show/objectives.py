"""Objectives that compose like the paper's equations.

An objective maps a ``Context`` (what the models said about a batch of images) to one value
per image, shape ``[B]``. Objectives combine with ``+ - * /`` and with plain numbers, so the
recipes of paper Sec. III-D read like their equations::

    a, s, sim = NeuronActivation(), ClassLogit(), ClipSimilarity()
    fv    = -a                                  # plain feature visualisation
    cc    = -(a + gamma * s)                    # class-conditional, Eq. 2 (no CLIP)
    illu  = -(sim + eps) * (a + gamma * s)      # CLIP-Illusion, Eq. 4

Recipes are *losses* (to minimise). Which neuron and class each image targets comes from the
context (one per image), so one batch can render many (neuron, class) pairs at once; pass
``neuron=`` / ``cls=`` to pin a fixed index instead.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from neuroinspect.core.base.errors import NeuroInspectError
from neuroinspect.show.config import DEFAULT_EPSILON, DEFAULT_GAMMA, FALLBACK_RECIPE, RECIPES, RecipeInfo  # noqa: F401


@dataclass
class Context:
    """Everything an objective may read, for a batch of B images."""

    features: torch.Tensor  # [B, D]: the classifier's penultimate features (neuron activations)
    logits: torch.Tensor  # [B, C]
    neurons: torch.Tensor  # [B] long: the neuron each image targets
    classes: torch.Tensor  # [B] long: the class each image targets
    image_embeddings: torch.Tensor | None = None  # [B, E]: CLIP image embeddings
    text_embeddings: torch.Tensor | None = None  # [B, E]: CLIP class embeddings, one per image


class Objective:
    """A quantity per image; build new ones with ``+ - * /`` and numbers."""

    name = "objective"
    needs: frozenset = frozenset()

    def __call__(self, ctx: Context) -> torch.Tensor:  # pragma: no cover - overridden
        raise NotImplementedError

    # composition ------------------------------------------------------------
    def _combine(self, other, op: Callable, symbol: str, reverse: bool = False) -> "Objective":
        other = other if isinstance(other, Objective) else Constant(other)
        left, right = (other, self) if reverse else (self, other)
        return _Binary(left, right, op, symbol)

    def __add__(self, other):
        return self._combine(other, torch.add, "+")

    def __radd__(self, other):
        return self._combine(other, torch.add, "+", reverse=True)

    def __sub__(self, other):
        return self._combine(other, torch.sub, "-")

    def __rsub__(self, other):
        return self._combine(other, torch.sub, "-", reverse=True)

    def __mul__(self, other):
        return self._combine(other, torch.mul, "*")

    def __rmul__(self, other):
        return self._combine(other, torch.mul, "*", reverse=True)

    def __truediv__(self, other):
        return self._combine(other, torch.div, "/")

    def __rtruediv__(self, other):
        return self._combine(other, torch.div, "/", reverse=True)

    def __neg__(self):
        return _Negation(self)

    def __repr__(self) -> str:
        return self.name


class Constant(Objective):
    def __init__(self, value: float):
        self.value = float(value)
        self.name = f"{self.value:g}"

    def __call__(self, ctx: Context) -> torch.Tensor:
        return torch.full((ctx.features.shape[0],), self.value, dtype=ctx.features.dtype, device=ctx.features.device)


class _Binary(Objective):
    def __init__(self, left: Objective, right: Objective, op: Callable, symbol: str):
        self.left, self.right, self.op = left, right, op
        self.name = f"({left!r} {symbol} {right!r})"
        self.needs = left.needs | right.needs

    def __call__(self, ctx: Context) -> torch.Tensor:
        return self.op(self.left(ctx), self.right(ctx))


class _Negation(Objective):
    def __init__(self, inner: Objective):
        self.inner = inner
        self.name = f"-{inner!r}"
        self.needs = inner.needs

    def __call__(self, ctx: Context) -> torch.Tensor:
        return -self.inner(ctx)


def _pick(values: torch.Tensor, fixed: int | None, per_image: torch.Tensor) -> torch.Tensor:
    if fixed is not None:
        return values[:, fixed]
    return values.gather(1, per_image.view(-1, 1).to(values.device)).squeeze(1)


class NeuronActivation(Objective):
    """``a_k``: the activation of neuron k in the features fed to the decision layer."""

    needs = frozenset({"features"})

    def __init__(self, neuron: int | None = None):
        self.neuron = neuron
        self.name = "a_k" if neuron is None else f"a_{neuron}"

    def __call__(self, ctx: Context) -> torch.Tensor:
        return _pick(ctx.features, self.neuron, ctx.neurons)


class ClassLogit(Objective):
    """``s_c``: the class-c logit of the classifier under inspection."""

    needs = frozenset({"logits"})

    def __init__(self, cls: int | None = None):
        self.cls = cls
        self.name = "s_c" if cls is None else f"s_{cls}"

    def __call__(self, ctx: Context) -> torch.Tensor:
        return _pick(ctx.logits, self.cls, ctx.classes)


class ClassProbability(Objective):
    """``p(c | x)``: the softmax probability of class c."""

    needs = frozenset({"logits"})
    name = "p_c"

    def __call__(self, ctx: Context) -> torch.Tensor:
        return _pick(ctx.logits.softmax(1), None, ctx.classes)


class ClipSimilarity(Objective):
    """``sim = cos(E_img(x), t̄_c)``: CLIP similarity to the class's prompt-ensemble embedding (Eq. 3)."""

    needs = frozenset({"clip"})
    name = "sim"

    def __call__(self, ctx: Context) -> torch.Tensor:
        if ctx.image_embeddings is None or ctx.text_embeddings is None:
            raise NeuroInspectError("this objective needs CLIP, but no CLIP model was given")
        return F.cosine_similarity(ctx.image_embeddings, ctx.text_embeddings.to(ctx.image_embeddings), dim=1)


# --------------------------------------------------------------------------- recipes
@dataclass(frozen=True)
class Recipe:
    """A named loss of paper Sec. III-D and what running it takes."""

    name: str
    build: Callable[[float, float], Objective]  # (gamma, epsilon) -> the loss
    aliases: tuple[str, ...] = ()
    needs_clip: bool = False  # without a CLIP model, visualisation falls back to ``FALLBACK_RECIPE``
    per_class: bool = True  # False: the loss ignores the class, so one image per neuron suffices


def register_recipe(name: str, aliases: tuple[str, ...] = (), needs_clip: bool = False, per_class: bool = True):
    """Register ``build(gamma, epsilon) -> Objective`` as the recipe ``name`` (and its ``aliases``) in the
    name table :data:`~neuroinspect.show.config.RECIPES`, which the command line reads."""
    def register(build: Callable[[float, float], Objective]) -> Callable[[float, float], Objective]:
        RECIPES.register(name, RecipeInfo(needs_clip, per_class), build, tuple(aliases))
        return build

    return register


# the built-in recipes, declared in neuroinspect.show.config.RECIPES
def _clip_illusion(gamma: float, epsilon: float) -> Objective:
    return -(ClipSimilarity() + epsilon) * (NeuronActivation() + gamma * ClassLogit())  # Eq. 4


def _class_conditional(gamma: float, epsilon: float) -> Objective:
    return -(NeuronActivation() + gamma * ClassLogit())  # Eq. 2


def _feature_visualisation(gamma: float, epsilon: float) -> Objective:
    return -NeuronActivation()


def get_recipe(name: str) -> Recipe:
    """The recipe called ``name`` or one of its aliases; an unknown name raises one line listing the choices."""
    entry = RECIPES.entry(name)
    return Recipe(entry.name, entry.load(), entry.aliases, entry.info.needs_clip, entry.info.per_class)


def recipe(name: str, gamma: float = DEFAULT_GAMMA, epsilon: float = DEFAULT_EPSILON) -> Objective:
    """The loss of a named recipe of paper Sec. III-D: ``fv``, ``class`` or ``clip-illusion``."""
    return get_recipe(name).build(gamma, epsilon)
