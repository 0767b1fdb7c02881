"""The one exception type users see: a short message that says what to do."""


class NeuroInspectError(Exception):
    """Bad input or an impossible request. The CLI prints ``str(err)`` on one line and exits 2."""


def first_line(err: BaseException) -> str:
    """The first line of an exception's message, or its type's name when the message is empty."""
    lines = [ln for ln in str(err).splitlines() if ln.strip()]
    return lines[0].strip() if lines else type(err).__name__
