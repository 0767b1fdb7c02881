"""The data-source registry: a source registered here (``@data_source``) opens from the library and from the
command line with no other edit; the built-in specs resolve as before; the registry's names are torch-free."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from neuroinspect.cli import main
from neuroinspect.core.base.errors import NeuroInspectError
from neuroinspect.core.data.load import load_data
from neuroinspect.core.data.memory import from_memory
from neuroinspect.core.data.registry import DATA_SOURCES, data_source, find_source, spec_help
from planted import CLASSES, make_image

M = ["--model", "planted:planted_cnn"]


@pytest.fixture
def toy_source():
    @data_source("toy", "toy:N", "N planted images per class in train and val")
    def _toy(rest: str, download: bool):
        rng, n = np.random.default_rng(0), int(rest)
        labels = [c for c in CLASSES for _ in range(n)]
        data = from_memory({split: ([make_image(c, rng) for c in labels], labels) for split in ("train", "val")},
                           class_names=list(CLASSES))
        data.spec = f"toy:{rest}"
        return data

    yield
    del DATA_SOURCES["toy"]


def test_a_registered_data_source_opens_from_the_library(toy_source):
    data = load_data("toy:2")
    assert data.class_names == list(CLASSES) and data.splits == ["train", "val"] and data.size("val") == 2 * len(CLASSES)
    assert load_data("toy:2", class_names=list(reversed(CLASSES))).class_names == list(reversed(CLASSES))
    assert "toy:N (N planted images" in spec_help()


def test_a_registered_data_source_works_from_the_command_line(toy_source, tmp_path, capsys):
    assert main(["classes", "--data", "toy:2"]) == 0
    listing = capsys.readouterr().out
    assert all(c in listing for c in CLASSES) and "splits: train: 6, val: 6" in listing
    out = tmp_path / "out"
    assert main(["explain", *M, "--data", "toy:3", "--class", "apple", "--out", str(out), "--no-progress",
                 "--cache-dir", str(tmp_path / "cache")]) == 0
    assert (out / "ranking.json").is_file()
    try:
        code = main(["explain", "--help"])
    except SystemExit as done:
        code = done.code
    assert code == 0 and "toy:N" in capsys.readouterr().out


def test_built_in_specs_resolve_to_their_sources(tmp_path):
    (tmp_path / "m.csv").write_text("path,label\n")
    (tmp_path / "notes.txt").write_text("")
    assert find_source("waterbirds:/data/wb")[0].name == "waterbirds"
    assert find_source("metashift:/d:dog(chair)") == (DATA_SOURCES["metashift"], "/d:dog(chair)")
    assert find_source("torchvision:Food101:/d") == (DATA_SOURCES["torchvision"], "Food101:/d")
    assert find_source(str(tmp_path))[0].name == "folder"
    assert find_source(str(tmp_path / "m.csv"))[0].name == "csv"
    with pytest.raises(NeuroInspectError, match=r"is not a \.csv manifest"):
        find_source(str(tmp_path / "notes.txt"))
    with pytest.raises(NeuroInspectError, match="does not exist; give ROOT .*torchvision:NAME:ROOT.*metashift:") as err:
        find_source(str(tmp_path / "missing"))
    assert "\n" not in str(err.value)
    with pytest.raises(NeuroInspectError, match="should be torchvision:NAME:ROOT"):
        load_data("torchvision:Food101")
    assert all(s.load is not None for s in DATA_SOURCES.values())  # load.py imported every built-in loader


def test_the_registry_and_the_data_help_do_not_import_torch():
    code = ("import sys; from neuroinspect.core.data.registry import spec_help; h = spec_help(); "
            "print('torch' in sys.modules, 'waterbirds:ROOT' in h, 'in memory' in h)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "True", "False"]


def test_a_new_source_needs_its_usage():
    with pytest.raises(ValueError, match="give its usage"):
        data_source("nameless")
