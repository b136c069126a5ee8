"""Helpers shared by the tests of the sampling options (placement, regions, colour hints):
a picture's pixels, and the picture Show code's script makes when run."""
from __future__ import annotations

import runpy

import numpy as np
from PIL import Image

# Two objects side by side, one per half: the binding case of the model card
CAPTION = "a red circle and a yellow square"
PHRASES = ["red circle", "yellow square"]
BOXES = [[0.05, 0.3, 0.45, 0.7], [0.55, 0.3, 0.95, 0.7]]


def pixels(image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.int16)


def remade_by_show_code(script: str, tmp_path, monkeypatch) -> np.ndarray:
    """Run a Show code script in `tmp_path`; the pixels of the result.png it writes."""
    (tmp_path / "remake.py").write_text(script)
    monkeypatch.chdir(tmp_path)
    runpy.run_path(str(tmp_path / "remake.py"), run_name="__main__")
    return pixels(Image.open(tmp_path / "result.png"))
