"""Sharding under torchrun: the shard helper, the single-process no-op, and 2 CPU processes with gloo
giving the same results as one process (explain, visualize), and a killed run resuming.

The multi-process tests start ``python -m torch.distributed.run --standalone --nproc-per-node 2 -m
neuroinspect ...`` (a free port is picked by the rendezvous) and compare with one process on the same
data, both with one thread per process. The one-process reference runs the command line in this
process (``neuroinspect.cli.main``): it is the same code, and it spares a Python and torch start-up.
"""
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from neuroinspect.cli import main
from neuroinspect.core.runtime import distributed
from neuroinspect.find.counterfactual import counterfactual_edits
from neuroinspect.find.ranking import CF_BLOCK_ROWS, cf_blocks, solve_in_blocks
from planted import write_folder
from rank_models import seen

TESTS = Path(__file__).parent


# --------------------------------------------------------------------------- fast: the helpers
@pytest.mark.parametrize("n", [0, 1, 2, 7, 10, 64, 1001])
@pytest.mark.parametrize("world", [1, 2, 3, 8])
def test_shards_are_disjoint_covering_balanced_and_deterministic(n, world):
    bounds = [distributed.shard_bounds(n, r, world) for r in range(world)]
    assert bounds == [distributed.shard_bounds(n, r, world) for r in range(world)]  # deterministic
    assert bounds[0][0] == 0 and bounds[-1][1] == n
    assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))  # contiguous: disjoint and covering
    sizes = [stop - start for start, stop in bounds]
    assert max(sizes) - min(sizes) <= 1 and sizes == sorted(sizes, reverse=True)  # balanced
    items = list(range(100, 100 + n))
    assert [x for r in range(world) for x in distributed.shard(items, r, world)] == items


def test_shard_rejects_a_rank_outside_the_world():
    with pytest.raises(ValueError):
        distributed.shard_bounds(10, 2, 2)


def test_single_process_is_a_no_op(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    assert not distributed.launched() and distributed.world_size() == 1 and distributed.rank() == 0
    assert distributed.is_main() and not distributed.init("cpu")
    assert distributed.all_gather({"a": 1}) == [{"a": 1}] and distributed.gather(3) == [3]
    assert distributed.broadcast("x") == "x" and distributed.all_agree(True) and not distributed.all_agree(False)
    distributed.barrier()
    with distributed.main_first():
        pass
    assert distributed.shard(range(5)) == range(5)
    assert distributed.device_for("cuda") == torch.device("cuda")  # no LOCAL_RANK: left as it is
    assert distributed.run_record()["world_size"] == 1
    assert not torch.distributed.is_initialized()  # nothing was created


def test_torchrun_cuda_device_is_the_local_rank(monkeypatch):
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert distributed.device_for("cuda") == torch.device("cuda", 1)
    assert distributed.device_for("cuda:0") == torch.device("cuda", 0)  # an explicit index is kept
    assert distributed.device_for("cpu") == torch.device("cpu")
    assert distributed.env_rank() == 3 and not distributed.is_main()


def test_counterfactual_blocks_depend_on_the_number_of_mistakes_only():
    assert cf_blocks(0) == []
    assert cf_blocks(CF_BLOCK_ROWS) == [(0, CF_BLOCK_ROWS)]
    assert cf_blocks(70) == [(0, 64), (64, 70)]
    big = cf_blocks(10_000)
    assert len(big) <= 16 and big[0][0] == 0 and big[-1][1] == 10_000
    assert all(a[1] == b[0] for a, b in zip(big, big[1:]))


def test_blocks_of_one_block_are_the_plain_solver():
    g = torch.Generator().manual_seed(0)
    W, b = torch.randn(4, 12, generator=g), torch.randn(4, generator=g)
    Z = torch.relu(torch.randn(40, 12, generator=g))
    plain = counterfactual_edits(W, b, Z, 0, max_steps=200)
    blocked = solve_in_blocks(W, b, Z, 0, max_steps=200, progress=False)
    assert torch.equal(plain.delta, blocked.delta) and torch.equal(plain.steps, blocked.steps)
    empty = solve_in_blocks(W, b, Z[:0], 0, progress=False)
    assert empty.delta.shape == (0, 12)


# --------------------------------------------------------------------------- 2 processes, gloo
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _collectives(rank: int, port: int, world: int, out: str) -> None:
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port), OMP_NUM_THREADS="1")
    torch.set_num_threads(1)
    assert distributed.init("cpu") and distributed.backend() == "gloo"
    distributed.record("images", "val", list(distributed.shard_bounds(10)))
    result = {
        "gather": distributed.all_gather(rank * 10),
        "to_main": distributed.gather(rank),
        "bcast": distributed.broadcast(f"from {rank}"),
        "agree": [distributed.all_agree(True), distributed.all_agree(rank == 0)],
        "record": distributed.run_record(),
    }
    distributed.barrier()
    distributed.shutdown()
    Path(out, f"{rank}.json").write_text(json.dumps(result))


