"""The one exception type users see: a short message that says what to do."""


class NeuroInspectError(Exception):
    """Bad input or an impossible request. The CLI prints ``str(err)`` on one line and exits 2."""
