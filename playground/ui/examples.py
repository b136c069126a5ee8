"""Example pictures for the tabs that start from a picture: a scene of the starter
world, drawn on the spot (nothing to download, nothing to ship)."""
from __future__ import annotations

from PIL import Image

from ..starter.world import BASE, Obj, Scene, render

EXAMPLE_SCENE = Scene("white", [Obj("red", "circle", (0.1, 0.12, 0.45, 0.47)),
                                Obj("blue", "square", (0.55, 0.52, 0.9, 0.87))])


def example_picture(size: int = BASE) -> Image.Image:
    """A red circle (top left) and a blue square (bottom right) on white."""
    return render(EXAMPLE_SCENE, size)