@pytest.mark.slow
def test_collectives_on_two_gloo_processes(tmp_path):
    torch.multiprocessing.spawn(_collectives, args=(_free_port(), 2, str(tmp_path)), nprocs=2)
    r0, r1 = (json.loads((tmp_path / f"{r}.json").read_text()) for r in (0, 1))
    assert r0["gather"] == r1["gather"] == [0, 10]
    assert r0["to_main"] == [0, 1] and r1["to_main"] is None
    assert r0["bcast"] == r1["bcast"] == "from 0"
    assert r0["agree"] == r1["agree"] == [True, False]
    assert r0["record"] == r1["record"] == {"world_size": 2, "shards": [
        {"rank": 0, "images": {"val": [0, 5]}}, {"rank": 1, "images": {"val": [5, 10]}}]}


def _env(**extra) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", NEUROINSPECT_PROGRESS_SECONDS="0")
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS), env.get("PYTHONPATH", "")])
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    env.update(extra)
    return env


def _neuroinspect(args: list[str], ranks: int, cwd: Path, check: bool = True, **env) -> subprocess.CompletedProcess:
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(ranks)]
    done = subprocess.run(launch + ["-m", "neuroinspect", *args], cwd=cwd, env=_env(**env), capture_output=True,
                          text=True, timeout=300)
    if check:
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


@pytest.fixture
def one_process(monkeypatch, capsys):
    """``run(args, cwd)``: the command in this process, as one rank of one; returns its exit code and output."""
    def run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
        with monkeypatch.context() as m:
            m.chdir(cwd)
            for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
                m.delenv(name, raising=False)
            capsys.readouterr()
            code = main(args)
            out, err = capsys.readouterr()
        assert code == 0, out[-3000:] + err[-3000:]
        return subprocess.CompletedProcess(args, code, out, err)

    return run


def _features(cache: Path):
    from neuroinspect.core.model.featureset import FeatureSet

    files = sorted(cache.glob("features/*/features.safetensors"))
    assert len(files) == 1
    return files[0].parent.name, FeatureSet.load(files[0])


def _same_features(a, b) -> None:
    (key_a, fa), (key_b, fb) = a, b
    assert key_a == key_b
    for name in ("features", "logits", "labels", "groups"):
        assert torch.equal(getattr(fa, name), getattr(fb, name)), name
    assert (fa.ids, fa.class_names, fa.skipped, fa.split) == (fb.ids, fb.class_names, fb.skipped, fb.split)


def _covering(shards: list[dict], kind: str, key: str, n: int) -> None:
    """The ranks' [start, stop) shares of ``kind`` are disjoint, in rank order, and cover 0..n."""
    spans = [s[kind][key] for s in shards]
    assert spans[0][0] == 0 and spans[-1][1] == n
    assert all(a[1] == b[0] for a, b in zip(spans, spans[1:]))
    assert all(stop > start for start, stop in spans)  # each rank did some of it


