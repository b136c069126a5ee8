"""The Shapes world (see shared STARTER_WORLD.md): scenes of flat shapes, drawn exactly.

A scene is a background colour plus 1-3 objects, each with a colour, a shape and a
box in normalised 0..1 coordinates. Rendering draws at 4x and area-downsamples, so
object interiors keep the exact palette colour and only edges are anti-aliased.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field, asdict

from PIL import Image, ImageDraw

PALETTE = {
    "red": (220, 40, 40),
    "green": (40, 180, 60),
    "blue": (40, 80, 220),
    "yellow": (240, 210, 40),
    "orange": (245, 140, 30),
    "purple": (140, 60, 190),
    "white": (245, 245, 245),
    "black": (20, 20, 20),
}
COLOURS = list(PALETTE)
SHAPES = ["circle", "square", "triangle"]
# side of the object's bounding square, in pixels of a 64 px picture
SIZES = {"small": (12, 16), "medium": (20, 26), "large": (30, 38)}
SIZE_NAMES = list(SIZES)
CELLS = ["top left", "top", "top right", "left", "centre", "right",
         "bottom left", "bottom", "bottom right"]
BASE = 64  # the world's native picture size
SUPERSAMPLE = 4


@dataclass
class Obj:
    colour: str
    shape: str
    box: tuple  # (x0, y0, x1, y1) in 0..1, x to the right, y down

    @property
    def centre(self):
        x0, y0, x1, y1 = self.box
        return (x0 + x1) / 2, (y0 + y1) / 2

    @property
    def cell(self) -> str:
        return cell_of(*self.centre)

    @property
    def size(self) -> str:
        return size_of(self.box)


@dataclass
class Scene:
    background: str = "white"
    objects: list = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"background": self.background,
                "objects": [dict(asdict(o), cell=o.cell, size=o.size) for o in self.objects]}


def cell_of(cx: float, cy: float) -> str:
    col = min(int(cx * 3), 2)
    row = min(int(cy * 3), 2)
    return CELLS[row * 3 + col]


def cell_bounds(cell: str):
    """(x0, y0, x1, y1) of a grid cell in 0..1."""
    i = CELLS.index("centre" if cell == "center" else cell)
    row, col = divmod(i, 3)
    return col / 3, row / 3, (col + 1) / 3, (row + 1) / 3


def size_of(box) -> str:
    side = max(box[2] - box[0], box[3] - box[1]) * BASE
    # nearest named range; sizes between ranges go to the closer one
    best, dist = "medium", 1e9
    for name, (lo, hi) in SIZES.items():
        d = 0 if lo <= side <= hi else min(abs(side - lo), abs(side - hi))
        if d < dist:
            best, dist = name, d
    return best


def _draw_object(draw: ImageDraw.ImageDraw, obj: Obj, px: int):
    x0, y0, x1, y1 = (v * px for v in obj.box)
    fill = PALETTE[obj.colour]
    if obj.shape == "square":
        draw.rectangle([x0, y0, x1 - 1, y1 - 1], fill=fill)
    elif obj.shape == "circle":
        side = min(x1 - x0, y1 - y0)
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        draw.ellipse([cx - side / 2, cy - side / 2, cx + side / 2 - 1, cy + side / 2 - 1], fill=fill)
    elif obj.shape == "triangle":
        draw.polygon([((x0 + x1) / 2, y0), (x1 - 1, y1 - 1), (x0, y1 - 1)], fill=fill)
    else:
        raise ValueError(f"unknown shape {obj.shape!r}; known: {', '.join(SHAPES)}")


def render(scene: Scene, size: int = BASE) -> Image.Image:
    """Draw a scene as a size x size RGB picture."""
    px = size * SUPERSAMPLE
    img = Image.new("RGB", (px, px), PALETTE[scene.background])
    draw = ImageDraw.Draw(img)
    for obj in scene.objects:
        _draw_object(draw, obj, px)
    return img.resize((size, size), Image.BOX)


def _place(rng: random.Random, cell: str, side: float):
    """A square box of `side` (0..1) whose centre lies inside `cell`, kept in the picture."""
    cx0, cy0, cx1, cy1 = cell_bounds(cell)
    half = side / 2
    lo_x, hi_x = max(cx0 + 0.02, half), min(cx1 - 0.02, 1 - half)
    lo_y, hi_y = max(cy0 + 0.02, half), min(cy1 - 0.02, 1 - half)
    cx = rng.uniform(lo_x, hi_x) if lo_x < hi_x else (cx0 + cx1) / 2
    cy = rng.uniform(lo_y, hi_y) if lo_y < hi_y else (cy0 + cy1) / 2
    return (cx - half, cy - half, cx + half, cy + half)


def _overlap(a, b) -> float:
    """Intersection area over the smaller box's area."""
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    if w <= 0 or h <= 0:
        return 0.0
    small = min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1]))
    return w * h / small


def random_scene(rng: random.Random, n_objects: int | None = None,
                 background: str | None = None) -> Scene:
    """1-3 objects in distinct cells, overlapping at most a little, none of the background colour."""
    bg = background or (rng.choice(COLOURS) if rng.random() < 0.4 else "white")
    n = n_objects or rng.choice([1, 1, 2, 2, 3])
    for _ in range(100):
        cells = rng.sample(CELLS, n)
        objects = []
        for cell in cells:
            size = rng.choice(SIZE_NAMES)
            lo, hi = SIZES[size]
            side = rng.randint(lo, hi) / BASE
            colour = rng.choice([c for c in COLOURS if c != bg])
            objects.append(Obj(colour, rng.choice(SHAPES), _place(rng, cell, side)))
        if all(_overlap(a.box, b.box) < 0.15 for i, a in enumerate(objects) for b in objects[i + 1:]):
            if all(o.cell == c for o, c in zip(objects, cells)):
                return Scene(bg, objects)
    return Scene(bg, objects[:1])
