""""Show the code": a minimal plain-diffusers script that makes a result again.

The script is written from the result's settings dict alone (plus where its model lives),
uses only torch, diffusers and PIL, and repeats what the playground did: the same
pipeline class loaded from the same folder or hub id, the same catalogue scheduler built
from the model's own scheduler config, a CPU generator with the seed, the same call. For
the starter models on CPU it gives the same pixels.
"""
from __future__ import annotations

from .. import schedulers
from ..errors import BadInput
from ..registry import PIPELINES

TASKS = ("text_to_image", "layout_to_image", "inpaint", "upscale")
_INPUT_FILES = {"inpaint": ("input.png", "mask.png"), "upscale": ("input.png",)}


def model_location(registry, settings: dict, task: str | None = None) -> tuple[str, str | None]:
    """(folder or hub id, revision) of the model a result was made with (of `task`'s
    pipeline when given: compose_objects paints with the model's inpainter)."""
    model, task = settings.get("model"), task or settings.get("task")
    try:
        source = registry.entry(model).sources[task]
        return source.location, source.revision
    except Exception:  # noqa: BLE001 - a model no longer registered: use what was recorded
        return settings.get("source", model), settings.get("revision")


def composed(settings: dict) -> bool:
    return settings.get("task") == "text_to_image" and bool(settings.get("composed"))


def scheduler_lines(name: str, seed: int, steps: int) -> tuple[str, str]:
    """(class name, the line that sets pipe.scheduler) for a catalogue name, as a run of
    `steps` steps built it (schedulers.one_step_spacing)."""
    if name in schedulers.CATALOGUE:
        class_name, overrides = schedulers.CATALOGUE[name]
    else:
        class_name, overrides = name, {}
    if class_name == "DPMSolverSDEScheduler":
        overrides = {**overrides, "noise_sampler_seed": seed}
    if steps == 1:
        overrides = {**overrides, **schedulers.ONE_STEP}
    args = "".join(f", {k}={v!r}" for k, v in overrides.items())
    return class_name, f"pipe.scheduler = {class_name}.from_config(pipe.scheduler.config{args})"


def show_code(registry, settings: dict) -> str:
    """The Python script that reproduces the result whose settings are `settings`."""
    if not isinstance(settings, dict) or settings.get("task") not in TASKS:
        raise BadInput("show_code needs a result's settings dict (settings_of(image)) with "
                       f"a task, one of: {', '.join(TASKS)}")
    task = settings["task"]
    missing = [k for k in ("model", "scheduler", "steps", "guidance", "seed") if k not in settings]
    if missing:
        raise BadInput(f"these settings lack {', '.join(missing)}; pass the whole dict of "
                       "a result (settings_of(image))")
    pipeline_task = "inpaint" if composed(settings) else task
    location, revision = model_location(registry, settings, pipeline_task)
    pipeline_class = PIPELINES[pipeline_task]
    scheduler_class, set_scheduler = scheduler_lines(settings["scheduler"], settings["seed"],
                                                   settings["steps"])
    dtype = settings.get("dtype", "float32")
    device = settings.get("device", "cpu")
    load_args = f"{location!r}, dtype=torch.{dtype}, use_safetensors=True"
    if revision:
        load_args += f", revision={revision!r}"
    if task != "upscale":
        load_args += ", safety_checker=None, requires_safety_checker=False"
    lines = [
        f"# Makes the playground's {task} result again: model {settings['model']!r}, "
        f"seed {settings['seed']}.",
        "import torch",
        f"from diffusers import {pipeline_class}, {scheduler_class}",
    ]
    if task in _INPUT_FILES:
        lines.append("from PIL import Image")
    if task == "inpaint":
        lines.append("import numpy as np")
    lines += [
        "",
        f"pipe = {pipeline_class}.from_pretrained({load_args}).to({device!r})",
        set_scheduler,
        "pipe.set_progress_bar_config(disable=True)",
        f"generator = torch.Generator('cpu').manual_seed({settings['seed']})",
    ]
    lines += _task_lines(task, settings)
    lines.append("image.save('result.png')")
    return "\n".join(lines) + "\n"


def _call(args: dict, extra: str = "") -> str:
    body = ",\n    ".join(f"{k}={v}" for k, v in args.items())
    return f"image = pipe(\n    {body}{extra},\n).images[0]"


def _common_args(settings: dict) -> dict:
    return {"prompt": repr(settings.get("prompt", "")),
            "negative_prompt": repr(settings.get("negative_prompt") or None),
            "num_inference_steps": settings["steps"], "guidance_scale": settings["guidance"]}


