"""The scheduler catalogue: names, compatibility, fresh instances, and that each one runs."""
from __future__ import annotations

import numpy as np
import pytest

from playground import PlaygroundError, settings_of
from playground import schedulers
from playground.starter.models import build_default_scheduler

REQUIRED = ["DDPM", "DDIM", "PNDM", "LMS", "Euler", "Euler a", "Heun", "DPM++ 2M",
            "DPM++ 2M Karras", "DPM++ SDE", "UniPC", "DEIS"]


def test_catalogue_has_the_names_people_know():
    assert set(REQUIRED) <= set(schedulers.all_names())  # scipy and torchsde are installed


def test_each_request_gets_a_fresh_scheduler_from_the_model_config():
    config = build_default_scheduler()  # a scheduler instance or its config both work
    a = schedulers.build("Euler", config, seed=1)
    b = schedulers.build("Euler", config, seed=1)
    assert a is not b and type(a).__name__ == "EulerDiscreteScheduler"
    assert a.config.beta_schedule == "scaled_linear" and a.config.beta_end == 0.012
    assert a.config.steps_offset == 1
    assert schedulers.build("DPM++ 2M Karras", config, 1).config.use_karras_sigmas
    assert not schedulers.build("DPM++ 2M", config, 1).config.use_karras_sigmas
    assert schedulers.build("DPM++ SDE", config, 5).config.noise_sampler_seed == 5
    own = schedulers.build(None, config, 1)
    assert type(own).__name__ == "DPMSolverMultistepScheduler"
    assert schedulers.name_of(own) == "DPM++ 2M"


def test_compatible_list_puts_the_default_first_and_refuses_others():
    names = schedulers.compatible_names(build_default_scheduler())
    assert names[0] == "DPM++ 2M" and set(REQUIRED) <= set(names)
    with pytest.raises(PlaygroundError, match="unknown scheduler .Karras. for this model; choose one of: DPM"):
        schedulers.build("Karras", build_default_scheduler(), 1)
    flow = {"_class_name": "FlowMatchEulerDiscreteScheduler", "num_train_timesteps": 1000}
    assert "DDIM" not in schedulers.compatible_names(flow)


def test_every_scheduler_runs_and_changes_the_picture(tiny_playground):
    results = {}
    for name in schedulers.all_names():
        image = tiny_playground.text_to_image("a red circle", model="tiny", scheduler=name,
                                              steps=3, seed=4)
        again = tiny_playground.text_to_image("a red circle", model="tiny", scheduler=name,
                                              steps=3, seed=4)
        pixels = np.asarray(image)
        assert np.array_equal(pixels, np.asarray(again)), f"{name} is not deterministic"
        assert settings_of(image)["scheduler"] == name
        results[name] = pixels.astype(np.int16)
    assert not np.array_equal(results["DDIM"], results["Euler a"])
    assert not np.array_equal(results["DPM++ 2M"], results["DPM++ 2M Karras"])


@pytest.mark.parametrize("spacing", ["linspace", "leading"])
def test_one_step_starts_at_the_noisy_end_and_more_steps_keep_the_models_spacing(spacing):
    # linspace/leading put a single step at t 0 or 1: the run would return its starting noise
    config = {**schedulers.as_config(build_default_scheduler()), "timestep_spacing": spacing}
    config.pop("_use_default_values", None)  # else another class takes its own default spacing
    for name in schedulers.all_names():
        one = schedulers.build(name, config, seed=1, steps=1)
        one.set_timesteps(1)
        assert int(one.timesteps[0]) >= 990, (name, one.timesteps)
        twenty = schedulers.build(name, config, seed=1, steps=20)
        assert twenty.config.get("timestep_spacing", spacing) == spacing, name


def test_a_one_step_upscale_is_a_picture_not_noise(starter):
    from PIL import Image

    from playground.starter.evaluate import psnr
    from playground.starter.world import random_scene, render
    import random

    truth = render(random_scene(random.Random(77)), 256)
    low = truth.resize((64, 64), Image.BOX)
    bicubic = psnr(low.resize((256, 256), Image.BICUBIC), truth)
    for name in ["Euler", "DDIM"]:  # with the shipped linspace spacing these returned noise (-24 dB)
        image = starter.upscale(low, scheduler=name, steps=1, seed=0)
        assert settings_of(image)["steps"] == 1 and settings_of(image)["scheduler"] == name
        assert psnr(image, truth) > bicubic - 1.0, name
