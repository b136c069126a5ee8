"""How much of each prompt word's cross-attention lands on the object drawn.

    python -m playground.starter.probe_attention [--steps 10] [--weights FOLDER]

For a few single-object prompts and seeds, makes the picture with the Learn tab's
attention maps, finds the object the judge reads in the asked colour, and prints each
word's concentration: its attention per pixel inside that object's box divided by its
mean over the picture (1.0 = a flat map). Used for the model card's "attention on the
boxes" figures; tests/test_teach_inside.py checks a few of these cases.
"""
from __future__ import annotations

import argparse

import numpy as np

PROMPTS = [("a large red circle in the top left", "red"),
           ("a large blue square in the bottom right", "blue"),
           ("a big green square in the middle", "green"),
           ("a large yellow circle in the top right", "yellow"),
           ("a large purple square in the bottom left", "purple"),
           ("a large orange triangle on the left", "orange")]
SEEDS = (1, 2, 3)


def concentration(weights: np.ndarray, box) -> float:
    from .attention_loss import box_coverage

    inside = box_coverage(box, weights.shape[0]).numpy()
    return float((weights * inside).sum() / inside.mean())


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--weights", default=None, help="starter weights folder to probe")
    args = ap.parse_args(argv)
    from .. import registry
    if args.weights:
        registry.STARTER_DIR = args.weights
    from .. import Playground
    from .judge import Judge

    pg, judge, found = Playground(device="cpu"), Judge.load(), []
    for prompt, colour in PROMPTS:
        for seed in SEEDS:
            result = pg.attention_maps(prompt, steps=args.steps, seed=seed)
            drawn = [o for o in judge.read(result.image)["objects"] if o["colour"] == colour]
            if not drawn:
                print(f"{prompt!r} seed {seed}: no {colour} object drawn")
                continue
            words = {t: concentration(m, drawn[0]["box"])
                     for t, m in zip(result.tokens, result.maps)}
            found.append(words[colour])
            print(f"{prompt!r} seed {seed}: " + " ".join(f"{t} {c:.2f}" for t, c in words.items()))
    if found:
        print(f"colour word, {len(found)} pictures with that colour drawn: "
              f"min {min(found):.2f}, median {np.median(found):.2f}, max {max(found):.2f}")


if __name__ == "__main__":
    main()