def _task_lines(task: str, s: dict) -> list[str]:
    args = _common_args(s)
    if composed(s):
        return [
            "# compose_objects: a canvas of the background the prompt names, then the",
            "# inpainting pipeline paints each placed object into a square at its place",
            "from playground.tasks.compose import compose, placed_objects",
            f"image = compose(pipe, {s['prompt']!r}, {s.get('negative_prompt') or None!r}, "
            f"placed_objects({s['prompt']!r}), generator, {s['width']}, {s['height']}, "
            f"{s['steps']}, {s['guidance']}, None)"]
    if task == "text_to_image":
        args.update(width=s["width"], height=s["height"], generator="generator")
        lines = []
        placed = bool(s.get("place_objects") and s.get("placed"))
        if placed:
            args.update(latents="latents")
            lines += [
                "# place_objects: the starting noise, steered so each object lands in its cell",
                "from playground.tasks.placement import placed_latents, placements",
                "from playground.teach.attention import prompt_tokens",
                f"found = placements(prompt_tokens(pipe.tokenizer, {s['prompt']!r}))",
                f"latents = placed_latents(pipe, {s['prompt']!r}, found, [generator], 1, "
                f"{s['height']}, {s['width']}, {s['steps']})"]
        if s.get("colour_hints"):
            args.update(latents="latents")
            lines += [
                "# colour_hints: each placed object's colour painted faintly into its cell",
                "from playground.tasks.colour_hint import cell_hinted_latents",
                f"latents = cell_hinted_latents(pipe, {'latents' if placed else 'None'}, "
                f"{s['prompt']!r}, [generator], {s['height']}, {s['width']})"]
        if s.get("regional_prompts"):
            lines += [
                "# regional_prompts: each placed object's cell reads only that object's words",
                "from playground.tasks.regions import cell_regional_unet",
                f"pipe.unet = cell_regional_unet(pipe, {s['prompt']!r}, {s['height']}, "
                f"{s['width']}, guided={s['guidance'] > 1})"]
        return lines + [_call(args)]
    if task == "layout_to_image":
        from ..tasks.layout_to_image import EARLIER_GROUNDING
        args.update(gligen_phrases=repr(s["phrases"]), gligen_boxes=repr(s["boxes"]),
                    gligen_scheduled_sampling_beta=s.get("grounding", EARLIER_GROUNDING),
                    width=s["width"],
                    height=s["height"], generator="generator")
        lines = []
        placed = bool(s.get("place_objects") and s.get("placed"))
        if placed:
            args.update(latents="latents")
            lines += [
                "# place_objects: the starting noise, steered so each phrase's object lands in "
                "its box",
                "from playground.tasks.placement import boxed_latents",
                f"latents = boxed_latents(pipe, {s['phrases']!r}, {s['boxes']!r}, [generator], "
                f"{s['height']}, {s['width']}, {s['steps']})"]
        if s.get("colour_hints"):
            args.update(latents="latents")
            lines += [
                "# colour_hints: each phrase's colour painted faintly into the starting noise",
                "from playground.tasks.colour_hint import hinted_latents",
                f"latents = hinted_latents(pipe, {'latents' if placed else 'None'}, "
                f"{s['phrases']!r}, {s['boxes']!r}, [generator], {s['height']}, {s['width']})"]
        if s.get("regional_prompts"):
            lines += [
                "# regional_prompts: in each box, cross-attention reads only that box's phrase",
                "from playground.tasks.regions import regional_unet",
                f"pipe.unet = regional_unet(pipe, {s.get('prompt', '')!r}, {s['phrases']!r}, "
                f"{s['boxes']!r}, {s['height']}, {s['width']}, guided={s['guidance'] > 1})"]
        return lines + [_call(args)]
    if task == "upscale":
        args.update(image="small", noise_level=s["noise_level"], generator="generator")
        w, h = s.get("input_size", (s["width"] // 4, s["height"] // 4))
        return [f"small = Image.open('input.png').convert('RGB')  # the {w}x{h} input",
                _call(args)]
    # inpaint: the model runs at a multiple of 8; unmasked pixels are copied back exactly
    if s.get("focused_prompt"):
        args.update(prompt=repr(s["focused_prompt"]))
    w, h = s["width"], s["height"]
    run_w, run_h = w - w % 8, h - h % 8
    args.update(image="original.resize(run_size, Image.BICUBIC)",
                mask_image="Image.fromarray((m * 255).round().astype(np.uint8))"
                           ".resize(run_size, Image.BILINEAR)",
                strength=s["strength"], width=run_w, height=run_h, generator="generator")
    focus = ([f"# focus_on_mask: the model read {s['focused_prompt']!r}, the object of "
              f"{s['prompt']!r} placed where the mask is"] if s.get("focused_prompt") else [])
    return focus + [
        "original = Image.open('input.png').convert('RGB')",
        "m = np.asarray(Image.open('mask.png').convert('L'), np.float32) / 255  # white = repaint",
        f"run_size = ({run_w}, {run_h})",
        _call(args),
        "made = np.asarray(image.resize(original.size, Image.BICUBIC), np.float32)",
        "kept = np.asarray(original, np.float32)",
        "image = Image.fromarray(np.clip((kept * (1 - m[..., None]) + made * m[..., None]).round(),"
        " 0, 255).astype(np.uint8))",
    ]
