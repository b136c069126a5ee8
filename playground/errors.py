"""The exceptions a caller of the playground can see.

Every problem a user can cause or fix (bad input, unknown model, a model folder that
does not load) is a `PlaygroundError`. It subclasses `ValueError`, carries a message
written for the user (what was wrong and what is allowed), and the UI shows it as
`gr.Error`. Anything else that escapes is a bug.
"""
from __future__ import annotations


class PlaygroundError(ValueError):
    """A problem the user can fix; the message says what was wrong and what is allowed."""


class BadInput(PlaygroundError):
    """An argument of a request is missing, malformed or out of range."""


class ModelError(PlaygroundError):
    """A registered model cannot serve the request: unknown, wrong task, or failed to load."""


class OutOfMemory(PlaygroundError):
    """The device ran out of memory during a run; the memory was freed and the next
    request can go on (the message suggests a smaller request)."""


class Cancelled(Exception):
    """The run was stopped through its `RunControl` before it finished.

    Not a `PlaygroundError`: nothing was wrong; the caller asked to stop."""
