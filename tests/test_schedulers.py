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
