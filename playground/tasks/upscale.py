"""Super-resolution: a small picture in, one four times larger out."""
from __future__ import annotations

from PIL import Image

from . import checks, common

TASK = "upscale"


def run(registry, *, image, prompt, negative_prompt, model, scheduler, steps, guidance,
        noise_level, seed, control):
    settings_common = common.check_common(registry, TASK, model, scheduler, steps, guidance, seed)
    prompt = checks.text("prompt", prompt)
    negative_prompt = checks.text("negative_prompt", negative_prompt)
    limits = registry.defaults(model, TASK)
    noise_level = checks.in_range("noise_level", noise_level, 0, limits["max_noise_level"],
                                  integer=True)
    picture = checks.rgb(checks.image("image", image))
    warnings: list[str] = []
    small = input_picture(picture, limits, warnings)

    def call(pipe, generators, callbacks):
        return pipe(prompt=prompt, negative_prompt=negative_prompt or None, image=small,
                    noise_level=noise_level, num_inference_steps=settings_common["steps"],
                    guidance_scale=settings_common["guidance"], generator=generators,
                    output_type="pil", **callbacks).images

    scale = limits["scale"]
    settings = {"prompt": prompt, "negative_prompt": negative_prompt, "noise_level": noise_level,
                "input_size": [small.width, small.height], "width": small.width * scale,
                "height": small.height * scale, "warnings": warnings}
    return common.execute(registry, TASK, settings_common, settings, call, control,
                          prompts={"prompt": prompt, "negative prompt": negative_prompt})[0]


def input_picture(picture: Image.Image, limits: dict, warnings: list[str]) -> Image.Image:
    """The model's input size rule: a fixed size (starter: 64 x 64), or the picture's size
    rounded down to a multiple of 8 with its longest side at most `max_side`."""
    w, h = picture.size
    if limits["input_size"]:
        target = tuple(limits["input_size"])
    else:
        multiple, max_side = limits["size_multiple"], limits["max_side"]
        factor = min(1.0, max_side / max(w, h))
        target = (max(multiple, int(w * factor) // multiple * multiple),
                  max(multiple, int(h * factor) // multiple * multiple))
    if target != (w, h):
        warnings.append(f"input resized from {w}x{h} to {target[0]}x{target[1]}, the size this "
                        "model upscales")
        picture = picture.resize(target, Image.BICUBIC)
    return picture
