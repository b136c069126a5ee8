"""How good the upscaler's one-step guess of the clean picture is at each noise level.

    python -m playground.starter.probe_upscale [--cases 3] [--weights FOLDER]

For a few held-out scenes, noises the VAE latent of the true 256 px render to level t,
asks the upscaler's UNet (low-res picture at noise level 20, empty prompt) for the noise,
turns that into its guess of the clean latent, decodes it and prints the guess's PSNR
against the render, beside bicubic upscaling. Sampling draws the outlines at the top of
the schedule, so a poor guess at t 999 with good guesses lower down means outlines that
wobble however good the model is near the end (MODEL_CARD.md, Training).
"""
from __future__ import annotations

import argparse

import torch
from PIL import Image

LEVELS = (999, 800, 600, 400, 200, 50)
LOW_RES_NOISE = 20  # the pipeline's default noise_level


@torch.no_grad()
def one_step_psnr(pipe, truth: Image.Image, levels=LEVELS, seed: int = 0) -> list[float]:
    """PSNR of the decoded one-step clean-picture guess from the true latent noised to each level."""
    from ..teach.forward import unit_range_to_picture
    from . import models
    from .evaluate import psnr
    from .probe_position import encoded
    from .train import encode_latents, to_tensor

    g = torch.Generator().manual_seed(seed)
    vae, unet, sched = pipe.vae, pipe.unet, models.build_scheduler()
    low = to_tensor(truth.resize((truth.width // 4, truth.height // 4), Image.BOX))[None]
    level = torch.tensor([LOW_RES_NOISE])
    low = pipe.low_res_scheduler.add_noise(low, torch.randn(low.shape, generator=g), level)
    cond = encoded(pipe, "")
    z0 = encode_latents(vae, to_tensor(truth)[None])
    out = []
    for t in levels:
        ac = sched.alphas_cumprod[t]
        zt = sched.add_noise(z0, torch.randn(z0.shape, generator=g), torch.tensor([t]))
        eps = unet(torch.cat([zt, low], 1), torch.tensor([t]), cond, class_labels=level).sample
        guess = (zt - (1 - ac).sqrt() * eps) / ac.sqrt()
        picture = vae.decode(guess / vae.config.scaling_factor).sample[0].clamp(-1, 1)
        out.append(psnr(unit_range_to_picture(picture), truth))
    return out


def main(argv=None):
    from .evaluate import BASE, WEIGHTS, load_pipeline, psnr, upscale_cases
    from .world import render

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", type=int, default=3)
    ap.add_argument("--weights", default=WEIGHTS)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    pipe = load_pipeline("upscale", args.weights)
    print("t:", ", ".join(str(t) for t in LEVELS))
    for i, case in enumerate(upscale_cases(args.cases)):
        truth = render(case.scene, 4 * BASE)
        bicubic = psnr(truth.resize((BASE, BASE), Image.BOX).resize(truth.size, Image.BICUBIC), truth)
        guesses = one_step_psnr(pipe, truth, seed=i)
        print(f"case {i}: one-step guess " + ", ".join(f"{p:.1f}" for p in guesses)
              + f" dB; bicubic {bicubic:.1f} dB")


if __name__ == "__main__":
    main()
