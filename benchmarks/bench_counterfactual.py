"""Batched counterfactual solver vs the one-sample-at-a-time loop (the original approach).

Prints JSON. The loop is run on the first ``--loop-samples`` mistakes (all of them by default)
and both solvers must agree on those rows: same flips, same step counts, same edits.

    python benchmarks/bench_counterfactual.py                 # M=1000, D=2048, C=1000
    python benchmarks/bench_counterfactual.py --loop-samples 100
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch

from neuroinspect.find.counterfactual import counterfactual_edits

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from reference import counterfactual_edits_loop  # noqa: E402 (the tests' one-sample-at-a-time reference)


def problem(M: int, D: int, C: int, seed: int = 0):
    """A head and features shaped like a trained ResNet-50's: sparse non-negative z, small W."""
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(C, D, generator=g) * (1.0 / D**0.5) * 4
    b = torch.randn(C, generator=g) * 0.05
    Z = (torch.randn(M, D, generator=g) - 0.5).relu() * 1.5
    target = int((Z @ W.T + b).argmax(1).bincount(minlength=C).argmin())  # a class the features rarely predict
    Z = Z[(Z @ W.T + b).argmax(1) != target]
    return W, b, Z[:M], target


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mistakes", type=int, default=1000)
    ap.add_argument("--features", type=int, default=2048)
    ap.add_argument("--classes", type=int, default=1000)
    ap.add_argument("--max-steps", type=int, default=1000)
    ap.add_argument("--loop-samples", type=int, default=0, help="run the loop on this many mistakes (0 = all)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    W, b, Z, target = problem(args.mistakes, args.features, args.classes)
    M = Z.shape[0]

    t = time.perf_counter()
    fast = counterfactual_edits(W, b, Z, target, max_steps=args.max_steps)
    t_fast = time.perf_counter() - t

    n_loop = M if args.loop_samples <= 0 else min(args.loop_samples, M)
    t = time.perf_counter()
    ref = counterfactual_edits_loop(W, b, Z[:n_loop], target, max_steps=args.max_steps)
    t_loop = time.perf_counter() - t
    t_loop_all = t_loop * M / n_loop

    same = {
        "flipped_equal": bool(torch.equal(fast.flipped[:n_loop], ref.flipped)),
        "steps_equal_fraction": float((fast.steps[:n_loop] == ref.steps).float().mean()),
        "max_abs_delta_difference": float((fast.delta[:n_loop] - ref.delta).abs().max()),
    }
    print(json.dumps({
        "benchmark": "counterfactuals",
        "shape": {"M": M, "D": args.features, "C": args.classes, "max_steps": args.max_steps},
        "mean_steps": float(fast.steps.float().mean()), "flipped": fast.n_flipped,
        "batched_seconds": round(t_fast, 3),
        "loop_seconds_measured": round(t_loop, 3), "loop_samples": n_loop,
        "loop_seconds_for_all": round(t_loop_all, 3), "loop_extrapolated": n_loop < M,
        "speedup": round(t_loop_all / t_fast, 1),
        "agreement_on_loop_samples": same,
        "threads": torch.get_num_threads(), "machine": platform.processor() or platform.machine(),
        "torch": torch.__version__,
    }, indent=2))


if __name__ == "__main__":
    main()
