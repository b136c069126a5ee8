"""The model registry: entries from flags and files, sharing, eviction, memory, safe loading."""
from __future__ import annotations

import json
import os
import shutil

import numpy as np
import psutil
import pytest
import torch

from playground import ModelError, Playground, PlaygroundError, Registry, RunControl, settings_of
from playground.registry import (STARTER_DIR, TASKS, make_entry, parse_model_flag, pick_dtype,
                                 read_models_file)


def test_default_registry_is_the_starter_for_every_task():
    registry = Registry(device="cpu")
    for task in TASKS:
        assert registry.models(task) == ["starter"]
    assert registry.loaded() == []  # nothing loads before it is used


def test_starter_tasks_share_text_encoder_vae_and_tokenizer():
    """One VAE and tokenizer for all; text-to-image's own text encoder (its cell words
    learned apart: MODEL_CARD, "Cell words") for text-to-image and layout, and one for
    inpainting and upscaling."""
    registry = Registry(device="cpu")
    t2i = registry.pipeline("starter", "text_to_image")
    inpaint = registry.pipeline("starter", "inpaint")
    layout = registry.pipeline("starter", "layout_to_image")
    assert layout.text_encoder is t2i.text_encoder and inpaint.text_encoder is not t2i.text_encoder
    assert inpaint.vae is t2i.vae is layout.vae and inpaint.tokenizer is t2i.tokenizer is layout.tokenizer
    assert inpaint.unet is not t2i.unet
    text_encoders = {id(c) for c in registry._components.values()
                     if type(c).__name__ == "CLIPTextModel"}
    assert len(text_encoders) == 2
    assert registry.pipeline("starter", "text_to_image") is t2i  # loaded once


def test_loading_the_upscaler_leaves_the_shared_vae_alone(tmp_path, tiny_models):
    """StableDiffusionUpscalePipeline rewrites its VAE's scaling_factor when built; the
    registry must not give it the VAE that text-to-image decodes with, even when both
    folders link to the same VAE files (as the starter folders do)."""
    up_folder = tmp_path / "upscale"
    shutil.copytree(tiny_models / "upscale", up_folder)
    shutil.rmtree(up_folder / "vae")
    os.symlink(tiny_models / "text2img" / "vae", up_folder / "vae")
    registry = Registry(device="cpu", allowed_dirs=[str(tiny_models), str(tmp_path)])
    registry.add(parse_model_flag(f"t2i={tiny_models / 'text2img'};tasks=t2i"))
    registry.add(parse_model_flag(f"up={up_folder};tasks=upscale"))
    t2i = registry.pipeline("t2i", "text_to_image")
    factor = t2i.vae.config.scaling_factor
    assert factor != 0.08333
    up = registry.pipeline("up", "upscale")
    assert up.vae is not t2i.vae
    assert t2i.vae.config.scaling_factor == factor


def test_one_source_serving_two_tasks_shares_every_module(tiny_models):
    entry = make_entry("sd", str(tiny_models / "text2img"))
    assert entry.tasks == ("text_to_image", "inpaint")  # from its model_index.json
    registry = Registry([entry], device="cpu", allowed_dirs=[str(tiny_models)])
    t2i = registry.pipeline("sd", "text_to_image")
    inpaint = registry.pipeline("sd", "inpaint")
    assert type(inpaint).__name__ == "StableDiffusionInpaintPipeline"
    for name in ("unet", "vae", "text_encoder", "tokenizer"):
        assert getattr(inpaint, name) is getattr(t2i, name)
    before = registry.memory_used()
    pg = Playground(registry)
    image = np.zeros((32, 32, 3), np.uint8)
    mask = np.zeros((32, 32), np.uint8)
    mask[8:24, 8:24] = 255
    out = pg.inpaint(image, mask, "a red circle", model="sd", steps=2, seed=1)
    assert out.size == (32, 32) and registry.memory_used() == before


