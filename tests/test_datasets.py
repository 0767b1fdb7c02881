"""The paper's dataset layouts as data specs, on tiny fake copies of each."""
import csv
import pickle

import numpy as np
import pytest

from neuroinspect.core.base.errors import NeuroInspectError
from neuroinspect.core.data.load import load_data
from neuroinspect.core.data.paper import build_metashift_scenario, parse_scenario, read_metashift_subsets
from neuroinspect.synthetic.fakedata import make_flowers102, make_food101, make_metashift, make_waterbirds


def _counts(records):
    out = {}
    for r in records:
        out[r.label] = out.get(r.label, 0) + 1
    return out


def test_waterbirds_classes_splits_and_groups(tmp_path):
    root = make_waterbirds(tmp_path / "wb")
    data = load_data(f"waterbirds:{root}")
    assert data.class_names == ["landbird", "waterbird"]
    assert data.group_names == ["landbird/land", "landbird/water", "waterbird/land", "waterbird/water"]
    assert data.splits == ["train", "val", "test"]
    assert [data.size(s) for s in ("train", "val", "test")] == [10, 8, 8]
    rows = list(csv.DictReader(open(root / "metadata.csv")))
    by_path = {str(root / r["img_filename"]): r for r in rows}
    for split in ("train", "val", "test"):
        for rec in data.records[split]:
            row = by_path[rec.path]
            assert rec.label == int(row["y"]) and rec.group == 2 * int(row["y"]) + int(row["place"])
            assert {"0": "train", "1": "val", "2": "test"}[row["split"]] == split
    train_groups = [r.group for r in data.records["train"]]
    assert train_groups.count(0) == 4 and train_groups.count(1) == 1  # land birds mostly on land
    # the metadata.csv path works as ROOT too, and every image opens
    same = load_data(f"waterbirds:{root / 'metadata.csv'}")
    assert same.ids("test") == data.ids("test")
    x, label, group, _, err = data.dataset("val", None)[0]
    assert err is None and x.size == (32, 32)


def test_waterbirds_bad_metadata_is_one_clear_error(tmp_path):
    with pytest.raises(NeuroInspectError, match="metadata.csv"):
        load_data(f"waterbirds:{tmp_path}")
    (tmp_path / "metadata.csv").write_text("img_filename,y,split\na.jpg,0,0\n")
    with pytest.raises(NeuroInspectError, match="lacks the column.*place"):
        load_data(f"waterbirds:{tmp_path}")
    (tmp_path / "metadata.csv").write_text("img_filename,y,split,place\na.jpg,0,5,0\n")
    with pytest.raises(NeuroInspectError, match="line 2"):
        load_data(f"waterbirds:{tmp_path}")


def test_metashift_scenario_follows_the_cce_builder(tmp_path):
    root = make_metashift(tmp_path / "ms", per_subset=4)
    data = load_data(f"metashift:{root}:Dog(+chair)")
    assert data.class_names == ["bear", "bird", "cat", "dog", "elephant"]
    assert "dog(+chair)" in data.group_names and "dog(-chair)" in data.group_names
    subsets = read_metashift_subsets(root)
    chair = {str(root / "allImages" / "images" / f"{i}.jpg") for i in subsets["dog(chair)"]}
    dog = data.class_index("dog")
    train_dogs = [r for r in data.records["train"] if r.label == dog]
    assert train_dogs and all(r.path in chair for r in train_dogs)  # every training dog sits by a chair
    for split in ("val", "test"):
        dogs = [r for r in data.records[split] if r.label == dog]
        assert dogs and not any(r.path in chair for r in dogs)  # and no val/test dog does
        assert all(data.group_names[r.group] == "dog(-chair)" for r in dogs)
    # splits are disjoint within each class, and every class appears in every split
    for c in range(5):
        seen = [r.path for s in data.splits for r in data.records[s] if r.label == c]
        assert len(seen) == len(set(seen))
        assert all(_counts(data.records[s]).get(c) for s in data.splits)
    # the same copy and seed give the same scenario; another seed another draw
    assert load_data(f"metashift:{root}:dog(chair)").ids("train") == data.ids("train")
    assert load_data(f"metashift:{root}:dog(chair):1").ids("train") != data.ids("train")


def test_metashift_full_size_counts_and_json_subsets(tmp_path):
    make_metashift(tmp_path, per_subset=40, fmt="json")  # 240 images per class, 40 per subset
    plan = build_metashift_scenario(read_metashift_subsets(tmp_path), "cat(keyboard)")
    assert len(plan["cat"]["train"]) == 40  # the whole subset (fewer than 100)
    assert len(plan["cat"]["val"]) == 100 and len(plan["cat"]["test"]) == 200 - 100
    for cls in ("bear", "bird", "dog", "elephant"):
        # 240 images where 300 are wanted: train/val/test shrink alike
        assert [len(plan[cls][s]) for s in ("train", "val", "test")] == [80, 80, 80]
    assert parse_scenario(" Bird(+sand) ") == ("bird", "sand")


