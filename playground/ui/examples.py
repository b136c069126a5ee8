"""Example pictures for the tabs that start from a picture: a scene of the starter
world, drawn on the spot (nothing to download, nothing to ship)."""
from __future__ import annotations

import functools
import tempfile
from pathlib import Path

from PIL import Image

from ..starter.world import BASE, Obj, Scene, render

EXAMPLE_SCENE = Scene("white", [Obj("red", "circle", (0.1, 0.12, 0.45, 0.47)),
                                Obj("blue", "square", (0.55, 0.52, 0.9, 0.87))])


def example_picture(size: int = BASE) -> Image.Image:
    """A red circle (top left) and a blue square (bottom right) on white."""
    return render(EXAMPLE_SCENE, size)


@functools.cache
def picture_file(picture_fn, *args) -> str:
    """`picture_fn(*args)` written once as a PNG file; its path.

    Widgets get pictures that never change as files: Gradio copies a file into its
    cache once, while a PIL value is written again on every use, and rewriting a file
    that the browser is still downloading breaks that download."""
    folder = Path(tempfile.mkdtemp(prefix="playground-ui-"))
    path = folder / f"{picture_fn.__name__}.png"
    picture_fn(*args).save(path)
    return str(path)


def example_picture_file() -> str:
    return picture_file(example_picture)
