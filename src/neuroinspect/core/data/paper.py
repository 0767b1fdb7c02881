"""The two datasets of the paper's shortcut experiments, in the layouts they ship in (paper Sec. IV-B, IV-C).

``waterbirds:ROOT``
    The Waterbirds folder as released (``ROOT/metadata.csv`` beside the images, or the CSV
    itself as ROOT). ``metadata.csv`` has the columns ``img_filename`` (relative to ROOT),
    ``y`` (0 landbird, 1 waterbird), ``split`` (0 train, 1 val, 2 test) and ``place``
    (0 land, 1 water). Classes: ``landbird``, ``waterbird``; groups: class × place,
    ``landbird/land``, ``landbird/water``, ``waterbird/land``, ``waterbird/water``.

``metashift:ROOT:SCENARIO[:SEED]``
    One of the five-class scenarios of Table II, built from a MetaShift copy the way the CCE
    code's scenario builder does. ROOT holds

    - ``full-candidate-subsets.pkl`` (or ``.json``): a dict from a subset name ``"dog(chair)"``
      to the image ids in that subset, as MetaShift releases it;
    - ``allImages/images/<id>.jpg``: the Visual Genome images those ids name.

    The classes are ``bear, bird, cat, dog, elephant``; a class's images are the union of its
    subsets ``"<class>(…)"``. For the scenario ``dog(chair)`` (``Dog(+chair)`` also works) the
    *shifted* class ``dog`` trains on 100 images of the subset ``dog(chair)``; its 100 val images
    and its test images are dog images outside that subset (all the remaining ones go to test,
    as in the CCE evaluation, which looks at every dog image without the attribute). Each other
    class gets 100 train, 100 val and 100 test images drawn from the class. Draws use
    ``SEED`` (default 0), so the same copy always gives the same scenario. Groups:
    ``<class>`` for the other classes and ``dog(+chair)`` / ``dog(-chair)`` for the shifted one.
    Like CCE we do not remove an image that MetaShift files under two of the five classes.

Both give records (paths on disk), so the feature cache hashes each file's bytes.
"""
from __future__ import annotations

import csv
import json
import logging
import pickle
import re
from pathlib import Path

import numpy as np

from neuroinspect.core.base.errors import NeuroInspectError
from neuroinspect.core.data.images import ImageData, Record
from neuroinspect.core.data.registry import data_source

log = logging.getLogger(__name__)

WATERBIRDS_CLASSES = ["landbird", "waterbird"]
WATERBIRDS_PLACES = ["land", "water"]
WATERBIRDS_SPLITS = {"0": "train", "1": "val", "2": "test"}

METASHIFT_CLASSES = ["bear", "bird", "cat", "dog", "elephant"]
METASHIFT_SUBSETS = "full-candidate-subsets"
METASHIFT_IMAGES = Path("allImages") / "images"
METASHIFT_TRAIN, METASHIFT_VAL, METASHIFT_TEST_OTHER = 100, 100, 100
# The scenarios of Table II, as CCE names them
PAPER_SCENARIOS = ["dog(chair)", "cat(book)", "bird(sand)", "dog(water)", "cat(keyboard)"]


