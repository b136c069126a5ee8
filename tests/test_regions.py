"""regional_prompts for layout-to-image: each box's pixels read only their own phrase in
cross-attention, so two objects' attributes stay apart (judged by pixels), and the option
is recorded, restored and reproduced like every other setting."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from remade import BOXES, CAPTION, PHRASES, pixels, remade_by_show_code

from playground import BadInput, settings_of
from playground.share.recipe import reproduce, restorable
from playground.starter.captions import with_article
from playground.tasks.regions import region_weights


def test_each_latent_pixel_is_shared_out_whole_and_the_smallest_box_wins():
    big, small = [0.0, 0.0, 1.0, 0.5], [0.25, 0.0, 0.5, 0.25]
    weights = region_weights([big, small], 4, 4).view(3, 4, 4)
    assert torch.allclose(weights.sum(0), torch.ones(4, 4))
    assert weights[2, 0, 1] == 1 and weights[1, 0, 1] == 0  # the small box's own pixel
    assert weights[1, 1, 3] == 1  # the big box elsewhere in its area
    assert weights[0, 2:].eq(1).all()  # below both boxes: the caption
    half = region_weights([[0.0, 0.0, 0.125, 1.0]], 4, 4).view(2, 4, 4)
    assert torch.allclose(half[:, :, 0], torch.full((2, 4), 0.5))  # half a pixel covered


def test_each_phrase_is_read_as_an_object_phrase_with_its_article():
    assert with_article("orange circle") == "an orange circle"
    assert with_article("big orange circle") == "a big orange circle"
    assert with_article("red square") == "a red square"
    assert with_article("the blue disc") == "the blue disc"
    assert with_article("a orange circle") == "a orange circle"  # as the user wrote it


def test_regions_that_all_read_the_caption_change_nothing(starter):
    """The mechanics: when every box's phrase is the caption itself, the regional
    cross-attention is the stock one, so the picture is the same."""
    kwargs = dict(seed=3, steps=6)
    plain = starter.layout_to_image("a red circle", ["a red circle"], [[0.1, 0.1, 0.6, 0.6]],
                                    **kwargs)
    regional = starter.layout_to_image("a red circle", ["a red circle"], [[0.1, 0.1, 0.6, 0.6]],
                                       regional_prompts=True, **kwargs)
    assert np.abs(pixels(plain) - pixels(regional)).max() <= 2


def test_a_circle_beside_a_square_stays_a_circle_with_regional_prompts(starter, judge):
    """With regions the judge finds a circle most times. On the layout weights that read
    the shared text encoder (up to step 10,257) the one caption turned the red circle
    into a square (at most 2 of these 4 seeds a circle without regions); the layout
    model that reads text-to-image's encoder keeps it without them too (3 of 4 at step
    14,351), and regional prompts must not lose it (their average gain in shape is in
    the card's Figures)."""
    circles = {False: 0, True: 0}
    for regional in (False, True):
        for seed in range(1, 5):
            image = starter.layout_to_image(CAPTION, PHRASES, BOXES, seed=seed,
                                            place_objects=True, regional_prompts=regional)
            shapes = [o["shape"] for o in judge.read(image)["objects"]]
            circles[regional] += "circle" in shapes
    assert circles[True] >= 3, circles
    assert circles[True] >= circles[False], circles


def test_a_regional_layout_is_recorded_restored_and_shown_as_code(starter, tmp_path,
                                                                   monkeypatch):
    image = starter.layout_to_image(CAPTION, PHRASES, BOXES, seed=2, steps=6,
                                    regional_prompts=True)
    settings = settings_of(image)
    assert settings["regional_prompts"] is True
    recipe = restorable(settings)
    assert recipe.settings["regional_prompts"] is True and not recipe.ignored
    assert np.array_equal(pixels(reproduce(starter, settings)), pixels(image))
    plain = starter.layout_to_image(CAPTION, PHRASES, BOXES, seed=2, steps=6)
    assert "regional_prompts" not in settings_of(plain)
    assert np.abs(pixels(plain) - pixels(image)).max() > 50
    script = starter.show_code(image)
    assert "regional_unet" in script
    remade = remade_by_show_code(script, tmp_path, monkeypatch)
    assert np.abs(remade - pixels(image)).max() <= 2


def test_regional_prompts_without_guidance_read_phrases_too(starter):
    """guidance 1 runs one unguided batch: all of it is the conditional half."""
    plain = starter.layout_to_image(CAPTION, PHRASES, BOXES, seed=5, steps=6, guidance=1.0)
    regional = starter.layout_to_image(CAPTION, PHRASES, BOXES, seed=5, steps=6, guidance=1.0,
                                       regional_prompts=True)
    assert np.abs(pixels(plain) - pixels(regional)).max() > 30


def test_regional_prompts_must_be_true_or_false(starter):
    with pytest.raises(BadInput, match="regional_prompts must be true or false"):
        starter.layout_to_image(CAPTION, PHRASES, BOXES, regional_prompts="yes")


def test_the_bench_lists_what_regional_prompts_and_colour_hints_cost(starter):
    from playground.bench import bench_regional

    rows = bench_regional(starter, 2, 1)
    assert [row.split("|")[2].strip() for row in rows[2:]] == ["regional_prompts=True",
                                                                 "colour_hints=True"]
    assert all(float(cell) > 0 for row in rows[2:] for cell in row.split("|")[3:6])


# ------------------------------------------------------------ text to image: cells

TWO = "two objects: a small blue square in the top left and a small yellow circle in the bottom right"


def test_text_to_image_regions_follow_the_cells_the_prompt_names(starter):
    from playground.tasks.regions import NO_CELL_REGIONS, RegionalCrossAttention, cell_regional_unet

    pipe = starter.registry.pipeline("starter", "text_to_image")
    unet = cell_regional_unet(pipe, TWO, 64, 64, True)
    processors = {type(p) for n, p in unet.attn_processors.items() if n.endswith("attn2.processor")}
    assert processors == {RegionalCrossAttention}
    processor = next(p for n, p in unet.attn_processors.items() if n.endswith("attn2.processor"))
    assert processor.boxes[0][:2] == [0.0, 0.0] and processor.boxes[1][2:] == [1.0, 1.0]
    assert len(processor.embeddings) == 3  # the prompt, then one per placed object
    warnings = []
    assert cell_regional_unet(pipe, "a small blue square", 64, 64, True, warnings) is pipe.unet
    assert warnings == [NO_CELL_REGIONS]


def test_text_to_image_regional_prompts_are_recorded_restored_and_shown_as_code(
        starter, tmp_path, monkeypatch):
    kwargs = dict(seed=2, steps=6, place_objects=True, colour_hints=True)
    image = starter.text_to_image(TWO, regional_prompts=True, **kwargs)
    settings = settings_of(image)
    assert settings["regional_prompts"] is True
    assert restorable(settings).settings["regional_prompts"] is True
    assert np.array_equal(pixels(reproduce(starter, settings)), pixels(image))
    plain = starter.text_to_image(TWO, **kwargs)
    assert np.abs(pixels(plain) - pixels(image)).max() > 30
    script = starter.show_code(image)
    assert "cell_regional_unet" in script
    assert np.abs(remade_by_show_code(script, tmp_path, monkeypatch) - pixels(image)).max() <= 2


def test_text_to_image_regional_prompts_keep_two_objects_apart(starter, judge):
    """Placed, two objects trade colours and shapes (the model card's two-object failure);
    with each cell reading only its object's words, the judge finds both right more often
    (text2img step 43,993: 5 of 6, 2 of 6 without). With colour hints as well this pair now
    comes out right 3 of 6 times either way (4 of 6 and 1 of 6 at step 43,326), so the
    test leaves the hints off."""
    prompt = "two objects: a yellow circle on the left and a blue triangle on the right"
    asked = {("yellow", "circle", "left"), ("blue", "triangle", "right")}
    both = {False: 0, True: 0}
    for regional in (False, True):
        for seed in range(6):
            image = starter.text_to_image(prompt, seed=seed, place_objects=True, regional_prompts=regional)
            found = {(o["colour"], o["shape"], o["cell"]) for o in judge.read(image)["objects"]}
            both[regional] += asked <= found
    assert both[True] >= 2 and both[True] >= both[False] + 2, both


def test_the_learn_tab_filmstrip_takes_regional_prompts_and_the_maps_refuse_them(starter):
    kwargs = dict(seed=2, steps=6, place_objects=True, colour_hints=True, regional_prompts=True)
    made = pixels(starter.text_to_image(TWO, **kwargs))
    traced, frames = starter.denoise_trace(TWO, **kwargs)
    assert np.array_equal(pixels(traced), made) and frames
    assert settings_of(traced)["regional_prompts"] is True
    without = starter.denoise_trace(TWO, **{**kwargs, "regional_prompts": False})[0]
    assert np.abs(pixels(without) - made).max() > 30  # the option did something
    with pytest.raises(BadInput, match="Turn regional prompts off for the maps"):
        starter.attention_maps(TWO, **kwargs)
