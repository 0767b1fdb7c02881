"""Stage 2: parameterisations, augmentations, objectives, rendering, masks, exemplars and the CLI."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from neuroinspect.core.base.errors import NeuroInspectError
from neuroinspect.core.model.featureset import FeatureSet
from neuroinspect.core.model.models import Preprocess
from neuroinspect.core.model.probe import Probe
from neuroinspect.show import augment as A
from neuroinspect.show.masks import core_relevance_score, dim_outside, neuron_mask, to_rgba
from neuroinspect.show.objectives import ClassLogit, ClipSimilarity, Context, NeuronActivation, recipe
from neuroinspect.show.param import FourierImage, PixelImage, color_decorrelation_matrix
from neuroinspect.show.render import render

STRIPE = 2  # the channel of StripeCNN that detects red vertical stripes


class StripeCNN(nn.Module):
    """Channel 2 fires on thin red vertical stripes; the other channels are weak random filters."""

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.conv = nn.Conv2d(3, 4, 7, padding=3)
        self.act = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4, 2)
        with torch.no_grad():
            self.conv.weight.copy_(0.01 * torch.randn(4, 3, 7, 7, generator=g))
            self.conv.bias.zero_()
            wave = torch.cos(2 * math.pi * (torch.arange(7.0) - 3) / 6)  # stripes 6 px apart, along x
            self.conv.weight[STRIPE, 0] = (wave - wave.mean()).repeat(7, 1) / 7
            self.conv.weight[STRIPE, 1] = -0.02
            self.conv.weight[STRIPE, 2] = -0.02
            self.fc.weight.copy_(torch.tensor([[0.1, 0.1, 1.0, 0.1], [0.2, 0.2, -0.5, 0.2]]))
            self.fc.bias.zero_()
        self.neuroinspect_preprocess = Preprocess(32, 32, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))

    def forward(self, x):
        return self.fc(self.pool(self.act(self.conv(x))).flatten(1))


def stripe_cnn() -> StripeCNN:
    return StripeCNN()


PRE = Preprocess(32, 32, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))


def stripes_left(size=32) -> torch.Tensor:
    """Red vertical stripes (period 6 px) on the left half, flat grey on the right."""
    x = torch.full((3, size, size), 0.5)
    x[:, :, : size // 2] = 0.0
    x[0, :, : size // 2] = (torch.cos(2 * math.pi * torch.arange(size // 2) / 6) > 0).float()
    return x


def dot_image(size=33, y=16, x=26) -> torch.Tensor:
    img = torch.zeros(1, 1, size, size)
    img[0, 0, y - 1 : y + 2, x - 1 : x + 2] = 1.0
    return img


def argmax_yx(img):
    flat = img[0, 0].flatten().argmax()
    return divmod(int(flat), img.shape[-1])


def centroid(img):
    m = img[0, 0].clamp_min(0)
    ys, xs = torch.meshgrid(torch.arange(m.shape[0]).float(), torch.arange(m.shape[1]).float(), indexing="ij")
    return float((m * ys).sum() / m.sum()), float((m * xs).sum() / m.sum())


# ---------------------------------------------------------------------------- augmentations
def _assert_differentiable(module, x):
    x = x.clone().requires_grad_(True)
    out = module(x)
    out.square().sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_rotation_turns_content_counter_clockwise_and_stays_in_range():
    rot = A.RandomRotation(15)
    img = dot_image()  # dot to the right of the centre
    y, x = centroid(rot.apply(img, torch.tensor([90.0])))
    assert abs(x - 16) < 1.0 and y < 16 - 8  # right → top: counter-clockwise on screen
    rot.generator = torch.Generator().manual_seed(0)
    angles = rot.sample(1000)
    assert angles.abs().max() <= 15 and angles.std() > 5
    _assert_differentiable(rot, torch.rand(2, 3, 16, 16))


def test_translation_moves_content_by_the_fraction_of_the_size():
    tr = A.RandomTranslation(0.15)
    img = dot_image(size=40, y=20, x=20)
    y, x = centroid(tr.apply(img, torch.tensor([[0.25, -0.1]])))
    assert abs(x - (19.5 + 10)) < 0.6 and abs(y - (19.5 - 4)) < 0.6
    tr.generator = torch.Generator().manual_seed(1)
    assert tr.sample(500).abs().max() <= 0.15
    _assert_differentiable(tr, torch.rand(2, 3, 16, 16))


def test_scale_enlarges_a_centred_square():
    sc = A.RandomScale(0.7, 1.2)
    img = torch.zeros(1, 1, 40, 40)
    img[..., 15:25, 15:25] = 1.0
    width_before = (img[0, 0, 20] > 0.5).sum()
    width_after = (sc.apply(img, torch.tensor([1.5]))[0, 0, 20] > 0.5).sum()
    assert abs(int(width_after) - 1.5 * int(width_before)) <= 1
    sc.generator = torch.Generator().manual_seed(2)
    f = sc.sample(500)
    assert f.min() >= 0.7 and f.max() <= 1.2
    _assert_differentiable(sc, torch.rand(2, 3, 16, 16))


def test_gaussian_smoothing_matches_its_sigma_and_keeps_flat_images():
    blur = A.GaussianSmoothing(1.5)
    flat = torch.full((1, 3, 16, 16), 0.3)
    assert torch.allclose(blur(flat), flat, atol=1e-6)
    impulse = torch.zeros(1, 1, 31, 31)
    impulse[0, 0, 15, 15] = 1.0
    out = blur(impulse)[0, 0]
    assert abs(float(out.sum()) - 1.0) < 1e-5
    xs = torch.arange(31).float() - 15
    var_x = float((out.sum(0) * xs**2).sum())
    assert abs(math.sqrt(var_x) - 1.5) < 0.1
    _assert_differentiable(blur, torch.rand(2, 3, 16, 16))


def test_colour_and_noise_jitter_apply_their_params_and_fade_out():
    cj = A.ColorJitter(0.2)
    x = torch.full((1, 3, 4, 4), 0.5)
    params = torch.tensor([[[0.1, 0.0, -0.1], [0.0, 0.05, 0.0]]])
    out = cj.apply(x, params)
    assert torch.allclose(out[0, :, 0, 0], torch.tensor([0.55, 0.55, 0.45]))
    cj.generator = torch.Generator().manual_seed(0)
    assert cj.sample(200).abs().max() <= 0.2 and cj.sample(200).abs().max() > 0.1
    cj.progress = 1.0
    assert torch.equal(cj(x), x)
    noise = A.NoiseJitter(0.1)
    noise.generator = torch.Generator().manual_seed(0)
    big = torch.zeros(1, 3, 64, 64)
    assert abs(float(noise(big).std()) - 0.1) < 0.01
    noise.progress = 0.5
    assert abs(float(noise(big).std()) - 0.05) < 0.01
    noise.progress = 1.0
    assert torch.equal(noise(big), big)
    _assert_differentiable(A.ColorJitter(0.1), torch.rand(2, 3, 8, 8))
    _assert_differentiable(A.NoiseJitter(0.1), torch.rand(2, 3, 8, 8))


def test_fused_geometry_equals_the_steps_in_order_and_params_differ_per_image():
    class Fixed(A.AffineAugment):
        def __init__(self, inner, value):
            super().__init__()
            self.inner, self.value = inner, value

        def sample(self, n):
            return self.value.expand(n, *self.value.shape[1:])

        def matrix(self, p):
            return self.inner.matrix(p)

    rot, tr = A.RandomRotation(), A.RandomTranslation()
    pipe = A.Augmentation(Fixed(rot, torch.tensor([90.0])), Fixed(tr, torch.tensor([[0.2, 0.0]])))
    img = dot_image(size=41, y=20, x=32)  # 12 px right of the centre
    fused = centroid(pipe(img))
    stepwise = centroid(tr.apply(rot.apply(img, torch.tensor([90.0])), torch.tensor([[0.2, 0.0]])))
    assert abs(fused[0] - stepwise[0]) < 0.3 and abs(fused[1] - stepwise[1]) < 0.3
    assert abs(fused[0] - 8) < 0.6 and abs(fused[1] - (20 + 8.2)) < 0.6  # up 12, then right 8.2
    aug = A.default_augmentation().seed(0)
    x = torch.rand(1, 3, 24, 24).expand(2, 3, 24, 24)
    out = aug(x)
    assert out.shape == x.shape and not torch.allclose(out[0], out[1])
    assert torch.allclose(A.default_augmentation().seed(3)(x), A.default_augmentation().seed(3)(x))
    _assert_differentiable(A.default_augmentation().seed(0), torch.rand(2, 3, 24, 24))


def test_model_input_resizes_and_normalises():
    mi = A.ModelInput(8, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    out = mi(torch.full((2, 3, 16, 16), 0.75))
    assert out.shape == (2, 3, 8, 8) and torch.allclose(out, torch.ones_like(out))


# ---------------------------------------------------------------------------- parameterisations
def test_fourier_image_shape_range_and_seeds():
    img = FourierImage([1, 2, 3], 40)
    x = img()
    assert x.shape == (3, 3, 40, 40) and x.min() >= 0 and x.max() <= 1
    with torch.no_grad():
        img.spectrum.mul_(1e4)  # whatever the parameters, the sigmoid keeps [0, 1]
    y = img()
    assert y.min() >= 0 and y.max() <= 1 and (y.max() - y.min()) > 0.9
    a, b = FourierImage([7, 8], 32)(), FourierImage([7], 32)()
    assert torch.equal(a[0], b[0]) and not torch.allclose(a[0], a[1])
    assert torch.equal(FourierImage([7], 32)(), b)
    m = color_decorrelation_matrix()
    assert abs(float(m.norm(dim=0).max()) - 1) < 1e-6
    p = PixelImage([1, 2], 16)()
    assert p.shape == (2, 3, 16, 16) and 0 <= float(p.min().detach()) and float(p.max().detach()) <= 1


def test_fourier_image_favours_low_frequencies():
    img = FourierImage([0], 64, decorrelate=False)
    x = img()[0] - 0.5
    spec = torch.fft.rfft2(x).abs().mean(0)
    assert spec[1:4, 1:4].mean() > 5 * spec[20:30, 20:30].mean()


def test_fourier_image_matches_a_numpy_reference():
    """The image is sigmoid(C · irfft2(scale · spectrum) / 4), computed here with NumPy alone: the
    frequency scale 1 / max(|f|, 1/size) (times 224 / size), the orthonormal inverse real FFT and the
    colour matrix applied across channels; ``set_image`` inverts it."""
    size = 24
    img = FourierImage([3, 4], size)
    spec = img.spectrum.detach().double().numpy()
    fy = np.fft.fftfreq(size)[:, None]
    fx = np.fft.rfftfreq(size)[None, :]
    scale = 1.0 / np.maximum(np.sqrt(fx ** 2 + fy ** 2), 1.0 / size) * (224 / size)
    complex_spec = (spec[..., 0] + 1j * spec[..., 1]) * scale  # [B, 3, H, W//2+1]
    x = np.fft.irfft2(complex_spec, s=(size, size), norm="ortho") / 4.0
    colors = color_decorrelation_matrix().double().numpy()
    rgb = np.einsum("ij,bjhw->bihw", colors, x)
    expected = 1.0 / (1.0 + np.exp(-rgb))
    np.testing.assert_allclose(img().detach().double().numpy(), expected, atol=1e-5)
    # without decorrelation the channels stay as they are
    plain = FourierImage([3], size, decorrelate=False)
    np.testing.assert_allclose(plain().detach().double().numpy(), 1.0 / (1.0 + np.exp(-x[:1])), atol=1e-5)
    # set_image puts a picture back exactly (up to the clamp at eps)
    picture = torch.rand(3, size, size) * 0.9 + 0.05
    img.set_image(1, picture)
    torch.testing.assert_close(img()[1].detach(), picture, atol=1e-4, rtol=0)


# ---------------------------------------------------------------------------- objectives
def _ctx():
    features = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    logits = torch.tensor([[0.5, -1.0], [2.0, 3.0]])
    img = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
    txt = torch.tensor([[0.6, 0.8], [0.6, 0.8]])
    return Context(features, logits, torch.tensor([2, 0]), torch.tensor([1, 0]), img, txt)


def test_recipes_give_the_formulas_of_the_method():
    ctx = _ctx()
    a = torch.tensor([3.0, 4.0])
    s = torch.tensor([-1.0, 2.0])
    sim = torch.tensor([0.6, 1.0])
    assert torch.allclose(recipe("fv")(ctx), -a)
    assert torch.allclose(recipe("class")(ctx), -(a + 0.5 * s))
    assert torch.allclose(recipe("class", gamma=0.2)(ctx), -(a + 0.2 * s))
    assert torch.allclose(recipe("clip-illusion")(ctx), -(sim + 0.05) * (a + 0.5 * s))
    assert torch.allclose(recipe("clip-illusion", gamma=1.0, epsilon=0.1)(ctx), -(sim + 0.1) * (a + s))
    with pytest.raises(NeuroInspectError, match="unknown recipe"):
        recipe("dream")


def test_objectives_compose_with_arithmetic():
    ctx = _ctx()
    a, s = NeuronActivation(), ClassLogit()
    assert torch.allclose((2 * a - s / 2 + 1)(ctx), torch.tensor([6 + 0.5 + 1, 8 - 1 + 1.0]))
    assert torch.allclose((1 / NeuronActivation(neuron=0))(ctx), torch.tensor([1.0, 0.25]))
    assert torch.allclose((a * ClipSimilarity())(ctx), torch.tensor([1.8, 4.0]))
    assert "a_k" in repr(-(a + 0.5 * s))
    assert (a + ClipSimilarity()).needs == {"features", "clip"}


# ---------------------------------------------------------------------------- rendering and masks
def test_rendering_the_stripe_neuron_finds_red_vertical_stripes():
    model = StripeCNN()
    probe = Probe(model, input_size=32)
    res = render(probe, PRE, [(STRIPE, 0)], recipe="fv", steps=120, size=32, seed=0, progress=False)
    r = res.images[0]
    assert r.steps_done == 120 and not res.interrupted
    x = stripes_left().unsqueeze(0)
    assert r.activation > 0.3 * float(probe(x).features[0, STRIPE].detach())  # a real stripe pattern on half the image
    assert r.activation > 0.15 and r.activation > 20 * max(r.start_activation, 1e-3)
    img = r.image
    mean = img.mean((1, 2))
    assert mean[0] > mean[1] + 0.08 and mean[0] > mean[2] + 0.08  # red
    red = img[0]
    dx = (red[:, 1:] - red[:, :-1]).abs().mean()
    dy = (red[1:, :] - red[:-1, :]).abs().mean()
    assert dx > 1.8 * dy  # red varies across x: vertical stripes
    # the mask covers where the channel fires
    mask = neuron_mask(r.spatial, 32)
    with torch.no_grad():
        fire = model.act(model.conv(img.unsqueeze(0)))[0, STRIPE]
    assert fire[mask].mean() > 2 * fire[~mask].mean()


def test_mask_marks_the_half_with_the_pattern():
    model = StripeCNN()
    probe = Probe(model, input_size=32)
    x = stripes_left().unsqueeze(0)
    out = probe(x, spatial=True)
    mask = neuron_mask(out.spatial[0, STRIPE], 32)
    left, right = mask[:, :16], mask[:, 18:]
    assert not right.any() and left.float().mean() > 0.3  # only on the stripes: it fires on their crests
    assert all(left[:, i : i + 6].any() for i in range(0, 12, 6))  # every stripe period is covered
    dimmed = dim_outside(x[0], mask, 0.5)
    assert torch.allclose(dimmed[:, :, 20:], x[0, :, :, 20:] * 0.5)
    assert torch.equal(dimmed[:, mask], x[0][:, mask])
    rgba = to_rgba(x[0], mask)
    alpha = np.asarray(rgba)[..., 3]
    assert rgba.mode == "RGBA" and (alpha == mask.numpy() * 255).all() and alpha[:, 20:].max() == 0


def test_batched_rendering_keeps_pairs_and_seeds_and_ctrl_c_returns_partial_results():
    from neuroinspect.show.objectives import Objective

    probe = Probe(StripeCNN(), input_size=32)
    pairs = [(STRIPE, 0), (0, 1), (STRIPE, 1)]
    batched = render(probe, PRE, pairs, recipe="class", steps=5, size=32, batch=2, seed=4, progress=False)
    again = render(probe, PRE, pairs, recipe="class", steps=5, size=32, batch=2, seed=4, progress=False)
    assert [(r.neuron, r.cls) for r in batched] == pairs
    assert len({r.seed for r in batched}) == 3
    assert all(torch.equal(a.image, b.image) for a, b in zip(batched, again))  # reproducible from the seed

    calls = {"n": 0}
    base = recipe("fv")

    class Interrupting(Objective):
        needs = frozenset({"features"})

        def __call__(self, ctx):
            calls["n"] += 1
            if calls["n"] == 4:
                raise KeyboardInterrupt
            return base(ctx)

    res = render(probe, PRE, pairs, objective=Interrupting(), steps=10, size=32, batch=2, progress=False)
    assert res.interrupted and len(res.images) == 2 and all(r.steps_done == 3 for r in res.images)
    assert all(r.image.shape == (3, 32, 32) for r in res.images)


def test_render_rejects_bad_indices():
    probe = Probe(StripeCNN(), input_size=32)
    with pytest.raises(NeuroInspectError, match="neuron 9 is out of range"):
        render(probe, PRE, [(9, 0)], steps=1, size=32, progress=False)
    with pytest.raises(NeuroInspectError, match="class index 5"):
        render(probe, PRE, [(0, 5)], steps=1, size=32, progress=False)
    with pytest.raises(NeuroInspectError, match="needs a CLIP"):
        render(probe, PRE, [(0, 0)], recipe="clip-illusion", steps=1, size=32, progress=False)


def test_core_relevance_score_on_hand_made_features():
    means = torch.eye(4)  # class k's mean points along axis k
    f = torch.tensor([1.0, 1.0, 0.2, 0.1])
    assert abs(float(core_relevance_score(f, f, means, 0, k=3)) - 1.0) < 1e-6
    toward_c = torch.tensor([1.0, 0.1, 0.02, 0.01])  # the masked region looks like class 0
    away = torch.tensor([0.1, 1.0, 0.02, 0.01])  # ... or like class 1
    hi = float(core_relevance_score(f, toward_c, means, 0, k=3))
    lo = float(core_relevance_score(f, away, means, 0, k=3))
    assert hi > 1.0 > lo
    cos = lambda u, v: float(torch.nn.functional.cosine_similarity(u, v, dim=0))
    s = [cos(away, means[j]) / cos(f, means[j]) for j in range(4)]
    assert abs(lo - s[0] / np.mean([s[0], s[1], s[2]])) < 1e-5


# ---------------------------------------------------------------------------- one call, files, CLI
def _feature_set(tmp_path, n=6):
    ids = []
    for i in range(n):
        p = tmp_path / f"img{i}.png"
        Image.fromarray(np.full((20, 20, 3), i * 40, np.uint8)).save(p)
        ids.append(str(p))
    feats = torch.zeros(n, 4)
    feats[:, STRIPE] = torch.arange(n).float()
    return FeatureSet(features=feats, logits=torch.zeros(n, 2), labels=torch.tensor([0, 1] * (n // 2)),
                      groups=torch.full((n,), -1), ids=ids, class_names=["stripes", "other"], group_names=[],
                      split="train", skipped=[])


def test_visualize_neurons_writes_images_masks_and_json(tmp_path):
    from neuroinspect.core.model.models import LoadedModel
    from neuroinspect.show.visualize import visualize_neurons

    loaded = LoadedModel(StripeCNN().eval(), "test:stripe", PRE, class_names=["stripes", "other"])
    fs = _feature_set(tmp_path)
    out = tmp_path / "vis"
    rep = visualize_neurons(loaded, [STRIPE, 0], None, out, top_classes=1, clip="none", steps=20, size=32, batch=4,
                            features=fs, exemplars=3, progress=False)
    saved = json.loads((out / "visualizations.json").read_text())
    assert saved == json.loads(rep.to_json())
    assert saved["recipe"] == "class" and saved["clip"] is None and saved["clip_fallback"] is False
    assert [(i["neuron"], i["class"]) for i in saved["images"]] == [(STRIPE, "stripes"), (0, "other")]
    for rec in saved["images"]:
        for key in ("image", "masked", "rgba"):
            assert (out / rec[key]).is_file()
        assert rec["clip_used"] is False and rec["clip_similarity"] is None
        assert isinstance(rec["crs"], float) and 0 <= rec["prob"] <= 1
    assert Image.open(out / saved["images"][0]["rgba"]).mode == "RGBA"
    n0 = saved["neurons"][0]
    assert n0["neuron"] == STRIPE and n0["top_classes"][0]["class"] == "stripes"
    assert n0["dataset_top_activation"] == 5.0 and n0["dataset_mean_top_activation"] == 4.0
    assert [e["id"] for e in n0["exemplars"]] == fs.ids[::-1][:3]
    assert Image.open(out / n0["exemplar_strip"]).size[0] > 3 * 90


def test_bad_input_leaves_nothing_behind(tmp_path):
    from neuroinspect.core.model.models import LoadedModel
    from neuroinspect.show.visualize import visualize_neurons

    loaded = LoadedModel(StripeCNN().eval(), "test:stripe", PRE, class_names=["stripes", "other"])
    out = tmp_path / "vis"
    with pytest.raises(NeuroInspectError, match="neuron 4 is out of range"):
        visualize_neurons(loaded, [4], None, out, clip="none", steps=2, size=32, progress=False)
    with pytest.raises(NeuroInspectError, match="unknown class 'strips'.*stripes"):
        visualize_neurons(loaded, [0], ["strips"], out, clip="none", steps=2, size=32, progress=False)
    with pytest.raises(NeuroInspectError, match="cannot parse CLIP spec"):
        visualize_neurons(loaded, [0], None, out, clip="open_clip:", steps=2, size=32, progress=False)
    assert not out.exists()


def test_cli_visualize(tmp_path, capsys):
    from neuroinspect.cli import main
    from runfiles import load_run_files

    out = tmp_path / "cli"
    rc = main(["visualize", "--model", "test_visualize:stripe_cnn", "--neurons", f"{STRIPE}", "--classes", "0",
               "--clip", "none", "--steps", "10", "--size", "32", "--out", str(out), "--no-progress"])
    assert rc == 0
    saved = json.loads((out / "visualizations.json").read_text())
    assert saved["images"][0]["neuron"] == STRIPE and saved["images"][0]["class"] == "class_0"
    assert (out / saved["images"][0]["image"]).is_file() and (out / "run.json").is_file()
    assert set(load_run_files(out)) == {"visualizations.json", "run.json"}  # the files load as typed records
    assert "results in" in capsys.readouterr().out
    bad = tmp_path / "bad"
    assert main(["visualize", "--model", "test_visualize:stripe_cnn", "--neurons", "99", "--clip", "none",
                 "--out", str(bad), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "neuron 99 is out of range" in err and err.count("\n") == 1
    assert main(["visualize", "--model", "test_visualize:stripe_cnn", "--neurons", "1", "--clip", "clip:xyz",
                 "--out", str(bad), "--no-progress"]) == 2
    assert "unknown CLIP backend" in capsys.readouterr().err
    assert not bad.exists()


def test_explain_visualize_renders_the_ranked_neurons(tmp_path):
    import planted
    from neuroinspect.cli import main

    data = planted.write_folder(tmp_path / "data")
    out = tmp_path / "explain"
    rc = main(["explain", "--model", "planted:planted_cnn", "--data", str(data), "--class", "apple",
               "--visualize", "1", "--steps", "3", "--out", str(out), "--no-progress"])
    assert rc == 0
    ranking = json.loads((out / "ranking.json").read_text())
    vis = json.loads((out / "visualize" / "visualizations.json").read_text())
    top = [r["neuron"] for r in ranking["insufficient"][:1] + ranking["excessive"][:1]]
    assert [i["neuron"] for i in vis["images"]] == list(dict.fromkeys(top))
    assert all(i["class"] == "apple" for i in vis["images"])
    assert vis["neurons"][0]["exemplars"] and vis["features_split"] == "val"


def test_vit_probe_renders_and_masks_from_patch_tokens(tmp_path):
    timm = pytest.importorskip("timm")
    from neuroinspect.core.model.models import LoadedModel
    from neuroinspect.show.visualize import visualize_neurons

    torch.manual_seed(0)
    vit = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32, patch_size=8, num_classes=3,
                            depth=2).eval()
    loaded = LoadedModel(vit, "timm:vit_tiny", Preprocess(32, 32, (0.5,) * 3, (0.5,) * 3))
    rep = visualize_neurons(loaded, [5], None, tmp_path / "vit", top_classes=1, recipe="fv", clip="none", steps=25,
                            size=32, progress=False)
    img = rep.images[0].to_dict()
    assert img["activation"] > img["start_activation"] + 0.3
    assert 0 < img["mask_fraction"] < 1 and (tmp_path / "vit" / img["rgba"]).is_file()


def test_flat_maps_mask_everything_when_firing_and_nothing_when_silent():
    maps = torch.stack([torch.full((4, 4), 6.0), torch.zeros(4, 4), torch.eye(4)])
    mask = neuron_mask(maps, 8)
    assert mask[0].all() and not mask[1].any() and 0 < mask[2].float().mean() < 1
    assert neuron_mask(torch.full((3, 3), 2.0), 6).all()


def test_a_long_cpu_render_is_announced_with_one_line(caplog):
    from neuroinspect.show.visualize import warn_if_long

    with caplog.at_level("WARNING", logger="neuroinspect.show.visualize"):
        assert warn_if_long(9, 300, 224, "cpu") > 8 * 60  # the 8.6 min that went unannounced
        assert warn_if_long(4, 32, 64, "cpu") < 60  # the quick demo's pictures: nothing to say
        assert warn_if_long(9, 650, 224, "cuda") is None  # a GPU: quick
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and "about 9 min" in lines[0] and "\n" not in lines[0]
