"""Fault injection: killed extractions, resumed with other settings, replaced files and models.

Each test checks that the cache never serves stale or duplicated features and that a result
folder is never left inconsistent.
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from neuroinspect.cli import main
from neuroinspect.core.data.load import load_data
from neuroinspect.core.model.features import extract_features
from neuroinspect.core.model.models import build_model
from neuroinspect.core.model.probe import Probe
from planted import CLASSES, planted_cnn, write_folder

TESTS = Path(__file__).parent
SRC = TESTS.parent / "src"


def _bmp_folder(root: Path, n_per_class: int = 10) -> Path:
    """``root/val/CLASS/*.bmp``: BMP files of one size have the same byte length whatever their colours."""
    rng = np.random.default_rng(0)
    for ci, name in enumerate(CLASSES):
        d = root / "val" / name
        d.mkdir(parents=True, exist_ok=True)
        for i in range(n_per_class):
            arr = rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)
            arr[..., ci] = 230
            Image.fromarray(arr).save(d / f"{i:03d}.bmp")
    return root


def _extract(model_spec, root, cache, batch_size, **kw):
    loaded = build_model(model_spec)
    probe = Probe(loaded.model, input_size=loaded.preprocess.input_size)
    return extract_features(loaded, probe, load_data(root), "val", cache_dir=cache, batch_size=batch_size,
                            progress=False, **kw)


# --------------------------------------------------------------------------- 1. kill, resume with another batch size
KILLED_RUN = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, {tests!r})
    import torch
    from neuroinspect.core.data.load import load_data
    from neuroinspect.core.model.features import extract_features
    from neuroinspect.core.model.models import build_model
    from neuroinspect.core.model.probe import Probe

    loaded = build_model("planted:planted_cnn")
    probe = Probe(loaded.model, input_size=32)
    forward = loaded.model.forward
    def slow(x):
        time.sleep(0.15)
        return forward(x)
    loaded.model.forward = slow
    extract_features(loaded, probe, load_data({root!r}), "val", cache_dir={cache!r}, batch_size=3, chunk_size=3,
                     progress=False)
    print("finished")
""")


@pytest.mark.slow  # a child interpreter imports torch: ~6 s
def test_killed_extraction_resumed_with_another_batch_size_has_no_duplicate_rows(tmp_path):
    root = _bmp_folder(tmp_path / "data")
    cache = tmp_path / "cache"
    script = KILLED_RUN.format(tests=str(TESTS), root=str(root), cache=str(cache))
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    proc = subprocess.Popen([sys.executable, "-c", script], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while len(list(cache.rglob("rows_*.pt"))) < 2 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        assert proc.poll() is None, proc.communicate()
        proc.send_signal(signal.SIGKILL)  # no clean-up code runs
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    kept = list(cache.rglob("rows_*.pt"))
    assert len(kept) >= 2 and not list(cache.rglob("features.safetensors"))

    n = 3 * 10
    resumed = _extract("planted:planted_cnn", root, cache, batch_size=4)  # another batch size
    assert len(resumed) == n and len(set(resumed.ids)) == n  # 30 rows, not 30 + the killed run's parts
    cold = extract_features(build_model("planted:planted_cnn"), Probe(build_model("planted:planted_cnn").model,
                            input_size=32), load_data(root), "val", batch_size=4, progress=False)
    assert resumed.ids == cold.ids
    torch.testing.assert_close(resumed.features, cold.features)
    again = _extract("planted:planted_cnn", root, cache, batch_size=4)  # and the cache holds the same 30 rows
    assert len(again) == n and torch.equal(again.features, resumed.features)
    assert not list(cache.rglob("rows_*.pt"))  # parts are removed once the split is complete


def test_resume_with_the_same_batch_size_computes_only_what_is_missing(tmp_path):
    root = _bmp_folder(tmp_path / "data", n_per_class=4)
    cache = tmp_path / "cache"
    loaded = build_model("planted:planted_cnn")
    probe = Probe(loaded.model, input_size=32)
    forward, seen = loaded.model.forward, []

    def failing(x):
        if len(seen) == 2:
            raise KeyboardInterrupt
        seen.append(x.shape[0])
        return forward(x)

    loaded.model.forward = failing
    with pytest.raises(KeyboardInterrupt):
        extract_features(loaded, probe, load_data(root), "val", cache_dir=cache, batch_size=2, chunk_size=2, progress=False)
    loaded.model.forward = lambda x: (seen.append(x.shape[0]), forward(x))[1]
    seen.clear()
    fs = extract_features(loaded, probe, load_data(root), "val", cache_dir=cache, batch_size=2, chunk_size=2, progress=False)
    assert len(fs) == 12 and sum(seen) == 12 - 4


def test_time_based_parts_keep_work_of_a_short_run(tmp_path):
    """With --chunk-seconds, a run much shorter than --chunk-size images still saves its work."""
    root = _bmp_folder(tmp_path / "data", n_per_class=4)
    cache = tmp_path / "cache"
    loaded = build_model("planted:planted_cnn")
    probe = Probe(loaded.model, input_size=32)
    forward, calls = loaded.model.forward, {"n": 0}

    def slow_then_killed(x):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        time.sleep(0.05)
        return forward(x)

    loaded.model.forward = slow_then_killed
    with pytest.raises(KeyboardInterrupt):
        extract_features(loaded, probe, load_data(root), "val", cache_dir=cache, batch_size=2, chunk_size=1024,
                         chunk_seconds=0.01, progress=False)
    assert len(list(cache.rglob("rows_*.pt"))) == 3  # one part per batch: each took longer than 0.01 s


# --------------------------------------------------------------------------- 2. model code changed, weights not
FACTORY = '''
import torch
from torch import nn
from neuroinspect.core.model.models import Preprocess


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.pool = nn.{pool}(1)
        self.fc = nn.Linear(8, 3)
        self.neuroinspect_preprocess = Preprocess(32, 32, (0.5,) * 3, (0.25,) * 3)

    def forward(self, x):
        return self.fc(self.pool(torch.relu(self.conv(x))).flatten(1)){extra}


def make():
    return Net()
'''


def test_changed_model_code_with_the_same_weights_is_not_served_old_features(tmp_path, monkeypatch):
    root = _bmp_folder(tmp_path / "data", n_per_class=2)
    cache = tmp_path / "cache"
    pkg = tmp_path / "models"
    pkg.mkdir()
    monkeypatch.syspath_prepend(str(pkg))
    results = []
    for i, (pool, extra) in enumerate([("AdaptiveAvgPool2d", ""), ("AdaptiveMaxPool2d", ""),
                                       ("AdaptiveMaxPool2d", "  # a comment in the source only")]):
        name = f"factory_{i}"
        (pkg / f"{name}.py").write_text(FACTORY.format(pool=pool, extra=extra))
        results.append(_extract(f"{name}:make", root, cache, batch_size=4))
    a, b, c = results
    assert build_model("factory_0:make").fingerprint() == build_model("factory_1:make").fingerprint()  # same weights
    assert not torch.allclose(a.features, b.features)  # yet the max-pool model got its own features
    assert torch.equal(b.features, c.features)
    assert len(list((cache / "features").iterdir())) == 3  # one entry per model source


# --------------------------------------------------------------------------- 3. image replaced, same size and mtime
def test_image_replaced_with_same_size_and_mtime_is_not_served_stale(tmp_path):
    root = _bmp_folder(tmp_path / "data", n_per_class=2)
    cache = tmp_path / "cache"
    first = _extract("planted:planted_cnn", root, cache, batch_size=4)
    target = Path(first.ids[0])
    other = tmp_path / "other.bmp"
    Image.fromarray(np.full((32, 32, 3), (10, 10, 240), np.uint8)).save(other)
    assert other.stat().st_size == target.stat().st_size
    st = target.stat()
    shutil.copyfile(other, target)  # replace the bytes in place (same inode, like `cp -p`) ...
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))  # ... and put the old modification time back
    assert target.stat().st_size == st.st_size and target.stat().st_mtime_ns == st.st_mtime_ns
    second = _extract("planted:planted_cnn", root, cache, batch_size=4)
    assert not torch.equal(second.features[0], first.features[0])
    cold = extract_features(build_model("planted:planted_cnn"), Probe(planted_cnn(), input_size=32), load_data(root),
                            "val", batch_size=4, progress=False)
    assert torch.equal(second.features, cold.features)
    # --verify-cache re-hashes every file and agrees
    third = _extract("planted:planted_cnn", root, cache, batch_size=4, verify_cache=True)
    assert torch.equal(third.features, second.features)


# --------------------------------------------------------------------------- 4. non-finite results are never written
def test_edit_with_nan_lambda_writes_nothing(tmp_path, capsys):
    root = write_folder(tmp_path / "data", n_red_apples=1)
    out = tmp_path / "out"
    rc = main(["edit", "--model", "planted:planted_cnn", "--data", str(root), "--class", "apple", "--neurons", "5",
               "--lam", "nan", "--out", str(out), "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.count("\n") == 0 and "--lam" in err and "finite" in err
    assert not out.exists()


def test_non_finite_head_is_refused_before_writing():
    from neuroinspect.cli.edit import check_finite_head
    from neuroinspect.core.base.errors import NeuroInspectError

    check_finite_head(torch.zeros(2, 3), torch.zeros(2), "ratio")
    with pytest.raises(NeuroInspectError, match="NaN/inf weights"):
        check_finite_head(torch.tensor([[float("nan"), 0.0]]), None, "ratio")
    with pytest.raises(NeuroInspectError, match="NaN/inf weights"):
        check_finite_head(torch.zeros(1, 2), torch.tensor([float("inf")]), "erm")


# --------------------------------------------------------------------------- 5. Ctrl-C while saving visualize output
def test_ctrl_c_while_saving_visualize_output_keeps_the_old_run_consistent(tmp_path, monkeypatch):
    from neuroinspect.core.base import io as nio
    from neuroinspect.show.visualize import visualize_neurons

    loaded = build_model("planted:planted_cnn")
    out = tmp_path / "vis"
    visualize_neurons(loaded, [5], [0], out, recipe="fv", clip="none", steps=3, size=32, progress=False, seed=0)
    manifest = json.loads((out / "visualizations.json").read_text())
    before = {p: (out / p).read_bytes() for rec in manifest["images"] for p in (rec["image"], rec["masked"]) if p}

    real, calls = nio.save_png, {"n": 0}

    def interrupted(path, image):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt  # Ctrl-C after the first new PNG was written
        return real(path, image)

    import neuroinspect.show.visualize as vis

    monkeypatch.setattr(vis, "save_png", interrupted)
    with pytest.raises(KeyboardInterrupt):
        visualize_neurons(loaded, [5], [0], out, recipe="fv", clip="none", steps=3, size=32, progress=False, seed=7)
    assert json.loads((out / "visualizations.json").read_text()) == manifest
    for p, data in before.items():
        assert (out / p).read_bytes() == data  # the images the manifest lists are still the old run's
    monkeypatch.setattr(vis, "save_png", real)
    rep = visualize_neurons(loaded, [5], [0], out, recipe="fv", clip="none", steps=3, size=32, progress=False, seed=7)
    assert json.loads((out / "visualizations.json").read_text())["seed"] == rep.seed == 7
    assert not [p for p in tmp_path.iterdir() if ".partial-" in p.name]  # the dead run's staging folder is gone


# --------------------------------------------------------------------------- permissions
def test_written_files_respect_the_umask(tmp_path):
    from neuroinspect.core.base.io import write_json

    old = os.umask(0o022)
    try:
        path = write_json(tmp_path / "a.json", {"x": 1})
        assert path.stat().st_mode & 0o777 == 0o644
        os.umask(0o077)
        assert write_json(tmp_path / "b.json", {}).stat().st_mode & 0o777 == 0o600
    finally:
        os.umask(old)


# --------------------------------------------------------------------------- cold and warm runs agree exactly
def test_cold_and_warm_pipelines_give_identical_features_and_rankings(tmp_path):
    """The same explain pipeline twice: features computed (cold), then read from the cache (warm)."""
    from neuroinspect.session import Inspector

    root = write_folder(tmp_path / "data", n_red_apples=5)
    runs = []
    for _ in range(2):
        ins = Inspector("planted:planted_cnn", root, cache_dir=tmp_path / "cache", batch_size=5, chunk_size=5,
                        progress=False)
        fs = ins.features("val")
        exp = ins.explain("apple", split="val", max_steps=200)
        runs.append((fs, exp))
    (cold_fs, cold), (warm_fs, warm) = runs
    assert torch.equal(cold_fs.features, warm_fs.features) and torch.equal(cold_fs.logits, warm_fs.logits)
    assert cold_fs.features.is_contiguous() and warm_fs.features.is_contiguous()
    assert cold.to_json() == warm.to_json()
    assert [s.neuron for s in cold.excessive] == [s.neuron for s in warm.excessive]


class WideNet(torch.nn.Module):
    """1280 features, as EfficientNet-Lite0 has: wide enough for CPU matrix kernels to vectorise."""

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.conv = torch.nn.Conv2d(3, 1280, 1)
        self.pool = torch.nn.AdaptiveAvgPool2d(1)
        self.fc = torch.nn.Linear(1280, 3)
        with torch.no_grad():
            self.conv.weight.copy_(torch.randn(1280, 3, 1, 1, generator=g))
            self.fc.weight.copy_(0.05 * torch.randn(3, 1280, generator=g))
        from neuroinspect.core.model.models import Preprocess

        self.neuroinspect_preprocess = Preprocess(32, 32, (0.5,) * 3, (0.25,) * 3)

    def forward(self, x):
        return self.fc(self.pool(torch.relu(self.conv(x))).flatten(1))


def wide_net():
    return WideNet()


def test_cached_features_are_aligned_like_fresh_ones_so_training_on_them_agrees(tmp_path):
    """The cause of cold/warm differences: tensors read from a .safetensors file sat at an unaligned
    address, and a head trained on them differed from one trained on the same values held in fresh
    memory. Loaded features must live in freshly allocated (aligned) memory."""
    from neuroinspect.core.model.featureset import FeatureSet

    g = torch.Generator().manual_seed(0)
    n, D = 60, 1280
    fs = FeatureSet(torch.randn(n, D, generator=g).relu(), torch.randn(n, 3, generator=g), torch.arange(n) % 3,
                    torch.full((n,), -1), [f"x{i}" for i in range(n)], ["a", "b", "c"])
    fs.save(tmp_path / "f.safetensors")
    back = FeatureSet.load(tmp_path / "f.safetensors")
    assert torch.equal(back.features, fs.features)

    def train(features):
        W = torch.zeros(3, D, requires_grad=True)
        opt = torch.optim.Adam([W], lr=0.01)
        for _ in range(50):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(features @ W.T, fs.labels).backward()
            opt.step()
        return W.detach()

    assert torch.equal(train(back.features), train(fs.features))  # differed before the fix
    assert back.features.data_ptr() % 64 == 0 and back.logits.data_ptr() % 64 == 0


def test_cold_and_warm_wide_pipeline_trains_the_same_head_and_ranks_the_same_neurons(tmp_path, monkeypatch):
    """Features, a head trained on them, and the explanation with that head: cold, then warm."""
    from neuroinspect.find.ranking import explain_class
    from neuroinspect.session import Inspector

    monkeypatch.syspath_prepend(str(TESTS))
    root = write_folder(tmp_path / "data", n_red_apples=5)
    runs = []
    for _ in range(2):
        ins = Inspector("test_faults:wide_net", root, cache_dir=tmp_path / "cache", batch_size=8, progress=False)
        train, val = ins.features("train"), ins.features("val")
        W = torch.zeros(3, train.D, requires_grad=True)
        b = torch.zeros(3, requires_grad=True)
        opt = torch.optim.Adam([W, b], lr=0.01)
        for _ in range(60):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(train.features @ W.T + b, train.labels).backward()
            opt.step()
        W, b = W.detach(), b.detach()
        exp = explain_class(W, b, val.with_logits(W, b), 0, max_steps=100, progress=False)
        runs.append((train, W, exp))
    (cold_fs, cold_W, cold), (warm_fs, warm_W, warm) = runs
    assert torch.equal(cold_fs.features, warm_fs.features)
    assert torch.equal(cold_W, warm_W)
    assert cold.to_json() == warm.to_json()


# --------------------------------------------------------------------------- progress in a log
def test_progress_in_a_log_is_periodic_lines_and_warnings_stay_whole(tmp_path, capsys, monkeypatch):
    """stderr is not a terminal under pytest: bars become one-line reports, and log records stay whole lines."""
    import logging

    from neuroinspect.core.runtime.progress import LineProgress, install_log_handler, progress_bar

    monkeypatch.setenv("NEUROINSPECT_PROGRESS_SECONDS", "0")
    bar = progress_bar(4, "features [val]", "img")
    assert isinstance(bar, LineProgress)
    for _ in range(4):
        bar.update(1)
    install_log_handler(logging.WARNING)
    logging.getLogger("neuroinspect.test").warning("warning: something to read")
    bar.close()
    lines = capsys.readouterr().err.splitlines()
    assert lines[:4] == [f"features [val]: {i}/4 img ({25 * i}%), 0 s" for i in range(1, 5)]
    assert "warning: something to read" in lines
    assert sum(line.startswith("features [val]: 4/4") for line in lines) == 1  # close() does not repeat the last line
    assert not progress_bar(4, "x", enabled=False).__class__.__name__ == "LineProgress"


# --------------------------------------------------------------------------- a full disk
def _disk_full_under(monkeypatch, folder: Path, suffix: str = ""):
    """Every write of a file under ``folder`` (ending in ``suffix``) stops half-way with ENOSPC."""
    import errno

    from neuroinspect.core.base import io as nio

    real = nio._write_file

    def full(path, data):
        if Path(path).is_relative_to(folder) and suffix in Path(path).name:
            with open(path, "wb") as f:
                f.write(data[: len(data) // 2])
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real(path, data)

    monkeypatch.setattr(nio, "_write_file", full)


@pytest.mark.parametrize("where", ["out", "cache", "visualize"])
def test_a_full_disk_is_one_line_and_leaves_no_partial_file(where, tmp_path, capsys, monkeypatch):
    root = write_folder(tmp_path / "data", n_red_apples=2)
    out, cache = tmp_path / "out", tmp_path / "cache"
    if where == "visualize":
        argv = ["visualize", "--model", "planted:planted_cnn", "--data", str(root), "--neurons", "5", "--classes",
                "apple", "--clip", "none", "--steps", "2", "--size", "32", "--heatmaps", "0"]
        _disk_full_under(monkeypatch, tmp_path, suffix=".png")
    else:
        argv = ["explain", "--model", "planted:planted_cnn", "--data", str(root), "--class", "apple"]
        _disk_full_under(monkeypatch, out if where == "out" else cache / "features")
    rc = main([*argv, "--out", str(out), "--cache-dir", str(cache), "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert rc == 2, err
    assert err.count("\n") == 0 and err.startswith("neuroinspect ") and "no space left on device" in err, err
    assert not [p for p in tmp_path.rglob("*") if p.name.endswith(".tmp")]  # no half-written file
    assert not list(tmp_path.rglob("features.safetensors")) if where == "cache" else True
    assert not (out / "visualizations.json").exists() and not list(out.rglob("*.png")) if where == "visualize" else True


# --------------------------------------------------------------------------- readable cache files are checked too
def _features(root, cache, split, **kw):
    loaded = build_model("planted:planted_cnn")
    return extract_features(loaded, Probe(loaded.model, input_size=32), load_data(root), split, cache_dir=cache,
                            batch_size=4, progress=False, **kw)


def _entry(cache, fs):
    """The cache file holding ``fs``."""
    from neuroinspect.core.model.featureset import FeatureSet

    return [f for f in cache.rglob("features.safetensors") if FeatureSet.load(f).ids == fs.ids][0]


def test_a_cache_file_copied_from_another_entry_is_not_served(tmp_path, caplog):
    root = write_folder(tmp_path / "data", n_red_apples=2, n_per_class=4)
    cache = tmp_path / "cache"
    train, val = _features(root, cache, "train"), _features(root, cache, "val")
    assert len(train) != len(val)
    shutil.copyfile(_entry(cache, train), _entry(cache, val))  # readable, and another split's
    caplog.clear()
    again = _features(root, cache, "val")
    assert again.ids == val.ids and torch.equal(again.features, val.features)
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and "not this split's" in warnings[0] and "key" in warnings[0], warnings
    caplog.clear()
    assert torch.equal(_features(root, cache, "val").logits, val.logits) and not caplog.records  # fixed for good


def _cached_val(tmp_path):
    """A tiny project's val features, cached; with the cache file's path, metadata and tensors."""
    from safetensors import safe_open

    root = write_folder(tmp_path / "data", n_red_apples=2, n_per_class=4)
    cache = tmp_path / "cache"
    val = _features(root, cache, "val")
    path = _entry(cache, val)
    with safe_open(str(path), framework="pt") as f:
        meta, tensors = f.metadata(), {k: f.get_tensor(k).clone() for k in f.keys()}
    return root, cache, val, path, meta, tensors


@pytest.mark.parametrize("verify", [False, True])
def test_a_cache_file_with_overwritten_rows_is_recomputed(verify, tmp_path, caplog):
    from safetensors.torch import save_file

    root, cache, val, path, meta, tensors = _cached_val(tmp_path)
    tensors["logits"][:5] = torch.tensor([0.0, 9.0, 0.0])  # five rows now predict "berry"
    save_file(tensors, str(path), metadata=meta)  # same key, same ids, same row count: only the digest tells
    caplog.clear()
    again = _features(root, cache, "val", verify_cache=verify)
    assert torch.equal(again.logits, val.logits) and torch.equal(again.features, val.features)
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and "digest" in warnings[0], warnings


def test_a_cache_file_without_a_digest_is_recomputed(tmp_path, caplog):
    """A features file written before the digest was stored (or by hand) is not trusted blindly."""
    from safetensors.torch import save_file

    root, cache, val, path, meta, tensors = _cached_val(tmp_path)
    save_file(tensors, str(path), metadata={k: v for k, v in meta.items() if k not in ("digest", "key")})
    caplog.clear()
    assert torch.equal(_features(root, cache, "val").features, val.features)
    assert sum(r.levelname == "WARNING" for r in caplog.records) == 1


# --------------------------------------------------------------------------- a thin image
def test_a_thin_image_is_skipped_before_it_is_decoded_or_resized(tmp_path, caplog, monkeypatch):
    """A 1×10,000 px PNG resized to the model's input would be 32×320,000 px here (256×2,560,000 at 224 px):
    it is skipped with a warning, and never reaches the resize."""
    root = _bmp_folder(tmp_path / "data", n_per_class=2)
    thin = root / "val" / CLASSES[0] / "thin.png"
    Image.fromarray(np.zeros((1, 10_000, 3), np.uint8)).save(thin)
    loaded = build_model("planted:planted_cnn")
    real, seen = loaded.preprocess.transform, []
    monkeypatch.setattr(type(loaded.preprocess), "transform", property(lambda self: lambda im: (seen.append(im.size),
                                                                                                 real(im))[1]))
    fs = extract_features(loaded, Probe(loaded.model, input_size=32), load_data(root), "val", batch_size=4,
                          progress=False)
    assert len(fs) == 6 and str(thin) not in fs.ids
    assert len(fs.skipped) == 1 and fs.skipped[0].startswith(str(thin)) and "10000×1 px" in fs.skipped[0]
    assert seen and max(max(size) for size in seen) == 32  # what was resized: the 32 px images only
    assert any("skipped image" in r.getMessage() and "thin.png" in r.getMessage() for r in caplog.records)


# --------------------------------------------------------------------------- nothing to debug: nothing written
def test_debug_of_a_class_without_mistakes_writes_nothing(tmp_path, capsys):
    root = write_folder(tmp_path / "data", n_red_apples=2)
    out = tmp_path / "out"
    rc = main(["debug", "--model", "planted:planted_cnn", "--data", str(root), "--class", "berry",
               "--eval-split", "val", "--out", str(out), "--cache-dir", str(tmp_path / "cache"), "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.count("\n") == 0 and "'berry' (0 mistakes)" in err, err
    assert not out.exists()  # no metrics.json, ranking.json or empty folder left behind


# --------------------------------------------------------------------------- a class without training images
def test_a_class_without_training_images_is_said_by_train_and_by_edit(tmp_path, capsys):
    root = write_folder(tmp_path / "data", n_red_apples=2)
    shutil.rmtree(root / "train" / "cloud")  # cloud: images in val only
    common = ["--model", "planted:planted_cnn", "--data", str(root), "--cache-dir", str(tmp_path / "cache"),
              "--no-progress"]
    assert main(["train", *common, "--head-only", "--epochs", "1", "--out", str(tmp_path / "train")]) == 0
    err = capsys.readouterr().err
    assert "1 class(es) have no training images ('cloud')" in err, err
    for method in ("rebalance", "ratio"):
        rc = main(["edit", *common, "--class", "cloud", "--neurons", "5", "--method", method,
                   "--out", str(tmp_path / method)])
        err = capsys.readouterr().err.strip()
        assert rc == 2 and err.count("\n") == 0 and "class 'cloud' has no" in err and "train" in err, err


def test_an_empty_training_checkpoint_is_one_line(tmp_path, capsys):
    root = write_folder(tmp_path / "data", n_red_apples=2)
    out = tmp_path / "out"
    out.mkdir()
    (out / "checkpoint.pt").write_bytes(b"")  # a disk that filled up, a copy that stopped
    rc = main(["train", "--model", "planted:planted_cnn", "--data", str(root), "--head-only", "--epochs", "1",
               "--out", str(out), "--cache-dir", str(tmp_path / "cache"), "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.count("\n") == 0 and "cannot read the checkpoint" in err and "--restart" in err, err


# --------------------------------------------------------------------------- cold = warm, twenty times
def _one_run(root, cache, out, junk: int) -> tuple[dict, dict]:
    """explain, then render its top neurons with masks and CRS; ``junk`` bytes held meanwhile move every later
    allocation elsewhere in memory."""
    from neuroinspect.session import Inspector
    from neuroinspect.show.visualize import visualize_ranked

    held = torch.empty(junk, dtype=torch.uint8)  # noqa: F841 - kept alive on purpose
    ins = Inspector("planted:planted_cnn", root, cache_dir=cache, batch_size=5, progress=False)
    exp = ins.explain("apple", split="val", max_steps=100)
    vis = visualize_ranked(ins, exp, 1, out, recipe="class", steps=4, size=32, batch=2, heatmaps=0, exemplars=2,
                           seed=0, progress=False)
    images = [{k: v for k, v in rec.to_dict().items() if k not in ("start_image",)} for rec in vis.images]
    return exp.to_json(), {"images": images, "pixels": sorted((p.name, p.read_bytes()) for p in out.rglob("*.png"))}


def test_cold_and_warm_runs_agree_in_a_loop_of_twenty(tmp_path):
    """Ten fresh caches, each used cold and then warm: the ranking, every score (CRS included) and every PNG are
    the same in all twenty runs, wherever their tensors land in memory."""
    root = write_folder(tmp_path / "data", n_red_apples=5)
    runs = []
    for i in range(10):
        cache = tmp_path / f"cache{i}"
        for kind in ("cold", "warm"):
            runs.append(_one_run(root, cache, tmp_path / f"out{i}{kind}", junk=4096 * i + 3 * len(runs) + 1))
    first = runs[0]
    assert first[1]["images"] and all(rec["crs"] is not None for rec in first[1]["images"])
    for i, run in enumerate(runs[1:], 1):
        assert run[0] == first[0], f"run {i}: ranking differs"
        assert run[1] == first[1], f"run {i}: visualizations differ"


def test_render_scores_depend_on_the_image_alone_not_its_batch_or_layout():
    """The final scores (and the start activation that decides how a silent image starts) of an image are the
    same whether it is scored alone or beside others, and with a channels-last classifier: batched CPU kernels
    round each row differently with the batch's size and the memory layout (a ResNet differs in the 7th digit)."""
    from types import SimpleNamespace

    import torchvision

    from neuroinspect.core.model.models import Preprocess
    from neuroinspect.core.runtime.device import DevicePolicy
    from neuroinspect.show.augment import ModelInput
    from neuroinspect.show.render import _evaluate, _own_layout

    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=3).eval()
    probe = Probe(model, input_size=32)
    model_input = ModelInput.for_classifier(Preprocess(32, 32, (0.5,) * 3, (0.25,) * 3))
    images = torch.rand(4, 3, 32, 32)

    def scores(batch, channels_last=False):
        state = SimpleNamespace(image=lambda: batch, neurons=torch.tensor([7] * len(batch)),
                                classes=torch.tensor([1] * len(batch)))
        policy = DevicePolicy("cpu", channels_last=channels_last)
        policy.place(model)
        try:
            return _own_layout(policy, probe, _evaluate, model_input, state, None, None, "cpu", False)
        finally:
            policy.release(model)

    alone = scores(images[:1].clone())
    for other in (scores(images), scores(images, channels_last=True)):
        for key in ("features", "activation", "logit", "prob"):
            assert torch.equal(other[key][:1], alone[key]), key
