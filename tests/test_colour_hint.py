"""colour_hints for layout-to-image (each phrase's colour painted faintly into the starting
noise of its box) and text-to-image (into the cell the prompt names). Only those latents
move, prompts without a colour or a place leave the noise as it was (with a warning), the
red object comes out red more often (judged by pixels), and the option is recorded,
restored and reproduced like every other setting."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from remade import BOXES, CAPTION, PHRASES, pixels, remade_by_show_code

from playground import BadInput, settings_of
from playground.share.recipe import reproduce, restorable
from playground.tasks.colour_hint import (NO_CELL, NO_COLOUR, background_colour,
                                         cell_hinted_latents, hinted_latents, phrase_colour,
                                         sized_box)


def test_the_colour_is_the_first_colour_word_of_the_phrase():
    assert phrase_colour("a bright Red circle") == "red"
    assert phrase_colour("small, yellow square on blue") == "yellow"
    assert phrase_colour("a grey cat") == "grey"
    assert phrase_colour("a circle") is None


def test_the_background_colour_is_read_from_the_prompt():
    assert background_colour("a red circle on a Blue background") == "blue"
    assert background_colour("a red circle with a white background") == "white"
    assert background_colour("a red circle on a plain background") is None
    assert background_colour("a red circle") is None


def test_only_the_latents_inside_a_coloured_box_move(starter):
    pipe = starter.registry.pipeline("starter", "layout_to_image")
    noise = torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(0))
    hinted = hinted_latents(pipe, noise, ["a red circle", "a circle"],
                            [[0.0, 0.0, 0.5, 0.5], [0.5, 0.5, 1.0, 1.0]], None, 64, 64)
    moved = (hinted - noise).abs().sum(1)[0]
    assert moved[:8, :8].min() > 0.05  # the red box, every latent pixel
    assert moved[8:].max() == 0 and moved[:, 8:].max() == 0  # elsewhere (no colour: no hint)
    red, yellow = (hinted_latents(pipe, noise, [p], [[0, 0, 1, 1]], None, 64, 64) - noise
                   for p in ("red", "yellow"))
    assert (red - yellow).abs().mean() > 0.05  # colours differ in the latent


def test_phrases_without_a_colour_leave_the_picture_as_it_was_with_a_warning(starter):
    kwargs = dict(seed=4, steps=6)
    plain = starter.layout_to_image("a circle", ["a circle"], [[0.1, 0.1, 0.6, 0.6]], **kwargs)
    hinted = starter.layout_to_image("a circle", ["a circle"], [[0.1, 0.1, 0.6, 0.6]],
                                     colour_hints=True, **kwargs)
    assert np.array_equal(pixels(plain), pixels(hinted))
    assert NO_COLOUR in settings_of(hinted)["warnings"]


def test_the_red_circle_comes_out_red_when_only_the_hints_name_its_colour(starter, judge):
    """The caption names no colours and the boxes never steer (grounding 0), so only the
    colour hints can make the left object red: at layout step 27,296, 7 of seeds 1-8 with
    them and 0 without. With the boxes steering every step (the starter model's default
    grounding, 1.0) the phrases alone make it red, 8 of 8. (Until 22,818 this test used
    the full caption at grounding 0.3, where the two objects traded colours and the hints
    held the left one red; from 27,296 that caption's mixed colours outweigh the hints
    there: 3 of 8 with them, 2 without; model card, "Decoy captions and louder phrases".)"""
    def red_left(seed, **options) -> bool:
        image = starter.layout_to_image("a circle and a square", PHRASES, BOXES, seed=seed, **options)
        left = [o for o in judge.read(image)["objects"] if (o["box"][0] + o["box"][2]) / 2 < 0.5]
        return any(o["colour"] == "red" for o in left)

    seeds = range(1, 5)
    red = {hints: sum(red_left(s, colour_hints=hints, grounding=0.0) for s in seeds)
           for hints in (False, True)}
    assert red[True] >= 3, red
    assert red[False] <= 1, red
    assert sum(red_left(s) for s in seeds) >= 3


def test_colour_hints_are_recorded_restored_and_shown_as_code(starter, tmp_path, monkeypatch):
    image = starter.layout_to_image(CAPTION, PHRASES, BOXES, seed=2, steps=6, colour_hints=True)
    settings = settings_of(image)
    assert settings["colour_hints"] is True
    recipe = restorable(settings)
    assert recipe.settings["colour_hints"] is True and not recipe.ignored
    assert restorable({**settings, "colour_hints": "True"}).settings["colour_hints"] is True
    assert np.array_equal(pixels(reproduce(starter, settings)), pixels(image))
    plain = starter.layout_to_image(CAPTION, PHRASES, BOXES, seed=2, steps=6)
    assert "colour_hints" not in settings_of(plain)
    assert np.abs(pixels(plain) - pixels(image)).max() > 50
    script = starter.show_code(image)
    assert "hinted_latents" in script
    assert np.abs(remade_by_show_code(script, tmp_path, monkeypatch) - pixels(image)).max() <= 2


def test_colour_hints_must_be_true_or_false(starter):
    with pytest.raises(BadInput, match="colour_hints must be true or false"):
        starter.layout_to_image(CAPTION, PHRASES, BOXES, colour_hints="yes")


# ------------------------------------------------------------ text to image: cells


def test_text_to_image_hints_paint_only_the_cell_the_prompt_names(starter):
    pipe = starter.registry.pipeline("starter", "text_to_image")
    noise = torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(0))
    hinted = cell_hinted_latents(pipe, noise, "a red circle in the top left", None, 64, 64)
    moved = (hinted - noise).abs().sum(1)[0]
    assert moved[:5, :5].min() > 0.05  # the top-left cell (latent pixels 0..5.33)
    assert moved[6:].max() == 0 and moved[:, 6:].max() == 0
    big = (cell_hinted_latents(pipe, noise, "a big red circle in the centre", None, 64, 64)
           - noise).abs().sum(1)[0]
    small = (cell_hinted_latents(pipe, noise, "a small red circle in the centre", None, 64, 64)
             - noise).abs().sum(1)[0]
    assert (small > 0).sum() < 36 < (big > 0).sum()  # 36: the centre cell's latent pixels
    whole_cell = (cell_hinted_latents(pipe, noise, "a red circle in the centre", None, 64, 64)
                  - noise).abs().sum(1)[0]
    assert small.sum() == pytest.approx(whole_cell.sum(), rel=0.05)  # as much colour, denser
    assert small.max() > 2 * whole_cell.max()
    assert sized_box(["small", "red", "circle"], (0, 0, 1 / 3, 1 / 3)) == pytest.approx(
        (1 / 6 - 7 / 64, 1 / 6 - 7 / 64, 1 / 6 + 7 / 64, 1 / 6 + 7 / 64))
    warnings = []
    assert cell_hinted_latents(pipe, noise, "a small red circle", None, 64, 64, warnings) is noise
    assert warnings == [NO_CELL]


def test_a_named_background_is_hinted_outside_the_placed_cells(starter):
    pipe = starter.registry.pipeline("starter", "text_to_image")
    noise = torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(0))
    prompt = "a red circle in the top left"
    plain = cell_hinted_latents(pipe, noise, prompt, None, 64, 64)
    on_blue = cell_hinted_latents(pipe, noise, prompt + " on a blue background", None, 64, 64)
    moved = (on_blue - plain).abs().sum(1)[0]
    assert moved[:5, :5].max() == 0  # the red circle's cell keeps its own hint
    assert moved[6:].min() > 0.05 and moved[:, 6:].min() > 0.05


def test_a_named_background_comes_out_in_its_colour_with_colour_hints(starter, judge):
    """Placed objects on a named background come out in the asked colour with the hint on
    (at least 3 of these 4). The model gets most of them right without the hint too, and
    at step 34,206 the hint turned the green one black for 3 of 4 seeds (model card, Known
    failure cases), so the two are not compared here; the hint's gain over 100 held-out
    prompts is in the card's Figures (placed: background 0.96, placed + colour hints:
    1.00)."""
    prompts = ["a small red circle in the top left on a blue background",
               "a big yellow square in the bottom right on a green background",
               "a green triangle on the left on a black background",
               "a blue circle in the centre on an orange background"]
    read = [judge.read(starter.text_to_image(prompt, seed=seed, place_objects=True,
                                             colour_hints=True))["background"]
            for seed, prompt in enumerate(prompts)]
    right = sum(got == prompt.split()[-2] for got, prompt in zip(read, prompts))
    assert right >= 3, read


def test_a_red_square_steered_to_the_top_left_stays_red_with_colour_hints(starter, judge):
    """Steered into the top left, the red square kept its colour only with the hint at
    text2img step 21,536 (2 of 4 seeds red without it, model card, Position); since step
    34,206 it stays red either way (4 of 4), so this checks that the hint keeps it red.
    The hint's gain over 100 held-out prompts is in the card's Figures (placed: colour
    0.86, placed + colour hints: 0.92, at step 43,326)."""
    red = 0
    for seed in range(4):
        image = starter.text_to_image("a red square in the top left", seed=seed,
                                      place_objects=True, colour_hints=True)
        found = judge.read(image)["objects"]
        red += any(o["colour"] == "red" and o["cell"] == "top left" for o in found)
    assert red >= 3, red


def test_text_to_image_hints_are_recorded_restored_and_shown_as_code(starter, tmp_path,
                                                                     monkeypatch):
    prompt = "a small blue square in the bottom right"
    image = starter.text_to_image(prompt, seed=3, steps=6, colour_hints=True)
    settings = settings_of(image)
    assert settings["colour_hints"] is True and "place_objects" not in settings
    assert restorable(settings).settings["colour_hints"] is True
    assert np.array_equal(pixels(reproduce(starter, settings)), pixels(image))
    plain = starter.text_to_image(prompt, seed=3, steps=6)
    assert np.abs(pixels(plain) - pixels(image)).max() > 50
    script = starter.show_code(image)
    assert "cell_hinted_latents(pipe, None," in script
    assert np.abs(remade_by_show_code(script, tmp_path, monkeypatch) - pixels(image)).max() <= 2


def test_the_learn_tab_runs_take_colour_hints_and_make_the_same_picture(starter):
    prompt, kwargs = "a small red circle in the top left", dict(seed=2, steps=6, colour_hints=True)
    made = pixels(starter.text_to_image(prompt, place_objects=True, **kwargs))
    traced, frames = starter.denoise_trace(prompt, place_objects=True, **kwargs)
    assert np.array_equal(pixels(traced), made) and frames
    assert settings_of(traced)["colour_hints"] is True
    maps = starter.attention_maps(prompt, place_objects=True, **kwargs)
    assert np.abs(pixels(maps.image) - made).max() <= 2
    assert settings_of(maps.image)["colour_hints"] is True
