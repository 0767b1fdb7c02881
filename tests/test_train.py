"""``train``: linear probe and fine-tuning on tiny fakes, resumable checkpoints, reloadable weights."""
import json

import pytest
import torch

from neuroinspect.cli import main
from neuroinspect.core.base.errors import NeuroInspectError
from neuroinspect.core.base.records import TrainRecord
from neuroinspect.core.model.models import build_model
from neuroinspect.session import Inspector
from neuroinspect.synthetic.fakedata import make_food101, make_waterbirds
from neuroinspect.train import TrainConfig, train_classifier

TINY = "neuroinspect.synthetic.fakedata:tiny_cnn"


def test_head_only_probe_learns_and_reloads_with_weights(tmp_path):
    root = make_waterbirds(tmp_path / "wb")
    out = tmp_path / "run"
    cfg = TrainConfig(epochs=15, lr=0.05, batch_size=4, head_only=True)
    res = train_classifier(TINY, f"waterbirds:{root}", out, cfg, progress=False)
    losses = [r["train_loss"] for r in res.history]
    assert len(losses) == 15 and losses[-1] < losses[0]
    assert res.best_epoch == max(range(1, 16), key=lambda e: (res.history[e - 1]["val_metric"], -e))
    record = json.loads((out / "train.json").read_text())
    assert record["best_epoch"] == res.best_epoch and record["reload"]["num_classes"] == 2
    # train.json is a TrainRecord; its metrics name the worst class, as metrics.json does, beside its accuracy
    saved = TrainRecord.read(out / "train.json")
    assert saved.test.worst_class in saved.classes and saved.test.worst_class_acc == res.test_metrics.worst_class_acc
    assert saved.test.worst_class_acc == min(saved.test.per_class.values())
    # only the head moved: the backbone equals a freshly built (same seed) model's
    torch.manual_seed(0)
    fresh = build_model(TINY).model.state_dict()
    trained = build_model(TINY, weights=out / "model.safetensors", num_classes=2).model.state_dict()
    assert all(torch.equal(fresh[k], trained[k]) for k in fresh if not k.startswith("fc."))
    assert not torch.equal(fresh["fc.weight"], trained["fc.weight"])
    # the other commands read the weights, and see the accuracy train reported
    ins = Inspector(TINY, f"waterbirds:{root}", weights=out / "model.safetensors", num_classes=2, progress=False)
    assert ins.metrics("test").accuracy == pytest.approx(res.test_metrics.accuracy)
    assert ins.metrics("val").accuracy == pytest.approx(res.val_metrics.accuracy)


@pytest.mark.slow
def test_finetune_resumes_exactly_after_an_interruption(tmp_path):
    root = make_food101(tmp_path / "food", classes=3, train_per_class=7, test_per_class=2)
    spec = f"torchvision:Food101:{root}"
    cfg = TrainConfig(epochs=3, lr=0.01, batch_size=8)
    straight = train_classifier(TINY, spec, tmp_path / "a", cfg, progress=False)
    assert [r["epoch"] for r in straight.history] == [1, 2, 3]

    def stop_after_first(record):
        if record["epoch"] == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_classifier(TINY, spec, tmp_path / "b", cfg, progress=False, on_epoch=stop_after_first)
    assert (tmp_path / "b" / "checkpoint.pt").is_file()
    resumed = train_classifier(TINY, spec, tmp_path / "b", cfg, progress=False)
    assert resumed.resumed_from == 1 and len(resumed.history) == 3
    a = build_model(TINY, weights=tmp_path / "a" / "model.safetensors", num_classes=3).model.state_dict()
    b = build_model(TINY, weights=tmp_path / "b" / "model.safetensors", num_classes=3).model.state_dict()
    assert all(torch.allclose(a[k].float(), b[k].float(), atol=1e-6) for k in a)
    assert resumed.test_metrics == pytest.approx(straight.test_metrics)
    # the final scores went through the feature cache: the other commands read them from there
    ins = Inspector(TINY, spec, weights=tmp_path / "b" / "model.safetensors", num_classes=3, progress=False)
    before = set((tmp_path / "cache" / "features").iterdir())
    assert ins.metrics("test").accuracy == pytest.approx(resumed.test_metrics.accuracy)
    assert set((tmp_path / "cache" / "features").iterdir()) == before
    # other settings in the same folder are refused, not silently mixed
    with pytest.raises(NeuroInspectError, match="other settings \\(lr\\)"):
        train_classifier(TINY, spec, tmp_path / "b", TrainConfig(epochs=3, lr=0.02, batch_size=8), progress=False)


