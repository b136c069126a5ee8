"""The Gradio app: one file per tab, `build.py` assembles them, `api.py` adds the
named HTTP endpoints, `serving.py` holds what `app.py` needs to launch it.

Every tab is thin: it turns widgets into arguments of a `Playground` method and shows
what comes back. No rule about pictures lives here."""
import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no network calls home

from .build import build_app  # noqa: E402

__all__ = ["build_app"]