def test_eviction_under_a_small_budget(tiny_models, tiny_entries):
    registry = Registry(tiny_entries, device="cpu", allowed_dirs=[str(tiny_models)])
    registry.pipeline("tiny", "text_to_image")
    one = registry.memory_used()
    registry.memory_budget = int(one * 1.3)  # room for one tiny pipeline, not two
    registry.pipeline("tiny", "upscale")
    assert registry.loaded() == [("tiny", "upscale")]
    assert registry.memory_used() <= registry.memory_budget
    registry.pipeline("tiny", "text_to_image")
    registry.pipeline("tiny", "inpaint")
    assert registry.loaded() == [("tiny", "inpaint")]
    # without a budget everything stays, least recently used first
    registry.memory_budget = None
    registry.pipeline("tiny", "layout_to_image")
    registry.pipeline("tiny", "inpaint")
    assert registry.loaded() == [("tiny", "layout_to_image"), ("tiny", "inpaint")]


def test_memory_stays_flat_switching_models_20_times(tiny_models, tiny_entries):
    registry = Registry([make_entry("starter", "starter"), *tiny_entries], device="cpu",
                        allowed_dirs=[str(tiny_models)])
    pg = Playground(registry)
    registry.pipeline("starter", "text_to_image")
    registry.memory_budget = registry.memory_used()  # room for one model at a time

    def switch():
        for model in ("starter", "tiny"):
            pg.text_to_image("a red circle", model=model, steps=1, seed=1)
            assert [m for m, _ in registry.loaded()] == [model]

    for _ in range(2):  # warm up allocator pools and lazy imports
        switch()
    rss = psutil.Process().memory_info().rss
    for _ in range(10):  # 20 switches
        switch()
    grown = psutil.Process().memory_info().rss - rss
    starter_bytes = 30e6  # one starter text-to-image set of weights in fp32
    assert grown < starter_bytes, f"RSS grew {grown / 1e6:.1f} MB over 20 switches"


def test_broken_model_folder_gives_a_clear_error_and_others_keep_working(tmp_path, tiny_models):
    broken = tmp_path / "broken"
    shutil.copytree(tiny_models / "text2img", broken)
    weights = broken / "unet" / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    registry = Registry([make_entry("broken", str(broken)), make_entry("ok", str(tiny_models / "text2img"))],
                        device="cpu", allowed_dirs=[str(tmp_path), str(tiny_models)])
    pg = Playground(registry)
    with pytest.raises(ModelError) as error:
        pg.text_to_image("a red circle", model="broken", steps=1)
    message = str(error.value)
    assert "model 'broken' could not be loaded for text_to_image" in message
    assert str(broken) in message
    assert pg.text_to_image("a red circle", model="ok", steps=1, seed=1).size == (32, 32)
    with pytest.raises(ModelError, match="'broken'"):  # still clear the second time
        pg.text_to_image("a red circle", model="broken", steps=1)
    assert registry.loaded() == [("ok", "text_to_image")]


def test_pickle_weights_are_never_loaded(tmp_path, tiny_models):
    pickled = tmp_path / "pickled"
    shutil.copytree(tiny_models / "text2img", pickled)
    unet = pickled / "unet"
    (unet / "diffusion_pytorch_model.safetensors").unlink()
    (unet / "diffusion_pytorch_model.bin").write_bytes(b"pretend pickle")
    registry = Registry([make_entry("pickled", str(pickled))], device="cpu",
                        allowed_dirs=[str(tmp_path)])
    with pytest.raises(ModelError, match="model 'pickled' could not be loaded"):
        registry.pipeline("pickled", "text_to_image")


def test_local_folders_only_from_allowed_dirs(tmp_path, tiny_models):
    entry = make_entry("outside", str(tiny_models / "text2img"))
    with pytest.raises(ModelError, match="outside the allowed model folders"):
        Registry([entry], device="cpu")
    # a symlink inside an allowed folder pointing outside is refused too
    (tmp_path / "link").symlink_to(tiny_models / "text2img")
    with pytest.raises(ModelError, match="outside the allowed model folders"):
        Registry([make_entry("link", str(tmp_path / "link"))], device="cpu",
                 allowed_dirs=[str(tmp_path)])


