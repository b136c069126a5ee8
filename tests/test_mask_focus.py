"""Inpainting's focus on the mask: a prompt that places several objects is read down to
the one placed where the mask is (no model needed: the picks and the prompts made)."""
from __future__ import annotations

import numpy as np
import pytest

from playground.starter import evaluate
from playground.starter.captions import parse
from playground.starter.world import Obj, Scene, render
from playground.tasks.mask_focus import focus_on_mask


def mask_over(box, size=64) -> np.ndarray:
    m = np.zeros((size, size), np.float32)
    x0, y0, x1, y1 = (round(v * size) for v in box)
    m[y0:y1, x0:x1] = 1.0
    return m


RED_TOP_LEFT = Obj("red", "circle", (0.05, 0.05, 0.3, 0.3))
BLUE_BOTTOM_RIGHT = Obj("blue", "square", (0.7, 0.7, 0.95, 0.95))


@pytest.mark.parametrize("box, wanted", [
    (BLUE_BOTTOM_RIGHT.box, "a blue square in the bottom right on a white background"),
    (RED_TOP_LEFT.box, "a red circle in the top left on a white background"),
    ((0.4, 0.02, 0.62, 0.25), "a small green triangle in the top on a white background"),
])
def test_the_object_placed_at_the_mask_becomes_the_prompt(box, wanted):
    prompt = ("three objects: a red circle in the top left, a small green triangle in the top "
              "and a blue square in the bottom right on a white background")
    picture = render(Scene("white", [RED_TOP_LEFT, BLUE_BOTTOM_RIGHT]))
    focus = focus_on_mask(prompt, picture, mask_over(box))
    assert focus.prompt == wanted
    assert wanted in focus.note and "places 3 objects" in focus.note


@pytest.mark.parametrize("hidden, shown, wanted", [
    (RED_TOP_LEFT, BLUE_BOTTOM_RIGHT, "a red circle"),
    (BLUE_BOTTOM_RIGHT, RED_TOP_LEFT, "a blue square"),
    # both in the top half: the side of what is visible decides, not the half
    (Obj("blue", "square", (0.4, 0.35, 0.6, 0.55)), Obj("red", "circle", (0.4, 0.02, 0.6, 0.22)),
     "a blue square"),
])
def test_a_relation_paints_the_object_on_the_masks_side_of_what_is_visible(hidden, shown, wanted):
    upper = "a red circle above a blue square"
    picture = render(Scene("white", [shown]))
    assert focus_on_mask(upper, picture, mask_over(hidden.box)).prompt == wanted


@pytest.mark.parametrize("prompt", [
    "a green triangle",
    "a green triangle in the top left",
    "a red circle and a red square",  # nothing placed, one colour: nothing to choose by
])
def test_a_prompt_that_places_fewer_than_two_objects_is_read_as_written(prompt):
    picture = render(Scene("white", [RED_TOP_LEFT]))
    focus = focus_on_mask(prompt, picture, mask_over(BLUE_BOTTOM_RIGHT.box))
    assert focus.prompt == prompt and focus.note is None


def test_on_the_held_out_cases_the_focus_names_the_object_the_mask_must_hold():
    """Every held-out inpainting case whose caption names 2-3 objects: the focused prompt
    names the new object, with its colour, shape and cell."""
    crowded = [c for c in evaluate.inpaint_cases(40) if len(c.scene.objects) > 1]
    assert len(crowded) >= 25
    for case in crowded:
        objects = parse(evaluate.focused_caption(case))["objects"]
        new = case.extra["target"]
        assert len(objects) == 1, (case.prompt, objects)
        got = objects[0]
        assert (got["colour"], got["shape"]) == (new.colour, new.shape), case.prompt
        assert got["cell"] in (None, new.cell), case.prompt


@pytest.mark.parametrize("prompt, wanted", [
    ("a red circle and a blue square", "a blue square"),
    ("two objects: a small red circle and a large blue square on a white background",
     "a large blue square on a white background"),
    ("a green triangle, a red circle and a blue square", None),  # green and blue both missing
])
def test_without_positions_the_object_whose_colour_is_missing_outside_becomes_the_prompt(
        prompt, wanted):
    picture = render(Scene("white", [RED_TOP_LEFT]))
    focus = focus_on_mask(prompt, picture, mask_over(BLUE_BOTTOM_RIGHT.box))
    if wanted is None:
        assert focus.prompt == prompt and focus.note is None
    else:
        assert focus.prompt == wanted and "only blue is nowhere outside the mask" in focus.note


def test_without_positions_an_object_hidden_but_for_its_colour_outside_is_not_chosen():
    """The red circle is masked, but a red square shows outside: red is not missing, and
    blue is there too, so nothing is changed."""
    picture = render(Scene("white", [RED_TOP_LEFT, BLUE_BOTTOM_RIGHT,
                                     Obj("red", "square", (0.7, 0.05, 0.95, 0.3))]))
    focus = focus_on_mask("a red circle and a blue square", picture, mask_over(RED_TOP_LEFT.box))
    assert focus.prompt == "a red circle and a blue square"


def test_on_the_held_out_cases_without_positions_the_focus_never_names_a_wrong_object():
    """The held-out cases' 2-3 objects named without positions: where the focus changes
    the caption (every case whose named colours differ), it names the new object."""
    crowded = [c for c in evaluate.inpaint_cases(40) if len(c.scene.objects) > 1]
    changed = 0
    for case in crowded:
        written = evaluate.caption_without_positions(case)
        focused = evaluate.focused_caption(case, written)
        if focused != written:
            changed += 1
            new = case.extra["target"]
            objects = parse(focused)["objects"]
            assert [(o["colour"], o["shape"]) for o in objects] == [(new.colour, new.shape)], (
                written, focused)
    assert changed >= 0.6 * len(crowded), (changed, len(crowded))
