"""Start the real app (starter models) in this process on a free 127.0.0.1 port, as
`python app.py` builds it, for the HTTP API and browser tests. One app serves every
test module of a pytest run (models load once); it closes when the run ends."""
from __future__ import annotations

import atexit
import functools
import socket

from playground import Playground
from playground.ui import build_app
from playground.ui.serving import launch_options


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_app(**build_kwargs):
    """(app, base_url) of a newly served app; call app.close() when done."""
    app = build_app(Playground(), **build_kwargs)
    app.launch(prevent_thread_lock=True, quiet=True,
               **launch_options(app, host="127.0.0.1", port=free_port()))
    return app, app.local_url


@functools.cache
def shared_app():
    """The app every test module shares, started on first use."""
    app, url = start_app()
    atexit.register(app.close)
    return app, url
