"""CLIP models for CLIP-Illusion: loading from a short spec, prompt ensembles, differentiable image encoding.

CLIP specs
----------
``open_clip:MODEL/PRETRAINED``   an OpenCLIP architecture and pretrained tag, e.g. the paper's
                                 ``open_clip:ViT-B-32/laion2b_s34b_b79k`` (downloaded once, then cached)
``open_clip:MODEL@/path/ckpt``   an OpenCLIP architecture with weights from a local file; ``MODEL``
                                 may also be a path to an OpenCLIP model-config ``.json``
``hf:NAME_OR_DIR``               a transformers ``CLIPModel`` from the Hugging Face hub or a local folder
``none``                         no CLIP: the class-conditional recipe (the paper's "w/o CLIP" ablation)

Downloads go through huggingface_hub, which uses its cache when the hub cannot be reached and
honours ``HF_HUB_OFFLINE=1`` (cache only, no network). When pretrained weights cannot be had
(no network and nothing cached), ``resolve_clip`` logs one
warning saying how to supply them and returns no model; the caller falls back to the
class-conditional recipe and records why.
"""
from __future__ import annotations

import difflib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from huggingface_hub.errors import LocalEntryNotFoundError, OfflineModeIsEnabled
from torch import nn

from neuroinspect.core.base.errors import NeuroInspectError
from neuroinspect.show.augment import ModelInput
from neuroinspect.show.config import PAPER_CLIP

log = logging.getLogger(__name__)

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)

# Zero-shot prompt templates in the style of CLIP's ImageNet evaluation (31 of them).
TEMPLATES = [
    "a photo of a {}.",
    "a bad photo of a {}.",
    "a photo of many {}.",
    "a sculpture of a {}.",
    "a photo of the hard to see {}.",
    "a low resolution photo of the {}.",
    "a rendering of a {}.",
    "graffiti of a {}.",
    "a cropped photo of the {}.",
    "a tattoo of a {}.",
    "the embroidered {}.",
    "a bright photo of a {}.",
    "a photo of a clean {}.",
    "a photo of a dirty {}.",
    "a dark photo of the {}.",
    "a drawing of a {}.",
    "a photo of my {}.",
    "the plastic {}.",
    "a photo of the cool {}.",
    "a close-up photo of a {}.",
    "a black and white photo of the {}.",
    "a painting of the {}.",
    "a pixelated photo of the {}.",
    "a jpeg corrupted photo of a {}.",
    "a blurry photo of the {}.",
    "a photo of the {}.",
    "a good photo of the {}.",
    "a zoomed-in photo of a {}.",
    "a photo of the large {}.",
    "a photo of the small {}.",
    "itap of a {}.",
]

HOW_TO_SUPPLY = (
    "to use CLIP offline, download the weights once where there is internet (they are cached under "
    "~/.cache/huggingface) or pass a local file: --clip open_clip:ViT-B-32@/path/to/open_clip_model.safetensors "
    "or --clip hf:/path/to/clip-folder; --clip none turns CLIP off without this warning"
)


class ClipUnavailable(Exception):
    """The CLIP weights cannot be had here (no network and no local copy)."""


@dataclass
class ClipSpec:
    backend: str  # "open_clip" or "hf"
    model: str
    pretrained: str | None = None  # open_clip tag
    checkpoint: str | None = None  # local weights file (open_clip)

    def __str__(self) -> str:
        if self.backend == "hf":
            return f"hf:{self.model}"
        if self.checkpoint:
            return f"open_clip:{self.model}@{self.checkpoint}"
        return f"open_clip:{self.model}" + (f"/{self.pretrained}" if self.pretrained else "")