def test_model_flags():
    hub = parse_model_flag("stable-diffusion-v1-5/stable-diffusion-v1-5")
    assert hub.name == "stable-diffusion-v1-5/stable-diffusion-v1-5"
    assert hub.tasks == ("text_to_image", "inpaint")
    assert hub.sources["inpaint"].revision is None and not hub.sources["inpaint"].is_local
    gligen = parse_model_flag("g=masterful/gligen-1-4-generation-text-box")
    assert gligen.tasks == ("layout_to_image",)
    assert gligen.sources["layout_to_image"].revision == "refs/pr/2"  # safetensors live there
    custom = parse_model_flag("mine=owner/model;tasks=t2i,upscale;revision=abc;dtype=float16")
    assert custom.name == "mine" and custom.tasks == ("text_to_image", "upscale")
    assert custom.sources["upscale"].revision == "abc" and custom.dtype == "float16"
    starter = parse_model_flag("small=starter;tasks=layout")
    assert starter.tasks == ("layout_to_image",)
    assert os.path.realpath(starter.sources["layout_to_image"].location).startswith(
        os.path.realpath(STARTER_DIR))
    for bad, fragment in [("owner/model", "say which tasks"),
                          ("../etc", "neither an existing local folder nor a hub id"),
                          ("a/b/c", "neither an existing local folder nor a hub id"),
                          ("x=owner/model;tasks=paint", "unknown task 'paint'"),
                          ("x=owner/model;colour=red", "bad model option"),
                          ("x=owner/model;tasks=t2i;dtype=float8", "unknown dtype")]:
        with pytest.raises(PlaygroundError, match=fragment):
            parse_model_flag(bad)


def test_models_file_toml_and_json(tmp_path, tiny_models):
    (tmp_path / "models.toml").write_text(f"""
allowed_dirs = ["{tiny_models}"]

[[models]]
name = "sd15"
source = "stable-diffusion-v1-5/stable-diffusion-v1-5"
tasks = ["text_to_image"]

[[models]]
name = "sd15"
source = "stable-diffusion-v1-5/stable-diffusion-inpainting"

[[models]]
name = "tiny"
source = "{tiny_models / 'upscale'}"
""")
    entries, allowed = read_models_file(str(tmp_path / "models.toml"))
    sd15, tiny = entries
    assert sd15.tasks == ("text_to_image", "inpaint")
    assert sd15.sources["inpaint"].location == "stable-diffusion-v1-5/stable-diffusion-inpainting"
    assert tiny.tasks == ("upscale",) and allowed == [str(tiny_models)]
    registry = Registry.from_flags(["t=" + str(tiny_models / "layout")],
                                   str(tmp_path / "models.toml"), device="cpu")
    assert registry.models("text_to_image") == ["starter", "sd15"]
    assert registry.models("layout_to_image") == ["starter", "t"]
    (tmp_path / "models.json").write_text(json.dumps(
        {"models": [{"name": "j", "source": "owner/x", "tasks": ["upscale"], "wrong": 1}]}))
    with pytest.raises(PlaygroundError, match="each model needs 'source'"):
        read_models_file(str(tmp_path / "models.json"))


