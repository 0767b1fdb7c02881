"""The pipeline's settings, without importing torch: ``neuroinspect debug`` reads its defaults from here.

The pipeline itself is :mod:`neuroinspect.pipeline`.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from neuroinspect.core.base.errors import NeuroInspectError
from neuroinspect.find.config import DEFAULT_RANKING
from neuroinspect.fix.config import DEBUG_COMPARE, DEFAULT_METHOD, FIX_METHODS
from neuroinspect.show.config import RenderConfig

# how far the pictures go: none, the exemplar heatmaps, + the optimised images; auto: all on a GPU, heatmaps on a CPU
# (where the optimised images cost most of the run: benchmarks/bench_debug.py)
PICTURES = ("auto", "none", "heatmaps", "all")
CHOOSE_BY = ("tails", "mistakes", "accuracy")  # which classes to debug: the head's tails, a held-out pseudo-minority score, or class accuracy


@dataclass
class PipelineConfig:
    """What the pipeline debugs and how; every default of ``neuroinspect debug`` lives here."""

    classes: tuple[str, ...] = ()  # classes to debug (names or indices); empty: the worst ones
    worst_classes: int = 1  # with no classes named: debug this many of the worst classes on explain_split
    choose_by: str = "tails"  # which classes to debug: "tails" (the head's own score), "mistakes" (held-out pseudo-minority) or "accuracy"
    explain_split: str = "val"  # whose mistakes are explained, and where rebalance fits and methods select
    eval_split: str = "test"  # where before/after is measured
    ranking: str = DEFAULT_RANKING
    n_insufficient: int = 4  # top insufficient neurons rendered per class (the candidates for the fix)
    n_excessive: int = 2  # top excessive neurons rendered per class
    n_edit: int = 3  # neurons fixed per class: its top insufficient neurons
    fix: str = DEFAULT_METHOD  # the method saved as the edited model and quoted in the headline
    methods: tuple[str, ...] = DEBUG_COMPARE  # the methods compared (the table's rows)
    seeds: tuple[int, ...] = (0,)  # the comparison's seeds; the first one is shown in detail
    # stage 2: RenderConfig's measured defaults (benchmarks/bench_render_defaults.py), without CLIP (a first look)
    render: RenderConfig = field(default_factory=lambda: RenderConfig(clip="none"))
    render_precision: str = "auto"  # the classifier's precision while rendering (see core.runtime.device.DevicePolicy)
    render_channels_last: bool = True  # the classifier in channels-last layout while rendering
    pictures: str = "auto"  # none, heatmaps (the exemplar heatmaps only), all (+ the optimised images), auto (see PICTURES)

    def validate(self) -> "PipelineConfig":
        for method in (self.fix, *self.methods):
            FIX_METHODS.canonical(method)  # an unknown name: one line listing the registered ones
        if not self.seeds:
            raise NeuroInspectError("give at least one seed")
        if self.pictures not in PICTURES:
            raise NeuroInspectError(f"unknown --pictures '{self.pictures}'; choose one of {', '.join(PICTURES)}")
        if self.choose_by not in CHOOSE_BY:
            raise NeuroInspectError(f"--choose-by must be one of {', '.join(CHOOSE_BY)}; got '{self.choose_by}'")
        if min(self.worst_classes, self.n_edit) < 1 or min(self.n_insufficient, self.n_excessive) < 0:
            raise NeuroInspectError("--worst-classes and --n-edit must be ≥ 1, the render counts ≥ 0")
        return self
