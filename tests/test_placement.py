"""place_objects: position words read from the prompt, the starting noise steered so each
object lands in its cell (judged by pixels), and the option recorded, restored and
reproduced like every other setting."""
from __future__ import annotations

import numpy as np
import pytest
from remade import pixels, remade_by_show_code

from playground import BadInput, settings_of
from playground.share.recipe import reproduce, restorable
from playground.tasks.placement import placements


def test_position_words_name_cells_and_the_words_before_them_the_object():
    tokens = ("three objects : a big blue triangle at the top left , a little yellow circle "
              "on the right and a square in the middle with a red background").split()
    found = placements(tokens)
    assert [p.cell for p in found] == ["top left", "right", "centre"]
    assert [p.words for p in found] == [["big", "blue", "triangle", "top", "left"],
                                        ["little", "yellow", "circle", "right"],
                                        ["square", "middle"]]
    assert found[0].positions == [5, 6, 7, 10, 11]  # after the start token
    assert found[1].box == pytest.approx((2 / 3, 1 / 3, 1, 2 / 3))


def test_other_spellings_and_clip_word_ends_are_read():
    assert placements(["a</w>", "cat</w>", "in</w>", "the</w>", "upper</w>", "right</w>",
                       "corner</w>"])[0].cell == "top right"
    assert placements("in the top left".split()) == []  # no object words: nothing to place


def test_a_relation_places_both_objects_in_cells_where_it_holds():
    above = placements("a red circle above a blue square on a green background".split())
    assert [(p.words, p.cell, p.relation) for p in above] == [
        (["red", "circle"], "top", "above"), (["blue", "square"], "bottom", "above")]
    assert above[1].positions == [6, 7]
    left_of = placements("a big disc to the left of a little yellow triangle".split())
    assert [(p.words, p.cell) for p in left_of] == [(["big", "disc"], "left"),
                                                    (["little", "yellow", "triangle"], "right")]
    assert [p.cell for p in placements("a square below a circle".split())] == ["bottom", "top"]
    assert [p.cell for p in placements("a square to the right of a circle".split())] == [
        "right", "left"]
    own = placements("a red circle above a blue square in the bottom left".split())
    assert [p.cell for p in own] == ["top", "bottom left"]  # a cell named outright wins
    assert own[1].relation is None


def test_two_related_objects_come_out_on_the_sides_the_relation_names(starter, judge):
    """Measured: 3 of 4 seeds with both objects right and red left of yellow, 0 of 4 stock."""
    prompt = "a red circle to the left of a yellow square"
    held = {False: 0, True: 0}
    for options in (False, True):
        for seed in range(4):
            image = starter.text_to_image(prompt, seed=seed, place_objects=options,
                                          colour_hints=options, regional_prompts=options)
            found = judge.read(image)["objects"]
            red = [o for o in found if (o["colour"], o["shape"]) == ("red", "circle")]
            yellow = [o for o in found if (o["colour"], o["shape"]) == ("yellow", "square")]
            held[options] += bool(red and yellow and red[0]["box"][0] < yellow[0]["box"][0])
    assert held[True] >= 3, held
    assert held[True] >= held[False] + 2, held


def test_objects_land_in_the_cells_the_prompt_names(starter, judge):
    asked = ["top left", "bottom right", "top", "centre", "left", "bottom"]
    where = {False: [], True: []}
    for place in (False, True):
        for cell in asked:
            image = starter.text_to_image(f"a small red circle in the {cell}", seed=1,
                                          place_objects=place)
            objects = judge.read(image)["objects"]
            found = max(objects, key=lambda o: o["score"]) if objects else {}
            where[place].append(found.get("cell"))
    placed_right = sum(got == cell for got, cell in zip(where[True], asked))
    unplaced_right = sum(got == cell for got, cell in zip(where[False], asked))
    # text2img reads the cell words itself (MODEL_CARD, "Cell words"): measured 6 of 6 placed and
    # 5 of 6 stock at 73,226, 6 of 6 at 70,051, 5 of 6 at 65,752; the weights before placed 1 of 6 stock
    assert placed_right >= 5 and placed_right >= unplaced_right, where
    assert unplaced_right >= 4, where


