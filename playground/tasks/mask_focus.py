"""Inpainting: read a prompt of the whole picture down to what the mask should hold.

People often prompt an inpainter with the whole picture they want ("a red circle in the
top left and a blue square in the bottom right"). A small model then has to work out
which of the named objects is the one missing under the mask, and the starter inpainter
gets that wrong about half the time, while it paints an object named alone right most of
the time (model card, "Naming only what goes in the mask"). So when a prompt places two
or more objects (by cell, "in the top left", or by relation, "above"), the one placed
where the mask is becomes the prompt: its own words, its cell, and the background if the
prompt names one. When a prompt names two or more objects without placing them ("a red
circle and a blue square"), the one whose colour is nowhere outside the mask becomes the
prompt, if every other named colour is there. Any other prompt is kept as written.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
from PIL import Image

from ..starter.captions import indefinite_article, with_article
from .colour_hint import COLOURS
from .placement import POSITION_WORDS, Placement, placements, unplaced_objects

WORDS = re.compile(r"[A-Za-z]+|[,:;.]")
BACKGROUND = re.compile(r"\b(?:on|with)\s+(?:an?\s+)?([a-z]+)\s+background\b", re.IGNORECASE)
# the axis (0: x, 1: y) a relation orders its two objects along
RELATION_AXIS = {"above": 1, "below": 1, "to the left of": 0, "to the right of": 0}
BACKGROUND_STEP = 48  # summed RGB difference from the background that counts as an object
COLOUR_STEP = 120  # summed RGB difference within which a pixel counts as a named colour
MISSING_SHARE = 0.004  # under this share of the pixels outside the mask, a colour is missing
PRESENT_SHARE = 0.015  # over it, present (a small object is about 3.5% of the picture)
COUNT_SIDE = 128


@dataclass
class Focus:
    prompt: str  # what the model reads
    note: str | None  # what was read and why, when the prompt was changed


def focus_on_mask(prompt: str, picture: Image.Image, m: np.ndarray) -> Focus:
    """The prompt the inpainter should read for mask `m` (H, W in 0..1) over `picture`."""
    tokens = WORDS.findall(prompt.lower())
    found = placements(tokens)
    if len(found) < 2:
        return _missing_colour(prompt, tokens, found, picture, m)
    chosen = _placed_at_mask(found, picture, m)
    focused = object_prompt(chosen, prompt)
    note = (f"the prompt places {len(found)} objects; the model was asked only for the one "
            f"placed where the mask is: \"{focused}\" (turn off 'focus on the mask' to paint "
            "from the prompt as written)")
    return Focus(focused, note)


def _missing_colour(prompt: str, tokens: list[str], found: list[Placement],
                    picture: Image.Image, m: np.ndarray) -> Focus:
    """For a prompt that names objects without placing them ("a red circle and a blue
    square"): the one object whose colour is nowhere outside the mask, when the others'
    colours are all there; else the prompt as written."""
    named = _coloured_objects(tokens, found)
    if len(named) < 2 or len({colour for _, colour in named}) < len(named):
        return Focus(prompt, None)
    share = _colour_shares_outside(picture, m)
    missing = [(words, colour) for words, colour in named if share[colour] < MISSING_SHARE]
    if len(missing) != 1 or any(share[c] < PRESENT_SHARE for w, c in named if w != missing[0][0]):
        return Focus(prompt, None)
    focused = with_article(missing[0][0]) + _background_phrase(prompt)
    note = (f"the prompt names {len(named)} objects and only {missing[0][1]} is nowhere outside "
            f"the mask, so the model was asked only for \"{focused}\" (turn off 'focus on the "
            "mask' to paint from the prompt as written)")
    return Focus(focused, note)


def _coloured_objects(tokens: list[str], found: list[Placement]) -> list[tuple[str, str]]:
    """(words, colour) of each object the prompt names with one colour word, placed or not
    (as `placement` reads a prompt's objects)."""
    objects = [[w for w in p.words if w not in POSITION_WORDS] for p in found]
    objects += [words.split() for words in unplaced_objects(tokens)]
    named = []
    for words in objects:
        colours = [w for w in words if w in COLOURS]
        if len(colours) == 1 and words[-1] not in COLOURS:
            named.append((" ".join(words), colours[0]))
    return named


def _colour_shares_outside(picture: Image.Image, m: np.ndarray) -> dict[str, float]:
    """The share of the pixels outside the mask nearest each named colour (and near it),
    counted on at most COUNT_SIDE pixels a side: shares need no more."""
    scale = min(1.0, COUNT_SIDE / max(m.shape))
    size = (max(1, round(m.shape[1] * scale)), max(1, round(m.shape[0] * scale)))
    rgb = np.asarray(picture.convert("RGB").resize(size)).astype(np.int32)
    small = Image.fromarray((m * 255).astype(np.uint8)).resize(size, Image.NEAREST)
    outside = rgb[np.asarray(small) < 128]
    names = list(COLOURS)
    palette = np.array([COLOURS[n] for n in names], dtype=np.int32)
    distance = np.abs(outside[:, None, :] - palette[None, :, :]).sum(axis=2)
    nearest, close = distance.argmin(axis=1), distance.min(axis=1) < COLOUR_STEP
    total = max(len(outside), 1)
    return {n: float(((nearest == i) & close).sum()) / total for i, n in enumerate(names)}


def _placed_at_mask(found: list[Placement], picture: Image.Image, m: np.ndarray) -> Placement:
    """The placed object the mask covers: the one whose cell the mask's centre is nearest;
    for two objects tied by a relation, the one on the mask's side of what is visible."""
    centre = _centre(m)
    related = [p for p in found if p.relation is not None]
    if len(related) == 2 and len(found) == 2:
        visible = _visible_centre(picture, m)
        if visible is not None:
            axis = RELATION_AXIS[related[0].relation]
            side = centre[axis] - visible[axis]
            return max(related, key=lambda p: (box_centre(p.box)[axis] - 0.5) * side)
    return min(found, key=lambda p: _distance(centre, p))


def _distance(centre, p: Placement) -> float:
    placed = box_centre(p.box)
    if p.relation is not None:  # only the relation's axis says where it is
        axis = RELATION_AXIS[p.relation]
        return abs(centre[axis] - placed[axis])
    return float(np.hypot(centre[0] - placed[0], centre[1] - placed[1]))


def box_centre(box) -> tuple[float, float]:
    return (box[0] + box[2]) / 2, (box[1] + box[3]) / 2


def _centre(m: np.ndarray) -> tuple[float, float]:
    """The mask's centre of mass in 0..1 picture coordinates."""
    ys, xs = np.indices(m.shape)
    total = m.sum()
    return (float((xs * m).sum() / total + 0.5) / m.shape[1],
            float((ys * m).sum() / total + 0.5) / m.shape[0])


def _visible_centre(picture: Image.Image, m: np.ndarray) -> tuple[float, float] | None:
    """The centre of what stands out from the background outside the mask (the background
    taken as the commonest colour there), or None when nothing does."""
    rgb = np.asarray(picture.convert("RGB").resize((m.shape[1], m.shape[0]))).astype(np.int32)
    outside = m < 0.5
    colours, counts = np.unique(rgb[outside], axis=0, return_counts=True)
    background = colours[counts.argmax()]
    stands_out = outside & (np.abs(rgb - background).sum(axis=2) > BACKGROUND_STEP)
    if not stands_out.any():
        return None
    return _centre(stands_out.astype(np.float32))


def object_prompt(p: Placement, prompt: str) -> str:
    """The placed object alone: its words, its cell (unless a relation chose it) and the
    background the prompt names."""
    text = with_article(" ".join(w for w in p.words if w not in POSITION_WORDS))
    if p.relation is None:
        text += f" in the {p.cell}"
    return text + _background_phrase(prompt)


def _background_phrase(prompt: str) -> str:
    background = BACKGROUND.search(prompt)
    if not background:
        return ""
    colour = background.group(1).lower()
    return f" on {indefinite_article(colour)} {colour} background"
