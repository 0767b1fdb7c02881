"""In-memory data as a first-class input, keyed by its content; an Inspector without side effects."""
import pytest
import torch
from PIL import Image

from neuroinspect.core.base.errors import NeuroInspectError
from neuroinspect.core.data.memory import from_memory
from neuroinspect.session import Inspector
from planted import CLASSES, PlantedCNN


def images(seed: int, n: int = 6) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, 32, 32), generator=g, dtype=torch.uint8), torch.arange(n) % 3


def expected_features(model: PlantedCNN, x: torch.Tensor) -> torch.Tensor:
    """What the probe must read for uint8 images that already have the model's input size (mean 0, std 1)."""
    with torch.no_grad():
        return model.pool(model.act(model.conv(x.float() / 255))).flatten(1)


class ItemDataset(torch.utils.data.Dataset):
    """A plain map-style Dataset yielding (image, label)."""

    def __init__(self, x, y):
        self.x, self.y = x, y

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return self.x[i], int(self.y[i])


def inspector(data, tmp_path, **kw):
    return Inspector(PlantedCNN(), data, cache_dir=tmp_path / "cache", progress=False, warn_chance=False, **kw)


def cached_entries(tmp_path) -> int:
    return len(list((tmp_path / "cache" / "features").glob("*/features.safetensors")))


@pytest.mark.parametrize("wrap", [lambda x, y: (x, y), lambda x, y: torch.utils.data.TensorDataset(x, y),
                                  lambda x, y: ItemDataset(x, y)], ids=["tensors", "TensorDataset", "Dataset"])
