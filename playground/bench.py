"""Seconds per image at 20 steps, per task, on this machine: the playground beside the
plain diffusers pipeline called directly with the same settings (ratio ~1.0 means the
playground adds nothing), text-to-image and layout-to-image with place_objects beside
without, layout-to-image with regional_prompts and with colour_hints beside without,
text-to-image of two placed objects with compose_objects beside without, and a
gradio_client call beside a direct Python call.

    python -m playground.bench                 # starter models, all tasks, HTTP too
    python -m playground.bench --repeats 5 --no-http --tasks text_to_image inpaint

Prints markdown tables. Timings are medians of `--repeats` runs after one warm-up.
"""
from __future__ import annotations

import argparse
import functools
import os
import statistics
import sys
import time

import numpy as np
import torch
from PIL import Image

from . import Playground
from .registry import STARTER_DIR, STARTER_FOLDERS, STARTER_OPTIONS, TASKS

PROMPT = "a red circle in the top left"
TWO_OBJECTS = "a red circle in the top left and a blue square in the bottom right"
PHRASES, BOXES = ["a red circle", "a blue square"], [[0.05, 0.05, 0.45, 0.45], [0.5, 0.5, 0.95, 0.95]]


def sample_inputs():
    rng = np.random.default_rng(0)
    picture = Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))
    mask = np.zeros((64, 64), np.uint8)
    mask[16:48, 16:48] = 255
    return picture, Image.fromarray(mask)


def playground_call(pg: Playground, task: str, steps: int):
    picture, mask = sample_inputs()
    common = dict(steps=steps, seed=1, scheduler="DPM++ 2M")
    if task == "text_to_image":
        return lambda: pg.text_to_image(PROMPT, **common)
    if task == "layout_to_image":
        return lambda: pg.layout_to_image(PROMPT, PHRASES, BOXES, **common)
    if task == "inpaint":
        return lambda: pg.inpaint(picture, mask, PROMPT, **common)
    return lambda: pg.upscale(picture, PROMPT, **common)


def diffusers_call(task: str, steps: int, device: str):
    """The plain pipeline from the same folder, loaded and called the diffusers way."""
    import diffusers

    cls = getattr(diffusers, {"text_to_image": "StableDiffusionPipeline",
                              "layout_to_image": "StableDiffusionGLIGENPipeline",
                              "inpaint": "StableDiffusionInpaintPipeline",
                              "upscale": "StableDiffusionUpscalePipeline"}[task])
    folder = os.path.join(STARTER_DIR, STARTER_FOLDERS[task])
    dtype = torch.float32 if device == "cpu" else torch.float16
    pipe = cls.from_pretrained(folder, torch_dtype=dtype, use_safetensors=True).to(device)
    pipe.set_progress_bar_config(disable=True)
    picture, mask = sample_inputs()
    common = dict(prompt=PROMPT, num_inference_steps=steps, guidance_scale=7.5)

    def call():
        generator = torch.Generator("cpu").manual_seed(1)
        if task == "text_to_image":
            return pipe(**common, generator=generator).images[0]
        if task == "layout_to_image":
            return pipe(**common, gligen_phrases=PHRASES, gligen_boxes=BOXES,
                        gligen_scheduled_sampling_beta=STARTER_OPTIONS["grounding"],
                        generator=generator).images[0]
        if task == "inpaint":
            return pipe(**common, image=picture, mask_image=mask, strength=1.0,
                        height=64, width=64, generator=generator).images[0]
        return pipe(**common, image=picture, noise_level=20, generator=generator).images[0]
    return call


