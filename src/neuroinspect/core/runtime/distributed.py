"""Running one command on many processes with PyTorch's own engine (``torch.distributed``).

Launched by ``torchrun`` (which sets ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``), every process
runs the same command; the long loops take a disjoint share of the work each (image batches for
feature extraction, blocks of mistakes for the counterfactuals, batches of (neuron, class) pairs
for rendering) and rank 0 merges the results and writes the JSON and report files. Without those
environment variables (a plain ``neuroinspect ...``) everything here is a no-op: no process group
is created, :func:`world_size` is 1 and every gather returns ``[obj]``.

The process group is created once, on first use: ``nccl`` when the run's device is a CUDA GPU (each
process then uses GPU ``LOCAL_RANK``), ``gloo`` otherwise. The small Python objects exchanged here
(shard results, file names, flags) always travel over a ``gloo`` group on the CPU, so the same
code works with either backend. Collectives wait up to ``NEUROINSPECT_DIST_TIMEOUT`` seconds (default
12 hours: a rank may finish its share long before the slowest one); ``torchrun`` stops every
process as soon as one fails, so a failed rank never leaves the others waiting.
"""
from __future__ import annotations

import contextlib
import copy
import datetime
import logging
import os
from typing import Any, Iterator, Sequence

import torch
import torch.distributed as dist

log = logging.getLogger(__name__)

_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK")
_state: dict[str, Any] = {"group": None, "backend": None, "ours": False, "alone": False, "shards": {}}


# --------------------------------------------------------------------------- the launch
def launched() -> bool:
    """True when this process was started by ``torchrun`` (or any launcher setting its variables) with 2+ processes."""
    if not all(k in os.environ for k in _ENV):
        return False
    try:
        return int(os.environ["WORLD_SIZE"]) > 1
    except ValueError:
        return False


def env_rank() -> int:
    """The global rank from the environment (0 when not launched); needs no process group."""
    return int(os.environ.get("RANK", "0") or 0) if launched() else 0


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0") or 0) if launched() else 0


def device_for(device: str | torch.device) -> torch.device:
    """The device this process should use: under ``torchrun``, a CUDA device without an index becomes
    ``cuda:LOCAL_RANK`` (one GPU per process); anything else is returned as it is."""
    device = torch.device(device)
    if device.type == "cuda" and device.index is None and launched():
        return torch.device("cuda", local_rank())
    return device


def _timeout() -> datetime.timedelta:
    try:
        seconds = float(os.environ.get("NEUROINSPECT_DIST_TIMEOUT", 12 * 3600))
    except ValueError:
        seconds = 12 * 3600
    return datetime.timedelta(seconds=max(1.0, seconds))


def init(device: str | torch.device | None = None) -> bool:
    """Create the process group once, if this process was launched by ``torchrun``; return whether one exists.

    ``device``: the run's device; a CUDA device selects ``nccl`` (and this process's GPU is set
    from ``LOCAL_RANK``), anything else ``gloo``. Called again, it does nothing.
    """

    if not launched() or not dist.is_available():
        return False
    if dist.is_initialized():
        if _state["group"] is None:  # created by the caller's own code: use it as it is
            _state["backend"] = dist.get_backend()
            _state["group"] = dist.new_group(backend="gloo") if _state["backend"] != "gloo" else dist.group.WORLD
        return True
    dev = device_for(device) if device is not None else torch.device("cpu")
    timeout = _timeout()
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
        dist.init_process_group("nccl", timeout=timeout, device_id=dev)
        _state["group"] = dist.new_group(backend="gloo", timeout=timeout)
    else:
        dist.init_process_group("gloo", timeout=timeout)
        _state["group"] = dist.group.WORLD
    _state["backend"] = dist.get_backend()
    _state["ours"] = True
    log.info("rank %d of %d: process group up (%s)", dist.get_rank(), dist.get_world_size(), _state["backend"])
    return True


def _group():
    """The CPU (gloo) group for object collectives, creating the process group (gloo) on first use."""
    if _state["group"] is None:
        init(None)
    return _state["group"]


def active() -> bool:
    """True when this process works together with others (launched, and not told to go on alone)."""
    return launched() and not _state["alone"]


def world_size() -> int:
    """How many processes share the work (1 without ``torchrun``)."""
    if not active():
        return 1
    return int(os.environ["WORLD_SIZE"])


def rank() -> int:
    """This process's global rank (0 without ``torchrun``)."""
    return env_rank() if active() else 0


def is_main() -> bool:
    """True on the process that writes the results (rank 0, or the only process)."""
    return env_rank() == 0


