"""Typed records of what each stage writes into a run folder, and reads back.

=====================  ======================  ==================================================
record                 file                    written by
=====================  ======================  ==================================================
:class:`RunInfo`       ``run.json``            every command: what ran, versions, seeds
:class:`Metrics`       ``metrics.json``        explain, demo (also ``before``/``after`` of an edit)
:class:`ExplanationRecord`  ``ranking.json``   explain (stage 1: the ranked neurons)
:class:`VisualizationSet`   ``visualizations.json``  visualize (stage 2: one image per neuron and class)
:class:`EditRecord`    ``edit.json``           edit (stage 3: the fixed decision layer)
:class:`Comparison`    ``compare.json``        compare (every fix, over seeds)
:class:`EvidenceRecord`  ``evidence.json``     debug (where the evidence behind the mistakes sits, measured)
:class:`TrainRecord`   ``train.json``          train (the epochs, the one kept, its metrics on val and test)
=====================  ======================  ==================================================

Each record is a dataclass with ``to_dict``/``from_dict``, ``to_json``/``from_json`` (text)
and ``write``/``read`` (files, written atomically). Every file carries a ``schema`` version;
files written before the field existed hold the same content and read as version 1. Reading a
file with a newer schema, a missing field or a field of the wrong type fails with one line that
says which file and what to do (rerun the stage that wrote it). Keys a record does not know are
kept in ``extra``. A record read from a dict or file writes back the same keys in the same order (a
field the source lacked is added only once it is set to something other than its default).
"""
from __future__ import annotations

import json
import os
import types
import typing
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar

from neuroinspect.core.base.errors import NeuroInspectError
from neuroinspect.core.base.io import _clean, write_json
from neuroinspect.core.base.summary import Summary, summarize

__all__ = ["SCHEMA_VERSION", "Record", "Metrics", "NeuronRank", "ExplanationRecord", "TopClass", "Exemplar",
           "HeatmapItem", "HeatmapRow", "VisImage", "VisNeuron", "VisualizationSet", "CurvePoint", "PickedBy",
           "EditRecord", "ComparisonRow", "Comparison", "TrainRecord", "RunInfo", "NeuronEvidence", "GalleryItem", "EvidenceRecord",
           "RECORDS"]

#: The version every record writes. Raise it when a field changes meaning or a required one is added.
SCHEMA_VERSION = 1


class _Mismatch(Exception):
    """A value of the wrong shape (turned into one NeuroInspectError line by ``from_dict``)."""


def opt(key: str | None = None):
    """An optional field: ``None`` unless given, and left out of the file while ``None``."""
    return field(default=None, metadata={"omit_none": True, **({"key": key} if key else {})})


def named(key: str, default: Any = MISSING):
    """A field stored under another JSON key (``class`` is a Python keyword)."""
    return field(default=default, metadata={"key": key})


_HINTS: dict[type, dict[str, Any]] = {}


def _hints(cls) -> dict[str, Any]:
    if cls not in _HINTS:
        _HINTS[cls] = typing.get_type_hints(cls)
    return _HINTS[cls]


def _key(f) -> str:
    return f.metadata.get("key", f.name)


