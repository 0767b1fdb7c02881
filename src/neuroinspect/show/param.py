"""Image parameterisations: what the optimiser actually changes.

Both return an ``nn.Module`` whose parameters are the optimisation variables and whose
``forward()`` gives a batch of RGB images in [0, 1] of shape ``[B, 3, size, size]``.
Every image has its own seed, so the same (seed, size) gives the same starting image
whatever batch it is rendered in.

``FourierImage`` (default, as in Lucid/Lucent): a random spectrum scaled down at high
frequencies, inverse real FFT, a fixed colour-decorrelation matrix, then a sigmoid.
Optimising in this space favours smooth, natural-looking images over high-frequency noise.
``PixelImage``: plain per-pixel logits through a sigmoid (the naive baseline).
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from neuroinspect.core.base.errors import NeuroInspectError

# Square root of the colour correlation of natural images (ImageNet), from Lucid.
_COLOR_CORRELATION_SVD_SQRT = torch.tensor(
    [[0.26, 0.09, 0.02],
     [0.27, 0.00, -0.05],
     [0.27, -0.09, 0.03]]
)


def color_decorrelation_matrix() -> torch.Tensor:
    """The [3, 3] matrix mapping decorrelated colour channels to RGB (columns of max norm 1)."""
    m = _COLOR_CORRELATION_SVD_SQRT
    return m / m.norm(dim=0).max()


def _seed_noise(shape: Sequence[int], seeds: Sequence[int], sd: float) -> torch.Tensor:
    """One independent normal sample per image, each from its own seeded generator."""
    out = []
    for s in seeds:
        g = torch.Generator().manual_seed(int(s))
        out.append(torch.randn(*shape, generator=g) * sd)
    return torch.stack(out)


def _fit(image: torch.Tensor, size: int) -> torch.Tensor:
    x = image.float()
    if x.shape[-1] != size or x.shape[-2] != size:
        x = torch.nn.functional.interpolate(x.unsqueeze(0), size=(size, size), mode="bilinear", align_corners=False,
                                            antialias=x.shape[-1] > size)[0]
    return x


def fft_frequencies(h: int, w: int) -> torch.Tensor:
    """|f| for each bin of ``rfft2`` of an h×w image, in cycles per pixel ([h, w // 2 + 1])."""
    fy = torch.fft.fftfreq(h).view(-1, 1)
    fx = torch.fft.rfftfreq(w).view(1, -1)
    return torch.sqrt(fx * fx + fy * fy)


class FourierImage(nn.Module):
    """A batch of images parameterised by their (decorrelated-colour) Fourier spectra.

    ``decay_power`` sets how strongly high frequencies are damped: the scale of frequency f is
    ``1 / max(|f|, 1/size) ** decay_power`` (times ``reference_size / size``, so that the learning
    rate tuned at 224 px works at other sizes). ``decorrelate`` applies the colour decorrelation;
    without it the three channels are optimised independently.
    """

    def __init__(self, seeds: Sequence[int], size: int = 224, *, sd: float = 0.01, decay_power: float = 1.0,
                 decorrelate: bool = True, reference_size: int = 224, device: str | torch.device = "cpu"):
        super().__init__()
        self.size = int(size)
        self.decorrelate = decorrelate
        h = w = self.size
        freqs = fft_frequencies(h, w)
        scale = 1.0 / torch.clamp(freqs, min=1.0 / max(h, w)) ** decay_power
        # A step of the optimiser moves the image by about size/reference_size as much as at the
        # reference size: rescale so that one learning rate suits small and large images alike.
        scale = scale * (reference_size / self.size)
        self.register_buffer("scale", scale.to(device))
        self.register_buffer("colors", color_decorrelation_matrix().to(device))
        spectrum = _seed_noise((3, h, w // 2 + 1, 2), seeds, sd)
        self.spectrum = nn.Parameter(spectrum.to(device))

    @property
    def batch_size(self) -> int:
        return self.spectrum.shape[0]

    @torch.no_grad()
    def set_image(self, index: int, image: torch.Tensor, eps: float = 0.02) -> None:
        """Make image ``index`` equal ``image`` ([3, H, W] in [0, 1]; resized to the size if needed)."""
        x = _fit(image, self.size).clamp(eps, 1 - eps)
        z = torch.logit(x)
        if self.decorrelate:
            z = torch.einsum("ij,jhw->ihw", torch.linalg.inv(self.colors), z)
        spec = torch.fft.rfft2(4.0 * z, norm="ortho") / self.scale
        self.spectrum[index] = torch.view_as_real(spec).to(self.spectrum.dtype)

    def forward(self) -> torch.Tensor:
        s = torch.view_as_complex(self.spectrum) * self.scale
        x = torch.fft.irfft2(s, s=(self.size, self.size), norm="ortho") / 4.0  # [B, 3, H, W], decorrelated space
        if self.decorrelate:
            x = torch.einsum("ij,bjhw->bihw", self.colors, x)
        return torch.sigmoid(x)


class PixelImage(nn.Module):
    """A batch of images parameterised directly by per-pixel logits (sigmoid to [0, 1])."""

    def __init__(self, seeds: Sequence[int], size: int = 224, *, sd: float = 0.01, device: str | torch.device = "cpu"):
        super().__init__()
        self.size = int(size)
        self.logits = nn.Parameter(_seed_noise((3, self.size, self.size), seeds, sd).to(device))

    @property
    def batch_size(self) -> int:
        return self.logits.shape[0]

    @torch.no_grad()
    def set_image(self, index: int, image: torch.Tensor, eps: float = 0.02) -> None:
        """Make image ``index`` equal ``image`` ([3, H, W] in [0, 1]; resized to the size if needed)."""
        self.logits[index] = torch.logit(_fit(image, self.size).clamp(eps, 1 - eps)).to(self.logits.dtype)

    def forward(self) -> torch.Tensor:
        return torch.sigmoid(self.logits)


PARAMETERISATIONS = {"fourier": FourierImage, "pixel": PixelImage}


def make_image(kind: str, seeds: Sequence[int], size: int, device: str | torch.device = "cpu", **options) -> nn.Module:
    """Build the parameterisation ``kind`` ("fourier" or "pixel") for one image per seed."""
    if kind not in PARAMETERISATIONS:
        raise NeuroInspectError(f"unknown image parameterisation '{kind}'; choose one of: {', '.join(PARAMETERISATIONS)}")
    if size < 8:
        raise NeuroInspectError(f"image size {size} is too small; use at least 8 pixels (224 is the default)")
    return PARAMETERISATIONS[kind](seeds, size, device=device, **options)