def parse_clip_spec(spec: str | None) -> ClipSpec | None:
    """Parse a CLIP spec; ``None``/``"none"`` means no CLIP. Bad syntax raises ``NeuroInspectError``."""
    if spec is None or str(spec).strip().lower() in ("", "none", "off"):
        return None
    spec = str(spec).strip()
    usage = ("expected open_clip:MODEL/PRETRAINED (e.g. open_clip:ViT-B-32/laion2b_s34b_b79k), "
             "open_clip:MODEL@/path/to/checkpoint, hf:NAME_OR_DIR, or none")
    backend, sep, rest = spec.partition(":")
    if not sep or not rest.strip():
        raise NeuroInspectError(f"cannot parse CLIP spec '{spec}'; {usage}")
    backend = backend.lower().replace("-", "_")
    if backend in ("hf", "huggingface", "transformers"):
        return ClipSpec("hf", rest)
    if backend != "open_clip":
        raise NeuroInspectError(f"unknown CLIP backend '{backend}' in '{spec}'; {usage}")
    if "@" in rest:
        model, _, ckpt = rest.partition("@")
        if not model or not ckpt:
            raise NeuroInspectError(f"cannot parse CLIP spec '{spec}'; {usage}")
        return ClipSpec("open_clip", model, checkpoint=ckpt)
    if rest.endswith(".json") or rest.startswith(("hf-hub:", "local-dir:")):
        return ClipSpec("open_clip", rest)
    model, _, tag = rest.partition("/")
    if not model:
        raise NeuroInspectError(f"cannot parse CLIP spec '{spec}'; {usage}")
    return ClipSpec("open_clip", model, pretrained=tag or None)


def class_prompts(class_text: str, templates: list[str] | None = None) -> list[str]:
    """Prompts for a class: every template with every comma-separated synonym of ``class_text``."""
    templates = templates or TEMPLATES
    names = [n.strip().replace("_", " ") for n in class_text.split(",") if n.strip()] or [class_text]
    return [t.format(n) for n in names for t in templates]


class ClipModel:
    """A loaded CLIP: differentiable image embeddings and cached class (prompt-ensemble) embeddings.

    ``image_input`` resizes and normalises images in [0, 1] the way this CLIP's image tower expects.
    """

    def __init__(self, spec: str, model: nn.Module, encode_image: Callable, encode_text: Callable,
                 tokenize: Callable, image_input: ModelInput, device: torch.device, templates: list[str] | None = None):
        self.spec = spec
        self.model = model.eval().to(device)
        for p in self.model.parameters():
            p.requires_grad_(False)
        self._encode_image = encode_image
        self._encode_text = encode_text
        self.tokenize = tokenize
        self.image_size = image_input.size
        self.input = image_input.to(device)
        self.device = torch.device(device)
        self.templates = list(templates or TEMPLATES)
        self._cache: dict[tuple[str, str], torch.Tensor] = {}

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """Unit-norm embeddings [B, E] of images in [0, 1] ([B, 3, H, W]); differentiable."""
        emb = self._encode_image(self.input(images))
        return F.normalize(emb.float(), dim=-1)

    @torch.no_grad()
    def encode_text(self, texts: list[str]) -> torch.Tensor:
        """Unit-norm embeddings [N, E] of texts."""
        emb = self._encode_text(self.tokenize(texts).to(self.device))
        return F.normalize(emb.float(), dim=-1)

    def class_embedding(self, class_text: str) -> torch.Tensor:
        """``t̄_c``: the mean of the unit-norm prompt embeddings, re-normalised ([E]); cached."""
        key = (self.spec, class_text)
        if key not in self._cache:
            emb = self.encode_text(class_prompts(class_text, self.templates))
            self._cache[key] = F.normalize(emb.mean(0), dim=0)
        return self._cache[key]

    def class_embeddings(self, class_texts: list[str]) -> torch.Tensor:
        return torch.stack([self.class_embedding(t) for t in class_texts])

    def similarity(self, images: torch.Tensor, class_texts: list[str]) -> torch.Tensor:
        """cos(E_img(x_i), t̄_{c_i}) for each image i ([B])."""
        return (self.encode_image(images) * self.class_embeddings(class_texts)).sum(-1)


# ---------------------------------------------------------------------------- loading
def _is_offline(err: BaseException) -> bool:
    """Whether the hub could not be reached (no network, or ``HF_HUB_OFFLINE``) and nothing was cached.

    huggingface_hub (under open_clip and transformers) already falls back to its cache when it
    cannot connect; when that fails too it raises ``LocalEntryNotFoundError`` (or, in offline mode,
    ``OfflineModeIsEnabled``), possibly wrapped by the library that called it.
    """
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, (LocalEntryNotFoundError, OfflineModeIsEnabled, ConnectionError, TimeoutError)):
            return True
        err = err.__cause__ or err.__context__
    return False


def _image_size(value) -> int:
    if isinstance(value, (tuple, list)):
        return int(value[0])
    return int(value)


