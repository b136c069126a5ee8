"""Layout to image (GLIGEN): phrases placed in boxes, plus a caption of the whole."""
from __future__ import annotations

from . import checks, colour_hint, common, placement, regions

TASK = "layout_to_image"
# Records made before the grounding setting existed were all sampled with this share of
# the steps steered by the boxes (diffusers' default gligen_scheduled_sampling_beta).
EARLIER_GROUNDING = 0.3


def run(registry, *, prompt, phrases, boxes, negative_prompt, model, scheduler, steps,
        guidance, seed, control, place_objects=False, regional_prompts=False,
        colour_hints=False, grounding=None):
    settings_common = common.check_common(registry, TASK, model, scheduler, steps, guidance, seed)
    prompt = checks.text("prompt", prompt)
    negative_prompt = checks.text("negative_prompt", negative_prompt)
    limits = registry.defaults(model, TASK)
    phrases, boxes = checks.phrases_and_boxes(phrases, boxes, limits["max_boxes"])
    width, height = limits["width"], limits["height"]
    place_objects = checks.flag("place_objects", place_objects)
    regional_prompts = checks.flag("regional_prompts", regional_prompts)
    colour_hints = checks.flag("colour_hints", colour_hints)
    grounding = limits["grounding"] if grounding is None else checks.grounding(grounding)
    placed: list[dict] = []
    warnings: list[str] = []

    def call(pipe, generators, callbacks):
        checks.phrase_lengths(pipe.tokenizer, phrases)
        latents = None
        if place_objects:
            latents = placement.boxed_latents(pipe, phrases, boxes, generators, height, width,
                                              settings_common["steps"], control, placed,
                                              warnings)
        if colour_hints:
            latents = colour_hint.hinted_latents(pipe, latents, phrases, boxes, generators,
                                                 height, width, warnings)
        if regional_prompts:
            pipe.unet = regions.regional_unet(pipe, prompt, phrases, boxes, height, width,
                                              settings_common["guidance"] > 1, warnings)
        return pipe(prompt=prompt, negative_prompt=negative_prompt or None, latents=latents,
                    gligen_phrases=phrases, gligen_boxes=boxes,
                    gligen_scheduled_sampling_beta=grounding,
                    num_inference_steps=settings_common["steps"],
                    guidance_scale=settings_common["guidance"], width=width, height=height,
                    generator=generators, output_type="pil", **callbacks).images

    settings = placement.record({"prompt": prompt, "negative_prompt": negative_prompt,
                                 "phrases": phrases, "boxes": boxes, "grounding": grounding,
                                 "width": width, "height": height, "warnings": warnings}, place_objects,
                                placed)
    if regional_prompts:  # recorded only when on, as place_objects, so older records stay
        settings["regional_prompts"] = True
    if colour_hints:
        settings["colour_hints"] = True
    texts = {"prompt": prompt, "negative prompt": negative_prompt}
    texts.update({f"phrase {i}": p for i, p in enumerate(phrases, 1)})
    return common.execute(registry, TASK, settings_common, settings, call, control,
                          prompts=texts)[0]
