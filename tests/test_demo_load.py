"""``neuroinspect.demo.load``: a finished demo run's Inspector; ``FixConfig(patience=None)``: every epoch."""
import pytest
import torch

import shortcut
from neuroinspect.core.base.errors import NeuroInspectError
from neuroinspect.core.base.records import RunInfo
from neuroinspect.demo import load
from neuroinspect.fix.compare import fix_head
from neuroinspect.fix.config import FixConfig
from neuroinspect.fix.edit import save_edited_model
from planted import CLASSES, planted_cnn, write_folder


def demo_like_run(tmp_path):
    """A run folder as the demo leaves it: run.json naming the manifest and the model, and the trained model."""
    root = write_folder(tmp_path / "data", n_per_class=2, n_red_apples=1)
    manifest = tmp_path / "list.csv"
    rows = [f"{p.as_posix()},{p.parent.name},{p.parent.parent.name}" for p in sorted(root.rglob("*.png"))]
    manifest.write_text("path,label,split\n" + "\n".join(rows) + "\n")
    model = planted_cnn()
    W = torch.randn(3, 16, generator=torch.Generator().manual_seed(1))
    run = tmp_path / "run"
    save_edited_model(model, "fc", W, torch.zeros(3), run / "model.safetensors")
    RunInfo.from_dict({"command": "demo", "config": {"model": "planted:planted_cnn"}, "data": str(manifest),
                       "model_file": "model.safetensors"}).write(run / RunInfo.FILE)
    return run, W


def test_load_gives_the_demo_runs_model_on_its_data(tmp_path):
    run, W = demo_like_run(tmp_path)
    ins = load(run, cache_dir=tmp_path / "cache", progress=False)
    assert ins.class_names == CLASSES and ins.data.splits == ["train", "val"]
    assert torch.equal(ins.probe.weight.detach(), W)  # the trained head, not a fresh one
    assert len(ins.features("val")) == 7


def test_load_says_what_is_missing(tmp_path):
    with pytest.raises(NeuroInspectError, match="holds no run.json"):
        load(tmp_path)
    run, _ = demo_like_run(tmp_path)
    info = RunInfo.read(run / RunInfo.FILE)
    RunInfo.from_dict({**info.to_dict(), "command": "debug"}).write(run / RunInfo.FILE)
    with pytest.raises(NeuroInspectError, match="not a demo run"):
        load(run)
    RunInfo.from_dict({**info.to_dict(), "data": str(tmp_path / "gone.csv")}).write(run / RunInfo.FILE)
    with pytest.raises(NeuroInspectError, match="benchmark .* is gone"):
        load(run)


def test_patience_none_is_valid_and_trains_every_epoch():
    assert FixConfig(method="erm", patience=None).validate().patience is None
    with pytest.raises(NeuroInspectError, match="--patience"):
        FixConfig(patience=-1).validate()
    S = shortcut.splits(0)
    W, b = shortcut.erm_head(S["train"], steps=50)
    res = fix_head(W, b, S["train"], S["val"], {shortcut.SPURIOUS: []}, method="erm", patience=None, epochs=3, lr=1e-2)
    assert res.epochs_run == 3 and not res.stopped_early
