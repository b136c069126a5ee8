"""Text to image: a caption in, one or more pictures out."""
from __future__ import annotations

from .. import run as runs
from .. import schedulers
from . import checks, colour_hint, common, compose, placement, regions

TASK = "text_to_image"
REPLACED = ("compose objects paints each object by itself, so place_objects, colour_hints "
            "and regional_prompts were not used")


def run(registry, *, prompt, negative_prompt, model, scheduler, steps, guidance, seed,
        width, height, num_images, control, place_objects=False, colour_hints=False,
        regional_prompts=False, compose_objects=False):
    settings_common = common.check_common(registry, TASK, model, scheduler, steps, guidance, seed)
    prompt = checks.text("prompt", prompt)
    negative_prompt = checks.text("negative_prompt", negative_prompt)
    count = checks.num_images(num_images)
    limits = registry.defaults(model, TASK)
    warnings: list[str] = []
    width, height = checks.size(width, height, limits["width"], limits["height"],
                                limits["size_multiple"], limits["max_side"], warnings)

    place_objects = checks.flag("place_objects", place_objects)
    colour_hints = checks.flag("colour_hints", colour_hints)
    regional_prompts = checks.flag("regional_prompts", regional_prompts)
    compose_objects = checks.flag("compose_objects", compose_objects)
    placed: list[dict] = []
    composed, (place_objects, colour_hints, regional_prompts) = composing(
        registry, model, prompt, compose_objects,
        (place_objects, colour_hints, regional_prompts), warnings)

    def call(pipe, generators, callbacks):
        if composed:
            inpainter = inpainting_pipeline(registry, model, pipe, settings_common,
                                            generators[0])
            return [compose.compose(inpainter, prompt, negative_prompt or None, composed,
                                    generator, width, height, settings_common["steps"],
                                    settings_common["guidance"], control)
                    for generator in generators]
        latents = starting_latents(pipe, prompt, generators, count, height, width,
                                   settings_common["steps"], control, place_objects,
                                   colour_hints, placed, warnings)
        pipe.unet = sampling_unet(pipe, prompt, height, width, settings_common["guidance"],
                                  regional_prompts, warnings)
        return pipe(prompt=prompt, negative_prompt=negative_prompt or None, latents=latents,
                    num_inference_steps=settings_common["steps"],
                    guidance_scale=settings_common["guidance"], width=width, height=height,
                    num_images_per_prompt=count, generator=generators, output_type="pil",
                    **callbacks).images

    settings = record({"prompt": prompt, "negative_prompt": negative_prompt, "width": width,
                       "height": height, "warnings": warnings}, place_objects, colour_hints,
                      placed, regional_prompts, compose_objects, composed)
    images = common.execute(registry, TASK, settings_common, settings, call, control, count,
                            prompts={"prompt": prompt, "negative prompt": negative_prompt})
    return images[0] if count == 1 else images


def composing(registry, model, prompt, compose_objects: bool, one_pass: tuple[bool, ...],
              warnings: list) -> tuple[list, tuple[bool, ...]]:
    """(the objects to compose, the one-pass options place_objects, colour_hints and
    regional_prompts): with objects to compose those give way, with a warning."""
    composed = composed_objects(registry, model, prompt, compose_objects, warnings)
    if composed and any(one_pass):
        warnings.append(REPLACED)
        one_pass = (False,) * len(one_pass)
    return composed, one_pass


def composed_objects(registry, model, prompt, compose_objects: bool, warnings: list) -> list:
    """The objects compose_objects paints one by one, or [] (off, or nothing placed)."""
    if not compose_objects:
        return []
    with_inpainter = registry.models("inpaint")
    if model not in with_inpainter:
        raise checks.BadInput(f"compose_objects paints each object with the inpainting model "
                              f"of the same name, and {model!r} has none; models with one: "
                              + (", ".join(with_inpainter) or "none registered"))
    found = compose.placed_objects(prompt)
    warnings += compose.left_out(prompt) if found else [compose.NOTHING_TO_COMPOSE]
    return found


def inpainting_pipeline(registry, model, pipe, settings_common: dict, generator):
    """A request pipeline of the model's inpainter with the scheduler the run records: the
    one asked for, else the text-to-image model's own (as Show code rebuilds it)."""
    shared = registry.pipeline(model, "inpaint")
    name = settings_common["scheduler"] or schedulers.name_of(pipe.scheduler)
    scheduler = schedulers.build(name, shared.scheduler, generator.initial_seed(),
                                 settings_common["steps"])
    return runs.request_pipeline(shared, scheduler)


def starting_latents(pipe, prompt, generators, count, height, width, steps, control,
                     place_objects: bool, colour_hints: bool, placed: list, warnings: list):
    """The starting latents the options ask for (steered, hinted), or None: the pipeline
    draws its own. Shared by text_to_image and the Learn tab's runs, so their pictures
    stay the same."""
    latents = None
    if place_objects:
        latents = placement.starting_latents(pipe, prompt, generators, count, height, width,
                                             steps, control, placed, warnings)
    if colour_hints:
        latents = colour_hint.cell_hinted_latents(pipe, latents, prompt, generators, height,
                                                  width, warnings)
    return latents


def sampling_unet(pipe, prompt, height, width, guidance, regional_prompts: bool, warnings: list):
    """The UNet to sample with: with regional prompts, one whose placed cells read only
    their object's words; else the pipeline's own. Shared with the Learn tab's filmstrip."""
    if not regional_prompts:
        return pipe.unet
    return regions.cell_regional_unet(pipe, prompt, height, width, guidance > 1, warnings)


def record(settings: dict, place_objects: bool, colour_hints: bool, placed: list,
           regional_prompts: bool = False, compose_objects: bool = False,
           composed: list = ()) -> dict:
    """The options' keys, each only when it was on (so older records stay as they were)."""
    placement.record(settings, place_objects, placed)
    if colour_hints:
        settings["colour_hints"] = True
    if regional_prompts:
        settings["regional_prompts"] = True
    if compose_objects:
        settings["compose_objects"] = True
        settings["composed"] = [p.describe() for p in composed]
    return settings
