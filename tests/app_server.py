"""Start the real app (starter models) in this process on a free 127.0.0.1 port, as
`python app.py` builds it, for the HTTP API and browser tests."""
from __future__ import annotations

import socket
from contextlib import contextmanager

from playground import Playground
from playground.ui import build_app
from playground.ui.serving import launch_options


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def running_app(**build_kwargs):
    """Yield (app, base_url) of a served app; closed afterwards."""
    app = build_app(Playground(), **build_kwargs)
    app.launch(prevent_thread_lock=True, quiet=True,
               **launch_options(app, host="127.0.0.1", port=free_port()))
    try:
        yield app, app.local_url
    finally:
        app.close()