def backend() -> str | None:
    return _state["backend"]


def go_alone() -> None:
    """From here on this process works alone: the sharding helpers see one process and collectives are no-ops.

    For rank 0 after the other ranks have finished their share of a command (the short tail of
    a pipeline that only rank 0 runs).
    """
    _state["alone"] = True


@contextlib.contextmanager
def alone() -> Iterator[None]:
    """Within the block this process works alone (as after :func:`go_alone`), then rejoins the others.

    For rank 0's share of a pipeline that the other ranks wait out (they block in the next
    collective). What it records meanwhile is not kept: run.json reports the shared work.
    """
    before, shards = _state["alone"], copy.deepcopy(_state["shards"])
    _state["alone"] = True
    try:
        yield
    finally:
        _state["alone"], _state["shards"] = before, shards


def shutdown() -> None:
    """Destroy the process group if this module created it (at the end of a command)."""

    if _state["ours"] and dist.is_available() and dist.is_initialized():
        with contextlib.suppress(Exception):
            dist.destroy_process_group()
    _state.update(group=None, backend=None, ours=False, alone=False, shards={})


# --------------------------------------------------------------------------- shards
def shard_bounds(n: int, rank_: int | None = None, world: int | None = None) -> tuple[int, int]:
    """``[start, stop)`` of the items ``0..n-1`` that rank ``rank_`` of ``world`` takes.

    Contiguous, disjoint, covering, the same on every process, and balanced (sizes differ by
    at most one; the lower ranks take the larger shares).
    """
    rank_ = rank() if rank_ is None else int(rank_)
    world = world_size() if world is None else int(world)
    if world < 1 or not 0 <= rank_ < world:
        raise ValueError(f"rank {rank_} is not in a world of {world}")
    n = max(0, int(n))
    base, extra = divmod(n, world)
    start = rank_ * base + min(rank_, extra)
    return start, start + base + (1 if rank_ < extra else 0)


def shard(items: Sequence | int, rank_: int | None = None, world: int | None = None):
    """This rank's contiguous share of ``items`` (a sequence, or ``range(items)`` for an int)."""
    seq = range(items) if isinstance(items, int) else items
    start, stop = shard_bounds(len(seq), rank_, world)
    return seq[start:stop]


def record(kind: str, key: str | None, value: Any) -> None:
    """Note the share of ``kind`` work (``"images"``, ``"mistakes"``, ``"pairs"``) this process took, for run.json."""
    if key is None:
        _state["shards"][kind] = value
    else:
        _state["shards"].setdefault(kind, {})[str(key)] = value


def new_record() -> None:
    """Forget the shares noted so far: a command or a pipeline run starts its own record (a notebook or a test
    runs several in one process)."""
    _state["shards"] = {}


def run_record() -> dict:
    """``{"world_size": W, "shards": [{"rank": r, ...what each rank took}]}``, gathered from every rank.

    A collective: every rank must call it. Rank 0 gets the full list; the others get the same.
    """
    mine = {"rank": rank(), **_state["shards"]}
    return {"world_size": world_size(), "shards": all_gather(mine)}


# --------------------------------------------------------------------------- collectives
def barrier() -> None:
    if world_size() > 1:

        dist.barrier(group=_group())


def all_gather(obj: Any) -> list:
    """Every rank's ``obj`` (picklable), in rank order; ``[obj]`` in a single process."""
    if world_size() == 1:
        return [obj]

    out: list = [None] * world_size()
    dist.all_gather_object(out, obj, group=_group())
    return out


def gather(obj: Any) -> list | None:
    """Every rank's ``obj`` on rank 0 (in rank order); ``None`` on the other ranks."""
    if world_size() == 1:
        return [obj]

    out: list | None = [None] * world_size() if rank() == 0 else None
    dist.gather_object(obj, out, dst=0, group=_group())
    return out


def broadcast(obj: Any, src: int = 0) -> Any:
    """Rank ``src``'s ``obj`` on every rank."""
    if world_size() == 1:
        return obj

    box = [obj if rank() == src else None]
    dist.broadcast_object_list(box, src=src, group=_group())
    return box[0]


def all_agree(flag: bool) -> bool:
    """True when ``flag`` is true on every rank (so that every rank takes the same branch)."""
    return all(all_gather(bool(flag)))


@contextlib.contextmanager
def main_first() -> Iterator[None]:
    """Run the block on rank 0 first, then on the others (e.g. build a cache that the others then read)."""
    if not is_main():
        barrier()
    yield
    if is_main():
        barrier()
