"""What the text-to-image model's colour mistakes are.

    python -m playground.starter.probe_colour [--cases 100] [--weights FOLDER]

Runs the held-out one-object prompts as the evaluation does (20 steps, default scheduler
and guidance) and prints, for every picture whose object has the wrong colour, the colour
asked, the colour drawn and the pixel colour at the object's centre, then the pairs of
colour words the text encoder holds closest ("a medium X circle", distance between the
encoder's outputs). A mistake in the picture's pixels (an off tint) and a mistake in the
choice of palette colour need different remedies; MODEL_CARD.md says which it is.
"""
from __future__ import annotations

import argparse
import itertools
from collections import Counter

import numpy as np
import torch

from .world import COLOURS, PALETTE


def centre_colour(img, box) -> tuple[int, int, int]:
    """Mean RGB of the 5 x 5 pixels at the centre of `box` (fractions of the picture)."""
    a = np.asarray(img.convert("RGB"), dtype=np.float64)
    h, w = a.shape[:2]
    cx, cy = int((box[0] + box[2]) / 2 * w), int((box[1] + box[3]) / 2 * h)
    patch = a[max(cy - 2, 0):cy + 3, max(cx - 2, 0):cx + 3].reshape(-1, 3)
    return tuple(int(round(v)) for v in patch.mean(0))


def colour_mistakes(cases, readings) -> Counter:
    """(asked, drawn) -> count over the pictures whose most confident object has the wrong
    colour; drawn is "no object" when the judge found none."""
    from .evaluate import main_object

    mistakes = Counter()
    for case, reading in zip(cases, readings):
        asked, got = case.scene.objects[0].colour, main_object(reading)
        if got is None or got["colour"] != asked:
            mistakes[(asked, got["colour"] if got else "no object")] += 1
    return mistakes


@torch.no_grad()
def encoder_distances(pipe) -> list[tuple[float, str, str]]:
    """(distance, colour, colour) for every pair, closest first."""
    from .probe_position import encoded

    outputs = {c: encoded(pipe, f"a medium {c} circle")[0] for c in COLOURS}
    pairs = [(float((outputs[a] - outputs[b]).norm()), a, b)
             for a, b in itertools.combinations(COLOURS, 2)]
    return sorted(pairs)


def main(argv=None):
    from . import evaluate as ev
    from .judge import Judge

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", type=int, default=ev.SETS["single"][1])
    ap.add_argument("--weights", default=ev.WEIGHTS)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    pipe, judge = ev.load_pipeline("text2img", args.weights), Judge.load()
    guidance = ev.default_guidance("text2img")
    cases = ev.text_cases("single", args.cases, 1)
    images = [pipe(c.prompt, height=ev.BASE, width=ev.BASE, num_inference_steps=ev.STEPS,
                   guidance_scale=guidance, generator=ev.generator(c.seed)).images[0] for c in cases]
    readings = judge.read_many(images)
    print("wrong colour: prompt | drawn | pixel colour at the object's centre, palette colour")
    for case, image, reading in zip(cases, images, readings):
        asked, got = case.scene.objects[0].colour, ev.main_object(reading)
        if got is not None and got["colour"] != asked:
            print(f"  {case.prompt} | {got['colour']} | {centre_colour(image, got['box'])} "
                  f"{PALETTE[got['colour']]}")
    mistakes = colour_mistakes(cases, readings)
    print(f"{sum(mistakes.values())} of {len(cases)} wrong; asked -> drawn: "
          + ", ".join(f"{a} -> {d} {n}" for (a, d), n in mistakes.most_common()))
    pairs = encoder_distances(pipe)
    print("closest colour words in the text encoder: "
          + ", ".join(f"{a}-{b} {d:.1f}" for d, a, b in pairs[:6])
          + f" (farthest pair {pairs[-1][0]:.1f})")


if __name__ == "__main__":
    main()