def _load_open_clip(spec: ClipSpec, device: torch.device) -> ClipModel:
    try:
        import open_clip  # lazy: importing it takes seconds and only CLIP-Illusion runs need it
    except ImportError as err:  # pragma: no cover - a declared dependency
        raise NeuroInspectError("open_clip specs need the open_clip_torch package: pip install open_clip_torch") from err

    model_name = spec.model
    if model_name.endswith(".json"):
        path = Path(model_name).expanduser()
        if not path.is_file():
            raise NeuroInspectError(f"OpenCLIP model config '{path}' does not exist")
        open_clip.add_model_config(path)
        model_name = path.stem
    elif not model_name.startswith(("hf-hub:", "local-dir:")) and model_name not in open_clip.list_models():
        close = difflib.get_close_matches(model_name, open_clip.list_models(), n=4)
        raise NeuroInspectError(f"unknown OpenCLIP model '{model_name}'"
                                + (f"; did you mean: {', '.join(close)}?" if close else "; see open_clip.list_models()"))

    pretrained = None
    needs_hub = model_name.startswith("hf-hub:")
    if spec.checkpoint:
        ckpt = Path(spec.checkpoint).expanduser()
        if not ckpt.is_file():
            raise NeuroInspectError(f"CLIP checkpoint '{ckpt}' does not exist")
        pretrained = str(ckpt)
    elif spec.pretrained:
        tags = open_clip.list_pretrained_tags_by_model(model_name)
        if spec.pretrained not in tags:
            raise NeuroInspectError(f"OpenCLIP model '{model_name}' has no pretrained tag '{spec.pretrained}'; "
                                    f"known tags: {', '.join(tags) or 'none'} (or give a local file with MODEL@PATH)")
        pretrained = spec.pretrained
        needs_hub = True
    else:
        raise NeuroInspectError(f"CLIP spec '{spec}' names no weights; add /PRETRAINED (e.g. /{'laion2b_s34b_b79k'}) "
                                "or @/path/to/checkpoint (random weights are useless for CLIP-Illusion)")

    if spec.pretrained:
        try:  # fetch (or find in the hub's cache) the tag's weights first, so that a failure is ours to report
            open_clip.download_pretrained(open_clip.get_pretrained_cfg(model_name, spec.pretrained))
        except Exception as err:
            raise ClipUnavailable(_unavailable(spec, err)) from err
    try:
        model = open_clip.create_model(model_name, pretrained=pretrained, device=device, weights_only=True)
        tokenizer = open_clip.get_tokenizer(model_name)
    except NeuroInspectError:
        raise
    except Exception as err:
        if needs_hub:
            raise ClipUnavailable(_unavailable(spec, err)) from err
        raise NeuroInspectError(f"'{spec.checkpoint}' is not a CLIP checkpoint for OpenCLIP model '{model_name}': "
                                f"{_short(err)}") from err
    visual = model.visual
    cfg = getattr(visual, "preprocess_cfg", {}) or {}
    size = _image_size(cfg.get("size", getattr(visual, "image_size", 224)))
    mean = tuple(cfg.get("mean", OPENAI_MEAN))
    std = tuple(cfg.get("std", OPENAI_STD))
    return ClipModel(str(spec), model, model.encode_image, model.encode_text, tokenizer, ModelInput(size, mean, std),
                     device)


def _open_clip_simple_tokenizer(context_length: int) -> Callable:
    from open_clip.tokenizer import SimpleTokenizer  # lazy: see _load_open_clip

    return SimpleTokenizer(context_length=context_length)


_TOKENIZER_FILES = ("tokenizer.json", "vocab.json", "tokenizer_config.json")


