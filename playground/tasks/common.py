"""The part of a run every task shares: model and scheduler checks, seed, a per-request
pipeline with a fresh scheduler, the call, timing, and the settings on each picture."""
from __future__ import annotations

import threading
from contextlib import nullcontext
from typing import Callable

import torch

from .. import run, schedulers
from ..errors import OutOfMemory
from ..registry import Registry, task_name
from ..registry import _release_memory as release_memory
from . import checks

OUT_OF_MEMORY = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)

_exclusive_locks: dict[int, threading.Lock] = {}
_exclusive_guard = threading.Lock()


def check_common(registry: Registry, task: str, model, scheduler, steps, guidance, seed) -> dict:
    """The checks that need no weights: fail fast, before anything loads."""
    if not isinstance(model, str) or not model:
        raise checks.BadInput(f"model must be a name; for {task}: "
                              + ", ".join(registry.models(task)))
    registry.entry(model, task)
    if scheduler is not None and scheduler != "":
        allowed = schedulers.compatible_names(registry.scheduler_config(model, task))
        if scheduler not in allowed:
            raise checks.BadInput(f"unknown scheduler {scheduler!r}; for model {model!r} choose "
                                  "one of: " + ", ".join(allowed))
    if guidance is None or steps is None:
        defaults = registry.defaults(model, task)
        guidance = defaults["guidance"] if guidance is None else guidance
        steps = defaults["steps"] if steps is None else steps
    return {"model": model, "scheduler": scheduler or None, "steps": checks.steps(steps),
            "guidance": checks.guidance(guidance), "seed": run.check_seed(seed)}


def execute(registry: Registry, task: str, common: dict, settings: dict,
            call: Callable, control: run.RunControl | None, count: int = 1,
            prompts: dict[str, str] | None = None):
    """Run `call(pipe, generators, callback_kwargs)` -> list of PIL images with a fresh
    per-request pipeline, and attach the settings to each picture.

    `settings` holds the task's own settings and its "warnings" list; `prompts` maps a
    label to text to check against the model's tokenizer."""
    task = task_name(task)
    model = common["model"]
    shared = registry.pipeline(model, task)
    seed = run.resolve_seed(common["seed"])
    scheduler = schedulers.build(common["scheduler"], shared.scheduler, seed, common["steps"])
    pipe = run.request_pipeline(shared, scheduler)
    if task != "upscale" and prompts:  # the upscaler's prompt is optional
        settings["warnings"] += checks.empty_prompt_warning(prompts.get("prompt", ""))
    for label, text in (prompts or {}).items():
        settings["warnings"] += checks.token_warnings(pipe.tokenizer, label, text)
    device, dtype = registry.device_and_dtype(model)
    if control is not None:
        control.raise_if_cancelled()
    out_of_memory = False
    try:
        with exclusive(shared), run.timed() as clock, torch.inference_mode():
            images = call(pipe, run.generators(seed, count),
                          run.step_callback_kwargs(pipe, control, common["steps"]))
    except (OUT_OF_MEMORY, MemoryError):
        out_of_memory = True  # handled outside the except block: its traceback holds tensors
    if out_of_memory:
        pipe = None
        release_memory()
        raise OutOfMemory(f"{device} ran out of memory while running {task} with model "
                          f"{model!r}; the memory was freed and the app goes on. Try a "
                          "smaller picture, fewer images or a smaller model.")
    source = registry.entry(model).sources[task]
    base = {"task": task, "model": model, "revision": source.revision,
            "source": _describe(source), "scheduler": schedulers.name_of(scheduler),
            "steps": common["steps"], "guidance": common["guidance"], "seed": seed,
            **settings, "seconds": round(clock["seconds"], 3), "device": device,
            "dtype": str(dtype).replace("torch.", ""), "versions": run.versions()}
    results = []
    for i, picture in enumerate(images):
        record = dict(base, warnings=list(settings["warnings"]))
        if count > 1:
            record.update(seed=(seed + i) % (run.MAX_SEED + 1), index=i, num_images=count)
        results.append(run.attach_settings(picture, record))
    return results


def exclusive(shared):
    """GLIGEN switches its UNet's gated attention on and off during a call, so runs on one
    GLIGEN UNet take turns; every other pipeline runs concurrently. (The upscaler's
    fp16 VAE upcast would be the other such switch: the registry loads that VAE in
    float32 instead.)"""
    if type(shared).__name__ != "StableDiffusionGLIGENPipeline":
        return nullcontext()
    with _exclusive_guard:
        return _exclusive_locks.setdefault(id(shared.unet), threading.Lock())


def _describe(source) -> str:
    from ..registry import STARTER_DIR
    import os
    if source.is_local and source.location.startswith(STARTER_DIR + os.sep):
        return "starter/" + os.path.relpath(source.location, STARTER_DIR)
    return source.location