@pytest.mark.slow
def test_explain_on_two_ranks_equals_one_process(tmp_path, one_process):
    write_folder(tmp_path / "data", n_per_class=6, n_red_apples=70)  # 70 mistakes: two blocks of counterfactuals
    args = ["explain", "--model", "planted:planted_cnn", "--data", "data", "--class", "apple", "--batch-size", "8",
            "--no-progress", "--ranking", "additive"]
    one = one_process(args + ["--out", "one", "--cache-dir", "c1"], tmp_path)
    two = _neuroinspect(args + ["--out", "two", "--cache-dir", "c2"], 2, tmp_path)
    for name in ("ranking.json", "metrics.json", "mistakes.csv"):
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes(), name
    listing = {p.name for p in (tmp_path / "one").iterdir()}
    assert listing == {p.name for p in (tmp_path / "two").iterdir()} == {"ranking.json", "metrics.json",
                                                                       "mistakes.csv", "run.json"}
    _same_features(_features(tmp_path / "c1"), _features(tmp_path / "c2"))
    assert two.stdout.count("results in two/") == 1  # rank 0 alone prints
    ranking = json.loads((tmp_path / "two" / "ranking.json").read_text())
    assert ranking["n_mistakes"] == 70 and ranking["excessive"][0]["neuron"] == 5
    run = json.loads((tmp_path / "two" / "run.json").read_text())
    assert run["world_size"] == 2 and [s["rank"] for s in run["shards"]] == [0, 1]
    _covering(run["shards"], "images", "val", 88)
    _covering(run["shards"], "mistakes", "apple", 70)
    single = json.loads((tmp_path / "one" / "run.json").read_text())
    assert single["world_size"] == 1 and single["shards"] == [{"rank": 0, "images": {"val": [0, 88]},
                                                               "mistakes": {"apple": [0, 70]}}]
    assert "error" not in one.stderr + two.stderr


@pytest.mark.slow
def test_visualize_on_two_ranks_gives_the_same_images(tmp_path, one_process):
    write_folder(tmp_path / "data", n_per_class=4, n_red_apples=2)
    args = ["visualize", "--model", "planted:planted_cnn", "--data", "data", "--neurons", "5,1,2",
            "--classes", "apple,berry", "--recipe", "class", "--clip", "none", "--steps", "3", "--size", "32",
            "--batch", "2", "--no-progress", "--seed", "3"]
    one_process(args + ["--out", "one", "--cache-dir", "c1"], tmp_path)
    _neuroinspect(args + ["--out", "two", "--cache-dir", "c2"], 2, tmp_path)
    one, two = tmp_path / "one", tmp_path / "two"
    files = sorted(p.relative_to(one).as_posix() for p in one.rglob("*") if p.is_file() and p.name != "run.json")
    assert files == sorted(p.relative_to(two).as_posix() for p in two.rglob("*") if p.is_file() and p.name != "run.json")
    assert sum(f.endswith(".png") for f in files) >= 6
    for f in files:  # the manifest and every PNG, byte for byte
        assert (one / f).read_bytes() == (two / f).read_bytes(), f
    run = json.loads((two / "run.json").read_text())
    assert run["world_size"] == 2
    pairs = [tuple(p) for s in run["shards"] for p in s["pairs"]]
    assert pairs == [(5, 0), (5, 1), (1, 0), (1, 1), (2, 0), (2, 1)]  # disjoint, covering, in order
    assert all(s["pairs"] for s in run["shards"])
    assert not list(tmp_path.glob(".two.partial-*"))  # the staging folder was published


