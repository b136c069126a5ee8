"""Do the models read "an orange circle" as an orange object, and still read "on an
orange background" as the background?

Until the caption grammar wrote "an" before "orange" in object phrases, the models saw
"an orange" only in background phrases and painted "an orange circle" as an orange
background. The held-out sets never ask for it (their captions always put a size first),
so this probe asks directly: with the article and without a size, with "a orange" (the
old grammar), and an orange background behind another colour.

    python -m playground.starter.probe_article [--seeds 8] [--tasks text2img,inpaint,layout]

Each task draws the prompt in its own way: text-to-image the whole picture; inpainting
into a masked square in the centre of a blank picture; layout with the object's phrase
("orange circle") in a box in the centre. Prints, per prompt, how often the judge finds
the asked object (colour and shape; inside the box or mask for the other tasks) and the
asked background.
"""
from __future__ import annotations

import argparse

import torch
from PIL import Image

from .world import PALETTE, SHAPES, Obj

CENTRE = (0.3, 0.3, 0.7, 0.7)


def probe_prompts() -> list[tuple[str, str, str, str]]:
    """(prompt, object colour, shape, background) for every prompt the probe asks."""
    rows = []
    for shape in SHAPES:
        rows += [(f"an orange {shape}", "orange", shape, "white"),
                 (f"a orange {shape}", "orange", shape, "white"),
                 (f"an orange {shape} on a white background", "orange", shape, "white"),
                 (f"a blue {shape} on an orange background", "blue", shape, "orange")]
    return rows


def draw(task: str, pipe, prompt: str, colour: str, shape: str, background: str, seed: int):
    from . import evaluate as ev
    from .captions import layout_phrase

    common = dict(num_inference_steps=ev.STEPS, guidance_scale=ev.default_guidance(task),
                  generator=ev.generator(seed))
    if task == "text2img":
        return pipe(prompt, height=ev.BASE, width=ev.BASE, **common).images[0]
    if task == "inpaint":
        blank = Image.new("RGB", (ev.BASE, ev.BASE), PALETTE[background])
        return pipe(prompt, image=blank, mask_image=ev.mask_for(CENTRE), height=ev.BASE,
                    width=ev.BASE, **common).images[0]
    phrase = layout_phrase(Obj(colour, shape, CENTRE))
    return pipe(prompt, gligen_phrases=[phrase], gligen_boxes=[list(CENTRE)],
                gligen_scheduled_sampling_beta=ev.GLIGEN_BETA, height=ev.BASE, width=ev.BASE,
                **common).images[0]


def object_found(task: str, reading: dict, colour: str, shape: str) -> bool:
    from . import evaluate as ev

    if task == "text2img":
        got = ev.main_object(reading)
    else:
        got, overlap = ev.best_match(CENTRE, reading)
        got = got if overlap > 0 else None
    return got is not None and got["colour"] == colour and got["shape"] == shape


def probe(task: str, weights: str, seeds: int, judge) -> list[tuple[str, int, int]]:
    """(prompt, seeds with the object right, seeds with the background right) per prompt."""
    from . import evaluate as ev

    pipe = ev.load_pipeline(task, weights)
    rows = []
    for prompt, colour, shape, background in probe_prompts():
        images = [draw(task, pipe, prompt, colour, shape, background, seed) for seed in range(seeds)]
        readings = judge.read_many(images)
        rows.append((prompt, sum(object_found(task, r, colour, shape) for r in readings),
                     sum(r["background"] == background for r in readings)))
    return rows


def main(argv=None):
    from . import evaluate as ev
    from .judge import Judge

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=8)
    ap.add_argument("--tasks", default="text2img,inpaint,layout")
    ap.add_argument("--weights", default=ev.WEIGHTS)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    judge = Judge.load()
    for task in args.tasks.split(","):
        print(f"{task}: prompt | object right | background right (of {args.seeds} seeds)")
        for prompt, found, background in probe(task, args.weights, args.seeds, judge):
            print(f"  {prompt} | {found} | {background}")


if __name__ == "__main__":
    main()
