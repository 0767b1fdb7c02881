"""Every bad input gets one line on stderr, exit code 2, and writes nothing.

The table ``CASES`` is the list of bad inputs tried; ``docs/bad-inputs.md`` shows each one's
answer. Check them with ``pytest tests/test_bad_inputs.py``; print the table with
``python tests/test_bad_inputs.py`` (run from the repository root).
"""
import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
from neuroinspect.cli import main  # noqa: E402
from planted import write_folder  # noqa: E402

M = ["--model", "planted:planted_cnn"]
IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


def _explain(*extra):
    return ["explain", *M, "--data", "{data}", "--class", "apple", "--out", "{out}", "--cache-dir", "{cache}",
            "--no-progress", *extra]


def _edit(*extra):
    return ["edit", *M, "--data", "{data}", "--class", "apple", "--neurons", "5", "--out", "{out}",
            "--cache-dir", "{cache}", "--no-progress", *extra]


def _vis(*extra):
    return ["visualize", *M, "--neurons", "5", "--clip", "none", "--out", "{out}", "--no-progress", *extra]


def _compare(*extra):
    return ["compare", *M, "--data", "{data}", "--class", "apple", "--neurons", "5", "--methods", "ablate",
            "--out", "{out}", "--cache-dir", "{cache}", "--no-progress", *extra]


def _train(*extra):
    return ["train", *M, "--data", "{data}", "--head-only", "--epochs", "1", "--out", "{out}", "--cache-dir", "{cache}",
            "--no-progress", *extra]


