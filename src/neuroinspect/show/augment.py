"""Differentiable augmentations for feature visualisation, each an ``nn.Module``.

Every module draws its random parameters *per image* from ``self.generator`` (a
``torch.Generator`` set by ``Augmentation.seed``; the global RNG when unset) and then applies
them with a deterministic, differentiable ``apply(x, params)``, which the tests call with
known parameters. Jitter modules fade out as ``progress`` goes from 0 (first step) to 1
(last step), so the final steps sharpen the image.

The geometric modules (rotation, translation, scale) share one implementation: each makes a
per-image 2×3 affine matrix; ``Augmentation`` multiplies consecutive ones together and
resamples the image once, so chaining them costs one ``grid_sample``, not three.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class RandomAugment(nn.Module):
    """Base class: a random transform with per-image parameters."""

    def __init__(self):
        super().__init__()
        self.generator: torch.Generator | None = None
        self.progress = 0.0

    def _uniform(self, n: int, low: float, high: float) -> torch.Tensor:
        return low + (high - low) * torch.rand(n, generator=self.generator)

    def sample(self, n: int) -> torch.Tensor:  # pragma: no cover - overridden
        raise NotImplementedError

    def apply(self, x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:  # pragma: no cover - overridden
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.apply(x, self.sample(x.shape[0]).to(x.device))


# ---------------------------------------------------------------------------- geometry
def _warp(x: torch.Tensor, theta: torch.Tensor, padding_mode: str = "reflection") -> torch.Tensor:
    """Resample ``x`` with per-image affine matrices ``theta`` [B, 2, 3] (output → input coordinates)."""
    grid = F.affine_grid(theta.to(dtype=x.dtype, device=x.device), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode=padding_mode, align_corners=False)


class AffineAugment(RandomAugment):
    """A random geometric transform given as one 2×3 matrix per image (in normalised coordinates)."""

    padding_mode = "reflection"

    def matrix(self, params: torch.Tensor) -> torch.Tensor:  # pragma: no cover - overridden
        raise NotImplementedError

    def apply(self, x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        return _warp(x, self.matrix(params), self.padding_mode)


class RandomRotation(AffineAugment):
    """Rotate each image by its own angle drawn uniformly from ±``degrees`` (counter-clockwise > 0)."""

    def __init__(self, degrees: float = 15.0):
        super().__init__()
        self.degrees = float(degrees)

    def sample(self, n: int) -> torch.Tensor:
        return self._uniform(n, -self.degrees, self.degrees)

    def matrix(self, angles: torch.Tensor) -> torch.Tensor:
        a = angles.float() * math.pi / 180.0
        cos, sin = torch.cos(a), torch.sin(a)
        zero = torch.zeros_like(a)
        # grid_sample maps output → input: rotating the content by +a samples the input at -a.
        # In image coordinates (y down) a counter-clockwise turn on screen is this matrix.
        return torch.stack([torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1)


class RandomTranslation(AffineAugment):
    """Shift each image by up to ``fraction`` of its size in x and y (params [B, 2]: dx, dy as fractions)."""

    def __init__(self, fraction: float = 0.15):
        super().__init__()
        self.fraction = float(fraction)

    def sample(self, n: int) -> torch.Tensor:
        return torch.stack([self._uniform(n, -self.fraction, self.fraction),
                            self._uniform(n, -self.fraction, self.fraction)], 1)

    def matrix(self, shift: torch.Tensor) -> torch.Tensor:
        n = shift.shape[0]
        theta = torch.zeros(n, 2, 3)
        theta[:, 0, 0] = 1.0
        theta[:, 1, 1] = 1.0
        # normalised coordinates span 2 units per image side; content moves by +shift
        theta[:, :, 2] = -2.0 * shift.float()
        return theta


class RandomScale(AffineAugment):
    """Zoom each image by a factor drawn uniformly from ``[low, high]`` (> 1 enlarges the content)."""

    def __init__(self, low: float = 0.7, high: float = 1.2):
        super().__init__()
        self.low, self.high = float(low), float(high)

    def sample(self, n: int) -> torch.Tensor:
        return self._uniform(n, self.low, self.high)

    def matrix(self, factors: torch.Tensor) -> torch.Tensor:
        n = factors.shape[0]
        theta = torch.zeros(n, 2, 3)
        theta[:, 0, 0] = 1.0 / factors.float()
        theta[:, 1, 1] = 1.0 / factors.float()
        return theta


def _compose(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """The matrix of applying warp ``a`` and then warp ``b`` (both output → input)."""
    def full(t):
        bottom = torch.tensor([0.0, 0.0, 1.0]).expand(t.shape[0], 1, 3)
        return torch.cat([t, bottom], 1)
    # out = b(a(x)): out(p) = a(x)(B p) = x(A B p)
    return (full(a) @ full(b))[:, :2, :]


# ---------------------------------------------------------------------------- filters and jitter
def gaussian_kernel(sigma: float, radius: int | None = None) -> torch.Tensor:
    radius = radius if radius is not None else max(1, int(math.ceil(2.5 * sigma)))
    t = torch.arange(-radius, radius + 1, dtype=torch.float32)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    return k / k.sum()


class GaussianSmoothing(nn.Module):
    """Blur with a separable Gaussian of standard deviation ``sigma`` pixels (reflect padding).

    Not random: it damps the high-frequency noise that adversarial patterns are made of.
    """

    def __init__(self, sigma: float = 0.5):
        super().__init__()
        self.sigma = float(sigma)
        self.register_buffer("kernel", gaussian_kernel(self.sigma) if self.sigma > 0 else torch.ones(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.sigma <= 0:
            return x
        k = self.kernel.to(dtype=x.dtype, device=x.device)
        r = k.numel() // 2
        c = x.shape[1]
        x = F.pad(x, (r, r, r, r), mode="reflect")
        x = F.conv2d(x, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
        return F.conv2d(x, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


class ColorJitter(RandomAugment):
    """Per-image, per-channel random gain and offset, fading linearly to none at ``progress`` = 1.

    params [B, 2, 3]: gain deviations and offsets, each uniform in ±``strength`` × (1 − progress).
    """

    def __init__(self, strength: float = 0.1):
        super().__init__()
        self.strength = float(strength)

    def amplitude(self) -> float:
        return self.strength * max(0.0, 1.0 - float(self.progress))

    def sample(self, n: int) -> torch.Tensor:
        a = self.amplitude()
        return (torch.rand(n, 2, 3, generator=self.generator) * 2 - 1) * a

    def apply(self, x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        gain = 1.0 + params[:, 0].to(x.dtype).view(-1, 3, 1, 1)
        offset = params[:, 1].to(x.dtype).view(-1, 3, 1, 1)
        return x * gain + offset


class NoiseJitter(RandomAugment):
    """Add Gaussian pixel noise of standard deviation ``std`` × (1 − progress); params: the noise."""

    def __init__(self, std: float = 0.02):
        super().__init__()
        self.std = float(std)

    def sample(self, n: int) -> torch.Tensor:  # the shape depends on the image: see forward
        raise TypeError("NoiseJitter.sample needs the image shape; call the module on an image")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.std * max(0.0, 1.0 - float(self.progress))
        if a <= 0:
            return x
        noise = torch.randn(x.shape, generator=self.generator).to(device=x.device, dtype=x.dtype) * a
        return self.apply(x, noise)

    def apply(self, x: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        return x + noise


# ---------------------------------------------------------------------------- pipeline
class Augmentation(nn.Sequential):
    """A sequence of augmentations; consecutive geometric ones are fused into one resampling."""

    def seed(self, generator: torch.Generator | int | None) -> "Augmentation":
        if isinstance(generator, int):
            generator = torch.Generator().manual_seed(generator)
        for m in self:
            if isinstance(m, RandomAugment):
                m.generator = generator
        return self

    def set_progress(self, progress: float) -> None:
        for m in self:
            if isinstance(m, RandomAugment):
                m.progress = float(progress)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        theta = None
        pad = "reflection"
        for m in self:
            if isinstance(m, AffineAugment):
                t = m.matrix(m.sample(x.shape[0]))
                theta = t if theta is None else _compose(theta, t)
                pad = m.padding_mode
                continue
            if theta is not None:
                x, theta = _warp(x, theta, pad), None
            x = m(x)
        if theta is not None:
            x = _warp(x, theta, pad)
        return x


def default_augmentation(rotation: float = 15.0, translation: float = 0.15, scale: tuple[float, float] = (0.7, 1.2),
                         blur_sigma: float = 0.5, color: float = 0.08, noise: float = 0.02) -> Augmentation:
    """The augmentations of paper Sec. III-D: jitter, then scale, rotation, translation, then a light blur."""
    return Augmentation(
        ColorJitter(color),
        NoiseJitter(noise),
        RandomScale(*scale),
        RandomRotation(rotation),
        RandomTranslation(translation),
        GaussianSmoothing(blur_sigma),
    )


class ModelInput(nn.Module):
    """Resize images in [0, 1] to a model's input size and normalise them with its mean and std."""

    def __init__(self, size: int, mean, std):
        super().__init__()
        self.size = int(size)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.size or x.shape[-2] != self.size:
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False,
                              antialias=x.shape[-1] > self.size)
        return (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)

    @classmethod
    def for_classifier(cls, preprocess) -> "ModelInput":
        """From a ``neuroinspect.core.model.models.Preprocess``."""
        return cls(preprocess.input_size, preprocess.mean, preprocess.std)