def test_a_model_can_bring_its_own_default_guidance(tmp_path, tiny_models):
    one = parse_model_flag(f"one={tiny_models / 'text2img'};guidance=3")
    assert one.options["guidance"] == 3.0
    (tmp_path / "models.toml").write_text(f"""
[[models]]
name = "per_task"
source = "{tiny_models / 'inpaint'}"
guidance = {{inpaint = 4.5}}

[[models]]
name = "per_task"
source = "{tiny_models / 'text2img'}"
tasks = ["text_to_image"]
guidance = 2
""")
    (per_task,), _ = read_models_file(str(tmp_path / "models.toml"))
    plain = make_entry("plain", str(tiny_models / "text2img"))
    registry = Registry([one, per_task, plain], device="cpu", allowed_dirs=[str(tiny_models)])
    assert registry.defaults("one", "text_to_image")["guidance"] == 3.0
    assert registry.defaults("per_task", "inpaint")["guidance"] == 4.5
    assert registry.defaults("per_task", "text_to_image")["guidance"] == 2.0
    assert registry.defaults("plain", "text_to_image")["guidance"] == 7.5  # diffusers' default
    pg = Playground(registry)
    unset = pg.text_to_image("a red circle", model="one", steps=2, seed=1)
    given = pg.text_to_image("a red circle", model="one", steps=2, seed=1, guidance=3)
    other = pg.text_to_image("a red circle", model="one", steps=2, seed=1, guidance=9)
    assert settings_of(unset)["guidance"] == 3.0 and settings_of(other)["guidance"] == 9
    assert np.array_equal(np.asarray(unset), np.asarray(given))
    assert not np.array_equal(np.asarray(unset), np.asarray(other))
    for bad, fragment in [("x=owner/m;tasks=t2i;guidance=lots", "must be a number"),
                          ("x=owner/m;tasks=t2i;guidance=31", "from 0.0 to 30.0")]:
        with pytest.raises(PlaygroundError, match=fragment):
            parse_model_flag(bad)
    with pytest.raises(PlaygroundError, match="unknown task 'paint'"):
        make_entry("x", "owner/m", tasks=["t2i"], guidance={"paint": 3})


def test_hub_sources_use_from_pretrained_and_fail_clearly_offline():
    registry = Registry([parse_model_flag("sd=owner-x/no-such-model;tasks=t2i")], device="cpu")
    with pytest.raises(ModelError, match="model 'sd'"):
        registry.pipeline("sd", "text_to_image")
    assert registry.loaded() == []


def test_device_and_dtype_pick_and_override(tiny_models):
    assert pick_dtype("cpu") == "float32" and pick_dtype("cuda") == "float16"
    entry = make_entry("half", str(tiny_models / "text2img"), dtype="bfloat16")
    registry = Registry([entry], device="cpu", allowed_dirs=[str(tiny_models)])
    assert registry.device_and_dtype("half") == ("cpu", torch.bfloat16)
    assert registry.pipeline("half", "text_to_image").unet.dtype == torch.bfloat16
    image = Playground(registry).text_to_image("a red circle", model="half", steps=1, seed=1)
    assert settings_of(image)["dtype"] == "bfloat16"


def test_wrong_kind_of_model_for_a_task(tiny_models):
    entry = make_entry("up", str(tiny_models / "upscale"), tasks=["text_to_image"])
    registry = Registry([entry], device="cpu", allowed_dirs=[str(tiny_models)])
    with pytest.raises(ModelError, match="UNet takes 7 input channels, text_to_image needs 4"):
        registry.pipeline("up", "text_to_image")


def test_a_model_can_bring_its_own_default_steps(tmp_path, tiny_models):
    one = parse_model_flag(f"one={tiny_models / 'text2img'};steps=3;guidance=2")
    assert one.options == {"steps": 3, "guidance": 2.0}
    (tmp_path / "models.toml").write_text(f"""
[[models]]
name = "per_task"
source = "{tiny_models / 'inpaint'}"
steps = {{inpaint = 5}}

[[models]]
name = "per_task"
source = "{tiny_models / 'text2img'}"
tasks = ["text_to_image"]
steps = 2
guidance = 4
""")
    (per_task,), _ = read_models_file(str(tmp_path / "models.toml"))
    registry = Registry([one, per_task], device="cpu", allowed_dirs=[str(tiny_models)])
    assert registry.defaults("one", "text_to_image")["steps"] == 3
    assert registry.defaults("per_task", "inpaint")["steps"] == 5
    assert registry.defaults("per_task", "inpaint")["guidance"] == 7.5
    assert registry.defaults("per_task", "text_to_image")["steps"] == 2
    assert registry.defaults("per_task", "text_to_image")["guidance"] == 4.0
    pg = Playground(registry)
    totals = []
    unset = pg.text_to_image("a red circle", model="one", seed=1,
                             control=RunControl(on_progress=lambda i, n: totals.append(n)))
    given = pg.text_to_image("a red circle", model="one", seed=1, steps=3)
    assert settings_of(unset)["steps"] == 3 and set(totals) == {3}
    assert np.array_equal(np.asarray(unset), np.asarray(given))
    assert settings_of(pg.text_to_image("a red circle", model="one", seed=1, steps=5))["steps"] == 5
    for bad, fragment in [("x=owner/m;tasks=t2i;steps=lots", "must be a number, e.g. steps=8"),
                          ("x=owner/m;tasks=t2i;steps=2.5", "whole number from 1 to 150"),
                          ("x=owner/m;tasks=t2i;steps=0", "whole number from 1 to 150"),
                          ("x=owner/m;tasks=t2i;steps=inf", "whole number from 1 to 150"),
                          ("x=owner/m;tasks=t2i;steps=nan", "whole number from 1 to 150"),
                          ("x=owner/m;tasks=layout;max_boxes=many", "max_boxes= .* whole number"),
                          ("x=owner/m;tasks=layout;max_boxes=0", "max_boxes must be .* 1 to 30"),
                          ("x=owner/m;tasks=t2i;stepz=4", "guidance=, steps=")]:
        with pytest.raises(PlaygroundError, match=fragment):
            parse_model_flag(bad)
    with pytest.raises(PlaygroundError, match="default steps"):
        make_entry("x", "owner/m", tasks=["t2i"], steps={"t2i": True})


