"""One device and precision policy, passed explicitly to extraction, rendering, editing and training.

>>> policy = DevicePolicy.resolve("auto")          # cuda when there is one; bf16 autocast there, fp32 on a CPU
>>> model = policy.place(model)                    # the one way a model is moved (and laid out NHWC if asked)
>>> with policy.autocast():
...     out = model(policy.place(x))

"auto" precision means: on CUDA, bf16 autocast when the GPU supports it, else fp16 for forward
passes (fp32 where a backward pass follows: fp16 gradients need loss scaling, see
:meth:`DevicePolicy.for_backward`); on a CPU, fp32 unless bf16 or fp16 is asked for.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, replace

import torch

from neuroinspect.core.base.config import PRECISIONS
from neuroinspect.core.base.errors import NeuroInspectError
from neuroinspect.core.runtime import distributed

__all__ = ["DevicePolicy", "PRECISIONS", "resolve_device"]

_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``None``/"auto": cuda when available, else cpu; a CUDA device asked for without a GPU is one clear error.

    Under torchrun, ``cuda`` means this process's GPU (``cuda:LOCAL_RANK``)."""
    if device in (None, "auto"):
        return distributed.device_for("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError):
        raise NeuroInspectError(f"unknown device '{device}'; use cpu, cuda, cuda:N or auto") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise NeuroInspectError("--device cuda was asked for but no CUDA GPU is available; use --device cpu")
    return distributed.device_for(device)


def _bf16_ok(device: torch.device) -> bool:
    return device.type == "cuda" and torch.cuda.is_available() and torch.cuda.is_bf16_supported()


@dataclass(frozen=True)
class DevicePolicy:
    """Where the model runs and in which precision.

    ``precision`` is the autocast dtype of the classifier's forward pass ("fp32": no autocast);
    results (features, scores, edited weights) are always float32. ``channels_last`` stores a
    CNN's activations NHWC.
    """

    device: torch.device = torch.device("cpu")
    precision: str = "fp32"
    channels_last: bool = False

    def __post_init__(self):
        object.__setattr__(self, "device", torch.device(self.device))
        if self.precision not in PRECISIONS:
            raise NeuroInspectError(f"unknown precision '{self.precision}'; choose one of: {', '.join(PRECISIONS)}")

    # ------------------------------------------------------------------ construction
    @classmethod
    def resolve(cls, device: str | torch.device | None = "auto", precision: str | None = "auto",
                channels_last: bool = False, *, backward: bool = False) -> "DevicePolicy":
        """The policy for ``device`` ("auto": cuda if available) and ``precision`` ("auto" or None: see the
        module docstring). ``backward``: a backward pass follows (no fp16 chosen automatically)."""
        dev = resolve_device(device)
        if precision in (None, "auto"):
            if dev.type != "cuda":
                precision = "fp32"
            elif _bf16_ok(dev):
                precision = "bf16"
            else:
                precision = "fp32" if backward else "fp16"
        policy = cls(dev, precision, bool(channels_last))
        return policy.for_backward() if backward else policy

    @classmethod
    def of(cls, value: "DevicePolicy | str | torch.device | None", default: torch.device | None = None) -> "DevicePolicy":
        """``value`` as a policy: a policy is kept, a device (or None: ``default``, else cpu) gets fp32."""
        if isinstance(value, DevicePolicy):
            return value
        if value is None:
            return cls(default if default is not None else torch.device("cpu"))
        return cls(resolve_device(value))

    def for_backward(self) -> "DevicePolicy":
        """This policy where gradients flow back through the autocast region: fp16 is refused (its
        gradients underflow without a GradScaler, and an image optimiser has none); bf16 needs none."""
        if self.precision == "fp16":
            raise NeuroInspectError("fp16 gradients need loss scaling, which is not done here; use --precision bf16 "
                                    "(the same speed on recent GPUs, no scaling needed) or fp32")
        return self

    def with_device(self, device) -> "DevicePolicy":
        return replace(self, device=torch.device(device))

    # ------------------------------------------------------------------ use
    @property
    def dtype(self) -> torch.dtype:
        return _DTYPES[self.precision]

    @property
    def autocasts(self) -> bool:
        return self.precision != "fp32"

    def autocast(self):
        """The context for the classifier's forward pass: ``torch.autocast`` in ``precision``, or nothing for fp32."""
        if not self.autocasts:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.dtype)

    def place(self, obj):
        """A module moved to the device (NHWC when ``channels_last``), or a tensor moved there (NHWC for a 4-D
        input when ``channels_last``). Modules are moved in place and returned."""
        if isinstance(obj, torch.nn.Module):
            obj.to(self.device)
            if self.channels_last:
                obj.to(memory_format=torch.channels_last)
            return obj
        if isinstance(obj, torch.Tensor):
            obj = obj.to(self.device, non_blocking=True)
            if self.channels_last and obj.dim() == 4:
                obj = obj.contiguous(memory_format=torch.channels_last)
            return obj
        raise TypeError(f"cannot place a {type(obj).__name__}")

    def release(self, module: torch.nn.Module) -> None:
        """Undo ``channels_last`` on ``module`` (after a run that asked for it)."""
        if self.channels_last:
            module.to(memory_format=torch.contiguous_format)

    @property
    def cache_tag(self) -> str:
        """The compute dtype as part of a feature cache key (unchanged keys for fp32 and for CUDA autocast)."""
        if not self.autocasts:
            return "float32"
        return "amp" if self.device.type == "cuda" else f"autocast-{self.precision}-{self.device.type}"

    def describe(self) -> dict:
        return {"device": str(self.device), "precision": self.precision, "channels_last": self.channels_last}


def split_policy(options: dict, default: DevicePolicy | str | torch.device | None = None,
                 backward: bool = True) -> tuple[DevicePolicy, dict]:
    """Settings given flat (say, a benchmark's JSON): the policy's keys (``device``, ``precision``,
    ``channels_last``; ``amp=True`` is read as bf16) become a :class:`DevicePolicy`; the rest is returned."""
    rest = dict(options)
    base = DevicePolicy.of(default)
    device = rest.pop("device", None)
    amp = rest.pop("amp", None)
    precision = rest.pop("precision", None) or ("bf16" if amp else base.precision)
    channels_last = rest.pop("channels_last", base.channels_last)
    policy = DevicePolicy(resolve_device(device) if device is not None else base.device, precision, bool(channels_last))
    return (policy.for_backward() if backward else policy), rest


def seed_torch(seed: int, device: str | torch.device | None = None) -> None:
    """Seed torch's CPU generator and, for a CUDA ``device``, that device's generator with ``seed`` (the other
    GPUs' generators are left alone, initialised or not). Call it inside :func:`seeded_rng`."""
    torch.random.default_generator.manual_seed(seed)
    device = torch.device(device) if device is not None else None
    if device is not None and device.type == "cuda":
        with torch.cuda.device(device):
            torch.cuda.manual_seed(seed)


@contextlib.contextmanager
def seeded_rng(seed: int, device: str | torch.device | None = None):
    """Inside the block torch's global generators (the CPU's, and ``device``'s when it is a GPU) start from
    ``seed``: for what draws from them and takes no generator (a module's random initialisation, dropout,
    torchvision's random transforms); after it they are back as the caller left them."""
    device = torch.device(device) if device is not None else None
    cuda = [device.index if device.index is not None else torch.cuda.current_device()] if (
        device is not None and device.type == "cuda") else []
    with torch.random.fork_rng(devices=cuda):
        seed_torch(seed, device)
        yield
