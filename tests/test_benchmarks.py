"""The benchmark scripts start, and ``benchmarks/gpu.py --device cpu --tiny`` runs end to end (no timing asserted)."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
SCRIPTS = sorted(p.name for p in BENCH.glob("*.py") if not p.name.startswith("_") and p.name != "demo_run.py")


def _run(*args, timeout=600):
    return subprocess.run([sys.executable, *map(str, args)], capture_output=True, text=True, timeout=timeout,
                          cwd=BENCH.parent)


@pytest.mark.slow
@pytest.mark.parametrize("script", SCRIPTS)
def test_every_benchmark_offers_threads_and_repeat(script):
    out = _run(BENCH / script, "--help")
    assert out.returncode == 0, out.stderr
    assert "--threads" in out.stdout and "--repeat" in out.stdout


@pytest.mark.slow
def test_gpu_benchmark_runs_tiny_on_cpu(tmp_path):
    out = _run(BENCH / "gpu.py", "--device", "cpu", "--tiny", "--json", tmp_path / "gpu.json")
    assert out.returncode == 0, out.stderr[-2000:]
    printed = json.loads(out.stdout)
    assert printed == json.loads((tmp_path / "gpu.json").read_text())
    assert printed["device"] == "cpu" and printed["tiny"] and printed["threads"] == 1 and printed["device_name"]
    ext = printed["extraction"]
    for model in ("efficientnet_lite0", "resnet50"):
        for variant in ("fp32", "amp", "amp+channels_last", "model_only"):
            assert ext[model][variant]["images_per_s"] > 0
            assert {"wall_s_min", "wall_s_median", "cpu_s_min", "cpu_s_median"} <= set(ext[model][variant]["times"])
    batches = printed["render"]["batches"]
    assert [r["batch"] for r in batches] == [1, 8] and all(r["image_steps_per_s"] > 0 for r in batches)
    clip = printed["clip_illusion"]
    assert "ViT-B-32" in clip["guide"] and [r["batch"] for r in clip["runs"]] == [1, 2]
    assert all(r["seconds_per_image"] > 0 for r in clip["runs"])
    assert printed["total"]["wall_s"] > 0 and printed["total"]["cpu_s"] > 0


@pytest.mark.slow
def test_counterfactual_benchmark_reports_ratio_and_gflops(tmp_path):
    out = _run(BENCH / "bench_counterfactual.py", "--mistakes", "60", "--features", "64", "--classes", "20",
               "--loop-samples", "4", "--repeat", "1", "--seeds", "0,1", "--json", tmp_path / "cf.json")
    assert out.returncode == 0, out.stderr[-2000:]
    rep = json.loads(out.stdout)
    assert set(rep["ways"]) == {"fp32", "fused", "bf16", "bf16+fused", "sync_free"}
    for row in rep["ways"].values():
        assert row["speedup_vs_loop"] > 0 and row["gflop_per_s"] > 0 and 0 < row["fraction_of_peak"]
    assert rep["matmul_peak_gflop_per_s"]["fp32"]["wall"] > 0 and rep["threads"] == 1
    assert rep["agreement_with_fp32"]["sync_free"]["flipped_equal"]


@pytest.mark.slow
def test_debug_benchmark_reports_stage_times_and_memory(tmp_path):
    out = _run(BENCH / "bench_debug.py", "--size", "48", "--n-train", "8", "--n-val", "6", "--n-test", "6", "--repeat", "1",
               "--pictures", "heatmaps", "--cache-dir", tmp_path / "cache", "--json", tmp_path / "debug.json")
    assert out.returncode == 0, out.stderr[-2000:]
    rep = json.loads(out.stdout)
    assert rep == json.loads((tmp_path / "debug.json").read_text()) and rep["threads"] == 1
    (run,) = rep["runs"]
    assert {"features", "explain", "evidence", "edit_and_compare", "heatmaps", "total"} <= set(run["timings_s"])
    assert "visualize" not in run["timings_s"] and run["pictures_s"] == run["timings_s"]["heatmaps"]
    assert run["wall_s"] > 0 and run["cpu_s"] > 0 and rep["peak_rss_mib"]["after_debug"] > 0
    assert rep["scenes"]["images"] == 4 * (8 + 6 + 6) and rep["pipeline"]["pictures"] == "heatmaps"
    assert {"original", "regroup", "val-refit"} <= set(run["worst_group"])  # the table's worst group beside the times
    assert all(0.0 <= v <= 1.0 for v in run["worst_group"].values() if v is not None)


@pytest.mark.slow
def test_choose_benchmark_records_every_rule_and_the_fix():
    out = _run(BENCH / "bench_choose.py", "--draws", "1", "--shares", "0.95")
    assert out.returncode == 0, out.stderr[-2000:]
    rep = json.loads(out.stdout)
    row = rep["share_0.95"]
    assert set(row) == {"original_worst_group", "tails", "mistakes", "accuracy", "given"} and rep["threads"] == 1
    assert row["given"]["classes"] == [rep["shortcut_class"]] and row["given"]["names_shortcut_class"] == 1
    for rule in ("tails", "mistakes", "accuracy", "given"):
        assert 0 <= row[rule]["worst_group_mean"] <= 100 and row[rule]["worse_than_original"] in (0, 1)


def test_regime_gaps_carry_a_paired_bootstrap_interval():
    """bench_regimes' gaps: one set of draws for every method (a method against its copy: exactly 0), a gap of a whole
    worst group reads as significant, a one-image gap in 40 does not."""
    import torch

    sys.path.insert(0, str(BENCH))
    from bench_regimes import gap, goals, worst_group_draws

    groups = torch.arange(4).repeat_interleave(40)  # 4 groups of 40 test images
    base = torch.ones(2, 160, dtype=torch.bool)  # 2 seeds
    base[:, :10] = False  # group 0 at 75 %: the worst group
    one_off = base.clone()
    one_off[:, 10] = False  # one more mistake in group 0: 72.5 %
    broken = base.clone()
    broken[:, :30] = False  # group 0 at 25 %
    draws = worst_group_draws({"regroup": base, "same": base.clone(), "one_off": one_off, "broken": broken}, groups,
                              draws=500)
    assert gap(draws, "regroup", "same")["ci95"] == [0.0, 0.0]
    lo, hi = gap(draws, "regroup", "broken")["ci95"]
    assert 25 < lo <= hi < 75  # 50 points, far from 0
    lo, hi = gap(draws, "regroup", "one_off")["ci95"]
    assert lo <= 0.0 < 2.5 <= hi  # the point estimate, 2.5, is within the noise

    def row(wg):
        return {"worst_group": {"mean": wg}, "uses_group_labels": False}

    fix_draws = {"regroup": draws["broken"], "original": draws["regroup"], "one_off": draws["one_off"],
                 "twin": draws["broken"]}  # the fix is now the broken one; "twin" fails as it does
    rows = {"regroup": row(25.0), "original": row(75.0), "one_off": row(72.5), "twin": row(25.0)}
    out = goals(rows, "regroup", fix_draws)
    assert out["significantly_below"] == ["one_off", "original"] and not out["never_worse_than_original"]
    assert out["gaps"]["twin"] == {"points": 0.0, "ci95": [0.0, 0.0]}