def test_train_command_and_its_errors(tmp_path, capsys):
    root = make_waterbirds(tmp_path / "wb")
    out = tmp_path / "run"
    args = ["train", "--model", TINY, "--data", f"waterbirds:{root}", "--head-only", "--epochs", "2", "--batch", "8",
            "--out", str(out), "--no-progress"]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "epoch   2/2" in text and f"--weights {out / 'model.safetensors'} --num-classes 2" in text
    assert json.loads((out / "run.json").read_text())["command"] == "train"
    assert main(args) == 0  # all epochs done: nothing retrained, same weights
    assert "resumed after epoch 2" in capsys.readouterr().out
    assert main([*args[:-3], "--lr", "0.1", "--out", str(out), "--no-progress"]) == 2
    assert "pass --restart" in capsys.readouterr().err
    assert main([*args[:-3], "--lr", "0.1", "--out", str(out), "--no-progress", "--restart"]) == 0
    assert main(["train", "--model", TINY, "--data", str(tmp_path / "nope"), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "does not exist" in err
    assert main(["explain", "--model", TINY, "--weights", str(out / "model.safetensors"), "--num-classes", "2",
                 "--data", f"waterbirds:{root}", "--class", "waterbird", "--out", str(tmp_path / "ex"),
                 "--no-progress"]) == 0


def test_init_weights_load_before_the_head_is_resized(tmp_path):
    """Pretrained weights with their own head (say ImageNet's 1000 classes) seed the backbone."""
    from safetensors.torch import save_file

    from neuroinspect.synthetic.fakedata import tiny_cnn

    torch.manual_seed(123)
    pretrained = tiny_cnn(num_classes=7).state_dict()
    save_file({k: v.contiguous() for k, v in pretrained.items()}, str(tmp_path / "pre.safetensors"))
    root = make_food101(tmp_path / "food", classes=3, train_per_class=7, test_per_class=1)
    res = train_classifier(TINY, f"torchvision:Food101:{root}", tmp_path / "run", TrainConfig(epochs=1, batch_size=8, head_only=True),
                           init_weights=tmp_path / "pre.safetensors", progress=False)
    state = build_model(TINY, weights=res.weights, num_classes=3).model.state_dict()
    assert state["fc.weight"].shape == (3, 32)
    assert all(torch.equal(state[k], pretrained[k]) for k in pretrained if not k.startswith("fc."))
    with pytest.raises(NeuroInspectError, match="worst-group needs group labels"):
        train_classifier(TINY, f"torchvision:Food101:{root}", tmp_path / "r2", TrainConfig(select_by="worst-group"),
                         progress=False)


def _global_rng_states():
    import random

    import numpy as np

    return torch.get_rng_state(), random.getstate(), np.random.get_state()[1].copy()


def test_training_and_the_demo_head_leave_the_callers_random_state_alone(tmp_path):
    """No hidden global seeding: the caller's torch, Python and NumPy generators are where they were."""
    from neuroinspect.demo import fit_linear_head
    from neuroinspect.core.model.featureset import FeatureSet

    root = make_waterbirds(tmp_path / "wb")
    torch.manual_seed(1234)
    torch.rand(3)  # somewhere in the middle of the caller's stream
    before = _global_rng_states()
    train_classifier(TINY, f"waterbirds:{root}", tmp_path / "out", TrainConfig(epochs=2, batch_size=4, head_only=True),
                     progress=False)
    g = torch.Generator().manual_seed(0)
    fs = FeatureSet(features=torch.randn(12, 5, generator=g), logits=torch.zeros(12, 3), labels=torch.arange(12) % 3,
                    groups=torch.full((12,), -1), ids=[str(i) for i in range(12)], split="train",
                    class_names=["a", "b", "c"], group_names=[])
    fit_linear_head(fs, 3, epochs=5, seed=3)
    after = _global_rng_states()
    assert torch.equal(before[0], after[0]) and before[1] == after[1] and (before[2] == after[2]).all()