# (what is wrong, command line, what the one line must say); {data} {out} {cache} {file} {ro} are filled in
CASES = [
    ("--batch-size 0", _explain("--batch-size", "0"), "--batch-size: must be a positive integer"),
    ("--batch-size -1", _explain("--batch-size", "-1"), "--batch-size: must be a positive integer"),
    ("--top-k -3", _explain("--top-k", "-3"), "--top-k: must be a positive integer"),
    ("--top-k 0", _explain("--top-k", "0"), "--top-k: must be a positive integer"),
    ("--max-steps 0", _explain("--max-steps", "0"), "--max-steps: must be a positive integer"),
    ("--max-steps -5", _explain("--max-steps", "-5"), "--max-steps: must be a positive integer"),
    ("--min-ratio 150", _explain("--min-ratio", "150"), "--min-ratio: must be a percentage"),
    ("--chunk-size 0", _explain("--chunk-size", "0"), "--chunk-size: must be a positive integer"),
    ("--batch-size abc", _explain("--batch-size", "abc"), "expected a positive integer, got 'abc'"),
    ("--exemplars 0", _vis("--exemplars", "0"), "--exemplars: must be a positive integer"),
    ("--exemplars -1", _vis("--exemplars", "-1"), "--exemplars: must be a positive integer"),
    ("--steps 0 (visualize)", _vis("--steps", "0"), "--steps: must be a positive integer"),
    ("--train-batch-size 0", _edit("--train-batch-size", "0"), "--train-batch-size: must be a positive integer"),
    ("--lr -1", _edit("--lr", "-1"), "--lr: must be a positive number"),
    ("--lam -1", _edit("--lam", "-1"), "--lam: must be a positive number"),
    ("--lam nan", _edit("--lam", "nan"), "not a finite number"),
    ("--epochs 0", _edit("--epochs", "0"), "--epochs: must be a positive integer"),
    ("a factory that raises", ["explain", "--model", "planted:broken_factory", "--data", "{data}", "--class", "apple",
                               "--out", "{out}", "--no-progress"], "raised RuntimeError: cannot reach the weights server"),
    ("a model that outputs NaN", ["explain", "--model", "planted:nan_cnn", "--data", "{data}", "--class", "apple",
                                  "--out", "{out}", "--no-progress"], "outputs NaN/inf"),
    ("--out is a file", _explain("--out", "{file}"), "is a file, not a folder"),
    ("--out below a file", _explain("--out", "{file}/sub"), "cannot be created"),
    ("--out read-only", _explain("--out", "{ro}/out"), "is not writable"),
    ("--cache-dir is a file", _explain("--cache-dir", "{file}"), "is a file, not a folder"),
    ("--cache-dir read-only", _explain("--cache-dir", "{ro}/cache"), "not writable"),
    ("--class-names missing a class", _explain("--class-names", "apple,berry"), "does not name the data's class(es) 'cloud'"),
    ("--class-names repeats a class", _explain("--class-names", "apple,berry,cloud,apple"), "more than once"),
    ("unknown class", ["explain", *M, "--data", "{data}", "--class", "appel", "--out", "{out}", "--no-progress"],
     "unknown class 'appel'; did you mean 'apple'"),
    # --out, --cache-dir and the data: nothing a run writes may land among the images, or the images among it
    ("--out inside the data (explain)", _explain("--out", "{data}/train"), "--out '{data}/train' lies inside the data"),
    ("--out inside the data (visualize)", _vis("--data", "{data}", "--out", "{data}/train"), "lies inside the data"),
    ("--out inside the data (train)", _train("--out", "{data}/val/apple"), "lies inside the data"),
    ("--cache-dir inside the data", _explain("--cache-dir", "{data}/cache"), "--cache-dir '{data}/cache' lies inside the data"),
    ("the data inside --out", _explain("--out", "{parent}"), "lies inside --out"),
    # checkpoints that are not: each told what is wrong with it
    ("--weights is an empty file", _explain("--weights", "{empty_pt}"), "is empty (0 bytes)"),
    ("--init-weights is an empty file", _train("--init-weights", "{empty_pt}"), "is empty (0 bytes)"),
    ("--weights holds random bytes", _explain("--weights", "{junk_pt}"), "is not a PyTorch checkpoint"),
    ("--weights is a text file", _explain("--weights", "{file}"), "is not a PyTorch checkpoint"),
    ("--weights is a folder", _explain("--weights", "{data}"), "is a folder; give the checkpoint file"),
    ("report of a file", ["report", "{file}"], "is a file; give the run folder"),
    ("--class-names with an extra name", _explain("--class-names", "apple,berry,cloud,dog"),
     "lists 4 names but the model has 3 outputs and the data 3 classes ('dog' is not in the data)"),
    # seeds and lists
    ("--seed 99999999999999999999", _explain("--seed", "99999999999999999999"), "--seed: must be a seed from 0 to"),
    ("--seeds 99999999999999999999", _compare("--seeds", "99999999999999999999"), "is not a seed"),
    ("--seeds 0,0,1", _compare("--seeds", "0,0,1"), "--seeds gives 0 more than once"),
    ("--seeds=-1,2", _compare("--seeds=-1,2"), "--seeds: -1 is not a seed"),
    ("--neurons 0,0", ["edit", *M, "--data", "{data}", "--class", "apple", "--neurons", "0,0", "--out", "{out}",
                       "--cache-dir", "{cache}", "--no-progress"], "--neurons gives 0 more than once"),
    ("--input-size 1", _vis("--input-size", "1"), "--input-size: must be at least 16 px"),
]
NEEDS_NON_ROOT = {"--out read-only", "--cache-dir read-only"}
SETPRIV = shutil.which("setpriv")


def _run_without_root_powers(argv):
    """Run the command line in a child process that lacks root's right to write anywhere.

    Returns ``(exit code, stderr)``. Dropping CAP_DAC_OVERRIDE makes root obey folder permissions.
    """
    code = "import sys; from neuroinspect.cli import main; sys.exit(main(sys.argv[1:]))"
    cmd = [SETPRIV, "--bounding-set", "-dac_override,-dac_read_search", sys.executable, "-c", code, *argv]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), *sys.path])}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    return done.returncode, done.stderr


