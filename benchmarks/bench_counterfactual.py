"""Counterfactual solver: its ways side by side, against the one-sample loop and the machine's matmul peak.

Solves the same problem (a head and features shaped like a trained ResNet-50's) with each way of
the batched solver — ``fp32`` (exact, the default), ``fused`` (in-place step, no step-0 product),
``bf16`` (the two products in bfloat16), ``bf16+fused`` and ``sync_free`` (masked rows, compaction
and stop check every k steps; the GPU path) — and the one-sample-at-a-time autograd loop (the
authors' approach) on ``--loop-samples`` mistakes. Reports for each way

* the speed-up over the loop (a ratio of wall-time minima, and of CPU-time minima, which a busy
  machine disturbs less; the loop's time is scaled to all mistakes when it ran on fewer),
* the achieved GFLOP/s of its matrix products (only the useful ones: each row's forward product at
  each step it was active, its backward product at each update, and the unedited logits once) and
  that as a fraction of this machine's peak, measured in the same run with a same-shape fp32 and
  bf16 matmul,
* its agreement with ``fp32``: same flips, the fraction of identical step counts, the same
  top-10 insufficient and excessive neurons (over ``--seeds`` problems).

Prints JSON and writes it to ``--json`` (default docs/bench_counterfactual.json).

    python benchmarks/bench_counterfactual.py                       # M=1000, D=2048, C=1000, 1 thread
    python benchmarks/bench_counterfactual.py --mistakes 200 --loop-samples 20 --repeat 1 --json ''
"""
from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch

from neuroinspect.find.counterfactual import SolverConfig, counterfactual_edits, rank_neurons

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from _harness import add_arguments, emit, environment, measure, pin_threads  # noqa: E402
from reference import counterfactual_edits_loop  # noqa: E402 (the tests' one-sample-at-a-time reference)

WAYS = {
    "fp32": SolverConfig(),
    "fused": SolverConfig(fused=True),
    "bf16": SolverConfig(precision="bf16"),
    "bf16+fused": SolverConfig(precision="bf16", fused=True),
    "sync_free": SolverConfig(sync_free=True),
}


def problem(M: int, D: int, C: int, seed: int = 0):
    """A head and features shaped like a trained ResNet-50's: sparse non-negative z, small W."""
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(C, D, generator=g) * (1.0 / D**0.5) * 4
    b = torch.randn(C, generator=g) * 0.05
    Z = (torch.randn(M, D, generator=g) - 0.5).relu() * 1.5
    target = int((Z @ W.T + b).argmax(1).bincount(minlength=C).argmin())  # a class the features rarely predict
    Z = Z[(Z @ W.T + b).argmax(1) != target]
    return W, b, Z[:M], target


def useful_flops(steps: torch.Tensor, D: int, C: int, fused: bool) -> float:
    """FLOPs of the products the compact solver needs: logits once, then per row a forward product at each
    of its ``steps + 1`` checks (not at step 0 when fused) and a backward product at each of its ``steps`` updates."""
    M = steps.numel()
    forward_rows = int(steps.sum()) + M - (M if fused else 0)
    backward_rows = int(steps.sum())
    return 2.0 * D * C * (M + forward_rows + backward_rows)


def matmul_peak(M: int, D: int, C: int, dtype: torch.dtype, repeat: int) -> dict:
    """GFLOP/s (per wall and per CPU second) of ``[M, D] @ [D, C]`` and ``[M, C] @ [C, D]`` (the solver's two shapes) in ``dtype``: the best run."""
    g = torch.Generator().manual_seed(0)
    a, w, s = (torch.randn(*shape, generator=g).to(dtype) for shape in ((M, D), (C, D), (M, C)))

    def both():
        for _ in range(3):
            a @ w.T
            s @ w

    t, _ = measure(both, repeat=repeat, warmup=1)
    flops = 3 * 2 * (2.0 * M * D * C)
    return {"wall": round(flops / t["wall_s_min"] / 1e9, 1), "cpu": round(flops / t["cpu_s_min"] / 1e9, 1)}


