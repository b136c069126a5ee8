"""What every run shares: its own pipeline object, seed and generator, the per-step
callback (progress, previews, cancel), timing, and the settings record on the result."""
from __future__ import annotations

import inspect
import math
import platform
import secrets
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
from PIL import Image

from .errors import BadInput, Cancelled

MAX_SEED = 2**32 - 1


# ---------------------------------------------------------------- per-request control

@dataclass
class RunControl:
    """Per-request hooks into the sampling loop. Make one per request.

    on_progress(step, total): after every denoising step (step counts from 1; a
        second-order scheduler's two model calls count as one step).
    on_preview(image, step, total): every `preview_every` steps (0 = never) with a PIL
        picture of the current estimate, decoded cheaply from the latents.
    on_stage(name, done, total): during work done before sampling starts, e.g.
        ("placing objects", 3, 10) while place_objects steers the starting noise.
    cancel(): from any thread; the run stops at its next step and raises `Cancelled`.
    """
    on_progress: Callable[[int, int], None] | None = None
    on_preview: Callable[[Image.Image, int, int], None] | None = None
    preview_every: int = 0
    on_stage: Callable[[str, int, int], None] | None = None
    _stop: threading.Event = field(default_factory=threading.Event, repr=False)

    def report_stage(self, name: str, done: int, total: int) -> None:
        self.raise_if_cancelled()
        if self.on_stage is not None:
            self.on_stage(name, done, total)

    def cancel(self) -> None:
        self._stop.set()

    @property
    def cancelled(self) -> bool:
        return self._stop.is_set()

    def raise_if_cancelled(self) -> None:
        if self._stop.is_set():
            raise Cancelled("the run was stopped")

    def part(self, index: int, parts: int) -> "RunControl":
        """The control for pass `index` of `parts` equal sampling passes of one run (as
        compose_objects makes, one per object): its progress counts across all passes,
        and cancelling either control stops both."""
        def on_progress(step, total):
            if self.on_progress is not None:
                self.on_progress(index * total + step, parts * total)

        def on_preview(image, step, total):
            if self.on_preview is not None:
                self.on_preview(image, index * total + step, parts * total)
        return RunControl(on_progress=on_progress, on_preview=on_preview,
                          preview_every=self.preview_every, on_stage=self.on_stage,
                          _stop=self._stop)


# ---------------------------------------------------------------- seeds

def check_seed(seed) -> int:
    """-1 (random) or an integer 0..2**32-1; integral floats (from UI number boxes) pass."""
    if isinstance(seed, bool) or seed is None:
        raise BadInput(f"seed must be an integer 0..{MAX_SEED} or -1 for random, got {seed!r}")
    if isinstance(seed, float):
        if not math.isfinite(seed) or seed != int(seed):
            raise BadInput(f"seed must be a whole number 0..{MAX_SEED} or -1 for random, got {seed!r}")
        seed = int(seed)
    if not isinstance(seed, (int, np.integer)):
        raise BadInput(f"seed must be an integer 0..{MAX_SEED} or -1 for random, got {seed!r}")
    seed = int(seed)
    if seed != -1 and not 0 <= seed <= MAX_SEED:
        raise BadInput(f"seed must be 0..{MAX_SEED} or -1 for random, got {seed}")
    return seed


def resolve_seed(seed: int) -> int:
    return secrets.randbelow(MAX_SEED + 1) if seed == -1 else seed


def generators(seed: int, count: int) -> list[torch.Generator]:
    """CPU generators seeded seed, seed+1, ...: the same noise on every device, and image i
    of a batch equals a single run with seed + i."""
    return [torch.Generator("cpu").manual_seed((seed + i) % (MAX_SEED + 1)) for i in range(count)]


# ---------------------------------------------------------------- per-request pipeline

def request_pipeline(shared, scheduler):
    """A new pipeline object over the shared pipeline's weights with its own scheduler.

    diffusers pipelines keep per-call state on `self` (scheduler timesteps, guidance
    scale, ...), so concurrent requests must never share the object itself."""
    cls = type(shared)
    params = inspect.signature(cls.__init__).parameters
    kwargs = {k: v for k, v in shared.components.items() if k in params}
    kwargs["scheduler"] = scheduler
    for name in params:  # non-module config such as requires_safety_checker, max_noise_level
        if name not in kwargs and name != "self" and name in shared.config:
            kwargs[name] = shared.config[name]
    if kwargs.get("tokenizer") is not None:
        kwargs["tokenizer"] = LockedTokenizer.around(kwargs["tokenizer"])
    pipe = cls(**kwargs)
    pipe.set_progress_bar_config(disable=True)
    return pipe


