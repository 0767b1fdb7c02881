"""Models for the multi-process tests: the planted CNN, counting the images each rank extracts, and
failing on one rank after a few batches (a rank that dies in the middle of its share).

The environment steers them: ``NI_SEEN_DIR`` (a folder: each rank appends its batch sizes to
``rank<R>``), ``NI_FAIL_RANK`` and ``NI_FAIL_AT`` (that rank raises on its N-th batch).
"""
from __future__ import annotations

import os
from pathlib import Path

import torch

from planted import PlantedCNN


class CountingCNN(PlantedCNN):
    def forward(self, x):
        if torch.is_inference_mode_enabled():  # extraction only (the probe's dry run is under no_grad)
            rank = os.environ.get("RANK", "0")
            seen = os.environ.get("NI_SEEN_DIR")
            if seen:
                with open(Path(seen) / f"rank{rank}", "a") as f:
                    f.write(f"{x.shape[0]}\n")
            self.batches = getattr(self, "batches", 0) + 1
            if rank == os.environ.get("NI_FAIL_RANK") and self.batches >= int(os.environ.get("NI_FAIL_AT", "1")):
                raise RuntimeError(f"rank {rank} dies on its batch {self.batches}")
        return super().forward(x)


def counting_cnn(num_classes: int = 3) -> CountingCNN:
    return CountingCNN(num_classes)


def seen(folder: Path) -> dict[int, int]:
    """Images extracted per rank, from the files ``CountingCNN`` wrote."""
    out = {}
    for f in Path(folder).glob("rank*"):
        out[int(f.name[4:])] = sum(int(line) for line in f.read_text().split())
    return out