def _load_hf(spec: ClipSpec, device: torch.device) -> ClipModel:
    try:
        import transformers  # lazy: optional (the [hf] extra), slow to import, only hf: specs need it
    except ImportError as err:  # pragma: no cover - a declared dependency
        raise NeuroInspectError("hf: CLIP specs need the transformers package: pip install transformers") from err

    name = spec.model
    local = Path(name).expanduser()
    is_local = local.exists()
    if is_local:
        if not (local / "config.json").is_file():
            raise NeuroInspectError(f"'{local}' is not a transformers model folder (no config.json)")
        name = str(local)
    elif name.startswith((".", "/", "~")):
        raise NeuroInspectError(f"CLIP folder '{name}' does not exist")
    try:
        config = transformers.AutoConfig.from_pretrained(name)
        if getattr(config, "model_type", None) != "clip":
            raise NeuroInspectError(f"'{name}' holds a '{getattr(config, 'model_type', '?')}' model, not CLIP "
                                    "(transformers CLIPModel)")
        model = transformers.CLIPModel.from_pretrained(name)
    except NeuroInspectError:
        raise
    except Exception as err:
        if not is_local:
            raise ClipUnavailable(_unavailable(spec, err)) from err
        raise NeuroInspectError(f"could not load a CLIP model from '{name}': {_short(err)}") from err

    context = int(model.config.text_config.max_position_embeddings)
    try:
        if is_local and not any((local / f).is_file() for f in _TOKENIZER_FILES):
            raise FileNotFoundError("no tokenizer files")
        hf_tok = transformers.AutoTokenizer.from_pretrained(name)
        if len(hf_tok) > model.config.text_config.vocab_size:
            raise ValueError("the tokenizer's vocabulary is larger than the model's")

        def tokenize(texts):
            return hf_tok(texts, padding="max_length", truncation=True, max_length=context,
                          return_tensors="pt")["input_ids"]
    except Exception:  # no tokenizer files: CLIP's BPE as bundled with open_clip gives the same ids
        log.info("no tokenizer in '%s'; using CLIP's bundled BPE tokenizer", name)
        tokenize = _open_clip_simple_tokenizer(context)

    mean, std = OPENAI_MEAN, OPENAI_STD
    try:
        proc = transformers.CLIPImageProcessor.from_pretrained(name)
        mean, std = tuple(proc.image_mean), tuple(proc.image_std)
    except Exception:
        pass

    def pooled(out):
        return out if isinstance(out, torch.Tensor) else out.pooler_output

    def encode_image(x):
        return pooled(model.get_image_features(pixel_values=x))

    def encode_text(ids):
        return pooled(model.get_text_features(input_ids=ids))

    return ClipModel(str(spec), model, encode_image, encode_text, tokenize,
                     ModelInput(model.config.vision_config.image_size, mean, std), device)


def _unavailable(spec, err: Exception) -> str:
    if _is_offline(err):
        return f"no internet connection and no cached copy of the weights for '{spec}'"
    return f"could not download the weights for '{spec}' ({_short(err, 160)})"


def _short(err: Exception, limit: int = 240) -> str:
    text = " ".join(str(err).split()) or type(err).__name__
    return text if len(text) <= limit else text[: limit - 1] + "…"


def load_clip(spec: str | ClipSpec, device: str | torch.device = "cpu") -> ClipModel:
    """Load a CLIP model; raises ``ClipUnavailable`` when its weights cannot be had here."""
    parsed = spec if isinstance(spec, ClipSpec) else parse_clip_spec(spec)
    if parsed is None:
        raise NeuroInspectError("load_clip needs a CLIP spec, not 'none'")
    device = torch.device(device)
    if parsed.backend == "hf":
        return _load_hf(parsed, device)
    return _load_open_clip(parsed, device)


@dataclass
class ClipChoice:
    """What happened to the CLIP request: the model (or None), and why there is none."""

    requested: str | None
    model: ClipModel | None = None
    fallback: bool = False
    reason: str | None = None
    extra: dict = field(default_factory=dict)

    @property
    def spec(self) -> str | None:
        return self.model.spec if self.model is not None else None


def resolve_clip(spec: str | ClipModel | None, device: str | torch.device = "cpu") -> ClipChoice:
    """Load CLIP for a visualisation run, or decide to go without it.

    ``None``/``"none"``: no CLIP on purpose (no warning). Weights that cannot be had: one warning
    that says how to supply them, and ``fallback=True`` with the reason. Bad specs and files
    that are not CLIP raise ``NeuroInspectError``.
    """
    if isinstance(spec, ClipModel):
        return ClipChoice(spec.spec, spec)
    parsed = parse_clip_spec(spec)
    if parsed is None:
        return ClipChoice(None, None, False, "CLIP turned off (--clip none)")
    try:
        return ClipChoice(str(parsed), load_clip(parsed, device))
    except ClipUnavailable as err:
        reason = str(err)
        log.warning("warning: CLIP unavailable, rendering class-conditional images without CLIP instead: %s; %s",
                    reason, HOW_TO_SUPPLY)
        return ClipChoice(str(parsed), None, True, reason)
