"""Masks from a neuron's spatial map, masked images, and the core relevance score (paper Sec. III-D)."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

DEFAULT_THRESHOLD = 0.5
DEFAULT_DIM = 0.5


def neuron_zmap(spatial: torch.Tensor, size: int | tuple[int, int]) -> torch.Tensor:
    """Upsample neuron maps ([h, w] or [B, h, w]) to ``size`` and z-score each per image."""
    single = spatial.dim() == 2
    maps = spatial.float().unsqueeze(0) if single else spatial.float()
    size = (size, size) if isinstance(size, int) else tuple(size)
    up = F.interpolate(maps.unsqueeze(1), size=size, mode="bilinear", align_corners=False).squeeze(1)
    flat = up.flatten(1)
    z = (flat - flat.mean(1, keepdim=True)) / flat.std(1, keepdim=True).clamp_min(1e-8)
    z = z.view_as(up)
    return z[0] if single else z


def neuron_mask(spatial: torch.Tensor, size: int | tuple[int, int], threshold: float = DEFAULT_THRESHOLD) -> torch.Tensor:
    """Boolean mask of where the neuron fires: z-scored, upsampled map ≥ ``threshold``.

    A flat map has no z-score: the mask is then everything if the neuron fires there (e.g. a
    saturated ReLU6 everywhere) and nothing if it is silent.
    """
    mask = neuron_zmap(spatial, size) >= threshold
    maps = spatial.float().reshape(-1, spatial.shape[-2] * spatial.shape[-1])
    flat = (maps.max(1).values - maps.min(1).values) <= 1e-6 * (1 + maps.abs().max(1).values)
    if flat.any():
        fires = maps.mean(1) > 0
        batch = mask.view(-1, *mask.shape[-2:])
        for i in flat.nonzero().flatten().tolist():
            batch[i] = bool(fires[i])
    return mask


def dim_outside(image: torch.Tensor, mask: torch.Tensor, dim: float = DEFAULT_DIM) -> torch.Tensor:
    """The image ([3, H, W] or [B, 3, H, W]) with everything outside ``mask`` multiplied by ``dim`` (0: hard mask)."""
    m = mask.to(image.dtype)
    m = m.unsqueeze(-3)
    return image * (m + (1 - m) * dim)


def to_pil(image: torch.Tensor) -> Image.Image:
    """[3, H, W] in [0, 1] → RGB PIL image."""
    arr = (image.detach().float().clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255).round().astype(np.uint8)
    return Image.fromarray(arr, "RGB")


def to_rgba(image: torch.Tensor, mask: torch.Tensor) -> Image.Image:
    """[3, H, W] image with the mask as its alpha channel (opaque where the neuron fires)."""
    rgb = np.asarray(to_pil(image))
    alpha = (mask.detach().cpu().numpy().astype(np.uint8) * 255)[..., None]
    return Image.fromarray(np.concatenate([rgb, alpha], -1), "RGBA")


@torch.no_grad()
def core_relevance_score(features: torch.Tensor, masked_features: torch.Tensor, class_means: torch.Tensor, c: int,
                         k: int = 10) -> torch.Tensor:
    """CRS = s_c / mean_{j∈T} s_j with s_j = cos(f', μ_j) / cos(f, μ_j).

    ``features`` f = f(x) and ``masked_features`` f' = f(x ⊙ M) are [D] or [B, D];
    ``class_means`` μ is [C, D]; T are the ``k`` classes whose means are closest (cosine) to f.
    Low CRS: the neuron's region, cut out, does not look like class c (a false-correlation hint).
    """
    f = features.float().reshape(-1, features.shape[-1])
    fm = masked_features.float().reshape(-1, features.shape[-1])
    mu = F.normalize(class_means.float().to(f.device), dim=1)
    cos_f = F.normalize(f, dim=1) @ mu.T  # [B, C]
    cos_m = F.normalize(fm, dim=1) @ mu.T
    s = cos_m / cos_f.where(cos_f.abs() > 1e-8, torch.full_like(cos_f, 1e-8))
    k = min(k, mu.shape[0])
    top = cos_f.topk(k, dim=1).indices  # [B, k]
    crs = s[:, c] / s.gather(1, top).mean(1)
    return crs if features.dim() > 1 else crs[0]


def class_means(features: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Mean feature vector of each class ([C, D]; zeros for classes without samples)."""
    D = features.shape[1]
    sums = torch.zeros(num_classes, D).index_add_(0, labels.long(), features.float())
    counts = torch.bincount(labels.long(), minlength=num_classes).clamp_min(1).unsqueeze(1)
    return sums / counts