def test_a_layout_model_brings_its_own_grounding(tmp_path, tiny_models, tiny_entries):
    """grounding: the share of the steps a layout model's boxes steer (GLIGEN's scheduled
    sampling). diffusers' 0.3 unless the model says otherwise; the starter layout model
    says 1.0 (MODEL_CARD.md, "Grounding fraction")."""
    assert Registry(device="cpu").defaults("starter", "layout")["grounding"] == 1.0
    plain = Registry(tiny_entries, device="cpu", allowed_dirs=[str(tiny_models)])
    assert plain.defaults("tiny", "layout")["grounding"] == 0.3
    one = parse_model_flag(f"one={tiny_models / 'layout'};grounding=0.6")
    assert one.options == {"grounding": 0.6}
    (tmp_path / "models.toml").write_text(f"""
[[models]]
name = "both"
source = "{tiny_models / 'text2img'}"

[[models]]
name = "both"
source = "{tiny_models / 'layout'}"
grounding = 0.8
""")
    (both,), _ = read_models_file(str(tmp_path / "models.toml"))
    registry = Registry([one, both], device="cpu", allowed_dirs=[str(tiny_models)])
    assert registry.defaults("one", "layout")["grounding"] == 0.6
    assert registry.defaults("both", "layout")["grounding"] == 0.8
    pg = Playground(registry)
    args = ("two objects", ["a red circle", "a blue square"], [[0.1, 0.1, 0.4, 0.4], [0.5, 0.5, 0.9, 0.9]])
    unset = pg.layout_to_image(*args, model="one", steps=4, seed=1)
    given = pg.layout_to_image(*args, model="one", steps=4, seed=1, grounding=0.6)
    every = pg.layout_to_image(*args, model="one", steps=4, seed=1, grounding=1)
    assert settings_of(unset)["grounding"] == 0.6 and settings_of(every)["grounding"] == 1.0
    assert np.array_equal(np.asarray(unset), np.asarray(given))  # the tiny model's gates are
    # shut (GLIGEN's start), so its pictures do not move with grounding; the starter's do:
    # test_api_python.py::test_grounding_changes_the_starter_layout_picture
    for bad, fragment in [("x=owner/m;tasks=layout;grounding=some", "must be a number, e.g. grounding=0.3"),
                          ("x=owner/m;tasks=layout;grounding=1.5", "grounding .* from 0 to 1")]:
        with pytest.raises(PlaygroundError, match=fragment):
            parse_model_flag(bad)
    for bad in (-0.1, 2, "all", True):
        with pytest.raises(PlaygroundError, match=r"grounding \(the share of the steps the "
                                                  r"boxes steer\) must be"):
            pg.layout_to_image(*args, model="one", steps=1, seed=1, grounding=bad)
