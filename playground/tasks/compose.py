"""Text-to-image, object by object: each placed object painted by the inpainter alone.

The starter text-to-image model draws one object well but rarely gets two right at once
(model card, "two objects"), while its inpainter paints one named object into a mask
right most of the time. So `compose_objects` starts from a canvas of the background the
prompt names (flat, as the Shapes world's backgrounds are; white when none is named) and
has the model's inpainting pipeline paint each object the prompt places (its cell, or its
side of a relation: `placement.placements`) into a square mask there, the square as big
as the object's size word says (medium when none), reading only that object's words with
its cell and the background. Objects are painted one after another, each pass blended
back outside its mask, so later objects never disturb earlier ones outside their masks.
"""
from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from .. import run
from ..starter.world import SIZES
from .colour_hint import COLOURS, SIZE_WORDS, background_colour
from .inpaint import blend
from .mask_focus import WORDS, box_centre, object_prompt
from .placement import Placement, placements, unplaced_objects

PAD = 0.06  # each side of the object's square: as the inpainter's training masks
IN_CELL = 0.03  # how far inside its cell a square's centre stays, as the world's objects' do
NOTHING_TO_COMPOSE = ("compose objects: the prompt names no object with a position (e.g. "
                      "\"a red circle in the top left\"), so it was drawn as usual")


def placed_objects(prompt: str) -> list[Placement]:
    return placements(WORDS.findall(prompt.lower()))


def left_out(prompt: str) -> list[str]:
    """A warning for each object the prompt names without a place: composing draws only
    placed objects."""
    unplaced = unplaced_objects(WORDS.findall(prompt.lower()))
    if not unplaced:
        return []
    named = ", ".join(f'"{words}"' for words in unplaced)
    return [f"compose objects: {named} has no position, so it was not drawn; give every "
            "object a place (\"in the bottom right\", \"above a ...\") or turn compose off"]


def canvas(prompt: str, width: int, height: int) -> Image.Image:
    colour = background_colour(prompt) or "white"
    return Image.new("RGB", (width, height), COLOURS[colour])


def object_mask(p: Placement, width: int, height: int) -> np.ndarray:
    """A square as big as the object's size word says (the middle of the world's range
    for that size) plus padding, centred on its place, moved inside the picture as far as
    its centre stays in its cell, and cut at the picture's edge (float H x W, 0..1)."""
    size = next((SIZE_WORDS[w] for w in p.words if w in SIZE_WORDS), "medium")
    side = min(1.0, sum(SIZES[size]) / 2 / 64 + 2 * PAD)
    x0, y0, x1, y1 = p.box
    cx, cy = (min(1 - side / 2, max(side / 2, v)) for v in box_centre(p.box))
    cx, cy = min(max(cx, x0 + IN_CELL), x1 - IN_CELL), min(max(cy, y0 + IN_CELL), y1 - IN_CELL)
    m = Image.new("L", (width, height), 0)
    ImageDraw.Draw(m).rectangle([round((cx - side / 2) * width), round((cy - side / 2) * height),
                                 round((cx + side / 2) * width) - 1,
                                 round((cy + side / 2) * height) - 1], fill=255)
    return np.asarray(m, dtype=np.float32) / 255.0


def previewing_over(control: run.RunControl, picture: Image.Image, m: np.ndarray):
    """The pass's control, its previews shown over the picture so far (the inpainter's own
    estimate is of the whole picture, noise outside the square included)."""
    show = control.on_preview
    if show is not None:
        control.on_preview = lambda image, step, total: show(blend(picture, image, m), step, total)
    return control


def compose(inpainter, prompt: str, negative_prompt: str | None, found: list[Placement],
            generator, width: int, height: int, steps: int, guidance: float,
            control: run.RunControl | None, recorder=None) -> Image.Image:
    """One picture: the canvas, then each object of `found` painted in turn (progress
    counts across all of them). `recorder`: the Learn tab's filmstrip recorder
    (`teach.trace.Recorder`), told where each pass starts and hooked into its steps."""
    picture = canvas(prompt, width, height)
    for i, p in enumerate(found):
        m = object_mask(p, width, height)
        callbacks = ({} if control is None else run.step_callback_kwargs(
            inpainter, previewing_over(control.part(i, len(found)), picture, m), steps))
        if recorder is not None:
            recorder.begin_pass(i, picture, m)
            callbacks["callback_on_step_end"] = recorder.callback(
                callbacks.get("callback_on_step_end"))
        mask = Image.fromarray((m * 255).astype(np.uint8))
        painted = inpainter(prompt=object_prompt(p, prompt), negative_prompt=negative_prompt,
                            image=picture, mask_image=mask, strength=1.0, width=width,
                            height=height, num_inference_steps=steps, guidance_scale=guidance,
                            generator=generator, output_type="pil", **callbacks).images[0]
        picture = blend(picture, painted, m)
    return picture