def test_metashift_errors(tmp_path):
    with pytest.raises(NeuroInspectError, match="full-candidate-subsets.pkl"):
        load_data(f"metashift:{tmp_path}:dog(chair)")
    root = make_metashift(tmp_path / "ms", per_subset=2)
    with pytest.raises(NeuroInspectError, match="no subset 'dog\\(piano\\)'"):
        load_data(f"metashift:{root}:dog(piano)")
    with pytest.raises(NeuroInspectError, match="one of bear"):
        load_data(f"metashift:{root}:zebra(grass)")
    with pytest.raises(NeuroInspectError, match="metashift:ROOT:SCENARIO"):
        load_data(f"metashift:{root}")

    class Evil:
        def __reduce__(self):
            return (print, ("owned",))

    (root / "full-candidate-subsets.pkl").write_bytes(pickle.dumps({"dog(chair)": [Evil()]}))
    with pytest.raises(NeuroInspectError, match="refusing to load builtins.print"):
        load_data(f"metashift:{root}:dog(chair)")


def test_flowers102_official_splits(tmp_path):
    make_flowers102(tmp_path, per_split=(2, 1, 3))
    data = load_data(f"torchvision:Flowers102:{tmp_path}")
    assert len(data.class_names) == 102 and data.splits == ["train", "val", "test"]
    assert [data.size(s) for s in ("train", "val", "test")] == [204, 102, 306]
    assert _counts(data.records["train"]) == {c: 2 for c in range(102)}
    # the 1-based labels of imagelabels.mat become 0-based, matching torchvision's own reader
    first = data.records["val"][0]
    assert first.label == 0 and first.path.endswith("image_00003.jpg")
    x, label, *_ = data.dataset("test", None)[5]
    assert label == 1 and x.size == (16, 16)


def test_flowers102_fake_fails_torchvision_checksums_but_reads_here(tmp_path):
    """torchvision's own class checks the .mat files' MD5, so it refuses a fake copy: say so, read ours."""
    from torchvision.datasets import Flowers102

    make_flowers102(tmp_path)
    with pytest.raises(RuntimeError):
        Flowers102(str(tmp_path), split="train")
    assert load_data(f"torchvision:Flowers102:{tmp_path}").class_names[:2] == list(Flowers102.classes[:2])


def test_food101_val_is_15_percent_of_train_per_class(tmp_path):
    from torchvision.datasets import Food101

    make_food101(tmp_path, classes=4, train_per_class=20, test_per_class=3)
    data = load_data(f"torchvision:Food101:{tmp_path}")
    tv_train, tv_test = Food101(str(tmp_path), split="train"), Food101(str(tmp_path), split="test")
    assert data.class_names == tv_train.classes
    assert _counts(data.records["val"]) == {c: 3 for c in range(4)}  # 15 % of 20
    assert _counts(data.records["train"]) == {c: 17 for c in range(4)}
    ours = {r.path: r.label for s in ("train", "val") for r in data.records[s]}
    assert ours == {str(p): int(y) for p, y in zip(tv_train._image_files, tv_train._labels)}
    assert {r.path: r.label for r in data.records["test"]} == {str(p): int(y) for p, y in zip(tv_test._image_files, tv_test._labels)}
    assert not set(data.ids("train")) & set(data.ids("val"))
    assert load_data(f"torchvision:Food101:{tmp_path}").ids("val") == data.ids("val")  # a fixed draw


def test_torchvision_layouts_missing_say_how_to_download(tmp_path):
    for name in ("Flowers102", "Food101"):
        with pytest.raises(NeuroInspectError, match="pass --download"):
            load_data(f"torchvision:{name}:{tmp_path}")


def test_fake_images_are_distinct_per_class(tmp_path):
    root = make_waterbirds(tmp_path)
    data = load_data(f"waterbirds:{root}")
    a = np.asarray(data.dataset("train", None)[0][0], dtype=float)
    b = np.asarray(data.dataset("train", None)[len(data.records["train"]) - 1][0], dtype=float)
    assert np.abs(a - b).mean() > 10


def test_a_folder_named_like_a_spec_is_still_a_folder(tmp_path, monkeypatch):
    (tmp_path / "waterbirds" / "a").mkdir(parents=True)
    (tmp_path / "waterbirds" / "a" / "x.png").write_bytes(b"")
    monkeypatch.chdir(tmp_path)
    assert load_data("waterbirds").class_names == ["a"]
