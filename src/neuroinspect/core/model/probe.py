"""Split any classifier into feature extractor ``f`` and decision layer ``g(z) = W z + b``.

The probe never edits the user's code: it finds the last ``nn.Linear`` whose output *is* the
model's logits (checked with one dry forward), and reads ``z`` as that layer's input through a
forward hook. For masks it also captures the spatial map the features were pooled from: for a
CNN the last 4-D activation with ``D`` channels, for a ViT the patch tokens. Hooks live only
for the duration of one forward call and are removed in ``finally`` blocks.
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Iterator

import torch
from torch import nn

from neuroinspect.core.base.errors import NeuroInspectError


def model_logits(output) -> torch.Tensor:
    """Take the logits tensor out of whatever the model returned."""
    if isinstance(output, torch.Tensor):
        return output
    if hasattr(output, "logits"):
        return output.logits
    if isinstance(output, dict):
        for key in ("logits", "out", "output"):
            if key in output:
                return output[key]
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    raise NeuroInspectError(f"cannot find logits in the model's output of type {type(output).__name__}")


def _first_tensor(x):
    if isinstance(x, torch.Tensor):
        return x
    if isinstance(x, (tuple, list)) and x and isinstance(x[0], torch.Tensor):
        return x[0]
    return None


def _dry_input(model: nn.Module, input_size: int, batch: int = 2) -> torch.Tensor:
    try:
        p = next(model.parameters())
        device, dtype = p.device, p.dtype
    except StopIteration:
        device, dtype = torch.device("cpu"), torch.float32
    g = torch.Generator().manual_seed(0)
    return torch.randn(batch, 3, input_size, input_size, generator=g).to(device=device, dtype=dtype)


@contextlib.contextmanager
def _hooks(modules: list[tuple[str, nn.Module]], fn) -> Iterator[None]:
    handles = []
    try:
        for name, module in modules:
            handles.append(module.register_forward_hook(lambda m, i, o, name=name: fn(name, m, i, o)))
        yield
    finally:
        for h in handles:
            h.remove()


@dataclass
class _Trace:
    logits: torch.Tensor
    linear_io: list[tuple[str, torch.Tensor, torch.Tensor]]  # (name, input, output) in call order
    outputs: list[tuple[str, torch.Tensor]]  # every module's tensor output in completion order


def _trace(model: nn.Module, input_size: int) -> _Trace:
    linear_io: list = []
    outputs: list = []

    def record(name, module, inputs, output):
        out = _first_tensor(output)
        if out is None:
            return
        outputs.append((name, out.detach()))
        if isinstance(module, nn.Linear) and inputs and isinstance(inputs[0], torch.Tensor):
            linear_io.append((name, inputs[0].detach(), out.detach()))

    named = [(n, m) for n, m in model.named_modules() if n]
    was_training = model.training
    model.eval()
    try:
        with _hooks(named, record), torch.no_grad():
            logits = model_logits(model(_dry_input(model, input_size)))
    finally:
        model.train(was_training)
    return _Trace(logits.detach(), linear_io, outputs)


def _reproduces(linear: nn.Linear, z: torch.Tensor, logits: torch.Tensor) -> bool:
    if z.dim() != 2 or z.shape[0] != logits.shape[0] or linear.out_features != logits.shape[-1]:
        return False
    with torch.no_grad():
        again = linear(z)
    scale = logits.abs().max().clamp_min(1.0)
    return bool(((again - logits).abs().max() / scale) < 1e-4)


def find_head(model: nn.Module, head: str | None = None, input_size: int = 224, trace: _Trace | None = None) -> tuple[str, nn.Linear]:
    """Return ``(name, module)`` of the decision layer; checked by one dry forward."""
    modules = dict(model.named_modules())
    linears = [n for n, m in modules.items() if isinstance(m, nn.Linear)]
    if head is not None:
        if head not in modules:
            raise NeuroInspectError(
                f"model has no module '{head}'; linear layers are: {', '.join(linears[-8:]) or 'none'}"
            )
        if not isinstance(modules[head], nn.Linear):
            raise NeuroInspectError(f"module '{head}' is a {type(modules[head]).__name__}, not nn.Linear")
    trace = trace or _trace(model, input_size)
    if not bool(torch.isfinite(trace.logits).all()):
        raise NeuroInspectError(
            "the model outputs NaN/inf on a random test input (before any data is read); check the weights "
            "(a bad checkpoint or a factory that leaves parameters uninitialised)"
        )
    if trace.logits.dim() != 2:
        raise NeuroInspectError(f"the model's output has shape {tuple(trace.logits.shape)}; expected [batch, classes]")
    found = None
    for name, z, _ in trace.linear_io:  # call order: keep the last that reproduces the logits
        if (head is None or name == head) and _reproduces(modules[name], z, trace.logits):
            found = name
    if found is None:
        if head is not None:
            raise NeuroInspectError(
                f"module '{head}' does not produce the model's logits (its output is transformed afterwards); "
                f"other linear layers: {', '.join(linears[-8:]) or 'none'}"
            )
        raise NeuroInspectError(
            "found no nn.Linear whose output is the model's logits; pass --head NAME "
            f"(linear layers: {', '.join(linears[-8:]) or 'none'}; the decision layer must be a plain nn.Linear)"
        )
    return found, modules[found]


@dataclass
class ProbeOutput:
    logits: torch.Tensor  # [B, C]
    features: torch.Tensor  # [B, D]: the head's input
    spatial: torch.Tensor | None = None  # [B, D, h, w]: the map the features were pooled from


class Probe:
    """A classifier seen as ``features -> head``; call it to get logits, features and spatial map.

    >>> probe = Probe(model)             # finds the head by itself
    >>> out = probe(x, spatial=True)     # out.logits, out.features [B, D], out.spatial [B, D, h, w]
    """

    def __init__(self, model: nn.Module, head: str | None = None, input_size: int = 224, spatial: str | None = None):
        self.model = model.eval()
        self.input_size = input_size
        trace = _trace(model, input_size)
        self.head_name, self.head = find_head(model, head=head, input_size=input_size, trace=trace)
        self.spatial_name, self.spatial_layout, self.prefix_tokens = self._find_spatial(spatial, trace)

    # ------------------------------------------------------------------ discovery
    def _find_spatial(self, name: str | None, trace: _Trace):
        D = self.D
        modules = dict(self.model.named_modules())
        if name is not None and name not in modules:
            raise NeuroInspectError(f"model has no module '{name}' for the spatial map")
        chosen = None
        for mod_name, out in trace.outputs:
            if name is not None and mod_name != name:
                continue
            if mod_name == self.head_name or self.head_name.startswith(mod_name + ".") and mod_name:
                continue
            if out.dim() == 4 and out.shape[1] == D and out.shape[2] * out.shape[3] > 1:
                chosen = (mod_name, "nchw", 0)
            elif out.dim() == 4 and out.shape[-1] == D and out.shape[1] * out.shape[2] > 1:
                chosen = (mod_name, "nhwc", 0)
            elif out.dim() == 3 and out.shape[-1] == D and out.shape[1] > 1:
                T = out.shape[1]
                side = int(math.isqrt(T))
                prefix = T - side * side
                if 0 <= prefix <= 16 and side > 1:
                    chosen = (mod_name, "tokens", prefix)
        if chosen is None:
            return None, None, 0  # masks unavailable (e.g. an MLP); features still work
        return chosen

    # ------------------------------------------------------------------ properties
    @property
    def D(self) -> int:
        return self.head.in_features

    @property
    def C(self) -> int:
        return self.head.out_features

    @property
    def weight(self) -> torch.Tensor:
        return self.head.weight

    @property
    def bias(self) -> torch.Tensor:
        b = self.head.bias
        return b if b is not None else torch.zeros(self.C, device=self.head.weight.device)

    @property
    def has_spatial(self) -> bool:
        return self.spatial_name is not None

    # ------------------------------------------------------------------ forward
    def __call__(self, x: torch.Tensor, spatial: bool = False) -> ProbeOutput:
        captured: dict[str, torch.Tensor] = {}
        modules = dict(self.model.named_modules())
        D = self.D

        def grab_features(module, inputs):
            captured["features"] = inputs[0]

        def grab_spatial(module, inputs, output):
            out = _first_tensor(output)
            if out is None:
                return
            ok = (
                (self.spatial_layout == "nchw" and out.dim() == 4 and out.shape[1] == D)
                or (self.spatial_layout == "nhwc" and out.dim() == 4 and out.shape[-1] == D)
                or (self.spatial_layout == "tokens" and out.dim() == 3 and out.shape[-1] == D)
            )
            if ok:  # a module called several times (a shared activation) keeps its last matching call
                captured["spatial"] = out

        handles = [self.head.register_forward_pre_hook(grab_features)]
        try:
            if spatial and self.spatial_name is not None:
                handles.append(modules[self.spatial_name].register_forward_hook(grab_spatial))
            logits = model_logits(self.model(x))
        finally:
            for h in handles:
                h.remove()
        sp = captured.get("spatial")
        if sp is not None:
            sp = self._to_map(sp)
        return ProbeOutput(logits, captured["features"], sp)

    def _to_map(self, out: torch.Tensor) -> torch.Tensor:
        if self.spatial_layout == "nchw":
            return out
        if self.spatial_layout == "nhwc":
            return out.permute(0, 3, 1, 2)
        tokens = out[:, self.prefix_tokens :, :]
        side = int(math.isqrt(tokens.shape[1]))
        return tokens.transpose(1, 2).reshape(out.shape[0], self.D, side, side)

    def head_logits(self, z: torch.Tensor) -> torch.Tensor:
        return self.head(z)

    def describe(self) -> dict:
        return {
            "head": self.head_name,
            "features": self.D,
            "classes": self.C,
            "spatial": self.spatial_name,
            "spatial_layout": self.spatial_layout,
            "prefix_tokens": self.prefix_tokens,
        }