# --------------------------------------------------------------------------- Waterbirds
@data_source("waterbirds")
def load_waterbirds(root: str, download: bool = False) -> ImageData:
    """``waterbirds:ROOT`` (``download`` does not apply: Waterbirds is not on torchvision)."""
    if not root:
        raise NeuroInspectError("data spec should be waterbirds:ROOT (the folder holding metadata.csv)")
    path = Path(root).expanduser()
    csv_path = path if path.suffix.lower() == ".csv" else path / "metadata.csv"
    if not csv_path.is_file():
        raise NeuroInspectError(f"no Waterbirds metadata at '{csv_path}'; waterbirds:ROOT needs ROOT/metadata.csv "
                                "(columns img_filename,y,split,place) beside the images")
    with open(csv_path, newline="", encoding="utf-8-sig") as f:  # -sig: a byte-order mark is not part of the header
        reader = csv.DictReader(f)
        fields = [c.strip() for c in reader.fieldnames or []]
        missing = [c for c in ("img_filename", "y", "split", "place") if c not in fields]
        if missing:
            raise NeuroInspectError(f"'{csv_path}' lacks the column(s) {', '.join(missing)}; Waterbirds' metadata.csv "
                                    "has img_filename,y,split,place")
        rows = [{k.strip(): (v or "").strip() for k, v in row.items() if k} for row in reader]
    groups = [f"{c}/{p}" for c in WATERBIRDS_CLASSES for p in WATERBIRDS_PLACES]
    records: dict[str, list[Record]] = {"train": [], "val": [], "test": []}
    for i, row in enumerate(rows, start=2):
        try:
            y, place, split = int(row["y"]), int(row["place"]), WATERBIRDS_SPLITS[row["split"]]
            if y not in (0, 1) or place not in (0, 1):
                raise ValueError
        except (KeyError, ValueError):
            raise NeuroInspectError(f"{csv_path}, line {i}: expected y and place in 0/1 and split in 0/1/2; "
                                    f"got y={row.get('y')!r}, place={row.get('place')!r}, split={row.get('split')!r}") from None
        records[split].append(Record(str(csv_path.parent / row["img_filename"]), y, y * 2 + place))
    if not rows:
        raise NeuroInspectError(f"'{csv_path}' lists no images")
    return ImageData(f"waterbirds:{root}", list(WATERBIRDS_CLASSES), groups, records)


# --------------------------------------------------------------------------- MetaShift
class _PlainUnpickler(pickle.Unpickler):
    """Reads dicts, lists, sets and strings only: a data file must not run code."""

    SAFE = {(m, n) for m in ("builtins", "__builtin__") for n in ("set", "frozenset", "list", "dict")}

    def find_class(self, module, name):
        if (module, name) in self.SAFE:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def read_metashift_subsets(root: Path) -> dict[str, list[str]]:
    """``{"dog(chair)": [image id, …], …}`` from ROOT/full-candidate-subsets.{pkl,json}."""
    pkl, js = root / f"{METASHIFT_SUBSETS}.pkl", root / f"{METASHIFT_SUBSETS}.json"
    try:
        if js.is_file():
            subsets = json.loads(js.read_text(encoding="utf-8"))
        elif pkl.is_file():
            with open(pkl, "rb") as f:
                subsets = _PlainUnpickler(f).load()
        else:
            raise NeuroInspectError(f"no {pkl.name} under '{root}'; metashift:ROOT:SCENARIO needs MetaShift's "
                                    f"{pkl.name} and allImages/images/ in ROOT")
    except (pickle.UnpicklingError, EOFError, ValueError) as err:
        raise NeuroInspectError(f"cannot read MetaShift subsets from '{root}': {err}") from None
    if not isinstance(subsets, dict):
        raise NeuroInspectError(f"MetaShift subsets in '{root}' should map subset names to image ids")
    return {str(k): sorted({str(i) for i in v}) for k, v in subsets.items()}


def parse_scenario(text: str) -> tuple[str, str]:
    """``"dog(chair)"`` or ``"Dog(+chair)"`` → ``("dog", "chair")``."""
    m = re.fullmatch(r"\s*([A-Za-z]+)\s*\(\s*\+?\s*([^()]+?)\s*\)\s*", text)
    if not m or m.group(1).lower() not in METASHIFT_CLASSES:
        raise NeuroInspectError(f"MetaShift scenario '{text}' should look like dog(chair): one of "
                                f"{', '.join(METASHIFT_CLASSES)} with an attribute; the paper's are {', '.join(PAPER_SCENARIOS)}")
    return m.group(1).lower(), m.group(2).lower()


