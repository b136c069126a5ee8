"""Does the cell named in the prompt move the object? For one object asked in each of the
nine cells, makes pictures over a few seeds with the playground's defaults, and prints where
the judge finds the object (mean box centre, as fractions of the picture) and how often it
lands in the asked cell.

    python -m playground.starter.probe_position [--seeds 6] [--steps 20]

If the model follows the cell words, the nine mean centres spread over the picture (the
true renders' centres are about 0.17, 0.5 and 0.83 in each direction); if it ignores
them, they all sit in one spot and the "spread" line is near 0.
"""
from __future__ import annotations

import argparse

import numpy as np

from .world import CELLS, cell_of

PROMPT = "a small red circle {where}"


def cell_phrase(cell: str) -> str:
    return "in the centre" if cell == "centre" else f"in the {cell}"


def object_centre(reading: dict):
    """Centre (x, y) of the object the judge is surest of (whatever its colour: only
    the place matters here), or None when it finds none."""
    if not reading["objects"]:
        return None
    x0, y0, x1, y1 = max(reading["objects"], key=lambda o: o["score"])["box"]
    return (x0 + x1) / 2, (y0 + y1) / 2


def probe(pg, judge, seeds, steps: int) -> dict:
    """{cell: (mean centre or None, share of pictures with the object in that cell)}."""
    out = {}
    for cell in CELLS:
        prompt = PROMPT.format(where=cell_phrase(cell))
        images = [pg.text_to_image(prompt, steps=steps, seed=s) for s in seeds]
        centres = [object_centre(r) for r in judge.read_many(images)]
        found = [c for c in centres if c is not None]
        mean = tuple(np.mean(found, axis=0)) if found else None
        out[cell] = (mean, sum(cell_of(*c) == cell for c in found) / len(seeds))
    return out


def spread(result: dict) -> float:
    """Largest distance between two cells' mean centres (0: the words move nothing)."""
    centres = [np.array(c) for c, _ in result.values() if c is not None]
    return max((float(np.linalg.norm(a - b)) for a in centres for b in centres), default=0.0)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=6)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    import torch

    from .. import Playground
    from .judge import Judge

    torch.set_num_threads(args.threads)
    result = probe(Playground(device="cpu"), Judge.load(), range(args.seeds), args.steps)
    for cell, (centre, right) in result.items():
        where = "no object found" if centre is None else f"x {centre[0]:.2f} y {centre[1]:.2f}"
        print(f"asked {cell:12s} mean centre {where}; in the asked cell {right:.2f}")
    print(f"spread of the mean centres: {spread(result):.2f} (the renders: about 0.9)")


if __name__ == "__main__":
    main()
