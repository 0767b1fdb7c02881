"""CPU time of ``neuroinspect --help`` and of an argument error (no model, no data touched).

Runs each command in a fresh interpreter ``--repeat`` times (each with ``--threads`` OpenMP/MKL
threads) and prints JSON with the min and median CPU time (user + system, children included)
beside wall time, and whether torch was imported. ``--src`` points at another checkout's ``src`` folder to compare with it.

    python benchmarks/bench_cli_startup.py
    python benchmarks/bench_cli_startup.py --src /path/to/other/checkout/src
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import add_arguments, summary  # noqa: E402

COMMANDS = {
    "help": "main(['--help'])",
    "explain_help": "main(['explain', '--help'])",
    "argument_error": "main(['explain', '--model', 'm', '--data', 'd', '--class', 'c', '--out', 'o', '--batch-size', '0'])",
}


def measure(call: str, src: str | None, repeat: int, threads: int) -> dict:
    code = (f"import sys, contextlib, io\nfrom neuroinspect.cli import main\n"
            f"with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):\n"
            f"    try:\n        {call}\n    except SystemExit:\n        pass\nprint('torch' in sys.modules)")
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    if src:
        env["PYTHONPATH"] = src
    cpu, wall, torch_loaded = [], [], None
    for _ in range(repeat):
        before = os.times()
        t0 = time.perf_counter()
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
        wall.append(time.perf_counter() - t0)
        after = os.times()
        cpu.append((after.children_user - before.children_user) + (after.children_system - before.children_system))
        torch_loaded = out.stdout.strip().endswith("True")
    return {**summary(wall, cpu), "imports_torch": torch_loaded}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--src", help="a src folder to put first on PYTHONPATH (another checkout)")
    add_arguments(ap, threads=1, repeat=5)
    args = ap.parse_args()
    threads = max(1, args.threads)
    result = {name: measure(call, args.src, args.repeat, threads) for name, call in COMMANDS.items()}
    print(json.dumps({"benchmark": "cli_startup", "src": args.src or "installed", "repeat": args.repeat,
                      "threads": threads, "cpu_time": "user + system of each child interpreter",
                      "machine": f"{os.cpu_count()}-core {platform.machine()}", "python": platform.python_version(),
                      "results": result}, indent=2))


if __name__ == "__main__":
    main()
