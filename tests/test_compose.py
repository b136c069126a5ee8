"""compose_objects: text-to-image drawn object by object (a canvas of the named background,
then the model's inpainter paints each placed object at its place), judged by pixels, and
the option recorded, restored, reproduced and shown as code like every other setting."""
from __future__ import annotations

import numpy as np
import pytest
from remade import pixels, remade_by_show_code

from playground import BadInput, Cancelled, Playground, Registry, RunControl, settings_of
from playground.share.recipe import reproduce, restorable
from playground.starter.evaluate import score_two, text_cases
from playground.tasks import compose
from playground.teach import notebook

TWO = "a small red circle in the top left and a big blue square in the bottom right"


# ---------------------------------------------------------------- the pieces

def test_each_object_gets_a_square_as_big_as_its_size_word_at_its_place():
    small, big = compose.placed_objects(TWO)
    small_mask, big_mask = (compose.object_mask(p, 64, 64) for p in (small, big))
    ys, xs = np.nonzero(small_mask)
    assert xs.min() == 0 and ys.min() == 0 and xs.max() < 32 and ys.max() < 32  # top left
    ys, xs = np.nonzero(big_mask)
    assert xs.max() == 63 and ys.max() == 63 and xs.min() > 12  # bottom right, moved inside
    assert big_mask.sum() > 2 * small_mask.sum()
    assert set(np.unique(big_mask)) == {0.0, 1.0}


def test_the_canvas_is_the_background_the_prompt_names_or_white():
    black = np.asarray(compose.canvas("a red circle in the top left on a black background", 8, 8))
    white = np.asarray(compose.canvas("a red circle in the top left", 8, 8))
    assert black.max() < 40 and white.min() > 215


def test_a_relation_places_each_object_on_its_side():
    left, right = sorted(compose.placed_objects("a red circle to the left of a yellow square"),
                         key=lambda p: p.box[0])
    assert "red" in left.words and "yellow" in right.words


def test_an_object_named_without_a_position_is_reported_not_dropped_silently():
    assert compose.left_out(TWO) == []
    assert compose.left_out("a red circle above a blue square on a green background") == []
    warning, = compose.left_out("a red circle in the top left and a blue square on a white "
                                "background")
    assert '"blue square" has no position, so it was not drawn' in warning


def test_the_held_out_two_object_prompts_place_every_object():
    for case in text_cases("two", 50, 2):
        assert len(compose.placed_objects(case.prompt)) == 2, case.prompt
        assert compose.left_out(case.prompt) == [], case.prompt


# ---------------------------------------------------------------- end to end (starter)

def test_two_objects_come_out_right_far_more_often_composed(starter, judge):
    """The model card's first 16 held-out two-object cases: measured 12 of 16 composed
    (0.82 on all 50), 1 of 16 as drawn in one pass."""
    cases = text_cases("two", 16, 2)
    right = {False: 0, True: 0}
    for composed in (False, True):
        for case in cases:
            image = starter.text_to_image(case.prompt, seed=case.seed, steps=20,
                                          compose_objects=composed)
            right[composed] += score_two(case, judge.read(image))
    assert right[True] >= 9, right
    assert right[True] >= right[False] + 6, right


def test_the_settings_say_what_was_composed_and_a_link_makes_it_again(starter):
    image = starter.text_to_image(TWO, seed=5, steps=6, compose_objects=True)
    settings = settings_of(image)
    assert settings["compose_objects"] is True
    assert [p["cell"] for p in settings["composed"]] == ["top left", "bottom right"]
    assert not settings["warnings"]
    recipe = restorable(settings)
    assert recipe.settings["compose_objects"] is True and not recipe.ignored
    assert np.array_equal(pixels(reproduce(starter, settings)), pixels(image))
    assert np.array_equal(pixels(notebook.remake(starter, settings)), pixels(image))
    plain = starter.text_to_image(TWO, seed=5, steps=6)
    assert "compose_objects" not in settings_of(plain)
    assert np.abs(pixels(plain) - pixels(image)).max() > 50


def test_show_code_makes_a_composed_picture_again(starter, tmp_path, monkeypatch):
    image = starter.text_to_image(TWO, seed=2, steps=5, scheduler="Euler a",
                                  compose_objects=True)
    script = starter.show_code(image)
    assert "StableDiffusionInpaintPipeline" in script and "compose(" in script
    assert np.array_equal(remade_by_show_code(script, tmp_path, monkeypatch), pixels(image))


def test_a_prompt_without_positions_records_the_option_and_nothing_composed(starter):
    """(That it is drawn as usual, with a warning: tests/test_placement.py.)"""
    settings = settings_of(starter.text_to_image("a red circle", seed=3, steps=2,
                                                 compose_objects=True))
    assert settings["compose_objects"] is True and settings["composed"] == []


