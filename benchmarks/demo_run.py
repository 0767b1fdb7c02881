"""Open a ``neuroinspect demo`` run folder for the benchmarks: its run.json, and an Inspector over
its data with its trained model (the ``model.safetensors`` the demo wrote)."""
from __future__ import annotations

import json
from pathlib import Path


def open_demo_run(run_dir) -> tuple[dict, object]:
    """``(run.json as a dict, Inspector)`` of a demo run folder."""
    from neuroinspect.core.data.load import load_data
    from neuroinspect.core.model.models import build_model
    from neuroinspect.session import Inspector

    run_dir = Path(run_dir)
    run = json.loads((run_dir / "run.json").read_text())
    data = load_data(run["data"])
    loaded = build_model(run["config"]["model"], num_classes=len(data.class_names), weights=run_dir / run["model_file"])
    return run, Inspector(loaded, data, progress=False)
