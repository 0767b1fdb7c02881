import struct

import numpy as np
import pytest
import torch

from neuroinspect.core.base.errors import NeuroInspectError
from neuroinspect.core.data.load import load_data


def _write_idx(path, array: np.ndarray) -> None:
    dims = array.shape
    header = struct.pack(">HBB", 0, 0x08, len(dims)) + b"".join(struct.pack(">I", d) for d in dims)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def test_torchvision_dataset_from_a_small_fake_folder(tmp_path):
    raw = tmp_path / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 6), ("t10k", 4)):
        _write_idx(raw / f"{prefix}-images-idx3-ubyte", rng.integers(0, 255, (n, 28, 28)))
        _write_idx(raw / f"{prefix}-labels-idx1-ubyte", np.arange(n) % 10)
    data = load_data(f"torchvision:FashionMNIST:{tmp_path}")
    assert data.splits == ["train", "test"]
    assert data.class_names[0] == "T-shirt/top" and len(data.class_names) == 10
    ds = data.dataset("test", lambda im: torch.tensor(np.array(im)))
    x, label, group, index, error = ds[3]
    assert error is None and x.shape == (28, 28, 3) and label == 3 and group == -1
    assert data.size("train") == 6
    before = data.listing_hash("test")
    (raw / "t10k-labels-idx1-ubyte").write_bytes((raw / "t10k-labels-idx1-ubyte").read_bytes()[:-1] + b"\x09")
    assert load_data(f"torchvision:FashionMNIST:{tmp_path}").listing_hash("test") != before


def test_torchvision_dataset_missing_says_how_to_download(tmp_path):
    with pytest.raises(NeuroInspectError, match="pass --download"):
        load_data(f"torchvision:FashionMNIST:{tmp_path}")
    with pytest.raises(NeuroInspectError, match="no dataset 'NoSuchSet'"):
        load_data(f"torchvision:NoSuchSet:{tmp_path}")


def test_manifest_needs_path_and_label(tmp_path):
    bad = tmp_path / "list.csv"
    bad.write_text("file,class\na.png,cat\n")
    with pytest.raises(NeuroInspectError, match="path,label"):
        load_data(bad)
    empty = tmp_path / "empty.csv"
    empty.write_text("path,label,split\n")
    with pytest.raises(NeuroInspectError, match="lists no images"):
        load_data(empty)


def test_flat_folder_is_one_split_used_for_any_split_name(tmp_path):
    for cls in ("b", "a"):
        (tmp_path / cls).mkdir()
        (tmp_path / cls / "x.png").write_bytes(b"")
    data = load_data(tmp_path)
    assert data.class_names == ["a", "b"] and data.splits == ["all"]
    assert data.resolve_split("val") == "all"
