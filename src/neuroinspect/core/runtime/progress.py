"""One progress behaviour for a terminal and for a log file.

On a terminal: a tqdm bar. When stderr is not a terminal (a log, CI): one line every
``NEUROINSPECT_PROGRESS_SECONDS`` seconds (default 30) and one at the end, so a log shows that
work goes on without thousands of bar redraws. Log records are written through ``tqdm.write``
(see ``install_log_handler``) so that warnings never break into a bar line.
"""
from __future__ import annotations

import logging
import os
import sys
import time

from tqdm.auto import tqdm


def _interval() -> float:
    try:
        return max(0.0, float(os.environ.get("NEUROINSPECT_PROGRESS_SECONDS", "30")))
    except ValueError:
        return 30.0


def _is_tty(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


class LineProgress:
    """A tqdm-like object that prints ``desc: done/total (pct) elapsed`` now and then."""

    def __init__(self, total: int | None, desc: str, unit: str, initial: int = 0, stream=None):
        self.total, self.desc, self.unit, self.n = total, desc, unit, initial
        self.stream = stream or sys.stderr
        self.started = self.last = time.monotonic()
        self.every = _interval()
        self.postfix = ""
        self.printed = None  # the last line printed: close() does not print it twice

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.monotonic()
        if now - self.last >= self.every:
            self.last = now
            self._print()

    def set_postfix_str(self, text: str, refresh: bool = True) -> None:
        self.postfix = text
        self._print()

    def _print(self) -> None:
        elapsed = time.monotonic() - self.started
        of = f"/{self.total}" if self.total else ""
        pct = f" ({100 * self.n / self.total:.0f}%)" if self.total else ""
        extra = f" {self.postfix}" if self.postfix else ""
        print(f"{self.desc}: {self.n}{of} {self.unit}{pct}, {elapsed:.0f} s{extra}", file=self.stream, flush=True)
        self.printed = (self.n, self.postfix)

    def close(self) -> None:
        if (self.n and (time.monotonic() - self.started) >= min(self.every, 1.0)
                and self.printed != (self.n, self.postfix)):
            self._print()

    def __iter__(self):  # pragma: no cover - not used as an iterator wrapper
        raise TypeError("LineProgress wraps no iterable")


class _Silent:
    def update(self, n: int = 1) -> None:
        pass

    def set_postfix_str(self, text: str, refresh: bool = True) -> None:
        pass

    def close(self) -> None:
        pass


def progress_bar(total: int | None, desc: str, unit: str = "it", *, enabled: bool = True, initial: int = 0,
                 leave: bool = False):
    """A tqdm bar on a terminal, periodic lines in a log, nothing when ``enabled`` is false (or on a
    process other than rank 0 under torchrun: its bar shows rank 0's share of the work)."""
    from neuroinspect.core.runtime.distributed import is_main  # lazy: it imports torch; this module stays torch-free

    if not enabled or not is_main():
        return _Silent()
    if _is_tty(sys.stderr):
        return tqdm(total=total, desc=desc, unit=unit, initial=initial, leave=leave)
    return LineProgress(total, desc, unit, initial)


class TqdmLogHandler(logging.Handler):
    """Writes log records with ``tqdm.write`` so they land above a running bar, never inside it."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            msg = self.format(record)
            if _is_tty(sys.stderr):
                tqdm.write(msg, file=sys.stderr)
            else:
                print(msg, file=sys.stderr, flush=True)
        except Exception:  # pragma: no cover - logging must never raise
            self.handleError(record)


def install_log_handler(level: int, prefix: str = "") -> None:
    """Route log records through :class:`TqdmLogHandler`; ``prefix`` starts every line (e.g. ``[rank 1] ``)."""
    root = logging.getLogger()
    for h in list(root.handlers):
        if isinstance(h, TqdmLogHandler):
            root.removeHandler(h)
    handler = TqdmLogHandler()
    handler.setFormatter(logging.Formatter(prefix.replace("%", "%%") + "%(message)s"))
    root.addHandler(handler)
    root.setLevel(level)