def _shape(tp) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _check(value: Any, tp: Any, where: str) -> Any:
    """``value`` if it fits the annotation ``tp`` (nested records are built), else :class:`_Mismatch`."""
    if tp is Any:
        return value
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for a in args:
            if a is type(None):
                continue
            try:
                return _check(value, a, where)
            except _Mismatch:
                continue
        raise _Mismatch(f"'{where}' should be {' or '.join(_shape(a) for a in args)}, not {type(value).__name__}")
    if origin is list:
        if not isinstance(value, list):
            raise _Mismatch(f"'{where}' should be a list, not {type(value).__name__}")
        (item,) = typing.get_args(tp)
        return [_check(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise _Mismatch(f"'{where}' should be an object, not {type(value).__name__}")
        _, item = typing.get_args(tp)
        return {str(k): _check(v, item, f"{where}.{k}") for k, v in value.items()}
    if isinstance(tp, type) and issubclass(tp, Part):
        if not isinstance(value, dict):
            raise _Mismatch(f"'{where}' should be an object, not {type(value).__name__}")
        return tp._build(value, where)
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _Mismatch(f"'{where}' should be a number, not {type(value).__name__}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _Mismatch(f"'{where}' should be an integer, not {type(value).__name__}")
        return value
    if tp in (str, bool, dict, list) and not isinstance(value, tp):
        raise _Mismatch(f"'{where}' should be {_shape(tp)}, not {type(value).__name__}")
    return value


def _default(f) -> Any:
    return f.default_factory() if f.default_factory is not MISSING else f.default


def _dump(value: Any) -> Any:
    if isinstance(value, Part):
        order = getattr(value, "_order", None)  # the keys of the dict it was read from, in order
        out = {}
        for f in fields(value):
            if f.name == "extra":
                continue
            v = getattr(value, f.name)
            if v is None and f.metadata.get("omit_none"):
                continue
            if order is not None and _key(f) not in order and v == _default(f):
                continue  # absent where it was read from, and still the default: left out again
            out[_key(f)] = _dump(v)
        for k, v in value.extra.items():
            out.setdefault(k, _dump(v))
        if order:
            out = {**{k: out[k] for k in order if k in out}, **out}
        return out
    if isinstance(value, list):
        return [_dump(v) for v in value]
    if isinstance(value, dict):
        return {k: _dump(v) for k, v in value.items()}
    return value


@dataclass(kw_only=True)
class Part:
    """A typed piece of a record (a row, an image, a metrics block); unknown keys stay in ``extra``."""

    extra: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def _build(cls, data: dict, where: str):
        hints = _hints(cls)
        kwargs, known = {}, {"schema"}
        for f in fields(cls):
            if f.name == "extra":
                continue
            key = _key(f)
            known.add(key)
            path = f"{where}.{key}" if where else key
            if key in data:
                kwargs[f.name] = _check(data[key], hints[f.name], path)
            elif f.default is MISSING and f.default_factory is MISSING:
                raise _Mismatch(f"'{path}' is missing")
        kwargs["extra"] = {k: v for k, v in data.items() if k not in known}
        obj = cls(**kwargs)
        obj._order = list(data)  # written back in the same order (not part of equality)
        return obj

    def to_dict(self) -> dict:
        return _dump(self)


@dataclass(kw_only=True)
class Record(Part):
    """A whole file: a :class:`Part` with a schema version, a file name and the command that writes it."""

    FILE: ClassVar[str] = ""
    WRITER: ClassVar[str] = "the stage"  # what to rerun when the file cannot be read
    SCHEMA: ClassVar[int] = SCHEMA_VERSION

    @classmethod
    def _fail(cls, source: str, problem: str) -> NeuroInspectError:
        return NeuroInspectError(f"{source}: {problem}; rerun {cls.WRITER} to write it again")

    @classmethod
    def from_dict(cls, data: Any, source: str | None = None):
        """Check and build the record from parsed JSON (``source`` names the file in errors)."""
        source = source or cls.FILE
        if not isinstance(data, dict):
            raise cls._fail(source, f"is not a {cls.FILE} record (a JSON object was expected, found {type(data).__name__})")
        version = data.get("schema", 1)  # files from before the field: the same content as version 1
        if isinstance(version, bool) or not isinstance(version, int) or version < 1:
            raise cls._fail(source, f"has schema {version!r}, not a version number")
        if version > cls.SCHEMA:
            raise NeuroInspectError(
                f"{source}: written with {cls.FILE} schema {version}, newer than this neuroinspect reads "
                f"({cls.SCHEMA}); upgrade neuroinspect, or rerun {cls.WRITER} with this version")
        try:
            return cls._build(_clean(data), "")
        except _Mismatch as err:
            raise cls._fail(source, f"is not a valid {cls.FILE} record ({err})") from None

    def to_dict(self) -> dict:
        return {"schema": self.SCHEMA, **_dump(self)}

    def to_json(self) -> str:
        return json.dumps(_clean(self.to_dict()), indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str, source: str | None = None):
        try:
            data = json.loads(text)
        except ValueError as err:
            raise cls._fail(source or cls.FILE, f"is not valid JSON ({err})") from None
        return cls.from_dict(data, source)

    def write(self, path: str | os.PathLike) -> Path:
        """Write the record to ``path`` atomically."""
        return write_json(path, self.to_dict())

    @classmethod
    def read(cls, path: str | os.PathLike):
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise NeuroInspectError(f"{path}: no such file; run {cls.WRITER} first") from None
        except (OSError, UnicodeDecodeError) as err:
            raise cls._fail(str(path), f"cannot be read ({type(err).__name__}: {err})") from None
        return cls.from_json(text, str(path))


# --------------------------------------------------------------------------- metrics
@dataclass(kw_only=True)
class Metrics(Record):
    """Accuracy overall, per class and per group (fractions 0–1) of one split."""

    FILE: ClassVar[str] = "metrics.json"
    WRITER: ClassVar[str] = "'neuroinspect explain' (or the demo)"

    accuracy: float | None
    per_class: dict[str, float | None]
    per_group: dict[str, float | None] = field(default_factory=dict)
    worst_class: str | None = None
    worst_group: str | None = None
    n: int | None = None
    split: str | None = opt()
    worst_class_acc: float | None = opt()  # the accuracy of ``worst_class`` (absent from files written before it)
    worst_group_acc: float | None = opt()  # the accuracy of ``worst_group``

    @property
    def mean_class_acc(self) -> float | None:
        """The mean of the per-class accuracies (None when there is none)."""
        accs = [v for v in self.per_class.values() if v is not None]
        return sum(accs) / len(accs) if accs else None

    @property
    def summary(self) -> Summary:
        """Overall, worst-class and worst-group accuracy (:func:`neuroinspect.core.base.summary.summarize`)."""
        return summarize(self.accuracy, self.per_class, self.per_group)


# --------------------------------------------------------------------------- stage 1: ranking.json
@dataclass(kw_only=True)
class NeuronRank(Part):
    """One ranked neuron: ratio in percent of the mistakes, importance, log-odds and weight to the class."""

    neuron: int
    ratio: float | None
    importance: float | None = None
    log_odds: float | None = None
    weight: float | None = None
    mean_edit: float | None = None


@dataclass(kw_only=True)
class ExplanationRecord(Record):
    """The ranked neurons behind a class's mistakes (``ranking.json``)."""

    FILE: ClassVar[str] = "ranking.json"
    WRITER: ClassVar[str] = "'neuroinspect explain'"

    class_name: str = named("class")
    class_index: int | None = None
    split: str | None = None
    n_mistakes: int | None = None
    n_flipped: int | None = None
    never_flipped: list[Any] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)
    insufficient: list[NeuronRank]
    excessive: list[NeuronRank]

    def top_neurons(self, k: int, k_excessive: int | None = None) -> list[int]:
        """The top ``k`` insufficient then the top ``k_excessive`` (default ``k``) excessive neurons, without repeats."""
        return top_ranked(self.insufficient, self.excessive, k, k_excessive)


def top_ranked(insufficient, excessive, k: int, k_excessive: int | None = None) -> list[int]:
    """The neurons of the top ``k`` ``insufficient`` then the top ``k_excessive`` (default ``k``) ``excessive``
    ranks (anything with a ``.neuron``), in that order, each once."""
    ranks = list(insufficient[:k]) + list(excessive[: k if k_excessive is None else k_excessive])
    return list(dict.fromkeys(r.neuron for r in ranks))


# --------------------------------------------------------------------------- stage 2: visualizations.json
@dataclass(kw_only=True)
class TopClass(Part):
    class_name: str = named("class")
    weight: float | None = None


@dataclass(kw_only=True)
class Exemplar(Part):
    id: Any
    activation: float | None = None


@dataclass(kw_only=True)
class HeatmapItem(Part):
    id: Any
    activation: float | None = None
    heatmap: str | None = None
    crop: str | None = None
    box: Any = None
    peak: Any = None
    map_max: float | None = None
    map_size: Any = None


@dataclass(kw_only=True)
class HeatmapRow(Part):
    """A neuron's top images of one class, with heatmaps (``role``: inspected / votes for)."""

    class_name: str = named("class")
    class_index: int | None = None
    role: str | None = None
    images_in_class: int | None = None
    note: str | None = None
    items: list[HeatmapItem] = field(default_factory=list)


@dataclass(kw_only=True)
class VisImage(Part):
    """One rendered (neuron, class) image with its scores; image paths are relative to the manifest."""

    neuron: int
    class_name: str = named("class")
    class_index: int | None = None
    recipe: str | None = None
    clip_used: bool | None = None
    activation: float | None = None
    start_activation: float | None = None
    logit: float | None = None
    prob: float | None = None
    clip_similarity: float | None = None
    crs: float | None = None
    steps_done: int | None = None
    seed: int | None = None
    image: str | None = None
    masked: str | None = None
    rgba: str | None = None
    start: str | None = None
    start_image: Any = None
    note: str | None = None
    mask_fraction: float | None = opt()


@dataclass(kw_only=True)
class VisNeuron(Part):
    """What a neuron votes for and where it fires in the data."""

    neuron: int
    top_classes: list[TopClass] = field(default_factory=list)
    dataset_top_activation: float | None = None
    dataset_mean_top_activation: float | None = None
    exemplar_strip: str | None = None
    exemplars: list[Exemplar] = field(default_factory=list)
    exemplar_heatmaps: list[HeatmapRow] = field(default_factory=list)


@dataclass(kw_only=True)
class VisualizationSet(Record):
    """The manifest of a visualisation run (``visualizations.json``): settings, images and neurons."""

    FILE: ClassVar[str] = "visualizations.json"
    WRITER: ClassVar[str] = "'neuroinspect visualize'"

    model: Any = None
    recipe: str | None = None
    recipe_requested: str | None = None
    clip: str | None = None
    clip_requested: Any = None
    clip_fallback: bool = False
    clip_fallback_reason: str | None = None
    steps: int | None = None
    size: int | None = None
    seed: int | None = None
    gamma: float | None = None
    epsilon: float | None = None
    lr: float | None = None
    param: Any = None
    precision: Any = None
    channels_last: bool | None = None
    input_size: int | None = None
    schedule: Any = None
    warmup: float | None = None
    start: Any = None
    interrupted: bool | None = None
    optimised: bool | None = opt()  # False: exemplar heatmaps only, no optimised picture
    features_split: str | None = None
    heatmaps: dict[str, Any] | None = None
    images: list[VisImage]
    neurons: list[VisNeuron]


# --------------------------------------------------------------------------- stage 3: edit.json
@dataclass(kw_only=True)
class CurvePoint(Part):
    """One epoch of a gradient edit."""

    epoch: int
    train_loss: float | None = None
    regulariser: float | None = None
    val_metric: float | None = None
    val_loss: float | None = None
    mean_ratio: dict[str, Any] = field(default_factory=dict)


@dataclass(kw_only=True)
class PickedBy(Part):
    """How the edited neurons were picked: a rule, the ranked candidates and their core relevance scores."""

    rule: str | None = None
    ranking: str | None = opt()
    ranked: list[Any] | None = opt()  # the candidates in rank order (else the keys of ``crs``)
    crs: dict[str, float | None] = field(default_factory=dict)


@dataclass(kw_only=True)
class EditRecord(Record):
    """A fixed decision layer (``edit.json``): what, how, on which data and labels, metrics before and after."""

    FILE: ClassVar[str] = "edit.json"
    WRITER: ClassVar[str] = "'neuroinspect edit'"

    method: str
    classes: list[str] = field(default_factory=list)
    neurons: dict[str, list[int]] = field(default_factory=dict)
    uses_group_labels: bool = False
    fit_on: str | None = None
    select_by: str | None = None
    chosen: dict[str, Any] = field(default_factory=dict)
    search: list[dict[str, Any]] = field(default_factory=list)
    best_val_metric: float | None = None
    kept_original: bool = False  # the method did not beat "no change" on held-out data: the head is the original
    lam: float | None = None
    before: Metrics
    after: Metrics
    model_file: str | None = None
    # the gradient methods only
    tau: dict[str, float | None] | None = opt()
    importance: dict[str, Any] | None = opt()
    best_epoch: int | None = opt()
    epochs_run: int | None = opt()
    stopped_early: bool | None = opt()
    curves: list[CurvePoint] | None = opt()
    # written by some front doors
    split: str | None = opt()
    notes: list[str] | None = opt()
    reload: dict[str, Any] | None = opt()
    picked_by: PickedBy | None = opt()


# --------------------------------------------------------------------------- compare.json
STAT_KEYS = ("avg_acc", "class_acc", "worst_class_acc", "worst_group_acc")


@dataclass(kw_only=True)
class ComparisonRow(Part):
    """One method: mean (± population std over seeds) of each summary accuracy, and per-group means."""

    method: str
    n_seeds: int | None = None
    uses_group_labels: bool = False
    fit_on: str | None = None
    select_by: str | None = None
    avg_acc: float | None = None
    avg_acc_std: float | None = None
    avg_acc_runs: list[float | None] | None = opt()
    class_acc: float | None = None
    class_acc_std: float | None = None
    class_acc_runs: list[float | None] | None = opt()
    worst_class_acc: float | None = None
    worst_class_acc_std: float | None = None
    worst_class_acc_runs: list[float | None] | None = opt()
    worst_group_acc: float | None = None
    worst_group_acc_std: float | None = None
    worst_group_acc_runs: list[float | None] | None = opt()
    per_group: dict[str, float | None] = field(default_factory=dict)

    def value(self, key: str) -> float | None:
        """The mean of ``key`` (one of :data:`STAT_KEYS`)."""
        return getattr(self, key)

    def std(self, key: str) -> float | None:
        return getattr(self, key + "_std")


@dataclass(kw_only=True)
class Comparison(Record):
    """Every method against the original head on the same split (``compare.json``)."""

    FILE: ClassVar[str] = "compare.json"
    WRITER: ClassVar[str] = "'neuroinspect compare' (or the demo)"

    classes: list[str] = field(default_factory=list)
    split: str | None = None
    rows: list[ComparisonRow]
    neurons: dict[str, list[int]] = field(default_factory=dict)
    seeds: list[int] = field(default_factory=list)
    select_by: str | None = opt()
    config: dict[str, Any] | None = opt()
    neurons_by_seed: dict[str, dict[str, list[int]]] | None = opt()
    notes: list[str] = field(default_factory=list)

    def row(self, method: str) -> ComparisonRow | None:
        return next((r for r in self.rows if r.method == method), None)


# --------------------------------------------------------------------------- evidence.json
@dataclass(kw_only=True)
class NeuronEvidence(Part):
    """What one picked neuron does to a class's mistakes, measured (:mod:`neuroinspect.find.evidence`)."""

    neuron: int
    kind: str  # insufficient (fires less on the mistakes) or excessive (fires more)
    pulled: int  # mistakes whose top-k blame holds this neuron
    pulled_toward: dict[str, int] = field(default_factory=dict)  # ... by the class they were taken for
    act_mistakes: float | None = None  # mean activation over the mistakes
    act_correct: float | None = None  # ... over the correctly classified images of the class
    act_ratio: float | None = None  # act_mistakes / act_correct (None when act_correct is 0)
    mistakes_places: dict[str, int] = field(default_factory=dict)  # border / centre / silent counts of the maps
    correct_places: dict[str, int] = field(default_factory=dict)
    centre_share_mistakes: float | None = None  # mean share of the map's mass in the central box
    centre_share_correct: float | None = None
    region: str | None = None  # the 3x3 cell that holds most of the mistakes' map centres (None: no majority)
    auc: float | None = None  # with group labels: P(activation in the hard group > in the rest of the class)
    auc_groups: str | None = None  # which groups the AUC separates


@dataclass(kw_only=True)
class GalleryItem(Part):
    """One mistake of the gallery: sorted by the lead neuron, with its map over the image."""

    id: Any
    predicted: str | None = None
    activation: float | None = None
    place: str | None = None
    image: str | None = None  # relative to evidence.json


@dataclass(kw_only=True)
class EvidenceRecord(Record):
    """Where the evidence behind a class's mistakes sits (``evidence.json``): the paragraph that opens the
    report and the measurements it is built from."""

    FILE: ClassVar[str] = "evidence.json"
    WRITER: ClassVar[str] = "'neuroinspect debug'"

    class_name: str = named("class")
    split: str | None = None
    n_mistakes: int = 0
    n_correct: int = 0
    k: int | None = None  # a mistake's top-k blamed neurons count as pulling it
    paragraph: str = ""
    lead: list[int] = field(default_factory=list)  # the neurons the paragraph names
    neurons: list[NeuronEvidence] = field(default_factory=list)
    mapped: dict[str, int] = field(default_factory=dict)  # images whose maps were measured: mistakes, correct
    gallery_neuron: int | None = None
    gallery: list[GalleryItem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------- train.json
@dataclass(kw_only=True)
class TrainRecord(Record):
    """A training run (``train.json``): settings, the epoch kept, every epoch's log and the kept epoch's
    metrics on val and test, and how to reload the weights."""

    FILE: ClassVar[str] = "train.json"
    WRITER: ClassVar[str] = "'neuroinspect train'"

    model: str
    data: str
    classes: list[str] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)
    init_weights: str | None = None
    best_epoch: int = 0
    best_val_metric: float | None = None
    select_by: str | None = None
    history: list[dict[str, Any]] = field(default_factory=list)  # one entry per epoch
    val: Metrics | None = None
    test: Metrics | None = None
    resumed_from: int = 0
    reload: dict[str, Any] = field(default_factory=dict)
    device: str | None = None
    preprocess: Any = None


# --------------------------------------------------------------------------- run.json
@dataclass(kw_only=True)
class RunInfo(Record):
    """What was run (``run.json``): the command, its options or config, model, data, versions, timings."""

    FILE: ClassVar[str] = "run.json"
    WRITER: ClassVar[str] = "the command"

    command: Any
    argv: list[str] | None = opt()
    options: dict[str, Any] | None = opt()
    config: dict[str, Any] | None = opt()
    device: str | None = opt()
    threads: int | None = opt()  # torch's CPU threads (the --threads option, else one per core)
    model: Any = opt()
    data: Any = opt()
    versions: dict[str, Any] = field(default_factory=dict)
    time: str | None = opt()
    timings_s: dict[str, Any] | None = opt()
    headline: dict[str, Any] | None = opt()
    probe: Any = opt()
    model_file: str | None = opt()


#: file name -> record type, for the readers that go through a run folder
RECORDS: dict[str, type[Record]] = {r.FILE: r for r in (RunInfo, Metrics, ExplanationRecord, VisualizationSet,
                                                          EditRecord, Comparison, EvidenceRecord, TrainRecord)}