def test_the_settings_say_what_was_placed_and_a_link_makes_it_again(starter):
    image = starter.text_to_image("a big blue square in the bottom left", seed=5, steps=8,
                                  place_objects=True)
    settings = settings_of(image)
    assert settings["place_objects"] is True
    assert settings["placed"] == [{"words": "big blue square bottom left", "cell": "bottom left",
                                   "box": [0.0, 0.6667, 0.3333, 1.0]}]
    recipe = restorable(settings)
    assert recipe.settings["place_objects"] is True and not recipe.ignored
    assert np.array_equal(pixels(reproduce(starter, settings)), pixels(image))
    plain = starter.text_to_image("a big blue square in the bottom left", seed=5, steps=8)
    assert "place_objects" not in settings_of(plain)
    assert np.abs(pixels(plain) - pixels(image)).max() > 50


def test_show_code_makes_a_placed_picture_again(starter, tmp_path, monkeypatch):
    image = starter.text_to_image("a small green triangle in the top right", seed=2, steps=6,
                                  place_objects=True)
    script = starter.show_code(image)
    assert "placed_latents" in script and "latents=latents" in script
    assert np.array_equal(remade_by_show_code(script, tmp_path, monkeypatch), pixels(image))


@pytest.mark.parametrize("option", ["place_objects", "compose_objects"])
def test_a_prompt_without_positions_is_left_as_drawn_with_a_warning(starter, option):
    plain = starter.text_to_image("a red circle", seed=3, steps=6)
    asked = starter.text_to_image("a red circle", seed=3, steps=6, **{option: True})
    assert np.array_equal(pixels(plain), pixels(asked))
    assert any("names no object with a position" in w for w in settings_of(asked)["warnings"])


def test_batches_place_every_picture_as_its_own_seed_would(starter):
    batch = starter.text_to_image("a small red circle in the bottom right", seed=7, steps=6,
                                  num_images=2, place_objects=True)
    alone = starter.text_to_image("a small red circle in the bottom right", seed=8, steps=6,
                                  place_objects=True)
    assert np.abs(pixels(batch[1]) - pixels(alone)).max() <= 1


def test_place_objects_must_be_true_or_false(starter):
    with pytest.raises(BadInput, match="place_objects must be true or false"):
        starter.text_to_image("a red circle in the top left", place_objects="yes")


def test_attention_maps_show_the_placed_words_inside_their_cell(starter):
    """The Learn tab's view of it: with place_objects the shape word's attention sits in
    the asked cell, and the picture is the placed text-to-image one."""
    from playground.teach.attention import mass_inside

    prompt = "a small red circle in the bottom right"
    inside = {}
    for place in (False, True):
        maps = starter.attention_maps(prompt, seed=1, place_objects=place)
        weights = maps.maps[maps.tokens.index("circle")]
        inside[place] = mass_inside(weights, (2 / 3 * 64, 2 / 3 * 64, 64, 64), (64, 64))
    # measured 0.95 placed, 0.92 stock on text2img 70,051 (0.89 stock at 65,752), which reads
    # the cell words itself; 0.96 and 0.30 at 73,226, whose stock circle lands in the right
    # cell above; under half stock on the weights before 65,752
    assert inside[True] > 0.6 and inside[True] > inside[False], inside
    placed = starter.text_to_image(prompt, seed=1, place_objects=True)
    assert np.array_equal(pixels(maps.image), pixels(placed))
    assert settings_of(maps.image)["placed"][0]["cell"] == "bottom right"


def test_the_filmstrip_of_a_placed_run_ends_in_the_placed_picture(starter):
    image, frames = starter.denoise_trace("a big blue square in the top left", seed=4, steps=6,
                                          place_objects=True)
    placed = starter.text_to_image("a big blue square in the top left", seed=4, steps=6,
                                   place_objects=True)
    assert frames and np.array_equal(pixels(image), pixels(placed))


# ---------------------------------------------------------------- layout-to-image

