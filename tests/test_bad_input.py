"""One table of bad inputs, each with the message fragment the user must see: an error
(`PlaygroundError`, a `ValueError`) for input that is refused, or a warning in the
result's settings for input that is accepted after a change (rounded, cut, resized)."""
from __future__ import annotations

import io
import math
from dataclasses import dataclass

import numpy as np
import pytest
from PIL import Image

from playground import PlaygroundError

IMG = Image.new("RGB", (64, 64), (200, 40, 40))


def mask_of(size=(64, 64), fill=None):
    m = np.zeros((size[1], size[0]), np.uint8)
    if fill is None:
        m[10:20, 10:20] = 255
    else:
        m[:] = fill
    return Image.fromarray(m)


def png_declaring(width: int, height: int) -> bytes:
    """A small PNG file that declares a huge picture (a decompression bomb)."""
    buffer = io.BytesIO()
    Image.new("1", (width, height)).save(buffer, format="PNG")
    return buffer.getvalue()


@dataclass(frozen=True)
class Warned:
    """The input is accepted; settings["warnings"] must say this."""
    fragment: str


LONG_PROMPT = ("a red circle in the top left and a blue square in the bottom right " * 150)[
    :10_000]

T2I = ("text_to_image", dict(prompt="a red circle", steps=2, seed=1))
LAYOUT = ("layout_to_image", dict(prompt="two objects", phrases=["a red circle"],
                                  boxes=[[0.1, 0.1, 0.5, 0.5]], steps=2, seed=1))
INPAINT = ("inpaint", dict(image=IMG, mask=mask_of(), prompt="a blue square", steps=2, seed=1))
UPSCALE = ("upscale", dict(image=IMG, steps=2, seed=1))