def _fill(argv, paths):
    return [a.format(**paths) for a in argv]


def _paths(tmp: Path) -> dict:
    data = tmp / "data"
    if not data.exists():
        write_folder(data, n_red_apples=2)
    file = tmp / "a_file.txt"
    file.write_text("not a folder")
    ro = tmp / "readonly"
    ro.mkdir(exist_ok=True)
    ro.chmod(0o555)
    (tmp / "empty.pt").write_bytes(b"")
    (tmp / "junk.pt").write_bytes(bytes(np.random.default_rng(0).integers(0, 128, 256, dtype=np.uint8)))
    return {"data": str(data), "out": str(tmp / "out"), "cache": str(tmp / "cache"), "file": str(file), "ro": str(ro),
            "empty_pt": str(tmp / "empty.pt"), "junk_pt": str(tmp / "junk.pt"), "parent": str(tmp)}


def run_case(argv, tmp: Path, what: str = ""):
    """Run one case; returns ``(exit code, stderr or None when it went to sys.stderr, paths)``."""
    paths = _paths(tmp)
    if what in NEEDS_NON_ROOT and IS_ROOT:
        rc, err = _run_without_root_powers(_fill(argv, paths))
        return rc, err, paths
    return main(_fill(argv, paths)), None, paths


def _marks(what):  # the read-only cache case runs a child interpreter that imports torch (~6 s)
    return [pytest.mark.slow] if what == "--cache-dir read-only" and IS_ROOT else []


@pytest.mark.parametrize("what,argv,expected", [pytest.param(*c, marks=_marks(c[0]), id=c[0]) for c in CASES])
def test_bad_input_gets_one_line_and_exit_2(what, argv, expected, tmp_path, capsys):
    if what in NEEDS_NON_ROOT and IS_ROOT and not SETPRIV:
        pytest.skip("root can write into a read-only folder, and setpriv is missing")
    rc, err, paths = run_case(argv, tmp_path, what)
    err = (err if err is not None else capsys.readouterr().err).strip()
    assert rc == 2, err
    assert err.count("\n") == 0 and "Traceback" not in err, err
    assert _fill([expected], paths)[0] in err, err
    assert not Path(paths["out"]).exists()  # nothing written, not even an empty --out
    assert not list(Path(paths["cache"]).rglob("*.safetensors")) if Path(paths["cache"]).exists() else True


def test_out_is_checked_before_the_model_or_data_are_touched(tmp_path, capsys, monkeypatch):
    import neuroinspect.session as session

    def never(*a, **k):
        raise AssertionError("the model was built before --out was checked")

    monkeypatch.setattr(session, "build_model", never)
    paths = _paths(tmp_path)
    assert main(_fill(_explain("--out", "{file}"), paths)) == 2
    assert "is a file" in capsys.readouterr().err


