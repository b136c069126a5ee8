"""The scheduler catalogue: names people know -> diffusers scheduler classes.

Each request builds a fresh scheduler from the model's own scheduler config
(`from_config`), so the noise schedule the model was trained with (betas, prediction
type, timestep spacing) carries over and only the sampling method changes. A model
offers the catalogue entries whose class is in its scheduler's `compatibles`.
"""
from __future__ import annotations

import importlib.util

import diffusers

from .errors import BadInput

# name -> (diffusers class, config overrides). Overrides are explicit where the model's
# own config could otherwise leak a variant in (e.g. Karras sigmas into plain "Euler").
CATALOGUE: dict[str, tuple[str, dict]] = {
    "DDPM": ("DDPMScheduler", {}),
    "DDIM": ("DDIMScheduler", {}),
    "PNDM": ("PNDMScheduler", {"skip_prk_steps": True}),
    "LMS": ("LMSDiscreteScheduler", {"use_karras_sigmas": False}),
    "Euler": ("EulerDiscreteScheduler", {"use_karras_sigmas": False}),
    "Euler a": ("EulerAncestralDiscreteScheduler", {}),
    "Heun": ("HeunDiscreteScheduler", {"use_karras_sigmas": False}),
    "DPM++ 2M": ("DPMSolverMultistepScheduler",
                 {"algorithm_type": "dpmsolver++", "solver_order": 2, "use_karras_sigmas": False}),
    "DPM++ 2M Karras": ("DPMSolverMultistepScheduler",
                        {"algorithm_type": "dpmsolver++", "solver_order": 2, "use_karras_sigmas": True}),
    "DPM++ SDE": ("DPMSolverSDEScheduler", {"use_karras_sigmas": False}),
    "DPM++ SDE Karras": ("DPMSolverSDEScheduler", {"use_karras_sigmas": True}),
    "UniPC": ("UniPCMultistepScheduler", {}),
    "DEIS": ("DEISMultistepScheduler", {}),
}

# Optional packages some schedulers need; without them the entry is left out.
_NEEDS = {"LMSDiscreteScheduler": "scipy", "DPMSolverSDEScheduler": "torchsde"}


def available(class_name: str) -> bool:
    package = _NEEDS.get(class_name)
    return package is None or importlib.util.find_spec(package) is not None


def all_names() -> list[str]:
    """Catalogue names usable in this environment."""
    return [name for name, (cls, _) in CATALOGUE.items() if available(cls)]


def as_config(scheduler_or_config) -> dict:
    """A scheduler's config with its class name, from a scheduler or a config dict."""
    if hasattr(scheduler_or_config, "config"):
        return {**scheduler_or_config.config, "_class_name": type(scheduler_or_config).__name__}
    return dict(scheduler_or_config)


def name_of(config) -> str:
    """The catalogue name that describes a scheduler (or its config), else its class name."""
    config = as_config(config)
    class_name = config["_class_name"]
    for name, (cls, overrides) in CATALOGUE.items():
        if cls == class_name and all(config.get(k, v) == v for k, v in overrides.items()):
            return name
    return class_name


def compatible_names(config) -> list[str]:
    """Catalogue names a model whose default scheduler (or its config) is `config` can use,
    default first."""
    config = as_config(config)
    own = getattr(diffusers, config["_class_name"])
    classes = {c if isinstance(c, str) else c.__name__ for c in getattr(own, "_compatibles", [])}
    classes.add(own.__name__)
    names = [name for name, (cls, _) in CATALOGUE.items() if cls in classes and available(cls)]
    default = name_of(config)
    if default in names:
        names.remove(default)
        names.insert(0, default)
    return names


def build(name: str | None, config, seed: int, steps: int | None = None):
    """A new scheduler instance: catalogue `name` over the model's `config`, or the
    model's own scheduler when `name` is None. `seed` fixes stochastic samplers whose
    noise does not come from the pipeline's generator (DPM++ SDE's Brownian tree).
    `steps` is the run's step count; see `one_step_spacing`."""
    config = as_config(config)
    if name is None:
        cls = getattr(diffusers, config["_class_name"])
        overrides = {}
    else:
        allowed = compatible_names(config)
        if name not in allowed:
            raise BadInput(f"unknown scheduler {name!r} for this model; choose one of: "
                           + ", ".join(allowed))
        class_name, overrides = CATALOGUE[name]
        cls = getattr(diffusers, class_name)
    if cls.__name__ == "DPMSolverSDEScheduler":
        overrides = {**overrides, "noise_sampler_seed": seed}
    if steps == 1:
        overrides = {**overrides, **one_step_spacing(config)}
    config = {k: v for k, v in config.items() if k != "_class_name"}
    return cls.from_config(config, **overrides)


ONE_STEP = {"timestep_spacing": "trailing"}


def one_step_spacing(config: dict) -> dict:
    """Overrides for a one-step run. With "linspace" or "leading" timestep spacing (the
    usual Stable Diffusion configs) one step samples at t 0 or 1, the clean end of the
    schedule, so the picture comes back as the starting noise. "trailing" spacing puts
    that step at the noisy end (t 999), where sampling has to start; for more steps the
    model's own spacing is kept."""
    if config.get("timestep_spacing", "trailing") == "trailing":
        return {}
    return ONE_STEP