def test_each_phrase_gets_its_own_words_in_the_steering_text(starter):
    from playground.tasks.placement import boxed_phrases

    tokenizer = starter.registry.pipeline("starter", "layout_to_image").tokenizer
    text, found = boxed_phrases(tokenizer, ["large black triangle", "a red disc"],
                                [[0, 0, 0.5, 0.5], [0.5, 0.5, 1, 1]])
    assert text == "a large black triangle and a red disc"
    assert [p.words for p in found] == [["large", "black", "triangle"], ["red", "disc"]]
    assert [p.positions for p in found] == [[2, 3, 4], [7, 8]]  # after the start token
    assert found[1].box == (0.5, 0.5, 1.0, 1.0) and found[1].cell is None


LAYOUT_CASES = [("a small red circle", [0.05, 0.05, 0.35, 0.35]),
                ("a small red circle", [0.65, 0.65, 0.95, 0.95]),
                ("a small blue square", [0.65, 0.05, 0.95, 0.35]),
                ("a small blue square", [0.05, 0.65, 0.35, 0.95]),
                ("a small green triangle", [0.35, 0.35, 0.65, 0.65]),
                ("a small yellow circle", [0.05, 0.35, 0.35, 0.65])]


def test_layout_objects_stay_in_their_boxes_when_placed(starter, judge):
    """Judged by pixels: the object the judge finds overlaps the asked box. Up to layout
    step 17,001 steering raised the mean overlap (0.37 -> 0.66 there); from 20,012 the model
    fits its boxes by itself and steering costs a little of the fit (at 22,818, 0.76
    unplaced and 0.62 placed on these six; the card's 40: 0.70 and 0.67), so this asks that
    steered objects stay in their boxes. That steering moves objects where they were asked
    is tested on text-to-image above (objects in the named cells) and in the attention
    maps test."""
    from playground.starter.evaluate import best_match

    overlap = []
    for phrase, box in LAYOUT_CASES:
        image = starter.layout_to_image(phrase, [phrase[2:]], [box], seed=1, place_objects=True)
        overlap.append(best_match(box, judge.read(image))[1])
    assert np.mean(overlap) > 0.5, overlap
    assert sum(v > 0.3 for v in overlap) >= 5, overlap


def test_a_placed_layout_is_recorded_restored_and_shown_as_code(starter, tmp_path, monkeypatch):
    phrases, boxes = ["blue square"], [[0.6, 0.6, 0.95, 0.95]]
    image = starter.layout_to_image("a blue square", phrases, boxes, seed=4, steps=6,
                                    place_objects=True)
    settings = settings_of(image)
    assert settings["placed"] == [{"words": "blue square", "box": [0.6, 0.6, 0.95, 0.95]}]
    recipe = restorable(settings)
    assert recipe.settings["place_objects"] is True and not recipe.ignored
    assert np.array_equal(pixels(reproduce(starter, settings)), pixels(image))
    plain = starter.layout_to_image("a blue square", phrases, boxes, seed=4, steps=6)
    assert "place_objects" not in settings_of(plain)
    assert np.abs(pixels(plain) - pixels(image)).max() > 50
    script = starter.show_code(image)
    assert "boxed_latents" in script and "latents=latents" in script
    assert np.array_equal(remade_by_show_code(script, tmp_path, monkeypatch), pixels(image))


def test_the_bench_lists_what_placing_costs_for_both_tasks(starter):
    from playground.bench import bench_placement

    rows = bench_placement(starter, ["text_to_image", "layout_to_image", "inpaint"], 2, 1)
    assert [row.split("|")[1].strip() for row in rows[2:]] == ["text_to_image", "layout_to_image"]
    assert all(float(cell) > 0 for row in rows[2:] for cell in row.split("|")[2:5])


def test_a_layout_whose_phrases_the_model_does_not_know_is_left_as_drawn(starter):
    plain = starter.layout_to_image("a dog", ["a dog"], [[0.1, 0.1, 0.5, 0.5]], seed=2, steps=4)
    placed = starter.layout_to_image("a dog", ["a dog"], [[0.1, 0.1, 0.5, 0.5]], seed=2, steps=4,
                                     place_objects=True)
    assert np.array_equal(pixels(plain), pixels(placed))
    assert any("no phrase has a word the model knows" in w for w in settings_of(placed)["warnings"])
