"""The history of one session's results across tasks: each result written once as a
PNG carrying its settings, listed newest first, and packed on request into a zip with
a JSON manifest (file name -> task and settings) beside the pictures."""
from __future__ import annotations

import atexit
import io
import json
import shutil
import tempfile
import threading
import time
import zipfile
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from ..run import settings_of
from . import pngmeta

MAX_ITEMS = 100     # per session; the oldest go first
MAX_SESSIONS = 64   # sessions remembered; the least recently used go first
MANIFEST = "manifest.json"


@dataclass(frozen=True)
class Item:
    path: Path        # the PNG, settings inside
    settings: dict

    @property
    def task(self) -> str:
        return self.settings.get("task", "")

    @property
    def caption(self) -> str:
        seed, prompt = self.settings.get("seed"), self.settings.get("prompt", "")
        return f"{self.task} · seed {seed} · {prompt}"


class History:
    """One session's results (newest first), as PNG files in `folder`."""

    def __init__(self, folder: Path, max_items: int = MAX_ITEMS):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.max_items = max_items
        self._items: list[Item] = []
        self._count = 0
        self._lock = threading.Lock()

    def add(self, image: Image.Image) -> Item:
        """Keep a result (it must carry its settings)."""
        settings = settings_of(image)
        with self._lock:
            self._count += 1
            path = self.folder / f"{self._count:04d}_{settings.get('task', 'result')}.png"
            pngmeta.save_png(image, path)
            item = Item(path, json.loads(json.dumps(settings, default=str)))
            self._items.insert(0, item)
            for old in self._items[self.max_items:]:
                old.path.unlink(missing_ok=True)
            del self._items[self.max_items:]
        return item

    def items(self) -> list[Item]:
        with self._lock:
            return list(self._items)

    def zip_bytes(self) -> bytes:
        """Every result as its PNG, oldest first, and manifest.json listing each file
        with its task and settings."""
        items = list(reversed(self.items()))
        manifest = {"created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "count": len(items),
                    "results": [{"file": item.path.name, "task": item.task,
                                 "settings": item.settings} for item in items]}
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:  # PNGs: compressed
            for item in items:
                archive.write(item.path, item.path.name)
            archive.writestr(MANIFEST, json.dumps(manifest, indent=2, ensure_ascii=False))
        return buffer.getvalue()

    def write_zip(self, path) -> Path:
        path = Path(path)
        path.write_bytes(self.zip_bytes())
        return path


class Histories:
    """The `History` of each browser session, under one temporary folder removed at exit."""

    def __init__(self, root: str | None = None, max_sessions: int = MAX_SESSIONS):
        if root is None:
            root = tempfile.mkdtemp(prefix="playground-history-")
            atexit.register(shutil.rmtree, root, ignore_errors=True)
        self.root = Path(root)
        self.max_sessions = max_sessions
        self._sessions: OrderedDict[str, History] = OrderedDict()
        self._lock = threading.Lock()
        self._count = 0

    def of(self, session: str) -> History:
        with self._lock:
            history = self._sessions.get(session)
            if history is None:
                self._count += 1  # folder names never come from the session id itself
                history = History(self.root / f"s{self._count:06d}")
                self._sessions[session] = history
            self._sessions.move_to_end(session)
            while len(self._sessions) > self.max_sessions:
                _, old = self._sessions.popitem(last=False)
                shutil.rmtree(old.folder, ignore_errors=True)
            return history

    def add(self, session: str, result) -> None:
        """Keep a result (a picture or a list of them) of `session`."""
        for image in result if isinstance(result, list) else [result]:
            self.of(session).add(image)