class LockedTokenizer:
    """A shared tokenizer whose calls take turns. Fast (Rust) tokenizers set padding and
    truncation on the shared object before each encode, so two requests tokenizing at once
    (one padding to "max_length", one to "longest") can get each other's settings."""

    _locks: dict[int, threading.Lock] = {}
    _guard = threading.Lock()

    def __init__(self, tokenizer, lock: threading.Lock):
        self._tokenizer, self._lock = tokenizer, lock

    @classmethod
    def around(cls, tokenizer) -> "LockedTokenizer":
        if isinstance(tokenizer, cls):
            return tokenizer
        with cls._guard:
            lock = cls._locks.setdefault(id(tokenizer), threading.Lock())
        return cls(tokenizer, lock)

    def __call__(self, *args, **kwargs):
        with self._lock:
            return self._tokenizer(*args, **kwargs)

    def __len__(self):
        return len(self._tokenizer)

    def __getattr__(self, name):
        value = getattr(self._tokenizer, name)
        if not callable(value):
            return value

        def locked(*args, **kwargs):
            with self._lock:
                return value(*args, **kwargs)
        return locked


def step_callback_kwargs(pipe, control: RunControl | None, steps: int) -> dict:
    """Keyword arguments that hook `control` into `pipe.__call__`: the modern
    `callback_on_step_end` where the pipeline has it, else the legacy `callback`."""
    if control is None:
        return {}
    params = inspect.signature(pipe.__call__).parameters
    if "callback_on_step_end" in params:
        def on_step_end(p, i, t, kwargs):
            order = getattr(p.scheduler, "order", 1)
            total = math.ceil(len(p.scheduler.timesteps) / order)
            report_step(control, p, math.ceil((i + 1) / order), total, kwargs["latents"])
            return {}
        return {"callback_on_step_end": on_step_end}

    def legacy(step_idx, t, latents):
        order = getattr(pipe.scheduler, "order", 1)
        total = math.ceil(len(pipe.scheduler.timesteps) / order)
        report_step(control, pipe, step_idx + 1, total, latents)
    return {"callback": legacy, "callback_steps": 1}


def report_step(control: RunControl, pipe, step: int, total: int, latents) -> None:
    control.raise_if_cancelled()
    if control.on_progress is not None:
        control.on_progress(step, total)
    every = control.preview_every
    if control.on_preview is not None and every and (step % every == 0 or step == total):
        control.on_preview(preview_image(pipe, latents), step, total)


# Linear map from SD 1.x latents to RGB: a cheap preview without the VAE decoder.
_SD_LATENT_RGB = torch.tensor([[0.298, 0.207, 0.208], [0.187, 0.286, 0.173],
                               [-0.158, 0.189, 0.264], [-0.184, -0.271, -0.473]])
_FULL_DECODE_MAX_LATENT_PIXELS = 64 * 64


@torch.no_grad()
def preview_image(pipe, latents: torch.Tensor) -> Image.Image:
    """The first image of the batch as a picture. Small latents (the starter models) go
    through the real VAE decoder; large ones through a linear latent->RGB map, which
    costs nothing next to a UNet step."""
    latents = latents[:1, :4]
    if latents.shape[-1] * latents.shape[-2] <= _FULL_DECODE_MAX_LATENT_PIXELS:
        scaled = latents.to(pipe.vae.dtype) / pipe.vae.config.scaling_factor
        pixels = pipe.vae.decode(scaled).sample[0].float()
        rgb = (pixels.clamp(-1, 1) + 1) / 2
    else:
        rgb = torch.einsum("chw,cr->rhw", latents[0].float().cpu(), _SD_LATENT_RGB)
        rgb = ((rgb + 1) / 2).clamp(0, 1)
    array = (rgb.permute(1, 2, 0).cpu().numpy() * 255).round().astype(np.uint8)
    return Image.fromarray(array)


# ---------------------------------------------------------------- timing and settings

@contextmanager
def timed():
    """with timed() as clock: ...; clock["seconds"] holds the wall time afterwards."""
    clock = {"start": time.perf_counter(), "seconds": None}
    try:
        yield clock
    finally:
        clock["seconds"] = time.perf_counter() - clock["start"]


# Raised whenever place_objects, colour_hints or regional_prompts change what they do to
# a prompt, so links made before say their pixels may differ (share/recipe.options_note).
OPTIONS_CHANGES = {
    "2": "they read relations such as \"above\", size words and the background",
    "3": "a small object's colour hint is as much stronger as its square is smaller",
}
OPTIONS_REVISION = max(OPTIONS_CHANGES, key=int)


def versions() -> dict:
    import diffusers
    import transformers
    return {"python": platform.python_version(), "torch": torch.__version__,
            "diffusers": diffusers.__version__, "transformers": transformers.__version__,
            "options": OPTIONS_REVISION}


def attach_settings(image: Image.Image, settings: dict) -> Image.Image:
    image.info["settings"] = settings
    return image


def settings_of(image: Image.Image) -> dict:
    """The settings dict a playground result carries (a copy); raises if it has none."""
    settings = getattr(image, "info", {}).get("settings")
    if settings is None:
        raise BadInput("this image carries no playground settings")
    return dict(settings)
