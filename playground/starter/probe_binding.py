"""Do two objects keep their own colours and shapes, with regional prompts and colour hints?

A small text encoder reads "a red circle and a yellow square" as one bag of words, and
the starter layout model then trades attributes between the objects. This probe draws
a few two-object layouts (one object per half of the picture) through the playground's
own API: with one prompt for the whole picture, with regional prompts
(tasks/regions.py), with regional prompts and colour hints (tasks/colour_hint.py; the
Layout tab's start), and with those two and the objects steered into their boxes
(place_objects); the judge reads, box by box, the object that best overlaps it.

    python -m playground.starter.probe_binding [--seeds 8] [--threads 1]

Prints, per layout and setting, how often each box holds its phrase's shape, its colour,
and both, and what was drawn in the left box.
"""
from __future__ import annotations

import argparse
import collections
import time

import torch

from .captions import parse

LEFT, RIGHT = [0.05, 0.3, 0.45, 0.7], [0.55, 0.3, 0.95, 0.7]
PAIRS = (("a red circle", "a yellow square"), ("a red circle", "a blue square"),
         ("a green triangle", "a purple circle"))
SETTINGS = {"one prompt": {}, "regional prompts": {"regional_prompts": True},
            "regional + colour hints": {"regional_prompts": True, "colour_hints": True},
            "regional + colour hints, steered": {"regional_prompts": True, "colour_hints": True,
                                                 "place_objects": True}}


def read_boxes(judge, image, phrases) -> list[dict]:
    """Per box: the judge's colour and shape of the object best overlapping it."""
    from .evaluate import best_match

    reading = judge.read(image)
    found = []
    for phrase, box in zip(phrases, (LEFT, RIGHT)):
        got, overlap = best_match(box, reading)
        found.append({"asked": parse(phrase)["objects"][0],
                      "colour": got["colour"] if got and overlap > 0 else None,
                      "shape": got["shape"] if got and overlap > 0 else None})
    return found


def main(argv=None):
    from .. import Playground
    from .judge import Judge

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    pg, judge = Playground(), Judge.load()
    for phrases in PAIRS:
        caption = " and ".join(phrases)
        for setting, options in SETTINGS.items():
            start, counts, left_drawn = time.time(), collections.Counter(), collections.Counter()
            for seed in range(1, args.seeds + 1):
                image = pg.layout_to_image(caption, list(phrases), [LEFT, RIGHT], seed=seed, **options)
                for side, box in zip(("left", "right"), read_boxes(judge, image, phrases)):
                    shape = box["shape"] == box["asked"]["shape"]
                    colour = box["colour"] == box["asked"]["colour"]
                    counts.update({f"{side} shape": shape, f"{side} colour": colour,
                                   f"{side} both": shape and colour})
                    if side == "left":
                        left_drawn[f"{box['colour']} {box['shape']}"] += 1
            n = args.seeds
            print(f"{caption!r}, {setting}: "
                  + ", ".join(f"{k} {counts[k]}/{n}" for k in
                              ("left shape", "left colour", "left both",
                               "right shape", "right colour", "right both"))
                  + f"; left box drew {dict(left_drawn.most_common())}"
                  + f" ({(time.time() - start) / n:.2f} s per picture)", flush=True)


if __name__ == "__main__":
    main()