def test_the_warning_reaches_the_settings(starter):
    image = starter.text_to_image("a red circle in the top left and a blue square", seed=1,
                                  steps=2, compose_objects=True)
    assert any('"blue square" has no position' in w for w in settings_of(image)["warnings"])


def test_the_other_options_give_way_with_a_warning(starter):
    both = starter.text_to_image(TWO, seed=4, steps=6, compose_objects=True,
                                 place_objects=True, colour_hints=True)
    alone = starter.text_to_image(TWO, seed=4, steps=6, compose_objects=True)
    assert np.array_equal(pixels(both), pixels(alone))
    assert any("were not used" in w for w in settings_of(both)["warnings"])
    assert "place_objects" not in settings_of(both)


def test_batches_compose_every_picture_as_its_own_seed_would(starter):
    batch = starter.text_to_image(TWO, seed=7, steps=6, num_images=2, compose_objects=True)
    alone = starter.text_to_image(TWO, seed=8, steps=6, compose_objects=True)
    assert np.array_equal(pixels(batch[1]), pixels(alone))


def test_progress_counts_across_the_objects_and_cancel_stops_the_run(starter):
    seen, previews = [], []
    control = RunControl(on_progress=lambda step, total: seen.append((step, total)),
                         on_preview=lambda image, step, total: previews.append(image),
                         preview_every=4)
    starter.text_to_image(TWO + " on a black background", seed=1, steps=4,
                          compose_objects=True, control=control)
    assert seen == [(step, 8) for step in range(1, 9)]
    # previews show the picture so far: the black canvas outside the object being painted
    first = pixels(previews[0])
    black = pixels(compose.canvas("on a black background", 64, 64))
    assert len(previews) == 2
    assert np.array_equal(first[40:, :20], black[40:, :20])
    assert np.array_equal(first[:, 40:], black[:, 40:])

    def stop_in_the_second_object(step, total):
        if step == 5:
            control.cancel()
    control = RunControl(on_progress=stop_in_the_second_object)
    with pytest.raises(Cancelled):
        starter.text_to_image(TWO, seed=1, steps=4, compose_objects=True, control=control)


def test_the_learn_tab_filmstrip_shows_the_passes_one_after_another(starter):
    kwargs = dict(seed=2, steps=4, compose_objects=True)
    made_image = starter.text_to_image(TWO + " on a black background", **kwargs)
    made = pixels(made_image)
    traced, frames = starter.denoise_trace(TWO + " on a black background", **kwargs)
    assert np.array_equal(pixels(traced), made)
    assert settings_of(traced)["composed"] == settings_of(made_image)["composed"]
    assert settings_of(traced)["compose_objects"] is True
    # the steps run on across both passes, as the progress does
    assert [(f.step, f.total) for f in frames] == [(1, 8), (3, 8), (4, 8), (5, 8), (7, 8),
                                                  (8, 8)]
    assert [f.part for f in frames] == ["object 1 of 2"] * 3 + ["object 2 of 2"] * 3
    black = pixels(compose.canvas("on a black background", 64, 64))
    first, second = pixels(frames[0].x_t), pixels(frames[3].x_t)
    assert np.array_equal(first[:, 40:], black[:, 40:])  # the first pass: its square only
    assert np.abs(first[:24, :24] - black[:24, :24]).max() > 40
    after_first = pixels(frames[2].x_t)
    assert np.array_equal(second[:24, :24], after_first[:24, :24])  # the red circle stays
    assert np.abs(pixels(frames[-1].x_t) - made).max() <= 1
    with pytest.raises(BadInput, match="Turn compose objects off for the maps"):
        starter.attention_maps(TWO, **kwargs)


# ---------------------------------------------------------------- bad input

def test_compose_objects_must_be_true_or_false(starter):
    with pytest.raises(BadInput, match="compose_objects must be true or false"):
        starter.text_to_image(TWO, compose_objects="yes")


def test_a_model_without_an_inpainter_cannot_compose(tiny_models):
    from playground.registry import ModelEntry, Source

    only_text = ModelEntry("text-only", {"text_to_image": Source(str(tiny_models / "text2img"))})
    pg = Playground(Registry([only_text], device="cpu", allowed_dirs=[str(tiny_models)]))
    with pytest.raises(BadInput, match="has no inpainting model|has none"):
        pg.text_to_image(TWO, model="text-only", steps=2, compose_objects=True)


def test_the_bench_lists_what_composing_costs(starter):
    from playground.bench import bench_compose

    rows = bench_compose(starter, 2, 1)
    assert rows[2].split("|")[2].strip() == "compose_objects=True"
    assert all(float(cell) > 0 for cell in rows[2].split("|")[3:6])