def test_two_datasets_of_equal_length_get_their_own_correct_features(tmp_path, wrap):
    model = PlantedCNN().eval()
    (xa, ya), (xb, yb) = images(0), images(1)
    fa = inspector(wrap(xa, ya), tmp_path).features("val")
    fb = inspector(wrap(xb, yb), tmp_path).features("val")
    assert cached_entries(tmp_path) == 2  # one cache entry each: the key covers the content
    torch.testing.assert_close(fa.features, expected_features(model, xa), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(fb.features, expected_features(model, xb), atol=1e-5, rtol=1e-5)
    assert fa.labels.tolist() == ya.tolist() and fa.class_names == ["class_0", "class_1", "class_2"]
    again = inspector(wrap(xa.clone(), ya.clone()), tmp_path).features("val")  # the same content: a cache hit
    assert cached_entries(tmp_path) == 2 and torch.equal(again.features, fa.features)
    changed = xa.clone()
    changed[0, 0, 0, 0] ^= 1  # one pixel, one bit
    inspector(wrap(changed, ya), tmp_path).features("val")
    assert cached_entries(tmp_path) == 3


def test_labels_and_groups_are_part_of_the_key(tmp_path):
    x, y = images(0)
    a = inspector((x, y), tmp_path).data
    assert a.content_hash("all") != inspector((x, y.flip(0)), tmp_path).data.content_hash("all")
    with_groups = inspector((x, y, torch.zeros(6, dtype=torch.long)), tmp_path).data
    assert with_groups.content_hash("all") != a.content_hash("all") and with_groups.group_names == ["group_0"]


def test_a_datasets_groups_are_named_by_its_group_names(tmp_path):
    class Grouped(ItemDataset):
        group_names = ["land", "water"]

        def __getitem__(self, i):
            return self.x[i], int(self.y[i]), i % 2

    x, y = images(0)
    fs = inspector(Grouped(x, y), tmp_path).features("val")
    assert fs.group_names == ["land", "water"] and fs.groups.tolist() == [0, 1, 0, 1, 0, 1]


def test_pil_images_with_string_labels_and_a_dict_of_splits(tmp_path):
    x, y = images(0)
    pil = [Image.fromarray(im.permute(1, 2, 0).numpy()) for im in x]
    names = [CLASSES[int(v)] for v in y]
    ins = inspector({"train": (pil, names), "val": (x, y)}, tmp_path)
    assert ins.data.splits == ["train", "val"] and ins.data.spec == "memory:Tensor+list"
    ftrain, fval = ins.features("train"), ins.features("val")
    torch.testing.assert_close(ftrain.features, fval.features)  # the same pixels, given two ways
    assert ftrain.labels.tolist() == y.tolist()
    with pytest.raises(NeuroInspectError, match="no split 'test'"):
        ins.features("test")


def test_a_random_dataset_is_not_cached_and_says_why(tmp_path, caplog):
    class Noisy(ItemDataset):
        def __getitem__(self, i):
            return torch.rand(3, 32, 32), 0

    x, y = images(0)
    fs = inspector(Noisy(x, y), tmp_path).features("val")
    assert len(fs) == 6 and cached_entries(tmp_path) == 0
    assert "not cached" in caplog.text and "random transforms" in caplog.text


@pytest.mark.parametrize("data,match", [
    ((torch.rand(4, 3, 8, 8) * 2 - 1, torch.zeros(4, dtype=torch.long)), r"values in \[-"),
    ((torch.rand(4, 5, 8, 8), torch.zeros(4, dtype=torch.long)), "C = 1 or 3"),
    ((torch.rand(4, 3, 8, 8), torch.zeros(3, dtype=torch.long)), "4 images but 3 labels"),
    ((torch.rand(4, 3, 8, 8), torch.tensor([0, 1, 2, 7])), r"labels \[7\] but there are 3 classes"),
    ((torch.rand(4, 3, 8, 8), ["apple", "pear", "apple", "apple"]), "'pear' that name no class"),
    ((torch.rand(4, 3, 8, 8),), "not understood"),
    ({}, "holds no split"),
])
def test_bad_in_memory_data_is_one_line(tmp_path, data, match):
    with pytest.raises(NeuroInspectError, match=match) as err:
        inspector(data, tmp_path, class_names=CLASSES)
    assert "\n" not in str(err.value)


def test_class_names_without_a_model():
    x, y = images(0)
    assert from_memory((x, y)).class_names == ["class_0", "class_1", "class_2"]
    assert from_memory((x, y), num_classes=5).class_names[-1] == "class_4"
    assert from_memory((x, ["b", "a", "b", "a", "b", "a"])).class_names == ["a", "b"]


# ---------------------------------------------------------------------------- no side effects
def test_the_constructor_leaves_the_callers_module_alone(tmp_path, monkeypatch):
    from neuroinspect.core.runtime import distributed

    started = []
    monkeypatch.setattr(distributed, "init", lambda device=None: started.append(device) or False)
    model = PlantedCNN().train()  # in training mode: the Inspector must not switch it
    before = {k: v.clone() for k, v in model.state_dict().items()}
    ins = inspector(images(0), tmp_path)
    assert started == []  # no process group from the constructor
    assert model.training and ins.loaded.model is not model and not ins.loaded.model.training
    ins.features("val")
    assert started and model.training  # the first stage joins the other processes (a no-op without torchrun)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    ready = PlantedCNN().eval()  # already where the Inspector runs it, in eval mode: used as it is, no copy
    assert Inspector(ready, images(0), progress=False, cache_dir=tmp_path / "c").loaded.model is ready


def test_a_plain_module_brings_its_preprocessing_and_class_names(tmp_path):
    model = PlantedCNN().eval()
    model.neuroinspect_class_names = ["a", "b", "c"]
    ins = Inspector(model, images(0), progress=False, cache_dir=tmp_path / "c")
    assert ins.loaded.preprocess.input_size == 32 and ins.class_names == ["a", "b", "c"]
    assert ins.data.class_names == ["a", "b", "c"]
    bare = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(3, 2))
    assert Inspector(bare, progress=False).loaded.preprocess.input_size == 224  # the ImageNet default


def test_a_dataset_object_without_a_root_folder_is_not_keyed_by_its_length(tmp_path):
    from neuroinspect.core.base.errors import NeuroInspectError as Error
    from neuroinspect.core.data.images import ImageData

    class Rootless(ItemDataset):
        root = ""

    x, y = images(0)
    data = ImageData("custom", list(CLASSES), [], {}, {"all": Rootless(x, y)})
    assert "no root folder" in data.cache_refusal("all")
    with pytest.raises(Error, match="no root folder"):  # never a key from the type and length alone
        data.content_hash("all")
    ins = Inspector(PlantedCNN(), data, cache_dir=tmp_path / "cache", progress=False, warn_chance=False)
    model = PlantedCNN().eval()
    torch.testing.assert_close(ins.features("val").features, expected_features(model, x), atol=1e-5, rtol=1e-5)
    assert cached_entries(tmp_path) == 0  # extracted, not cached
