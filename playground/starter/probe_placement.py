"""Can the starting noise be steered so the object lands in the cell the prompt names?

The text-to-image model ignores the cell words: where an object lands is decided by the
starting noise (probe_position). Its cross-attention, though, follows the object drawn
(the attention loss). So before sampling, this probe nudges the starting noise a few
times against the gradient of "the share of the object's words' attention that falls
outside the asked cell" (one conditional UNet pass and its backward pass per nudge; a
training-free guidance in the spirit of layout guidance on cross-attention), then samples
with the stock scheduler loop, and lets the judge read where the object is and its colour.

    python -m playground.starter.probe_placement [--seeds 3] [--nudges 10] [--step 0.03]

Each nudge moves the noise by `step` times the gradient scaled to unit spread, with each
channel's spatial mean taken out (a constant shift would change the colour, not the
place), and renormalises each channel to the noise's own mean and spread.
"""
from __future__ import annotations

import argparse
import os
import time

import torch

from .attention_loss import AttentionRecords, object_word_positions, outside_box_loss
from .world import CELLS, cell_bounds

PROMPT = "a small red circle in the {cell}"


class Recorder(AttentionRecords):
    def __init__(self):
        super().__init__()
        self.on = False

    def recording(self) -> bool:
        return self.on


def steered_noise(unet, recorder, scheduler, noise, cond, boxes, valid, nudges, step):
    t = scheduler.timesteps[0]
    x = noise
    for _ in range(nudges):
        x = x.detach().requires_grad_(True)
        recorder.records, recorder.on = [], True
        with torch.enable_grad():
            unet(scheduler.scale_model_input(x, t), t, encoder_hidden_states=cond)
            loss = outside_box_loss(recorder.records, boxes, valid, power=2)
            grad, = torch.autograd.grad(loss, x)
        recorder.on = False
        grad = grad - grad.mean((2, 3), keepdim=True)
        moved = x - step * grad / (grad.std() + 1e-8)
        mean, spread = x.mean((2, 3), keepdim=True), x.std((2, 3), keepdim=True)
        x = (moved - moved.mean((2, 3), keepdim=True)) / moved.std((2, 3), keepdim=True) * spread + mean
    return x.detach()


def main(argv=None):
    from diffusers import StableDiffusionPipeline

    from ..registry import STARTER_DIR
    from ..teach.attention import with_recording_processors
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
    recorder = Recorder()
    with_recording_processors(pipe.unet, recorder)
    judge = Judge.load()
    for nudges in (0, args.nudges):
        start, in_cell, right_colour, n = time.time(), 0, 0, 0
        for cell in CELLS:
            prompt = PROMPT.format(cell=cell)
            words = pipe.tokenizer.tokenize(prompt)
            with torch.no_grad():
                cond, _ = pipe.encode_prompt(prompt, "cpu", 1, False)
            boxes, valid = torch.zeros(1, cond.shape[1], 4), torch.zeros(1, cond.shape[1])
            for i in object_word_positions(words)[0]:
                boxes[0, i + 1], valid[0, i + 1] = torch.tensor(cell_bounds(cell)), 1
            for seed in range(args.seeds):
                pipe.scheduler.set_timesteps(args.steps)
                noise = torch.randn((1, 4, 16, 16), generator=torch.Generator().manual_seed(seed))
                if nudges:  # the pipeline scales the latents it is given by init_noise_sigma
                    sigma = pipe.scheduler.init_noise_sigma
                    noise = steered_noise(pipe.unet, recorder, pipe.scheduler, noise * sigma, cond,
                                          boxes, valid, nudges, args.step) / sigma
                with torch.no_grad():
                    image = pipe(prompt, latents=noise, num_inference_steps=args.steps,
                                 guidance_scale=args.guidance, height=64, width=64).images[0]
                reading = judge.read(image)
                n += 1
                if reading["objects"]:
                    found = max(reading["objects"], key=lambda o: o["score"])
                    in_cell += found["cell"] == cell
                    right_colour += found["colour"] == "red"
        print(f"nudges {nudges:2d}: object in the asked cell {in_cell}/{n}, red {right_colour}/{n} "
              f"({(time.time() - start) / n:.2f} s per picture)")


if __name__ == "__main__":
    main()