CASES = [
    # (task defaults, changes, message fragment)
    (T2I, dict(steps=0), "steps must be between 1 and 150, got 0"),
    (T2I, dict(steps=10_000), "steps must be between 1 and 150, got 10000"),
    (T2I, dict(steps=2.5), "steps must be a whole number"),
    (T2I, dict(steps="20"), "steps must be a number"),
    (T2I, dict(guidance=math.nan), "guidance must be a finite number, got nan"),
    (T2I, dict(guidance=math.inf), "guidance must be a finite number"),
    (T2I, dict(guidance=-1), "guidance must be between 0.0 and 30.0"),
    (T2I, dict(guidance=100), "guidance must be between 0.0 and 30.0"),
    (T2I, dict(seed=-2), "seed must be 0..4294967295 or -1 for random"),
    (T2I, dict(seed=2**32), "seed must be 0..4294967295"),
    (T2I, dict(seed=1.5), "seed must be a whole number"),
    (T2I, dict(seed=True), "seed must be an integer"),
    (T2I, dict(scheduler="Nope"), "unknown scheduler 'Nope'"),
    (T2I, dict(scheduler="Nope"), "DPM++ 2M Karras"),
    (T2I, dict(model="nope"), "unknown model 'nope'; registered: starter"),
    (T2I, dict(num_images=0), "num_images must be between 1 and 8"),
    (T2I, dict(num_images=9), "num_images must be between 1 and 8"),
    (T2I, dict(width=4), "width must be between 8 and 256"),
    (T2I, dict(height=100_000), "height must be between 8 and 256"),
    (T2I, dict(prompt=123), "prompt must be text"),
    (LAYOUT, dict(boxes=[[0.6, 0.1, 0.2, 0.5]]), "need x0 < x1 and y0 < y1"),
    (LAYOUT, dict(boxes=[[0.1, 0.5, 0.5, 0.5]]), "need x0 < x1 and y0 < y1"),
    (LAYOUT, dict(boxes=[[0.1, 0.1, 1.5, 0.5]]), "must be between 0 and 1"),
    (LAYOUT, dict(boxes=[[0.1, 0.1, math.nan, 0.5]]), "finite number"),
    (LAYOUT, dict(boxes=[[0.1, 0.1, 0.5]]), "box 1 must be [x0, y0, x1, y1]"),
    (LAYOUT, dict(phrases=["a", "b"]), "2 phrases but 1 boxes"),
    (LAYOUT, dict(phrases=["a"] * 4, boxes=[[0.1, 0.1, 0.2, 0.2]] * 4), "at most 3"),
    (LAYOUT, dict(phrases=[" "]), "phrase 1 is empty"),
    (LAYOUT, dict(phrases=[], boxes=[]), "no boxes given"),
    (INPAINT, dict(image=None), "no image given"),
    (INPAINT, dict(image=""), "no image given"),
    (INPAINT, dict(image=b"not a picture"), "image is not a readable picture"),
    (INPAINT, dict(image="/no/such/file.png"), "does not exist"),
    (INPAINT, dict(image=42), "image must be a picture"),
    (INPAINT, dict(mask=None), "no mask given"),
    (INPAINT, dict(mask=mask_of((32, 32))), "mask is 32x32 but the image is 64x64"),
    (INPAINT, dict(mask=mask_of(fill=0)), "mask is empty"),
    (INPAINT, dict(mask=mask_of(fill=255)), "mask covers the whole picture"),
    (INPAINT, dict(strength=0), "strength must be above 0 and at most 1"),
    (INPAINT, dict(strength=math.nan), "strength must be a finite number"),
    (INPAINT, dict(strength=0.1, steps=5), "no denoising step would run"),
    (INPAINT, dict(image=np.zeros((0, 0, 3), np.uint8)), "image is not a readable picture"),
    (UPSCALE, dict(image=None), "no image given"),
    (UPSCALE, dict(noise_level=351), "noise_level must be between 0 and 350"),
    (UPSCALE, dict(noise_level=math.nan), "noise_level must be a finite number"),
    (UPSCALE, dict(scheduler="Euler b"), "unknown scheduler 'Euler b'"),
    (UPSCALE, dict(model="starter", steps=151), "steps must be between 1 and 150"),
    # --- the list, case by case
    (INPAINT, dict(image=Image.new("RGB", (0, 0))), "image is empty (0 pixels)"),
    (UPSCALE, dict(image=b"GIF89a this is not a picture"), "image is not a readable picture"),
    (UPSCALE, dict(image=png_declaring(20_000, 20_000)), "image is too large"),
    (UPSCALE, dict(image=png_declaring(5_000, 5_000)),
     "image is too large: 5000x5000 (25,000,000 pixels); at most 16,777,216 pixels"),
    (INPAINT, dict(image=Image.new("RGB", (512, 512)), mask=mask_of((512, 512))),
     "image is 512x512; sides must be 8 to 256 pixels"),
    (INPAINT, dict(image=Image.new("RGB", (4, 4)), mask=Image.fromarray(
        np.array([[255] * 4, [0] * 4, [0] * 4, [0] * 4], np.uint8))),
     "image is 4x4; sides must be 8 to 256 pixels"),
    (UPSCALE, dict(image=Image.new("RGB", (1, 1), (9, 9, 9))),
     Warned("input resized from 1x1 to 64x64")),
    (T2I, dict(width=100), Warned("width 100 is not a multiple of 8; used 96")),
    (INPAINT, dict(image=Image.new("RGB", (60, 60)), mask=mask_of((60, 60))),
     Warned("image is 60x60, not a multiple of 8: the model ran at 56x56")),
    (T2I, dict(prompt=""), Warned("the prompt is empty")),
    (INPAINT, dict(prompt="   "), Warned("the prompt is empty")),
    (T2I, dict(prompt=LONG_PROMPT), Warned("the prompt is longer than 77 tokens; this part "
                                           "was cut: 'a r")),
    (T2I, dict(prompt=LONG_PROMPT), Warned("characters ...]")),  # the cut is abbreviated
    (T2I, dict(prompt="a red circle " * 1000), "prompt is 13,000 characters long; at most 10,000"),
    (T2I, dict(negative_prompt="x" * 10_001), "negative_prompt is 10,001 characters long"),
    (T2I, dict(prompt="a red \udcff circle"), "prompt is not valid UTF-8 text: character U+DCFF"),
    (T2I, dict(prompt=b"a red \xff circle"), "prompt must be text (str), got bytes"),
    (T2I, dict(prompt="a red\x00 circle"), "control character U+0000 at position 5"),
    (T2I, dict(negative_prompt="blue\x1b[31m"), "negative_prompt contains the control character U+001B"),
    (T2I, dict(prompt="a red circle\nin the top left\t"), Warned("")),  # newlines and tabs are text
    (T2I, dict(scheduler=5), "unknown scheduler 5"),
    (T2I, dict(model=None), "model must be a name; for text_to_image: starter"),
    (LAYOUT, dict(model="../../etc/passwd"), "unknown model '../../etc/passwd'"),
    (T2I, dict(steps=-5), "steps must be between 1 and 150, got -5"),
    (T2I, dict(steps=10**30), "steps must be between 1 and 150"),
    (T2I, dict(steps=math.inf), "steps must be a finite number"),
    (T2I, dict(guidance=-math.inf), "guidance must be a finite number, got -inf"),
    (INPAINT, dict(strength=math.inf), "strength must be a finite number, got inf"),
    (INPAINT, dict(strength=-0.5), "strength must be above 0 and at most 1"),
    (UPSCALE, dict(noise_level=math.inf), "noise_level must be a finite number, got inf"),
    (UPSCALE, dict(noise_level=-1), "noise_level must be between 0 and 350, got -1"),
    (LAYOUT, dict(boxes=[[-0.1, 0.1, 0.5, 0.5]]), "must be between 0 and 1"),
    (LAYOUT, dict(boxes=[[0.2, 0.2, 0.2, 0.2]]), "need x0 < x1 and y0 < y1"),  # zero area
    (LAYOUT, dict(boxes=[[0.1, 0.1, 0.5, 0.5]] * 2), "1 phrases but 2 boxes"),
    (LAYOUT, dict(phrases="a red circle"), "phrases must be a list of text"),
    (LAYOUT, dict(phrases=["a red circle " * 30]), "phrase 1 is 92 tokens long; a phrase may "
                                                   "have at most 77 tokens"),
    (T2I, dict(seed=-1.5), "seed must be a whole number"),
    (T2I, dict(seed=10**20), "seed must be 0..4294967295"),
    (T2I, dict(seed="7"), "seed must be an integer"),
    (T2I, dict(seed=math.nan), "seed must be a whole number"),
]


