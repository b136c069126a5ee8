"""The denoising filmstrip: a text-to-image run that also shows, at chosen steps, the
current latent x_t (decoded) and the model's prediction of the clean picture x0.

The run is the ordinary text-to-image run (same checks, per-request pipeline, seed and
scheduler, so the final picture is the same as `text_to_image`'s); two hooks are added
to that per-request pipeline only:
- its scheduler's `step` is wrapped to keep the x0 prediction of each step: the
  scheduler's own `pred_original_sample` where it returns one, else computed from the
  (guided) noise prediction and the noise level the scheduler stepped from;
- `callback_on_step_end` (beside the RunControl's progress/cancel hook) decodes both
  latents at the chosen steps and hands each frame to `on_frame` at once, so a UI can
  fill the strip in while sampling goes on.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from PIL import Image

from ..errors import BadInput
from ..tasks import checks, common, compose, text_to_image

TASK = "text_to_image"
DEFAULT_FRAMES = 6


@dataclass
class Frame:
    """One picture pair of the filmstrip."""
    step: int           # 1..total
    total: int
    timestep: float     # the scheduler's t at this step
    x_t: Image.Image    # the latent after this step, decoded
    x0: Image.Image     # the clean picture the model predicted during this step
    part: str = ""      # compose object by object: which pass, e.g. "object 2 of 2"


def chosen_steps(show_steps, total: int) -> list[int]:
    """Steps to show: a list of step numbers 1..total, or None for a few evenly spread
    (always including the last)."""
    if show_steps is None or (isinstance(show_steps, (list, tuple)) and len(show_steps) == 0):
        count = min(DEFAULT_FRAMES, total)
        return sorted({max(1, round(total * (i + 1) / count)) for i in range(count)})
    if isinstance(show_steps, (int, float)) and not isinstance(show_steps, bool):
        show_steps = [show_steps]
    if not isinstance(show_steps, (list, tuple)):
        raise BadInput(f"show_steps must be a list of step numbers 1..{total}, got "
                       f"{show_steps!r}")
    steps = set()
    for value in show_steps:
        step = checks.number("a step in show_steps", value, integer=True)
        if not 1 <= step <= total:
            raise BadInput(f"show_steps holds {step}; steps are numbered 1..{total}")
        steps.add(step)
    return sorted(steps)


def predicted_x0(scheduler, model_output, timestep, sample, result) -> torch.Tensor:
    """The model's estimate of the clean latent during one scheduler step."""
    x0 = getattr(result, "pred_original_sample", None)
    if x0 is not None:
        return x0
    alpha_bar = _alpha_bar_of_step(scheduler, timestep)
    alpha, sigma = alpha_bar ** 0.5, (1 - alpha_bar) ** 0.5
    kind = scheduler.config.get("prediction_type", "epsilon")
    if kind == "epsilon":
        return (sample - sigma * model_output) / alpha
    if kind == "v_prediction":
        return alpha * sample - sigma * model_output
    return model_output  # "sample": the model predicts x0 itself


def _alpha_bar_of_step(scheduler, timestep) -> float:
    """alpha_bar of the noise level the step just taken started from. Schedulers with
    `sigmas` (k-diffusion convention, sigma^2 = (1 - alpha_bar) / alpha_bar) have moved
    `step_index` on by one; others index alphas_cumprod by the integer timestep."""
    index = getattr(scheduler, "step_index", None)
    if getattr(scheduler, "sigmas", None) is not None and index is not None:
        sigma = float(scheduler.sigmas[index - 1])
        return 1.0 / (1.0 + sigma * sigma)
    return float(scheduler.alphas_cumprod[int(round(float(timestep)))])


class Recorder:
    """Hooks on one per-request pipeline that collect filmstrip frames."""

    def __init__(self, pipe, steps: list[int], total: int,
                 on_frame: Callable[[Frame], None] | None, passes: int = 1):
        self.pipe, self.steps, self.on_frame = pipe, set(steps), on_frame
        self.per_pass, self.passes, self.total = total, passes, total * passes
        self.frames: list[Frame] = []
        self.last_x0: torch.Tensor | None = None
        self.last_timestep = 0.0
        self.offset, self.over, self.part = 0, None, ""
        self._wrap_step(pipe.scheduler)

    def begin_pass(self, index: int, picture: Image.Image, mask: np.ndarray) -> None:
        """Compose object by object: pass `index`'s frames are numbered on from the passes
        before it, and show its square over the picture so far (the inpainter's own latent
        covers the whole picture, noise outside the square included)."""
        self.offset, self.over = index * self.per_pass, (picture, mask)
        self.part = f"object {index + 1} of {self.passes}"

    def _wrap_step(self, scheduler) -> None:
        original = scheduler.step  # bound method of this request's own scheduler

        # wraps: pipelines read step's signature to decide whether to pass the generator
        @functools.wraps(original)
        def step(model_output, timestep, sample, *args, **kwargs):
            result = original(model_output, timestep, sample, *args, **kwargs)
            self.last_x0 = predicted_x0(scheduler, model_output, timestep, sample, result)
            self.last_timestep = float(timestep)
            return result
        scheduler.step = step

    def callback(self, inner: Callable | None):
        """A callback_on_step_end that records frames, then runs `inner` (progress, cancel)."""
        def on_step_end(pipe, i, t, kwargs):
            calls = len(pipe.scheduler.timesteps)
            step = self.step_of(pipe.scheduler, i)
            last_call_of_step = i + 1 == calls or self.step_of(pipe.scheduler, i + 1) != step
            step += self.offset
            if last_call_of_step and step in self.steps and self.last_x0 is not None:
                self._record(step, kwargs["latents"])
            return inner(pipe, i, t, kwargs) if inner is not None else {}
        return on_step_end

    def step_of(self, scheduler, call: int) -> int:
        """The step of its pass (1..steps) a model call belongs to: second-order schedulers
        make two calls per step, and PNDM one extra call at the start."""
        return min(math.ceil((call + 1) / getattr(scheduler, "order", 1)), self.per_pass)

    def _record(self, step: int, latents: torch.Tensor) -> None:
        frame = Frame(step=step, total=self.total, timestep=self.last_timestep,
                      x_t=self._over(decode(self.pipe, latents)),
                      x0=self._over(decode(self.pipe, self.last_x0)), part=self.part)
        self.frames.append(frame)
        if self.on_frame is not None:
            self.on_frame(frame)

    def _over(self, decoded: Image.Image) -> Image.Image:
        if self.over is None:
            return decoded
        picture, mask = self.over
        return compose.blend(picture, decoded, mask)


