"""Can the starting noise be steered so the object lands in the cell the prompt names?

The text-to-image model ignores the cell words: where an object lands is decided by the
starting noise (probe_position). Its cross-attention, though, follows the object drawn
(the attention loss). So before sampling, the playground's `place_objects` option
(tasks/placement.py, used here as it is) nudges the starting noise a few times against
the gradient of "the share of the object's words' attention that falls outside the asked
cell" (one conditional UNet pass and its backward pass per nudge; a training-free
guidance in the spirit of layout guidance on cross-attention), then the stock pipeline
samples, and this probe lets the judge read where the object is and its colour.

    python -m playground.starter.probe_placement [--seeds 3] [--nudges 10] [--step 0.03]

It runs three settings: no nudges, the nudges, and the nudges with colour hints (the
object's colour painted faintly into the asked cell's starting noise, tasks/colour_hint.py).

Each nudge moves the noise by `step` times the gradient scaled to unit spread, with each
channel's spatial mean taken out (a constant shift would change the colour, not the
place), and renormalises each channel to the noise's own mean and spread.
"""
from __future__ import annotations

import argparse
import os
import time

import torch

from ..tasks import colour_hint, placement
from .world import CELLS

PROMPT = "a small red circle in the {cell}"


def main(argv=None):
    from diffusers import StableDiffusionPipeline

    from ..registry import STARTER_DIR
    from ..teach.attention import prompt_tokens
    from .judge import Judge

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--nudges", type=int, default=10)
    parser.add_argument("--step", type=float, default=0.03)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--guidance", type=float, default=3.0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    pipe = StableDiffusionPipeline.from_pretrained(os.path.join(STARTER_DIR, "text2img"),
                                                   torch_dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    judge = Judge.load()
    for nudges, hints in ((0, False), (args.nudges, False), (args.nudges, True)):
        start, in_cell, right_colour, n = time.time(), 0, 0, 0
        for cell in CELLS:
            prompt = PROMPT.format(cell=cell)
            found = placement.placements(prompt_tokens(pipe.tokenizer, prompt))
            for seed in range(args.seeds):
                generators = [torch.Generator().manual_seed(seed)]
                noise = placement.placed_latents(pipe, prompt, found, generators, 1, 64, 64,
                                                 args.steps, nudges=nudges, step=args.step)
                if hints:
                    noise = colour_hint.cell_hinted_latents(pipe, noise, prompt, generators, 64, 64)
                with torch.no_grad():
                    image = pipe(prompt, latents=noise, num_inference_steps=args.steps,
                                 guidance_scale=args.guidance, height=64, width=64).images[0]
                reading = judge.read(image)
                n += 1
                if reading["objects"]:
                    seen = max(reading["objects"], key=lambda o: o["score"])
                    in_cell += seen["cell"] == cell
                    right_colour += seen["colour"] == "red"
        print(f"nudges {nudges:2d}{' + colour hints' if hints else ''}: object in the asked cell {in_cell}/{n}, red {right_colour}/{n} "
              f"({(time.time() - start) / n:.2f} s per picture)")


if __name__ == "__main__":
    main()
