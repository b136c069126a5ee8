"""Running one request from the UI: a worker thread, live steps and previews, Stop.

The UI never samples by itself: `stream_run` calls a `Playground` method in a worker
thread with a fresh `RunControl`, and turns its progress and preview callbacks into a
stream of `Step` updates that a Gradio generator can yield. `ActiveRuns` remembers the
`RunControl` of each browser session's run per tab, so a Stop button cancels that run
and no other user's.
"""
from __future__ import annotations

import contextvars
import queue
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator

from PIL import Image

from ..run import RunControl
from .memory import return_freed_memory

PREVIEWS_PER_RUN = 5  # a few previews per run: each one costs a VAE decode


@dataclass
class Step:
    """One update from a running request; `done` is True for the last one."""
    step: int = 0
    total: int = 0
    stage: str = ""  # set while work before sampling reports (RunControl.on_stage)
    preview: Image.Image | None = None
    seconds: float = 0.0
    done: bool = False
    result: Any = None


# A run of a session that closed this recently is cancelled as it starts: it was queued
# before the close and slipped out of the queue as the close was being handled. Later
# runs are let through, because a browser whose connection blipped reconnects with the
# same session.
CLOSED_SESSION_GRACE_S = 10.0


class ActiveRuns:
    """The `RunControl` of the run each (browser session, tab) has in flight."""

    def __init__(self):
        self._lock = threading.Lock()
        self._controls: dict[tuple[str, str], RunControl] = {}
        self._closed_at: dict[str, float] = {}

    def start(self, session: str, tab: str, control: RunControl) -> None:
        with self._lock:
            previous = self._controls.get((session, tab))
            if previous is not None:
                previous.cancel()  # one run per session and tab
            self._controls[(session, tab)] = control
            closed_at = self._closed_at.get(session)
        if closed_at is not None and time.monotonic() - closed_at < CLOSED_SESSION_GRACE_S:
            control.cancel()  # its browser tab is gone: stop at the first step

    def close_session(self, session: str) -> int:
        """The browser tab of `session` closed: cancel its runs on every tab, and those
        that start in the next moments. Returns how many runs were cancelled."""
        now = time.monotonic()
        with self._lock:
            self._closed_at = {s: t for s, t in self._closed_at.items()
                               if now - t < CLOSED_SESSION_GRACE_S}
            self._closed_at[session] = now
            controls = [c for (s, _), c in self._controls.items() if s == session]
        for control in controls:
            control.cancel()
        return len(controls)

    def finish(self, session: str, tab: str, control: RunControl) -> None:
        with self._lock:
            if self._controls.get((session, tab)) is control:
                del self._controls[(session, tab)]

    def stop(self, session: str, tab: str) -> bool:
        """Cancel this session's run on this tab; True if there was one."""
        with self._lock:
            control = self._controls.get((session, tab))
        if control is None:
            return False
        control.cancel()
        return True

    def count(self) -> int:
        with self._lock:
            return len(self._controls)


def preview_every(steps: int) -> int:
    return max(1, round(steps / PREVIEWS_PER_RUN))


def stream_run(call: Callable[[RunControl], Any], *, steps: int, runs: ActiveRuns,
               session: str, tab: str, poll_s: float = 0.1,
               previews: bool = True) -> Iterator[Step]:
    """Run `call(control)` in a worker thread; yield a `Step` per progress report
    (with the newest preview, if any; none when `previews` is False) and a final
    `Step(done=True, result=...)`.

    Exceptions of `call` (including `Cancelled`) are raised here, in the caller's
    thread. If the consumer stops iterating (the browser left, Gradio cancelled the
    event), the run is cancelled too, so the worker never samples for nobody."""
    events: queue.Queue = queue.Queue()
    control = RunControl(
        on_progress=lambda step, total: events.put(("progress", step, total, None)),
        on_preview=lambda image, step, total: events.put(("progress", step, total, image)),
        on_stage=lambda name, done, total: events.put(("stage", done, total, name)),
        preview_every=preview_every(steps) if previews else 0)
    outcome: dict = {}

    def work():
        try:
            outcome["result"] = call(control)
        except BaseException as error:  # handed to the caller's thread below
            outcome["error"] = error
        finally:
            events.put(("end", 0, 0, None))

    context = contextvars.copy_context()
    worker = threading.Thread(target=context.run, args=(work,), daemon=True,
                              name=f"playground-{tab}")
    runs.start(session, tab, control)
    start = time.perf_counter()
    try:
        worker.start()
        yield from _updates(events, start, poll_s)
        worker.join()
        if "error" in outcome:
            raise outcome["error"]
        yield Step(done=True, result=outcome["result"], seconds=time.perf_counter() - start)
    finally:
        if worker.is_alive():
            control.cancel()
        runs.finish(session, tab, control)
        return_freed_memory()  # see memory.py: keeps a served app's size flat


def _updates(events: queue.Queue, start: float, poll_s: float) -> Iterator[Step]:
    """Progress reports until the worker says it ended; previews are never dropped,
    plain step reports are merged when several arrived since the last poll."""
    while True:
        try:
            kind, step, total, payload = events.get(timeout=poll_s)
        except queue.Empty:
            continue
        if kind == "end":
            return
        while kind == "progress" and payload is None and not events.empty():
            peek = events.queue[0]
            if peek[0] != "progress":
                break
            kind, step, total, payload = events.get_nowait()
        yield Step(step=step, total=total, stage=payload if kind == "stage" else "",
                   preview=payload if kind == "progress" else None,
                   seconds=time.perf_counter() - start)
