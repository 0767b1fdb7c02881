"""Atomic file writes and small serialisation helpers.

Every file the project writes goes through here: it is written to a temporary
file in the same folder and renamed into place, so a crash or Ctrl-C never leaves
a half-written file behind.
"""
from __future__ import annotations

import atexit
import contextlib
import csv
import errno
import io as _io
import json
import math
import os
import shutil
import signal
import tempfile
import threading
from pathlib import Path
from typing import Any, Iterator

from neuroinspect.core.base.errors import NeuroInspectError


def default_cache_dir() -> Path:
    """Where features and generated data are cached: ``$NEUROINSPECT_CACHE`` or ``~/.cache/neuroinspect``."""
    return Path(os.environ.get("NEUROINSPECT_CACHE", Path.home() / ".cache" / "neuroinspect"))


def _umask() -> int:
    mask = os.umask(0o022)  # reading the umask means setting it: put it straight back
    os.umask(mask)
    return mask


def file_mode() -> int:
    """The mode a plain ``open(path, "w")`` would give a new file under the current umask."""
    return 0o666 & ~_umask()


def mkdirs(path: str | os.PathLike, what: str = "folder") -> Path:
    """``mkdir -p`` with one clear error when it cannot be done (a file in the way, no permission)."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise NeuroInspectError(f"{what} '{path}' is a file, not a folder; choose another path") from None
    except NotADirectoryError:
        raise NeuroInspectError(f"{what} '{path}' cannot be created: a part of it is a file; choose another path") from None
    except PermissionError:
        raise NeuroInspectError(f"{what} '{path}' cannot be created: permission denied; choose a writable path") from None
    except OSError as err:
        raise NeuroInspectError(f"{what} '{path}' cannot be created ({err.strerror}); choose another path") from None
    return path


def check_writable_dir(path: str | os.PathLike, what: str = "--out") -> Path:
    """Make sure ``path`` is, or can become, a folder we can write into; fail with one line if not.

    Creates nothing: it tries a temporary file in ``path`` or in its nearest existing parent.
    Called before any long computation, so that a bad ``--out`` costs nothing.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise NeuroInspectError(f"{what} '{path}' is a file, not a folder; choose another path")
    probe = path.absolute()
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise NeuroInspectError(f"{what} '{path}' cannot be created: '{probe}' is a file; choose another path")
    try:
        fd, tmp = tempfile.mkstemp(prefix=".write-test.", dir=probe)
        os.close(fd)
        os.unlink(tmp)
    except OSError as err:
        reason = "permission denied" if isinstance(err, PermissionError) else (err.strerror or str(err))
        where = "" if probe == path.absolute() else f": it cannot be created in '{probe}'"
        raise NeuroInspectError(f"{what} '{path}' is not writable{where} ({reason}); choose a writable folder") from None
    return path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` on success.

    The file gets the mode a plain ``open()`` would give it (the umask is respected).
    """
    path = Path(path)
    mkdirs(path.parent)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except PermissionError:
        raise NeuroInspectError(f"cannot write into '{path.parent}': permission denied; choose a writable folder") from None
    except OSError as err:
        _check_space(err, path)
        raise
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, file_mode())
        os.replace(tmp_path, path)
    except OSError as err:  # a full disk is one line; the half-written file goes (below)
        _check_space(err, path)
        raise
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


NO_SPACE = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}


def no_space_message(path: str | os.PathLike) -> str:
    return f"no space left on device: cannot write '{path}'; free some space, or write elsewhere (--out, --cache-dir)"


def _check_space(err: OSError, path: Path) -> None:
    """One line instead of ``err`` when the disk (or the quota) is full."""
    if err.errno in NO_SPACE:
        raise NeuroInspectError(no_space_message(path)) from None


@contextlib.contextmanager
def _no_sigint() -> Iterator[None]:
    """Hold back Ctrl-C for the few renames that must happen together (main thread only)."""
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "pthread_sigmask"):
        yield
        return
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def staging_dir(out: str | os.PathLike) -> Path:
    """A fresh empty folder beside ``out`` to write a whole result into before ``publish_dir``."""
    out = Path(out)
    mkdirs(out.parent)
    prefix = f".{out.name}.partial-"
    for old in out.parent.glob(prefix + "*"):  # left by an interrupted run: of this process, or of a dead one
        pid = old.name[len(prefix):].split("-")[0]
        if pid.isdigit() and (int(pid) == os.getpid() or not _alive(int(pid))):
            shutil.rmtree(old, ignore_errors=True)
    staging = Path(tempfile.mkdtemp(prefix=f"{prefix}{os.getpid()}-", dir=out.parent))
    atexit.register(shutil.rmtree, staging, True)  # an interrupted run leaves nothing behind at exit
    return staging


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


def publish_dir(staging: str | os.PathLike, out: str | os.PathLike, manifest: str) -> Path:
    """Move every entry of ``staging`` into ``out``, replacing same-named entries, as one step.

    ``manifest`` (e.g. ``visualizations.json``) names the file that lists the result: the old
    one is removed first and the new one moved in last, and Ctrl-C is held back meanwhile, so a
    reader sees either the old result, the new one, or (after a hard kill) no manifest at all —
    never a manifest beside files of another run.
    """
    staging, out = Path(staging), Path(out)
    mkdirs(out)
    trash = Path(tempfile.mkdtemp(prefix=".replaced-", dir=out))
    entries = sorted(p.name for p in staging.iterdir())
    with _no_sigint():
        if (out / manifest).exists():
            os.replace(out / manifest, trash / manifest)
        for name in entries:
            if name == manifest:
                continue
            if (out / name).exists() or (out / name).is_symlink():
                os.replace(out / name, trash / name)
            os.replace(staging / name, out / name)
        if manifest in entries:
            os.replace(staging / manifest, out / manifest)
    shutil.rmtree(trash, ignore_errors=True)
    shutil.rmtree(staging, ignore_errors=True)
    return out


def _write_file(path: Path, data: bytes) -> None:
    """Every byte the project writes passes here (so a full disk is one OSError, caught by ``atomic_path``)."""
    with open(path, "wb") as f:
        f.write(data)


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        _write_file(tmp, data)
    return Path(path)


def save_torch(path: str | os.PathLike, obj: Any) -> Path:
    """``torch.save(obj)`` atomically (serialised in memory first: torch's own writer hides a full disk's errno)."""
    import torch  # lazy: core.base.io stays free of torch for the command line's start-up

    buf = _io.BytesIO()
    torch.save(obj, buf)
    return write_bytes(path, buf.getvalue())


def save_safetensors(path: str | os.PathLike, tensors: dict, metadata: dict[str, str] | None = None) -> Path:
    """A ``.safetensors`` file, atomically (serialised in memory first, as in :func:`save_torch`)."""
    from safetensors.torch import save  # lazy: as torch in save_torch

    return write_bytes(path, save(tensors, metadata=metadata))


def write_text(path: str | os.PathLike, text: str) -> Path:
    return write_bytes(path, text.encode("utf-8"))


def _clean(obj: Any) -> Any:
    """Make ``obj`` JSON-safe: tensors and numpy values become Python numbers, NaN becomes null."""
    if hasattr(obj, "tolist") and not isinstance(obj, (str, bytes)):
        obj = obj.tolist()
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    return obj


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    return write_text(path, json.dumps(_clean(obj), indent=2) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def write_csv(path: str | os.PathLike, header: list[str], rows: list[list[Any]]) -> Path:
    buf = _io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(header)
    writer.writerows(rows)
    return write_text(path, buf.getvalue())


def save_png(path: str | os.PathLike, image) -> Path:
    """Save a PIL image as PNG atomically."""
    buf = _io.BytesIO()
    image.save(buf, format="PNG")
    return write_bytes(path, buf.getvalue())
