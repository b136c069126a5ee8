"""Keeping a served app's memory flat under load (glibc's allocator; no-ops elsewhere).

Each run samples in a new worker thread, and glibc gives threads their own malloc
arenas (up to 8 per core) and keeps what they free there. Nothing is leaked, yet a
served app's resident size climbs under load and stays high. Measured with
`python -m playground.loadtest --users 8 --requests 100 --steps 4` (README, "Load
test"): the server climbed about 100 MB above its loaded size and kept it; trimming
after each run lowered the level by about 45 MB, and two arenas on top of that kept
it within about 35 MB of the loaded size, with no change in speed.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import functools

M_ARENA_MAX = -8  # from glibc's <malloc.h>
SERVING_ARENAS = 2


@functools.cache
def _libc():
    """The C library if it is glibc (it has `malloc_trim`), else None."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.malloc_trim, libc.mallopt  # noqa: B018 - glibc only
        return libc
    except (OSError, AttributeError):
        return None


def few_malloc_arenas(arenas: int = SERVING_ARENAS) -> bool:
    """Let threads share `arenas` malloc arenas (as MALLOC_ARENA_MAX does). Call it
    early, before the server starts its threads: arenas made before stay. True if set."""
    libc = _libc()
    return bool(libc is not None and libc.mallopt(M_ARENA_MAX, arenas))


def return_freed_memory() -> None:
    """Give the memory freed by a finished run back to the system (well under 1 ms)."""
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)
