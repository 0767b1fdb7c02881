import pytest
import torch
from torch import nn

from neuroinspect.core.base.errors import NeuroInspectError
from neuroinspect.core.model.models import build_model, load_weights, read_state_dict
from neuroinspect.core.model.probe import Probe, find_head


@pytest.mark.parametrize(
    "spec,size,head,spatial,layout",
    [
        ("torchvision:resnet18", 64, "fc", "layer4", "nchw"),
        ("torchvision:resnet50", 64, "fc", "layer4", "nchw"),
        ("torchvision:efficientnet_b0", 64, "classifier.1", "features", "nchw"),
        ("torchvision:convnext_tiny", 64, "classifier.2", "features", "nchw"),
        ("torchvision:vit_b_16", 224, "heads.head", "encoder", "tokens"),
        ("timm:resnet18", 64, "fc", "layer4", "nchw"),
        ("timm:vit_tiny_patch16_224", 224, "head", "norm", "tokens"),
        ("efficientnet-lite0", 64, "_fc", "_swish", "nchw"),
    ],
)
def test_head_and_spatial_map_found(spec, size, head, spatial, layout):
    nc = None if spec == "efficientnet-lite0" else 7
    lm = build_model(spec, num_classes=nc)
    probe = Probe(lm.model, input_size=size)
    assert (probe.head_name, probe.spatial_name, probe.spatial_layout) == (head, spatial, layout)
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        out = probe(x, spatial=True)
        logits = lm.model(x)
    assert torch.allclose(out.logits, logits)
    assert torch.allclose(probe.head(out.features), logits, atol=1e-5)
    assert out.spatial.shape[:2] == (2, probe.D) and out.spatial.shape[2] > 1
    if layout == "nchw" and spec != "torchvision:convnext_tiny":  # features are the pooled map
        assert torch.allclose(out.spatial.mean((2, 3)), out.features, atol=1e-4)
    # hooks are gone afterwards
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in lm.model.modules())


def test_gradients_flow_through_probe():
    lm = build_model("torchvision:resnet18", num_classes=3)
    probe = Probe(lm.model, input_size=64)
    x = torch.rand(1, 3, 64, 64, requires_grad=True)
    out = probe(x, spatial=True)
    (out.features[0, 3] + out.spatial[0, 3].sum()).backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


class NoLinear(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x):
        return self.conv(x).mean((2, 3))


class ScaledHead(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Conv2d(3, 4, 3)
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        return 2 * self.fc(self.body(x).mean((2, 3)))


def test_model_without_linear_head_is_a_clear_error():
    with pytest.raises(NeuroInspectError, match="no nn.Linear"):
        find_head(NoLinear(), input_size=16)
    with pytest.raises(NeuroInspectError, match="linear layers: fc"):
        find_head(ScaledHead(), input_size=16)
    with pytest.raises(NeuroInspectError, match="has no module 'nope'"):
        find_head(ScaledHead(), head="nope", input_size=16)


def test_hooks_removed_when_forward_fails():
    lm = build_model("torchvision:resnet18", num_classes=3)
    probe = Probe(lm.model, input_size=32)
    with pytest.raises(RuntimeError):
        probe(torch.randn(1, 5, 32, 32), spatial=True)  # wrong channel count
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in lm.model.modules())


def test_checkpoint_formats_and_mismatch(tmp_path):
    from safetensors.torch import save_file

    lm = build_model("torchvision:resnet18", num_classes=4)
    sd = lm.model.state_dict()
    torch.save(sd, tmp_path / "plain.pt")
    torch.save({"epoch": 3, "state_dict": {f"module.{k}": v for k, v in sd.items()}}, tmp_path / "ckpt.pth")
    save_file({k: v.contiguous() for k, v in sd.items()}, str(tmp_path / "w.safetensors"))
    for name in ("plain.pt", "ckpt.pth", "w.safetensors"):
        other = build_model("torchvision:resnet18", num_classes=4, weights=tmp_path / name)
        assert torch.equal(other.model.fc.weight, lm.model.fc.weight)
        assert other.fingerprint() == lm.fingerprint()
        assert not other.model.training
    with pytest.raises(NeuroInspectError, match=r"shape mismatch: fc.weight \(4, 512\) vs model \(10, 512\)"):
        build_model("torchvision:resnet18", num_classes=10, weights=tmp_path / "plain.pt")
    with pytest.raises(NeuroInspectError, match="missing .* keys"):
        build_model("torchvision:resnet34", num_classes=4, weights=tmp_path / "plain.pt")


def test_pickled_checkpoint_needs_explicit_permission(tmp_path):
    lm = build_model("torchvision:resnet18", num_classes=2)
    torch.save(lm.model, tmp_path / "whole_model.pt")  # a pickled module, not a state_dict
    with pytest.raises(NeuroInspectError, match="--allow-pickle"):
        read_state_dict(tmp_path / "whole_model.pt")
    sd = read_state_dict(tmp_path / "whole_model.pt", allow_pickle=True)
    fresh = build_model("torchvision:resnet18", num_classes=2)
    load_weights(fresh.model, tmp_path / "whole_model.pt", allow_pickle=True)
    assert torch.equal(fresh.model.fc.weight, sd["fc.weight"])


def test_bad_model_specs():
    with pytest.raises(NeuroInspectError, match="unknown torchvision model"):
        build_model("torchvision:resnet_nope")
    with pytest.raises(NeuroInspectError, match="not understood"):
        build_model("resnet18")
    with pytest.raises(NeuroInspectError, match="cannot import"):
        build_model("no_such_module_xyz:make")


def test_lite0_real_weights_recognise_a_cat():
    from skimage import data as skdata
    from PIL import Image

    lm = build_model("efficientnet-lite0")
    x = lm.preprocess.transform(Image.fromarray(skdata.chelsea())).unsqueeze(0)
    with torch.no_grad():
        top = lm.model(x).topk(3).indices[0].tolist()
    names = [lm.class_names[i] for i in top]
    assert any("cat" in n for n in names), names