def build_metashift_scenario(subsets: dict[str, list[str]], scenario: str, seed: int = 0,
                             n_train: int = METASHIFT_TRAIN, n_val: int = METASHIFT_VAL,
                             n_test_other: int = METASHIFT_TEST_OTHER) -> dict[str, dict[str, list[str]]]:
    """``{class: {split: [image id, …]}}`` for one scenario (see the module docstring)."""
    shift, attribute = parse_scenario(scenario)
    key = f"{shift}({attribute})"
    if key not in subsets:
        near = sorted(k for k in subsets if k.startswith(f"{shift}("))[:8]
        raise NeuroInspectError(f"MetaShift has no subset '{key}'; subsets of {shift}: {', '.join(near) or 'none'}")
    rng = np.random.default_rng(seed)
    out: dict[str, dict[str, list[str]]] = {}
    for cls in METASHIFT_CLASSES:
        pool = sorted({i for k, ids in subsets.items() if k.startswith(f"{cls}(") for i in ids})
        if cls == shift:
            inside = subsets[key]
            outside = sorted(set(pool) - set(inside))
            if not inside or len(outside) < 2:
                raise NeuroInspectError(f"MetaShift scenario {key}: {len(inside)} images in the subset and "
                                        f"{len(outside)} {shift} images outside it; train needs 1, val and test 2")
            train = list(rng.choice(inside, min(n_train, len(inside)), replace=False))
            rest = list(rng.permutation(outside))
            n_v = n_val if len(rest) > n_val else max(1, len(rest) // 2)
            if len(train) < n_train or n_v < n_val:
                log.warning("MetaShift %s: %d train / %d val images instead of %d / %d (too few images)",
                            key, len(train), n_v, n_train, n_val)
            out[cls] = {"train": train, "val": rest[:n_v], "test": rest[n_v:]}
        else:
            need = n_train + n_val + n_test_other
            if len(pool) < 3:
                raise NeuroInspectError(f"MetaShift has only {len(pool)} '{cls}' images; each class needs at least 3")
            drawn = list(rng.choice(pool, min(need, len(pool)), replace=False))
            if len(drawn) < need:
                log.warning("MetaShift %s: %d images instead of %d (too few images)", cls, len(drawn), need)
            a, b = _split_points(len(drawn), n_train, n_val, n_test_other)
            out[cls] = {"train": drawn[:a], "val": drawn[a:b], "test": drawn[b:]}
    return out


def _split_points(n: int, n_train: int, n_val: int, n_test: int) -> tuple[int, int]:
    """Where to cut ``n`` drawn images into train/val/test, shrinking all three alike when short."""
    total = n_train + n_val + n_test
    if n >= total:
        return n_train, n_train + n_val
    a = max(1, round(n * n_train / total))
    b = max(a + 1, round(n * (n_train + n_val) / total))
    return a, min(b, n - 1)


@data_source("metashift")
def load_metashift(rest: str, download: bool = False) -> ImageData:
    """``metashift:ROOT:SCENARIO[:SEED]``, given the part after ``metashift:`` (``download`` does not apply)."""
    # ROOT may itself contain ':' (rare); the scenario is the part with '(' and an optional seed follows it
    m = re.fullmatch(r"(.+):([^:]*\([^:]*\))(?::(\d+))?", rest)
    if not m:
        raise NeuroInspectError(f"data spec 'metashift:{rest}' should be metashift:ROOT:SCENARIO[:SEED], e.g. "
                                "metashift:/data/metashift:dog(chair)")
    root, scenario, seed = Path(m.group(1)).expanduser(), m.group(2), int(m.group(3) or 0)
    subsets = read_metashift_subsets(root)
    shift, attribute = parse_scenario(scenario)
    plan = build_metashift_scenario(subsets, scenario, seed)
    images = root / METASHIFT_IMAGES
    inside = set(subsets[f"{shift}({attribute})"])
    groups = [c if c != shift else g for c in METASHIFT_CLASSES
              for g in ((f"{shift}(+{attribute})", f"{shift}(-{attribute})") if c == shift else (c,))]
    records: dict[str, list[Record]] = {"train": [], "val": [], "test": []}
    for ci, cls in enumerate(METASHIFT_CLASSES):
        for split, ids in plan[cls].items():
            for i in ids:
                g = cls if cls != shift else f"{shift}({'+' if i in inside else '-'}{attribute})"
                records[split].append(Record(str(images / f"{i}.jpg"), ci, groups.index(g)))
    return ImageData(f"metashift:{root}:{shift}({attribute}):{seed}", list(METASHIFT_CLASSES), groups, records)