@pytest.mark.slow
def test_a_killed_rank_leaves_parts_that_the_rerun_reuses(tmp_path, one_process):
    write_folder(tmp_path / "data", n_per_class=6, n_red_apples=6)  # val: 24 images, 6 batches of 4
    args = ["explain", "--model", "rank_models:counting_cnn", "--data", "data", "--class", "apple",
            "--batch-size", "4", "--chunk-size", "4", "--no-progress", "--cache-dir", "cache"]
    (tmp_path / "seen1").mkdir()
    (tmp_path / "seen2").mkdir()
    killed = _neuroinspect(args + ["--out", "killed"], 2, tmp_path, check=False,
                           NI_SEEN_DIR=str(tmp_path / "seen1"), NI_FAIL_RANK="1", NI_FAIL_AT="2")
    assert killed.returncode != 0 and not (tmp_path / "killed" / "ranking.json").exists()
    parts = sorted((tmp_path / "cache").glob("features/*/partial/batch4/rows_*.pt"))
    names = [p.name for p in parts]
    assert "rows_000000012_000000016.pt" in names  # rank 1 saved its first batch before it died
    done = {int(n[5:14]): int(n[15:24]) for n in names}
    _neuroinspect(args + ["--out", "two"], 2, tmp_path, NI_SEEN_DIR=str(tmp_path / "seen2"))
    counts = seen(tmp_path / "seen2")
    assert counts.get(1, 0) == 8  # rank 1 computed only its two missing batches
    assert counts.get(0, 0) == 12 - sum(e - s for s, e in done.items() if s < 12)
    assert sum(counts.values()) == 24 - sum(e - s for s, e in done.items())
    assert not list((tmp_path / "cache").glob("features/*/partial"))  # assembled: the parts are gone
    one_process(args[:-2] + ["--cache-dir", "fresh", "--out", "one"], tmp_path)
    for name in ("ranking.json", "metrics.json"):
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes(), name
    _same_features(_features(tmp_path / "cache"), _features(tmp_path / "fresh"))


@pytest.mark.slow
def test_debug_on_two_ranks_equals_one_process(tmp_path, one_process):
    """The pipeline: extraction, counterfactuals and pictures shared; rank 0 alone fixes, compares and reports."""
    write_folder(tmp_path / "data", n_per_class=6, n_red_apples=6)
    args = ["debug", "--model", "planted:planted_cnn", "--data", "data", "--eval-split", "val", "--methods",
            "rebalance,erm", "--steps", "3", "--size", "32", "--clip", "none", "--batch-size", "8", "--no-progress"]
    one = one_process(args + ["--out", "one", "--cache-dir", "c1"], tmp_path)
    two = _neuroinspect(args + ["--out", "two", "--cache-dir", "c2"], 2, tmp_path)
    for name in ("metrics.json", "ranking.json", "mistakes.csv", "visualize/visualizations.json", "edit/edit.json",
                 "compare/compare.json", "evidence/evidence.json"):
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes(), name
    assert (tmp_path / "two" / "report.html").is_file()
    run = json.loads((tmp_path / "two" / "run.json").read_text())
    assert run["command"] == "debug" and run["world_size"] == 2 and [s["rank"] for s in run["shards"]] == [0, 1]
    assert two.stdout.count("report:") == 1 and one.stdout.count("report:") == 1  # rank 0 alone prints
    assert "error" not in one.stderr + two.stderr



def test_each_run_records_its_own_shares(tmp_path):
    """The shares in run.json are the command's own, even after other work in the same process noted some."""
    distributed.new_record()
    assert distributed.run_record() == {"world_size": 1, "shards": [{"rank": 0}]}
    distributed.record("images", "leftover", [0, 3])  # what an earlier run in this process (a notebook) noted
    data = write_folder(tmp_path / "data", n_red_apples=3)
    assert main(["explain", "--model", "planted:planted_cnn", "--data", str(data), "--class", "apple", "--split", "val",
                 "--out", str(tmp_path / "out"), "--cache-dir", str(tmp_path / "cache"), "--no-progress"]) == 0
    shards = json.loads((tmp_path / "out" / "run.json").read_text())["shards"]
    assert shards[0]["rank"] == 0 and "leftover" not in shards[0].get("images", {}) and shards[0]["images"]