@pytest.mark.parametrize("base, change, fragment", CASES,
                         ids=[f"{b[0]}-{'-'.join(map(str, c))}" for b, c, _ in CASES])
def test_bad_input_gives_a_clear_error(starter, base, change, fragment):
    task, kwargs = base
    if isinstance(fragment, Warned):
        result = getattr(starter, task)(**{**kwargs, **change, "steps": 1})
        warnings = result.info["settings"]["warnings"]
        assert any(fragment.fragment in w for w in warnings) or (
            fragment.fragment == "" and not any("control" in w for w in warnings)), warnings
        assert all(len(w) < 400 for w in warnings), "a warning too long to read"
        return
    with pytest.raises(PlaygroundError) as error:
        getattr(starter, task)(**{**kwargs, **change})
    assert isinstance(error.value, ValueError)
    assert fragment in str(error.value)
    assert len(str(error.value)) < 600, "a message too long to read"


def test_model_keeps_serving_after_bad_input(starter):
    with pytest.raises(PlaygroundError):
        starter.text_to_image("a red circle", steps=0)
    assert starter.text_to_image("a red circle", steps=1, seed=1).size == (64, 64)


def test_task_a_model_does_not_do(tiny_models):
    from playground import Playground, Registry
    from playground.registry import make_entry

    entry = make_entry("only-t2i", str(tiny_models / "text2img"), tasks=["text_to_image"])
    pg = Playground(Registry([entry], allowed_dirs=[str(tiny_models)]))
    with pytest.raises(PlaygroundError, match="does not do upscale; models for upscale: none"):
        pg.upscale(IMG, model="only-t2i")