# --------------------------------------------------------------------------- accepted, but now said out loud
def test_duplicate_manifest_rows_are_counted_and_used_once(tmp_path, caplog):
    from neuroinspect.core.data.load import load_data

    root = write_folder(tmp_path / "data", n_red_apples=0, n_per_class=2)
    rows = [[p.relative_to(root).as_posix(), p.parent.name, p.parts[-3]] for p in sorted(root.rglob("*.png"))]
    with open(root / "m.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "label", "split"])
        w.writerows(rows + rows[:3])
    data = load_data(root / "m.csv")
    assert sum(data.size(s) for s in data.splits) == len(rows)
    assert "repeats 3 row(s)" in caplog.text


def test_a_byte_order_mark_is_not_part_of_a_header_or_a_name(tmp_path):
    """Files saved by spreadsheet programs and Windows editors start with U+FEFF: it is not text."""
    from neuroinspect.core.data.load import load_data, parse_class_names

    root = write_folder(tmp_path / "data", n_red_apples=0, n_per_class=2)
    rows = [[p.relative_to(root).as_posix(), p.parent.name, p.parts[-3]] for p in sorted(root.rglob("*.png"))]
    text = "path,label,split\n" + "".join(",".join(r) + "\n" for r in rows)
    (root / "m.csv").write_text("\ufeff" + text, encoding="utf-8")
    data = load_data(root / "m.csv")
    assert data.class_names == ["apple", "berry", "cloud"] and data.size("train") == 6
    (tmp_path / "names.txt").write_text("\ufeffcloud\napple\nberry\n", encoding="utf-8")
    assert parse_class_names(str(tmp_path / "names.txt")) == ["cloud", "apple", "berry"]
    (root / "classes.txt").write_text("\ufeffberry\ncloud\napple\n", encoding="utf-8")
    assert load_data(root).class_names == ["berry", "cloud", "apple"]  # the folder's classes.txt, first name whole


def test_report_names_each_file_it_leaves_out_on_stderr(tmp_path, capsys):
    root = write_folder(tmp_path / "data", n_red_apples=2)
    out = tmp_path / "out"
    assert main(["explain", *M, "--data", str(root), "--class", "apple", "--out", str(out), "--no-progress",
                 "--cache-dir", str(tmp_path / "cache")]) == 0
    text = (out / "ranking.json").read_text()
    (out / "ranking.json").write_text(text[: len(text) // 2])  # truncated
    metrics = json.loads((out / "metrics.json").read_text())
    (out / "metrics.json").write_text(json.dumps({**metrics, "schema": 99}))  # written by a newer version
    capsys.readouterr()
    assert main(["report", str(out)]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2, err
    assert any("ranking.json" in line and "left out" in line for line in err)
    assert any("metrics.json" in line and "left out" in line for line in err)


def test_debug_says_when_there_are_fewer_classes_than_worst_classes(tmp_path, capsys, monkeypatch):
    import neuroinspect.pipeline as pipeline

    monkeypatch.setattr(pipeline, "run_pipeline", lambda *a, **k: {})  # only the choice is tested here
    root = write_folder(tmp_path / "data", n_red_apples=2)
    argv = ["debug", *M, "--data", str(root), "--out", str(tmp_path / "out"), "--no-progress",
            "--cache-dir", str(tmp_path / "cache")]
    assert main([*argv, "--worst-classes", "99"]) == 0
    assert "--worst-classes 99, but the data has 3 classes: debugging all 3" in capsys.readouterr().err
    assert main([*argv, "--worst-classes", "2"]) == 0
    assert "--worst-classes" not in capsys.readouterr().err


def test_16_bit_png_is_scaled_not_clipped(tmp_path):
    from neuroinspect.core.data.images import _load_rgb

    ramp = (np.linspace(0, 65535, 64 * 64).reshape(64, 64)).astype(np.uint16)
    Image.fromarray(ramp).save(tmp_path / "deep.png")
    rgb = np.asarray(_load_rgb(str(tmp_path / "deep.png")))
    assert rgb.shape == (64, 64, 3)
    assert (rgb == 255).mean() < 0.01  # PIL's plain convert("RGB") makes ~99.6 % of it white
    assert abs(rgb.mean() - 127.5) < 2


def test_split_less_data_says_which_split_is_used(tmp_path, capsys):
    root = tmp_path / "flat"
    write_folder(tmp_path / "data", n_red_apples=2)
    for cls_dir in (tmp_path / "data" / "val").iterdir():
        (root / cls_dir.name).mkdir(parents=True)
        for p in cls_dir.iterdir():
            (root / cls_dir.name / p.name).write_bytes(p.read_bytes())
    rc = main(["explain", *M, "--data", str(root), "--class", "apple", "--out", str(tmp_path / "out"), "--no-progress"])
    captured = capsys.readouterr()
    assert rc == 0
    assert "no 'val' split; using 'all'" in captured.err
    assert "accuracy on 'all'" in captured.out


def test_class_order_from_a_file_and_a_chance_level_warning(tmp_path, capsys):
    root = write_folder(tmp_path / "data", n_red_apples=0)
    out = tmp_path / "out"
    # the model's order is apple, berry, cloud; a rotated order makes every prediction wrong
    (root / "classes.txt").write_text("berry\ncloud\napple\n")
    assert main(["explain", *M, "--data", str(root), "--class", "apple", "--out", str(out), "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert "at or below chance" in err and "--class-names" in err
    assert "'apple' is predicted as" in err  # the relabelling the predictions agree with
    assert main(["explain", *M, "--data", str(root), "--class", "apple", "--out", str(out), "--no-progress",
                 "--class-names", "apple,berry,cloud"]) == 0
    assert "chance" not in capsys.readouterr().err
    assert main(["classes", "--data", str(root)]) == 0
    text = capsys.readouterr().out
    assert "0  berry" in text and "classes.txt" in text


def test_a_model_that_declares_its_class_order_is_used_in_that_order(tmp_path, capsys):
    root = write_folder(tmp_path / "data", n_red_apples=3)
    out = tmp_path / "out"
    assert main(["explain", "--model", "planted:planted_cnn_own_order", "--data", str(root), "--class", "apple",
                 "--out", str(out), "--no-progress"]) == 0
    captured = capsys.readouterr()
    assert "chance" not in captured.err
    ranking = json.loads((out / "ranking.json").read_text())
    assert ranking["class_index"] == 2 and ranking["n_mistakes"] == 3  # only the red-patch apples are wrong


def test_mistake_ids_resolve_from_another_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_folder(Path("data"), n_red_apples=2)
    assert main(["explain", *M, "--data", "data", "--class", "apple", "--out", "out", "--no-progress"]) == 0
    rows = list(csv.DictReader(open(tmp_path / "out" / "mistakes.csv")))
    assert rows
    monkeypatch.chdir("/")
    id_key = [k for k in rows[0] if k in ("id", "path", "image")][0]
    assert all(Path(r[id_key]).is_absolute() and Path(r[id_key]).is_file() for r in rows)


def test_help_does_not_import_torch():
    import subprocess

    code = "import sys; from neuroinspect.cli import main; main(['--help']); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().endswith("False")
    code = ("import sys; from neuroinspect.cli import main; rc = main(['explain', '--model', 'x', '--data', 'y', "
            "'--class', 'a', '--out', 'o', '--batch-size', '0']); print(rc, 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().endswith("2 False")


def test_explain_help_rankings_match_the_package():
    from neuroinspect.cli import explain as cli_explain
    from neuroinspect.find.ranking import DEFAULT_RANKING, RANKINGS

    assert tuple(cli_explain.RANKINGS) == tuple(RANKINGS) and cli_explain.RANKINGS[0] == DEFAULT_RANKING


if __name__ == "__main__":  # print the table of docs/bad-inputs.md
    import contextlib
    import io
    import logging
    import tempfile

    logging.disable(logging.CRITICAL)
    print("| bad input | command (shortened) | exit | the one line on stderr |")
    print("|---|---|---|---|")
    for what, argv, _ in CASES:
        with tempfile.TemporaryDirectory() as tmp:
            err = io.StringIO()
            with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
                rc, child_err, paths = run_case(argv, Path(tmp), what)
            line = (child_err if child_err is not None else err.getvalue()).strip()
            for key, value in paths.items():
                line = line.replace(value, key.upper())
            shown = " ".join(a for a in argv if a != "--no-progress")
            for drop in ("--data {data}", "--cache-dir {cache}", "--out {out}"):
                shown = shown.replace(drop, "")
            for key in paths:
                shown = shown.replace("{" + key + "}", key.upper())
            print(f"| {what} | `neuroinspect {' '.join(shown.split())}` | {rc} | `{line}` |")
            Path(paths["ro"]).chmod(0o755)
