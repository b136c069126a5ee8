"""Inpainting: repaint the masked part of a picture; the rest comes back unchanged.

With `focus_on_mask` (on by default), a prompt that places several objects is read down
to the one placed where the mask is (`mask_focus`)."""
from __future__ import annotations

import numpy as np
from PIL import Image

from . import checks, common, mask_focus

TASK = "inpaint"


def run(registry, *, image, mask, prompt, negative_prompt, model, scheduler, steps, guidance,
        strength, seed, control, focus_on_mask=True):
    settings_common = common.check_common(registry, TASK, model, scheduler, steps, guidance, seed)
    prompt = checks.text("prompt", prompt)
    negative_prompt = checks.text("negative_prompt", negative_prompt)
    strength = checks.number("strength", strength)
    if not 0.0 < strength <= 1.0:
        raise checks.BadInput(f"strength must be above 0 and at most 1, got {strength}")
    if int(settings_common["steps"] * strength) < 1:
        raise checks.BadInput(f"steps x strength = {settings_common['steps']} x {strength} is "
                              "below 1: no denoising step would run; raise steps or strength")
    original = checks.rgb(checks.image("image", image))
    m = checks.mask(mask, original.size)
    focus_on_mask = checks.flag("focus_on_mask", focus_on_mask)
    limits = registry.defaults(model, TASK)
    warnings: list[str] = []
    width, height = model_size(original.size, limits, warnings)
    focus = mask_focus.focus_on_mask(prompt, original, m) if focus_on_mask else None
    model_prompt = focus.prompt if focus else prompt

    def call(pipe, generators, callbacks):
        work_image = original.resize((width, height), Image.BICUBIC)
        work_mask = Image.fromarray((m * 255).round().astype(np.uint8)).resize(
            (width, height), Image.BILINEAR)
        pictures = pipe(prompt=model_prompt, negative_prompt=negative_prompt or None,
                        image=work_image, mask_image=work_mask, strength=strength,
                        num_inference_steps=settings_common["steps"],
                        guidance_scale=settings_common["guidance"], width=width, height=height,
                        generator=generators, output_type="pil", **callbacks).images
        return [blend(original, picture, m) for picture in pictures]

    settings = {"prompt": prompt, "negative_prompt": negative_prompt, "strength": strength,
                "focus_on_mask": focus_on_mask, "width": original.width,
                "height": original.height, "warnings": warnings}
    if focus is not None and focus.note:
        settings["focused_prompt"] = focus.prompt
        warnings.append(focus.note)
    return common.execute(registry, TASK, settings_common, settings, call, control,
                          prompts={"prompt": prompt, "negative prompt": negative_prompt})[0]


def model_size(size, limits, warnings: list[str]) -> tuple[int, int]:
    """The size the model runs at: the picture's size rounded down to a multiple of 8."""
    multiple, max_side = limits["size_multiple"], limits["max_side"]
    w, h = size
    if max(w, h) > max_side or min(w, h) < multiple:
        raise checks.BadInput(f"image is {w}x{h}; sides must be {multiple} to {max_side} pixels")
    run_w, run_h = w - w % multiple, h - h % multiple
    if (run_w, run_h) != (w, h):
        warnings.append(f"image is {w}x{h}, not a multiple of {multiple}: the model ran at "
                        f"{run_w}x{run_h} and its result was resized back to {w}x{h}")
    return run_w, run_h


def blend(original: Image.Image, generated: Image.Image, m: np.ndarray) -> Image.Image:
    """original * (1 - m) + generated * m at full resolution: unmasked pixels stay exact."""
    if generated.size != original.size:
        generated = generated.resize(original.size, Image.BICUBIC)
    a = np.asarray(original, dtype=np.float32)
    b = np.asarray(generated.convert("RGB"), dtype=np.float32)
    weight = m[:, :, None]
    out = a * (1.0 - weight) + b * weight
    return Image.fromarray(np.clip(out.round(), 0, 255).astype(np.uint8))