@torch.no_grad()
def decode(pipe, latents: torch.Tensor) -> Image.Image:
    """The first latent of the batch as the pipeline itself would output it."""
    latents = latents[:1].to(pipe.vae.dtype) / pipe.vae.config.scaling_factor
    pixels = pipe.vae.decode(latents, return_dict=False)[0]
    return pipe.image_processor.postprocess(pixels, output_type="pil")[0]


def run(registry, *, prompt, negative_prompt="", model="starter", scheduler=None, steps=20,
        guidance=None, seed=-1, width=None, height=None, show_steps=None,
        on_frame: Callable[[Frame], None] | None = None, control=None, place_objects=False,
        colour_hints=False, regional_prompts=False, compose_objects=False):
    """(final picture with settings, list of Frame). The final picture equals
    `text_to_image` with the same settings. With compose_objects the frames run on across
    the passes (2 objects x 20 steps: steps 1..40), each showing its pass's square over
    the picture so far."""
    settings_common = common.check_common(registry, TASK, model, scheduler, steps, guidance, seed)
    prompt = checks.text("prompt", prompt)
    negative_prompt = checks.text("negative_prompt", negative_prompt)
    limits = registry.defaults(model, TASK)
    warnings: list[str] = []
    width, height = checks.size(width, height, limits["width"], limits["height"],
                                limits["size_multiple"], limits["max_side"], warnings)
    recorders: list[Recorder] = []
    place_objects, placed = checks.flag("place_objects", place_objects), []
    colour_hints = checks.flag("colour_hints", colour_hints)
    regional_prompts = checks.flag("regional_prompts", regional_prompts)
    compose_objects = checks.flag("compose_objects", compose_objects)
    composed, (place_objects, colour_hints, regional_prompts) = text_to_image.composing(
        registry, model, prompt, compose_objects,
        (place_objects, colour_hints, regional_prompts), warnings)
    passes = max(len(composed), 1)
    shown = chosen_steps(show_steps, settings_common["steps"] * passes)

    def call(pipe, generators, callbacks):
        if composed:
            inpainter = text_to_image.inpainting_pipeline(registry, model, pipe,
                                                          settings_common, generators[0])
            recorder = Recorder(inpainter, shown, settings_common["steps"], on_frame, passes)
            recorders.append(recorder)
            return [compose.compose(inpainter, prompt, negative_prompt or None, composed,
                                    generators[0], width, height, settings_common["steps"],
                                    settings_common["guidance"], control, recorder)]
        recorder = Recorder(pipe, shown, settings_common["steps"], on_frame)
        recorders.append(recorder)
        inner = callbacks.get("callback_on_step_end")
        latents = text_to_image.starting_latents(pipe, prompt, generators, 1, height, width,
                                                 settings_common["steps"], control,
                                                 place_objects, colour_hints, placed, warnings)
        pipe.unet = text_to_image.sampling_unet(pipe, prompt, height, width,
                                                settings_common["guidance"], regional_prompts,
                                                warnings)
        return pipe(prompt=prompt, negative_prompt=negative_prompt or None, latents=latents,
                    num_inference_steps=settings_common["steps"],
                    guidance_scale=settings_common["guidance"], width=width, height=height,
                    num_images_per_prompt=1, generator=generators, output_type="pil",
                    callback_on_step_end=recorder.callback(inner)).images

    settings = text_to_image.record({"prompt": prompt, "negative_prompt": negative_prompt,
                                     "width": width, "height": height, "warnings": warnings},
                                    place_objects, colour_hints, placed, regional_prompts,
                                    compose_objects, composed)
    image = common.execute(registry, TASK, settings_common, settings, call, control, 1,
                           prompts={"prompt": prompt, "negative prompt": negative_prompt})[0]
    return image, recorders[0].frames


def pixel_difference(a: Image.Image, b: Image.Image) -> int:
    """Largest per-channel difference between two pictures (0..255)."""
    return int(np.abs(np.asarray(a, np.int16) - np.asarray(b, np.int16)).max())
