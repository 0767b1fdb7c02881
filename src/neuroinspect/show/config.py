"""Every default of stage 2 (rendering and visualising neurons), once, without importing torch
(the command line's ``--help`` reads them from here), and the recipes' name table :data:`RECIPES`.

Where the renderer runs and in which precision is not here: that is the
:class:`~neuroinspect.core.runtime.device.DevicePolicy` passed beside the config.
"""
from __future__ import annotations

from dataclasses import dataclass

from neuroinspect.core.base.registry import Registry

DEFAULT_GAMMA = 0.5  # γ: weight of the class logit s_c in the objective (paper Eq. 3)
DEFAULT_EPSILON = 0.05  # ε: offset of the CLIP gate (paper Eq. 4)
DEFAULT_LR = 0.05  # AdamW learning rate
DEFAULT_WEIGHT_DECAY = 2e-4
PAPER_CLIP = "open_clip:ViT-B-32/laion2b_s34b_b79k"
PARAMS = ("fourier", "pixel")
SCHEDULES = ("cosine", "constant")
STARTS = ("auto", "noise", "exemplar", "preact")


@dataclass(frozen=True)
class RecipeInfo:
    """What running a recipe takes (read without building its loss)."""

    needs_clip: bool = False  # without a CLIP model, visualisation falls back to ``FALLBACK_RECIPE``
    per_class: bool = True  # False: the loss ignores the class, so one image per neuron suffices


# the named losses of paper Sec. III-D; each builds ``(gamma, epsilon) -> Objective`` in
# neuroinspect.show.objectives (imported when first used); ``@register_recipe`` adds more
RECIPES: Registry[RecipeInfo] = Registry("recipe")
RECIPES.declare("clip-illusion", RecipeInfo(needs_clip=True), "neuroinspect.show.objectives:_clip_illusion",
                aliases=("clip",))
RECIPES.declare("class", RecipeInfo(), "neuroinspect.show.objectives:_class_conditional")
RECIPES.declare("fv", RecipeInfo(per_class=False), "neuroinspect.show.objectives:_feature_visualisation")
FALLBACK_RECIPE = "class"  # what a CLIP recipe becomes when CLIP cannot be had


@dataclass(frozen=True)
class RenderConfig:
    """How images are rendered (``render``) and visualised (``visualize_neurons``)."""

    # what is optimised
    recipe: str = "clip-illusion"  # a name of RECIPES: clip-illusion, class or fv (without CLIP, clip-illusion becomes class)
    clip: object = PAPER_CLIP  # a CLIP spec, a loaded ClipModel, or "none"
    class_text: dict | None = None  # {class name: the text CLIP reads for it}
    gamma: float = DEFAULT_GAMMA
    epsilon: float = DEFAULT_EPSILON
    # how
    # steps, size, input_size and warmup: the settings that reached the most neuron activation per second on a
    # CPU (benchmarks/bench_render_defaults.py); the paper's quality is 650 steps at 224 px
    steps: int = 48
    size: int = 128  # image size in pixels
    batch: int = 8  # images optimised together
    lr: float = DEFAULT_LR
    weight_decay: float = DEFAULT_WEIGHT_DECAY
    param: str = "fourier"  # fourier or pixel
    param_options: dict | None = None  # extra options of the parameterisation
    seed: int = 0  # image i's noise and augmentations come from image_seed(seed, i): independent of batching
    input_size: int | str | None = "size"  # classifier input size while optimising: "size" (the image's), None (its own) or px
    schedule: str = "cosine"  # cosine or constant, after a linear warm-up
    warmup: float = 0.1  # fraction of the steps
    start: str = "auto"  # silent neurons: auto, noise, exemplar or preact (see render)
    freeze: bool = True  # turn off the models' parameter gradients while optimising
    optimise: bool = True  # False: no optimised picture, only the exemplars and their heatmaps (cheap)
    # what is shown beside the images (visualize_neurons)
    top_classes: int = 3  # without classes: each neuron's top classes by decision-layer weight
    split: str | None = None  # split whose features give exemplars and class means (None: train, else the only one)
    exemplars: int = 8  # top dataset images per neuron
    threshold: float = 0.5  # mask threshold on the normalised spatial map
    dim: float = 0.5  # brightness kept outside the mask (0: black)
    heatmaps: int = 4  # top-k images per class shown with where the neuron fires (0: none)
    vote_classes: int = 1  # the neuron's largest-weight classes whose heatmaps are shown too
    thumb: int = 128  # pixel size of a heatmap's crop thumbnail
    progress: bool = True

    def classifier_size(self) -> int | None:
        """The classifier's input size while optimising, in px (None: its own)."""
        return self.size if self.input_size == "size" else self.input_size
