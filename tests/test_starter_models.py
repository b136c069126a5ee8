"""The shipped starter pipelines: each loads from its folder with plain diffusers and draws
a picture of the right size; text-to-image gets colours right (checked by pixels)."""
import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

from playground.starter import evaluate

WEIGHTS = evaluate.WEIGHTS
TRAINED_MIN_STEPS = 1000  # fewer text2img steps than this: the shipped weights are a placeholder


def trained_steps(task: str) -> int:
    path = os.path.join(WEIGHTS, "training.json")
    if not os.path.exists(path):
        return 0
    with open(path) as f:
        return json.load(f).get("steps", {}).get(task, 0)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    torch.set_num_threads(1)


def load(task):
    from diffusers import (StableDiffusionGLIGENPipeline, StableDiffusionInpaintPipeline, StableDiffusionPipeline,
                           StableDiffusionUpscalePipeline)

    cls = {"text2img": StableDiffusionPipeline, "layout": StableDiffusionGLIGENPipeline,
           "inpaint": StableDiffusionInpaintPipeline, "upscale": StableDiffusionUpscalePipeline}[task]
    pipe = cls.from_pretrained(os.path.join(WEIGHTS, task), torch_dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def picture(task, pipe):
    g = torch.Generator().manual_seed(0)
    prompt = "a red circle in the centre"
    if task == "text2img":
        return pipe(prompt, height=64, width=64, num_inference_steps=2, generator=g).images[0]
    if task == "layout":
        return pipe(prompt, height=64, width=64, num_inference_steps=2, generator=g,
                    gligen_phrases=["red circle"], gligen_boxes=[[0.3, 0.3, 0.7, 0.7]]).images[0]
    start = Image.new("RGB", (64, 64), (245, 245, 245))
    if task == "inpaint":
        return pipe(prompt, image=start, mask_image=evaluate.mask_for((0.3, 0.3, 0.7, 0.7)), height=64, width=64,
                    num_inference_steps=2, generator=g).images[0]
    return pipe(prompt, image=start, num_inference_steps=2, generator=g).images[0]


@pytest.mark.parametrize("task,size", [("text2img", 64), ("layout", 64), ("inpaint", 64), ("upscale", 256)])
def test_pipeline_loads_and_draws_a_picture_of_the_right_size(task, size):
    pipe = load(task)
    assert next(pipe.unet.parameters()).dtype == torch.float32
    img = picture(task, pipe)
    assert isinstance(img, Image.Image) and img.size == (size, size) and img.mode == "RGB"
    assert np.isfinite(np.asarray(img, dtype=np.float32)).all()


def test_pipelines_share_one_tokenizer_text_encoder_and_vae():
    """text2img stores the tokenizer, the VAE and its own text encoder, which layout reads
    too; inpaint stores the text encoder it and upscale share. text2img's own differs from
    that only in the cell words' embeddings (MODEL_CARD, Training, "Cell words")."""
    base = os.path.realpath(os.path.join(WEIGHTS, "text2img"))
    shared_text = os.path.realpath(os.path.join(WEIGHTS, "inpaint", "text_encoder"))
    for task in ("layout", "inpaint", "upscale"):
        for part in ("vae", "tokenizer"):
            if (task, part) == ("upscale", "vae"):
                continue  # its own rescaled copy (see the next tests)
            assert os.path.realpath(os.path.join(WEIGHTS, task, part)) == os.path.join(base, part)
    assert os.path.realpath(os.path.join(WEIGHTS, "layout", "text_encoder")) == \
        os.path.join(base, "text_encoder")
    assert os.path.realpath(os.path.join(WEIGHTS, "upscale", "text_encoder")) == shared_text


def test_text_to_images_own_text_encoder_differs_only_in_the_cell_words():
    from safetensors.torch import load_file

    from playground.starter import models
    from playground.starter.train import cell_word_ids

    own = load_file(os.path.join(WEIGHTS, "text2img", "text_encoder", "model.safetensors"))
    shared = load_file(os.path.join(WEIGHTS, "inpaint", "text_encoder", "model.safetensors"))
    table = "embeddings.token_embedding.weight"
    assert {name for name in own if not torch.equal(own[name], shared[name])} == {table}
    rows = (own[table] != shared[table]).any(dim=1).nonzero().flatten().tolist()
    assert rows and set(rows) <= set(cell_word_ids(models.build_tokenizer()))


COLOUR_SEEDS = (0, 1, 2, 3)
# of 32 (8 colours x 4 seeds; chance is about 1 in 7, under 5 of 32), at the model's default
# guidance (3): measured 31 at text2img step 73226, 29 at 70051 and 65752, 25 with the weights of step 15767, with the VAE decoder of
# step 844 and of step 2697 alike (26 at step 14678, 22 at
# step 10935, where guidance 7.5 gave 17). MODEL_CARD.md has the full figures.
COLOUR_PROMPTS_RIGHT = 18


def dominant_colour(picture: Image.Image, ignore: str) -> str:
    """The palette colour most pixels are close to, leaving out `ignore` (the background)."""
    from playground.starter.world import PALETTE

    names = [n for n in PALETTE if n != ignore]
    pixels = np.asarray(picture, dtype=np.float32).reshape(-1, 1, 3)
    palette = np.array([PALETTE[n] for n in names], dtype=np.float32)[None]
    distance = np.linalg.norm(pixels - palette, axis=-1)
    close = distance.min(axis=1) < 60
    counts = np.bincount(distance.argmin(axis=1)[close], minlength=len(names))
    return names[int(counts.argmax())]


@pytest.mark.skipif(trained_steps("text2img") < TRAINED_MIN_STEPS,
                    reason=f"weights/training.json: text2img trained {trained_steps('text2img')} steps "
                           f"(< {TRAINED_MIN_STEPS}): the shipped weights are still a placeholder")
def test_text_to_image_gets_the_colour_right():
    """One big square per palette colour and seed, checked by its pixels: the colour asked for is
    the one that covers most of the picture apart from the background."""
    from playground.starter.world import PALETTE

    pipe, found = load("text2img"), {}
    for colour in PALETTE:
        background = "black" if colour == "white" else "white"
        prompt = f"a big {colour} square in the centre on a {background} background"
        for seed in COLOUR_SEEDS:
            image = pipe(prompt, height=64, width=64, num_inference_steps=evaluate.STEPS,
                         guidance_scale=evaluate.default_guidance("text2img"),
                         generator=torch.Generator().manual_seed(seed)).images[0]
            found[colour, seed] = dominant_colour(image, ignore=background)
    right = [c for (c, _), f in found.items() if c == f]
    assert len(right) >= COLOUR_PROMPTS_RIGHT, found


# "an orange <shape>": until the grammar wrote "an" before "orange" in object phrases the
# models read it as an orange background (MODEL_CARD.md, Known failure cases)
ORANGE_PROMPTS = ("an orange circle", "an orange square", "an orange triangle",
                  "an orange circle on a white background", "an orange square on a white background",
                  "an orange triangle with a white background")
ORANGE_RIGHT = 18  # of 24; measured 23 at text2img steps 73226 and 70051, 24 at 65752, 23 at 54096, 11 at 48622 (0 with a background), 3 at 43993


@pytest.mark.skipif(trained_steps("text2img") < TRAINED_MIN_STEPS, reason="placeholder weights")
def test_text_to_image_reads_an_orange_object_as_the_object():
    """An orange object on a white background, whether the background is stated or not, by
    its pixels: orange covers most of what is not white, and the corners are white."""
    from playground.starter.world import PALETTE

    pipe, found = load("text2img"), {}
    for prompt in ORANGE_PROMPTS:
        for seed in COLOUR_SEEDS:
            image = pipe(prompt, height=64, width=64, num_inference_steps=evaluate.STEPS,
                         guidance_scale=evaluate.default_guidance("text2img"),
                         generator=torch.Generator().manual_seed(seed)).images[0]
            corners = np.asarray(image, dtype=np.float32)[[1, 1, -2, -2], [1, -2, 1, -2]]
            white = np.abs(corners - PALETTE["white"]).max() < 40
            found[prompt, seed] = (dominant_colour(image, ignore="white"), bool(white))
    right = [key for key, got in found.items() if got == ("orange", True)]
    assert len(right) >= ORANGE_RIGHT, found


def render_batch(n=4):
    import random
    from playground.starter.world import random_scene, render
    rng = random.Random(7)
    pics = [np.asarray(render(random_scene(rng), 64), dtype=np.float32) / 127.5 - 1 for _ in range(n)]
    return torch.from_numpy(np.stack(pics)).permute(0, 3, 1, 2)


@torch.no_grad()
def test_vae_scaling_factor_gives_unit_latents():
    """The pipelines decode latents / scaling_factor: it must be the factor the UNets were
    trained with (latents of renders with std about 1), not a value some pipeline forced."""
    vae = load("text2img").vae
    latents = vae.encode(render_batch()).latent_dist.mode() * vae.config.scaling_factor
    assert 0.7 < latents.std().item() < 1.4, vae.config.scaling_factor


@torch.no_grad()
def test_upscaler_vae_decodes_like_the_shared_vae_at_its_forced_scale():
    shared, up = load("text2img").vae, load("upscale").vae
    assert up.config.scaling_factor == 0.08333  # StableDiffusionUpscalePipeline insists on it
    latents = shared.encode(render_batch()).latent_dist.mode() * shared.config.scaling_factor
    a = shared.decode(latents / shared.config.scaling_factor).sample
    b = up.decode(latents / up.config.scaling_factor).sample
    assert (a - b).abs().max().item() < 0.02
    again = up.encode(render_batch()).latent_dist.mode() * up.config.scaling_factor
    assert torch.allclose(again, latents, atol=0.02)


def test_each_shipped_pipeline_starts_with_its_chosen_scheduler():
    """DPM++ 2M for the 64 px models; Euler for the upscaler (closer to the true picture at
    20 steps, see MODEL_CARD.md), and the playground's scheduler menu starts there."""
    from playground.registry import Registry
    from playground.starter.models import build_default_scheduler

    registry = Registry(device="cpu")
    for folder, task, name in [("text2img", "text_to_image", "DPM++ 2M"), ("inpaint", "inpaint", "DPM++ 2M"),
                               ("upscale", "upscale", "Euler")]:
        with open(os.path.join(WEIGHTS, folder, "scheduler", "scheduler_config.json")) as f:
            shipped = json.load(f)["_class_name"]  # the folder's own choice; loading is tested above
        assert shipped == type(build_default_scheduler(folder)).__name__, folder
        assert registry.defaults("starter", task)["scheduler"] == name


INPAINT_ORANGE_RIGHT = 16  # of 24; measured 24 at inpaint step 36243, 3 at 31181


@pytest.mark.skipif(trained_steps("inpaint") < TRAINED_MIN_STEPS, reason="placeholder weights")
def test_inpainting_reads_an_orange_object_as_the_object(judge):
    """Inpainted into a square in the centre of a blank white picture, the same prompts give an
    orange object of the asked shape in the square and keep the white background, as the judge
    reads the pixels (the old failure filled the square with orange background)."""
    from playground.starter.probe_article import draw, object_found

    pipe = load("inpaint")
    asked = [(prompt, next(s for s in ("circle", "square", "triangle") if s in prompt), seed)
             for prompt in ORANGE_PROMPTS for seed in COLOUR_SEEDS]
    images = [draw("inpaint", pipe, prompt, "orange", shape, "white", seed) for prompt, shape, seed in asked]
    readings = judge.read_many(images)
    right = [key for key, r in zip(asked, readings)
             if object_found("inpaint", r, "orange", key[1]) and r["background"] == "white"]
    assert len(right) >= INPAINT_ORANGE_RIGHT, [(k, r["objects"]) for k, r in zip(asked, readings)]


INPAINT_ALONE_RIGHT = 6  # of 8; measured 8 at inpaint step 40375, 1 at 36243


@pytest.mark.skipif(trained_steps("inpaint") < TRAINED_MIN_STEPS, reason="placeholder weights")
def test_inpainting_paints_the_object_the_prompt_names_beside_others(judge):
    """A prompt of what goes in the mask alone ("a medium red square in the top"), the way
    people prompt an inpainter, over a picture that already shows other objects: the judge
    finds that object, every stated attribute right, in the mask (the first 8 held-out
    cases of 2-3 objects; the weights before the focus share drew background there)."""
    pipe = load("inpaint")
    cases = [c for c in evaluate.inpaint_cases(20) if len(c.scene.objects) > 1][:8]
    pictures = [evaluate.inpainted(pipe, c, c.extra["alone"], evaluate.default_guidance("inpaint"))[1]
                for c in cases]
    scores, readings = evaluate.right_in_mask(judge, cases, pictures)
    right = sum(s["all stated"] for s in scores)
    assert right >= INPAINT_ALONE_RIGHT, [(c.extra["alone"], r["objects"]) for c, r in zip(cases, readings)]


FOCUSED_RIGHT = 6  # of 8; measured 8 with the focus, 3 without, at inpaint step 40375


@pytest.mark.skipif(trained_steps("inpaint") < TRAINED_MIN_STEPS, reason="placeholder weights")
def test_objects_named_without_positions_paint_the_masked_one_with_the_focus(starter, judge):
    """The held-out 2-3 object cases named without cells ("a large red circle and a small
    blue square on a white background"): the focus picks the object whose colour is
    missing outside the mask. Measured on the first 8 it changes: 6 right, 2 as written."""
    from playground.starter.world import render

    cases = [c for c in evaluate.inpaint_cases(40) if len(c.scene.objects) > 1]
    cases = [c for c in cases if evaluate.focused_caption(c, evaluate.caption_without_positions(c))
             != evaluate.caption_without_positions(c)][:8]

    def right(focus: bool) -> int:
        pictures = [starter.inpaint(render(c.extra["before"]), c.extra["mask"],
                                    evaluate.caption_without_positions(c), seed=c.seed,
                                    steps=evaluate.STEPS, focus_on_mask=focus) for c in cases]
        return sum(s["all stated"] for s in evaluate.right_in_mask(judge, cases, pictures)[0])

    focused, as_written = right(True), right(False)
    assert focused >= 5 and focused >= as_written + 2, (focused, as_written)


@pytest.mark.skipif(trained_steps("inpaint") < TRAINED_MIN_STEPS, reason="placeholder weights")
def test_a_caption_of_the_whole_picture_paints_the_masked_object_with_the_focus(starter, judge):
    """Through `Playground.inpaint`, as the Inpainting tab calls it: the held-out captions
    of the whole picture (2-3 objects, each in its cell) come out right in the mask with
    focus_on_mask (the default), and clearly more often than read as written."""
    from playground import settings_of
    from playground.starter.world import render

    cases = [c for c in evaluate.inpaint_cases(20) if len(c.scene.objects) > 1][:8]

    def right(focus: bool) -> tuple[int, list]:
        pictures = [starter.inpaint(render(c.extra["before"]), c.extra["mask"], c.prompt,
                                    seed=c.seed, steps=evaluate.STEPS, focus_on_mask=focus)
                    for c in cases]
        scores, readings = evaluate.right_in_mask(judge, cases, pictures)
        return sum(s["all stated"] for s in scores), [settings_of(p) for p in pictures]

    focused, settings = right(True)
    as_written, plain = right(False)
    assert all(s["focus_on_mask"] and s["focused_prompt"] != s["prompt"] for s in settings)
    assert all(not s["focus_on_mask"] and "focused_prompt" not in s for s in plain)
    assert focused >= FOCUSED_RIGHT, [s["focused_prompt"] for s in settings]
    assert focused >= as_written + 2, (focused, as_written)