def top10(delta: torch.Tensor) -> tuple[list[int], list[int]]:
    ins, exc = rank_neurons(delta)
    return sorted(s.neuron for s in ins[:10]), sorted(s.neuron for s in exc[:10])


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mistakes", type=int, default=1000)
    ap.add_argument("--features", type=int, default=2048)
    ap.add_argument("--classes", type=int, default=1000)
    ap.add_argument("--max-steps", type=int, default=1000)
    ap.add_argument("--loop-samples", type=int, default=100, help="run the loop on this many mistakes (0 = all; default 100)")
    ap.add_argument("--seeds", default="0,1,2", help="problems the agreement with fp32 is checked on (default 0,1,2)")
    ap.add_argument("--ways", default=",".join(WAYS), help=f"solver ways to time (default {','.join(WAYS)})")
    ap.add_argument("--json", default="docs/bench_counterfactual.json", help="also write the JSON here ('' = do not)")
    add_arguments(ap, threads=1, repeat=3)
    args = ap.parse_args(argv)
    pin_threads(args.threads)
    ways = [w for w in args.ways.split(",") if w]
    unknown = [w for w in ways if w not in WAYS]
    if unknown:
        ap.error(f"unknown ways {unknown}; choose from {', '.join(WAYS)}")
    D, C = args.features, args.classes
    W, b, Z, target = problem(args.mistakes, D, C)
    M = Z.shape[0]
    cfg = lambda way: SolverConfig(**{**WAYS[way].__dict__, "max_steps": args.max_steps})  # noqa: E731

    peak = {"fp32": matmul_peak(M, D, C, torch.float32, args.repeat),
            "bf16": matmul_peak(M, D, C, torch.bfloat16, args.repeat)}
    rows, results = {}, {}
    for way in ways:
        t, out = measure(lambda: counterfactual_edits(W, b, Z, target, cfg(way)), repeat=args.repeat)
        results[way] = out
        flops = useful_flops(out.steps, D, C, cfg(way).fused)
        gflops, gflops_cpu = flops / t["wall_s_min"] / 1e9, flops / t["cpu_s_min"] / 1e9
        p = peak["bf16" if "bf16" in way else "fp32"]
        rows[way] = {"times": t, "useful_gflop": round(flops / 1e9, 2), "gflop_per_s": round(gflops, 1),
                     "fraction_of_peak": round(gflops / p["wall"], 3), "gflop_per_cpu_s": round(gflops_cpu, 1),
                     "fraction_of_peak_cpu": round(gflops_cpu / p["cpu"], 3),
                     "mean_steps": round(float(out.steps.float().mean()), 2), "flipped": out.n_flipped}
        print(f"{way:>11}: {t['wall_s_min']:.3f} s, {gflops:.1f} GFLOP/s", file=sys.stderr)

    n_loop = M if args.loop_samples <= 0 else min(args.loop_samples, M)
    t_loop, ref = measure(lambda: counterfactual_edits_loop(W, b, Z[:n_loop], target, max_steps=args.max_steps), repeat=1)
    loop_all = t_loop["wall_s_min"] * M / n_loop
    loop_all_cpu = t_loop["cpu_s_min"] * M / n_loop
    base = results.get("fp32") or counterfactual_edits(W, b, Z, target, max_steps=args.max_steps)
    for way, row in rows.items():
        row["speedup_vs_loop"] = round(loop_all / row["times"]["wall_s_min"], 1)
        row["speedup_vs_loop_cpu"] = round(loop_all_cpu / row["times"]["cpu_s_min"], 1)
        row["speedup_vs_fp32"] = round(rows["fp32"]["times"]["wall_s_min"] / row["times"]["wall_s_min"], 2) if "fp32" in rows else None
    loop_agreement = {
        "flipped_equal": bool(torch.equal(base.flipped[:n_loop], ref.flipped)),
        "steps_equal_fraction": float((base.steps[:n_loop] == ref.steps).float().mean()),
        "max_abs_delta_difference": float((base.delta[:n_loop] - ref.delta).abs().max()),
    }

    # agreement with exact fp32, over several problems (the timed one is seed 0)
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    agreement = {way: {"flipped_equal": True, "steps_equal_fraction": [], "max_step_difference": 0,
                       "top10_equal": True, "max_abs_delta_difference": 0.0} for way in ways if way != "fp32"}
    for seed in seeds:
        Ws, bs, Zs, ts = (W, b, Z, target) if seed == 0 else problem(args.mistakes, D, C, seed)
        exact = base if seed == 0 else counterfactual_edits(Ws, bs, Zs, ts, max_steps=args.max_steps)
        for way in agreement:
            out = results[way] if seed == 0 else counterfactual_edits(Ws, bs, Zs, ts, cfg(way))
            a = agreement[way]
            a["flipped_equal"] &= bool(torch.equal(out.flipped, exact.flipped))
            a["steps_equal_fraction"].append(round(float((out.steps == exact.steps).float().mean()), 4))
            a["max_step_difference"] = max(a["max_step_difference"], int((out.steps - exact.steps).abs().max()))
            a["top10_equal"] &= top10(out.delta) == top10(exact.delta)
            a["max_abs_delta_difference"] = max(a["max_abs_delta_difference"], float((out.delta - exact.delta).abs().max()))
    for a in agreement.values():
        a["steps_equal_fraction_min"] = min(a["steps_equal_fraction"])
        a["steps_equal_fraction_mean"] = round(statistics.fmean(a["steps_equal_fraction"]), 4)

    report = {
        "benchmark": "counterfactuals",
        "shape": {"M": M, "D": D, "C": C, "max_steps": args.max_steps},
        "matmul_peak_gflop_per_s": peak,
        "ways": rows,
        "loop": {"times": t_loop, "samples": n_loop, "seconds_for_all": round(loop_all, 3),
                 "cpu_seconds_for_all": round(loop_all_cpu, 3), "extrapolated": n_loop < M,
                 "fp32_agreement_on_loop_samples": loop_agreement},
        "agreement_with_fp32": {"seeds": seeds, **agreement},
        "note": "speed-ups are ratios of wall-time minima (and, *_cpu, of CPU-time minima: steadier on a busy machine, "
                "one thread); GFLOP/s counts the useful products only (the sync-free "
                "way also multiplies finished rows until its next compaction)",
        **environment("cpu"),
    }
    return emit(report, args.json)


if __name__ == "__main__":
    main()
