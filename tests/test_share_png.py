"""Settings travel with pictures: every task's PNG carries its settings (our JSON chunk
and the AUTOMATIC1111 `parameters` line), and the settings read back make the same
pixels again. AUTOMATIC1111 `parameters` text parses into our settings."""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from playground import BadInput
from playground.share import a1111, pngmeta, read_png, reproduce
from playground.ui.examples import example_picture

STEPS = 3


def mask_of_right_half(size=(64, 64)) -> Image.Image:
    mask = np.zeros((size[1], size[0]), dtype=np.uint8)
    mask[:, size[0] // 2:] = 255
    return Image.fromarray(mask)


def make(pg, task):
    """(result, inputs) of one short starter run of `task` with a fixed seed."""
    common = dict(steps=STEPS, seed=11, guidance=6.0, negative_prompt="a green triangle")
    if task == "text_to_image":
        return pg.text_to_image("a red circle, at the top", scheduler="Euler a",
                                **common), {}
    if task == "layout_to_image":
        return pg.layout_to_image("a red circle and a blue square",
                                  ["a red circle", "a blue square"],
                                  [[0.1, 0.1, 0.45, 0.45], [0.55, 0.5, 0.9, 0.85]],
                                  **common), {}
    inputs = {"image": example_picture()}
    if task == "inpaint":
        inputs["mask"] = mask_of_right_half()
        return pg.inpaint(inputs["image"], inputs["mask"], "a yellow triangle", strength=0.9,
                          **common), inputs
    return pg.upscale(inputs["image"], "a red circle", noise_level=30, **common), inputs


@pytest.mark.parametrize("task", ["text_to_image", "layout_to_image", "inpaint", "upscale"])
def test_png_round_trip_gives_identical_pixels(starter, task):
    first, inputs = make(starter, task)
    png = pngmeta.png_bytes(first)

    opened = Image.open(io.BytesIO(png))
    assert opened.format == "PNG"
    assert set(opened.text) >= {"settings", "parameters"}
    assert "Seed: 11" in opened.text["parameters"]
    recipe = read_png(png, pg=starter)
    assert recipe.task == task and recipe.ignored == [] and recipe.notes == []
    assert recipe.settings["seed"] == 11 and recipe.settings["steps"] == STEPS

    again = reproduce(starter, recipe.settings | {"task": task}, **inputs)
    original = np.asarray(opened.convert("RGB"))
    assert original.std() > 1, "the picture is blank"
    assert np.array_equal(original, np.asarray(again)), "same settings, different pixels"


def test_a_batch_picture_is_made_again_alone(starter):
    batch = starter.text_to_image("a blue square", steps=2, seed=40, num_images=2)
    recipe = read_png(pngmeta.png_bytes(batch[1]), pg=starter)
    assert recipe.settings["seed"] == 41 and "num_images" not in recipe.settings
    alone = np.asarray(reproduce(starter, recipe.settings), dtype=np.int16)
    # Not bit-exact: a batch's matrix products round differently from a single run's
    # (measured: at most 1 level in under 0.1% of the values; README, Reproducibility).
    difference = np.abs(alone - np.asarray(batch[1], dtype=np.int16))
    assert difference.max() <= 2 and (difference > 0).mean() < 0.01


A1111_TEXT = """masterpiece, a red circle,
at the top left
Negative prompt: blurry, lowres
Steps: 28, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 6.5, Seed: 1234567, \
Size: 512x768, Model hash: 6ce0161689, Model: v1-5-pruned-emaonly, VAE hash: 735e4c3a44, \
Clip skip: 2, Lora hashes: "detail: 1a2b3c, style: 4d5e6f", Version: v1.10.1"""


def test_a1111_parameters_parse_into_settings():
    parsed = a1111.parse_parameters(A1111_TEXT)
    assert parsed["Prompt"] == "masterpiece, a red circle,\nat the top left"
    assert parsed["Negative prompt"] == "blurry, lowres"
    assert parsed["Lora hashes"] == "detail: 1a2b3c, style: 4d5e6f"  # quoted, commas inside
    settings = a1111.to_settings(parsed)
    assert settings["scheduler"] == "DPM++ 2M Karras"
    assert (settings["steps"], settings["guidance"], settings["seed"]) == ("28", "6.5", "1234567")
    assert (settings["width"], settings["height"]) == ("512", "768")


def test_an_a1111_png_restores_what_it_can_and_names_the_rest(starter):
    picture = Image.new("RGB", (64, 64), (30, 60, 90))
    buffer = io.BytesIO()
    from PIL import PngImagePlugin
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", A1111_TEXT)
    picture.save(buffer, format="PNG", pnginfo=info)

    recipe = read_png(buffer.getvalue(), pg=starter)
    assert recipe.origin == "AUTOMATIC1111 PNG" and recipe.task == "text_to_image"
    assert recipe.settings == {"prompt": "masterpiece, a red circle,\nat the top left",
                               "negative_prompt": "blurry, lowres", "steps": 28,
                               "guidance": 6.5, "seed": 1234567, "width": 512,
                               "height": 768, "scheduler": "DPM++ 2M Karras"}
    ignored = " ".join(recipe.ignored)
    for name in ("v1-5-pruned-emaonly", "Model hash", "Clip skip", "Lora hashes", "VAE hash"):
        assert name in ignored
    assert "Ignored:" in recipe.message() and "Clip skip" in recipe.message()


def test_our_parameters_line_reads_back_as_the_same_settings():
    settings = {"task": "layout_to_image", "prompt": "two things: a, b", "negative_prompt": "",
                "model": "starter", "scheduler": "PNDM", "steps": 7, "guidance": 3.5,
                "seed": 9, "width": 64, "height": 64, "phrases": ["a red circle", "a, b"],
                "boxes": [[0.1, 0.2, 0.3, 0.4], [0.5, 0.5, 0.9, 0.9]]}
    text = a1111.to_parameters(settings)
    assert "Sampler: PLMS" in text
    back = a1111.to_settings(a1111.parse_parameters(text))
    from playground.share import restorable
    recipe = restorable(back)
    assert recipe.ignored == []
    want = {k: v for k, v in settings.items() if k not in ("task", "width", "height")}
    assert recipe.settings == want


def test_a_picture_without_settings_is_refused_clearly():
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, format="PNG")
    with pytest.raises(BadInput, match="carries no settings"):
        read_png(buffer.getvalue())
    with pytest.raises(BadInput, match="not a picture"):
        read_png(b"hello")


