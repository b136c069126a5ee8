"""The forward (noising) process, shown on a picture.

A diffusion model is trained on pictures with noise added in closed form:

    x_t = sqrt(alpha_bar_t) * x_0 + sqrt(1 - alpha_bar_t) * eps,   eps ~ N(0, I)

where alpha_bar_t is the product of (1 - beta_s) up to step t, from the model's own
scheduler config. Latent models add it to VAE latents; here it is added to the picture's
pixels (scaled to [-1, 1]) so a student can see it. The signal-to-noise ratio is
SNR(t) = alpha_bar_t / (1 - alpha_bar_t); k-diffusion style samplers speak of
sigma_t = sqrt((1 - alpha_bar_t) / alpha_bar_t) = 1 / sqrt(SNR) instead.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, ImageDraw

from .. import schedulers
from . import chart
from ..errors import BadInput
from ..run import check_seed, resolve_seed
from ..tasks import checks

MAX_SIDE = 1024  # the explorer works on pixels; larger pictures are shrunk to this side


@dataclass
class NoisedPicture:
    """One step of the forward process on a picture."""
    noisy: Image.Image          # x_t, clipped to the displayable range
    noise: Image.Image          # the noise added, sqrt(1 - alpha_bar_t) * eps, mid-grey = 0
    t: int
    alpha_bar: float
    snr: float
    sigma: float
    seed: int
    scheduler: str

    def info(self) -> dict:
        return {"t": self.t, "alpha_bar": self.alpha_bar, "snr": self.snr,
                "sigma": self.sigma, "seed": self.seed, "scheduler": self.scheduler}


def training_scheduler(registry, model: str, task: str, scheduler: str | None,
                       steps: int | None = None):
    """The catalogue scheduler `scheduler` (None = the model's own) over the model's config,
    as a run of `steps` steps builds it."""
    return schedulers.build(scheduler or None, registry.scheduler_config(model, task), 0, steps)


def alphas_cumprod(scheduler) -> torch.Tensor:
    return scheduler.alphas_cumprod.double().cpu()


def check_timestep(t, n_train: int) -> int:
    t = checks.number("t", t, integer=True)
    if not 0 <= t < n_train:
        raise BadInput(f"t must be a whole number 0..{n_train - 1} (the model's training "
                       f"steps), got {t}")
    return t


def picture_to_unit_range(image) -> torch.Tensor:
    """An RGB picture as a (3, H, W) float64 tensor in [-1, 1]."""
    picture = checks.rgb(checks.image("image", image))
    if max(picture.size) > MAX_SIDE:
        picture.thumbnail((MAX_SIDE, MAX_SIDE))
    array = np.asarray(picture, dtype=np.float64) / 127.5 - 1.0
    return torch.from_numpy(array).permute(2, 0, 1)


def unit_range_to_picture(x: torch.Tensor) -> Image.Image:
    array = ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).numpy()
    return Image.fromarray(array)


def add_noise(x0: torch.Tensor, alpha_bar: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(x_t, noise added) by the closed form q(x_t | x_0)."""
    eps = torch.randn(x0.shape, generator=torch.Generator("cpu").manual_seed(seed),
                      dtype=torch.float64)
    noise = (1 - alpha_bar) ** 0.5 * eps
    return alpha_bar ** 0.5 * x0 + noise, noise


def forward_noise(registry, image, t, *, model: str = "starter", scheduler: str | None = None,
                  seed: int = 0, task: str = "text_to_image") -> NoisedPicture:
    """Noise `image` to timestep `t` of the model's training schedule."""
    seed = resolve_seed(check_seed(seed))
    sched = training_scheduler(registry, model, task, scheduler)
    abar = alphas_cumprod(sched)
    t = check_timestep(t, len(abar))
    x0 = picture_to_unit_range(image)
    alpha_bar = float(abar[t])
    xt, noise = add_noise(x0, alpha_bar, seed)
    return NoisedPicture(
        noisy=unit_range_to_picture(xt), noise=unit_range_to_picture(noise), t=t,
        alpha_bar=alpha_bar, snr=alpha_bar / (1 - alpha_bar),
        sigma=((1 - alpha_bar) / alpha_bar) ** 0.5, seed=seed,
        scheduler=schedulers.name_of(sched))


# ---------------------------------------------------------------- the schedule

def noise_schedule(registry, *, model: str = "starter", scheduler: str | None = None,
                   steps: int = 20, task: str = "text_to_image") -> dict:
    """The schedule as numbers: alpha_bar and sigma for every training step t, and the
    (t, alpha_bar) points the chosen sampler visits when run with `steps` steps."""
    steps = checks.steps(steps)
    sched = training_scheduler(registry, model, task, scheduler, steps)
    abar = alphas_cumprod(sched)
    sched.set_timesteps(steps)
    visited_t = [float(t) for t in sched.timesteps]
    if getattr(sched, "sigmas", None) is not None:
        # samplers that step in sigma visit exactly these noise levels
        sigmas = sched.sigmas.double()[: len(visited_t)]
        visited_abar = [float(1 / (1 + s ** 2)) for s in sigmas]
    else:
        visited_abar = [float(abar[int(round(t))]) for t in visited_t]
    return {"scheduler": schedulers.name_of(sched), "steps": steps,
            "t": list(range(len(abar))), "alpha_bar": abar.tolist(),
            "sigma": ((1 - abar) / abar).sqrt().tolist(),
            "visited_t": visited_t, "visited_alpha_bar": visited_abar}


def schedule_plot(schedule: dict, current_t: int | None = None, size=(480, 300)) -> Image.Image:
    """alpha_bar(t) (signal kept, blue) and 1 - alpha_bar(t) (noise, orange) against t,
    with the sampler's visited steps as dots and the explorer's t as a grey line. The top
    chart.TITLE_CLEARANCE pixels stay blank: Gradio lays the picture's label over them."""
    width, height = size
    left, right, top, bottom = 44, 12, chart.TITLE_CLEARANCE + 24, 34
    plot = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(plot)
    n = len(schedule["t"])

    def xy(t, value):
        return (left + (width - left - right) * t / max(n - 1, 1),
                top + (height - top - bottom) * (1 - value))

    draw.rectangle([xy(0, 1), xy(n - 1, 0)], outline=(120, 120, 120))
    for value in (0, 0.5, 1):
        x, y = xy(0, value)
        draw.text((x - 28, y - 6), f"{value:.1f}", fill="black")
    for t in range(0, n, max(n // 4, 1)):
        x, y = xy(t, 0)
        draw.text((x - 8, y + 6), str(t), fill="black")
    draw.text((width // 2 - 8, height - 16), "t", fill="black")
    if current_t is not None:
        draw.line([xy(current_t, 0), xy(current_t, 1)], fill=(150, 150, 150), width=1)
    abar = schedule["alpha_bar"]
    draw.line([xy(t, a) for t, a in enumerate(abar)], fill=(40, 80, 220), width=2)
    draw.line([xy(t, 1 - a) for t, a in enumerate(abar)], fill=(245, 140, 30), width=2)
    for t, a in zip(schedule["visited_t"], schedule["visited_alpha_bar"]):
        x, y = xy(t, a)
        draw.ellipse([x - 3, y - 3, x + 3, y + 3], fill=(220, 40, 40))
    title = (f"alpha_bar (blue), 1 - alpha_bar (orange); red: {schedule['scheduler']}, "
             f"{schedule['steps']} steps")
    draw.text((left, chart.TITLE_CLEARANCE + 4), title, fill="black")
    return plot