def seconds(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def interleaved(a, b, repeats: int) -> tuple[float, float]:
    """Median seconds of a and b, alternated so that machine load hits both alike."""
    a(), b()
    ta, tb = [], []
    for _ in range(repeats):
        for fn, out in ((a, ta), (b, tb)):
            start = time.perf_counter()
            fn()
            out.append(time.perf_counter() - start)
    return statistics.median(ta), statistics.median(tb)


def bench_tasks(pg: Playground, tasks, steps: int, repeats: int, device: str) -> list[str]:
    rows = ["| task | playground s/image | plain diffusers s/image | ratio |",
            "|---|---|---|---|"]
    for task in tasks:
        ours, plain = interleaved(playground_call(pg, task, steps),
                                  diffusers_call(task, steps, device), repeats)
        rows.append(f"| {task} | {ours:.3f} | {plain:.3f} | {ours / plain:.2f} |")
        print(rows[-1], file=sys.stderr, flush=True)  # progress; the table follows
    return rows


def bench_placement(pg: Playground, tasks, steps: int, repeats: int) -> list[str]:
    """What steering the starting noise (place_objects) costs, beside the same run without."""
    runs = {"text_to_image": lambda **extra: pg.text_to_image(PROMPT, **extra),
            "layout_to_image": lambda **extra: pg.layout_to_image(
                "a red circle and a blue square", PHRASES, BOXES, **extra)}
    rows = ["| task | plain s/image | place_objects=True s/image | ratio |", "|---|---|---|---|"]
    for task in [t for t in tasks if t in runs]:
        kwargs = dict(steps=steps, seed=1, scheduler="DPM++ 2M")
        plain, placed = interleaved(lambda: runs[task](**kwargs),
                                    lambda: runs[task](**kwargs, place_objects=True), repeats)
        rows.append(f"| {task} | {plain:.3f} | {placed:.3f} | {placed / plain:.2f} |")
    return rows


def bench_regional(pg: Playground, steps: int, repeats: int) -> list[str]:
    """What regional prompts (one more cross-attention pass per box and per layer) and
    colour hints (one VAE encoding per colour) cost on layout-to-image, each beside the
    same run without."""
    def layout(**extra):
        return pg.layout_to_image("a red circle and a blue square", PHRASES, BOXES, steps=steps,
                                  seed=1, scheduler="DPM++ 2M", **extra)

    rows = ["| task | option | plain s/image | with it s/image | ratio |", "|---|---|---|---|---|"]
    for option in ("regional_prompts", "colour_hints"):
        plain, with_it = interleaved(layout, functools.partial(layout, **{option: True}), repeats)
        rows.append(f"| layout_to_image | {option}=True | {plain:.3f} | {with_it:.3f} | "
                    f"{with_it / plain:.2f} |")
    return rows


def bench_compose(pg: Playground, steps: int, repeats: int) -> list[str]:
    """What compose_objects (one inpainting pass per placed object) costs on a prompt of
    two placed objects, beside the same run without."""
    def two_objects(**extra):
        return pg.text_to_image(TWO_OBJECTS, steps=steps, seed=1, scheduler="DPM++ 2M", **extra)

    plain, composed = interleaved(two_objects, functools.partial(two_objects, compose_objects=True),
                                  repeats)
    return ["| task | option | plain s/image | with it s/image | ratio |", "|---|---|---|---|---|",
            f"| text_to_image, two objects | compose_objects=True | {plain:.3f} | {composed:.3f} | "
            f"{composed / plain:.2f} |"]


def bench_http(pg: Playground, steps: int, repeats: int) -> list[str]:
    """A gradio_client call to /text_to_image beside the same direct Python call."""
    from gradio_client import Client

    from .ui import build_app
    from .ui.serving import launch_options

    app = build_app(pg)
    app.launch(prevent_thread_lock=True, quiet=True, **launch_options(app, port=_free_port()))
    try:
        client = Client(app.local_url, verbose=False)
        kwargs = dict(prompt=PROMPT, steps=steps, seed=1, scheduler="DPM++ 2M")
        direct, http = interleaved(lambda: pg.text_to_image(**kwargs),
                                   lambda: client.predict(**kwargs, api_name="/text_to_image"),
                                   repeats)
    finally:
        app.close()
    return ["| text_to_image call | seconds | overhead |", "|---|---|---|",
            f"| Python `Playground.text_to_image` | {direct:.3f} | |",
            f"| `gradio_client` `/text_to_image` | {http:.3f} | "
            f"{(http - direct) * 1000:+.0f} ms ({(http / direct - 1) * 100:+.1f}%) |"]


def _free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=TASKS)
    parser.add_argument("--device", default=None, help="cpu, cuda, mps (default: picked)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--no-http", action="store_true", help="skip the gradio_client part")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    pg = Playground(device=args.device)
    device = pg.registry.device
    print(f"# playground bench: {args.steps} steps, median of {args.repeats}, device {device}, "
          f"torch threads {torch.get_num_threads()}\n", flush=True)
    rows = bench_tasks(pg, args.tasks, args.steps, args.repeats, device)
    print("\n" + "\n".join(rows))
    if {"text_to_image", "layout_to_image"} & set(args.tasks):
        print("\n" + "\n".join(bench_placement(pg, args.tasks, args.steps, args.repeats)))
    if "layout_to_image" in args.tasks:
        print("\n" + "\n".join(bench_regional(pg, args.steps, args.repeats)))
    if "text_to_image" in args.tasks:
        print("\n" + "\n".join(bench_compose(pg, args.steps, args.repeats)))
    if not args.no_http:
        print("\n" + "\n".join(bench_http(pg, args.steps, args.repeats)))


if __name__ == "__main__":
    main()