def test_ui_and_api_pngs_carry_both_chunks(starter, tmp_path):
    from gradio.processing_utils import encode_pil_to_bytes

    from playground.ui.api import ApiEndpoints
    from playground.ui.common import png_ready

    image = starter.text_to_image("a red circle", steps=2, seed=8)
    as_the_ui_writes = encode_pil_to_bytes(png_ready(image), "png")  # Gradio's PNG writer
    *_, (file_data, settings) = ApiEndpoints(starter, str(tmp_path)).text_to_image(
        "a red circle", steps=2, seed=8)
    for png in (as_the_ui_writes, open(file_data.path, "rb").read()):
        opened = Image.open(io.BytesIO(png))
        assert "Seed: 8" in opened.text["parameters"]
        assert read_png(png).settings == read_png(pngmeta.png_bytes(image)).settings
        assert np.array_equal(np.asarray(opened.convert("RGB")), np.asarray(image))
    assert settings["seed"] == 8


def test_the_example_pngs_load_as_recipes_of_their_tasks(starter):
    from playground.ui.sharing import example_pngs

    recipes = [read_png(path, pg=starter) for path in example_pngs()]
    found = {recipe.task: recipe for recipe in recipes}
    assert set(found) == {"text_to_image", "layout_to_image", "inpaint", "upscale"}
    for recipe in found.values():
        assert recipe.ignored == [] and recipe.settings["seed"] >= 0
        assert recipe.settings["model"] == "starter"
