"""Seeing inside the sampler (issue 5, first half): the forward process against its
closed form, the denoising filmstrip against the final picture, cross-attention maps,
the "show code" script run on its own, and the HTTP endpoints. Starter models, 64 px,
few steps."""
from __future__ import annotations

import os
import runpy
import subprocess
import sys

import numpy as np
import pytest
import torch
from diffusers import DDPMScheduler
from diffusers.models.attention_processor import Attention, AttnProcessor
from PIL import Image

from playground import BadInput, RunControl, settings_of
from playground.teach import attention, chart, forward, trace


def pixels(picture) -> np.ndarray:
    return np.asarray(picture, np.int16)


# ---------------------------------------------------------------- forward process

def test_forward_noise_matches_the_closed_form(starter):
    x0 = torch.linspace(-0.8, 0.8, 3 * 32 * 32, dtype=torch.float64).reshape(3, 32, 32)
    sched = forward.training_scheduler(starter.registry, "starter", "text_to_image", None)
    t = 400
    alpha_bar = float(sched.alphas_cumprod[t])
    xt, noise = forward.add_noise(x0, alpha_bar, seed=5)
    # the same eps through diffusers' own DDPM forward process
    eps = noise / (1 - alpha_bar) ** 0.5
    reference = DDPMScheduler.from_config(sched.config).add_noise(
        x0[None], eps[None], torch.tensor([t]))[0]
    assert torch.allclose(xt, reference, atol=1e-6)

    # statistics of x_t for a flat grey picture: mean sqrt(abar) x0, std sqrt(1 - abar)
    grey = Image.new("RGB", (256, 256), (128, 128, 128))
    x0_value = 128 / 127.5 - 1
    for t in (50, 150):
        result = starter.forward_noise(grey, t, seed=1)
        abar = float(sched.alphas_cumprod[t])
        assert result.alpha_bar == pytest.approx(abar)
        assert result.snr == pytest.approx(abar / (1 - abar))
        values = np.asarray(result.noisy, np.float64) / 127.5 - 1
        assert values.mean() == pytest.approx(abar ** 0.5 * x0_value, abs=0.01)
        assert values.std() == pytest.approx((1 - abar) ** 0.5, rel=0.03)
    clean = starter.forward_noise(grey, 0, seed=1)
    assert np.abs(pixels(clean.noisy) - 128).max() <= 20  # t=0: almost no noise
    with pytest.raises(BadInput, match="t must be"):
        starter.forward_noise(grey, 1000)


def test_noise_schedule_shows_the_samplers_steps(starter):
    schedule = starter.noise_schedule("DPM++ 2M Karras", steps=10)
    assert len(schedule["visited_t"]) == 10 and len(schedule["alpha_bar"]) == 1000
    abar = np.array(schedule["alpha_bar"])
    assert np.all(np.diff(abar) < 0) and abar[0] > 0.99 and abar[-1] < 0.01
    plot = forward.schedule_plot(schedule, current_t=300)
    # the blue alpha_bar curve and red sampler dots are drawn
    rgb = pixels(plot)
    assert ((rgb[..., 2] > 200) & (rgb[..., 0] < 80)).sum() > 200
    assert ((rgb[..., 0] > 200) & (rgb[..., 1] < 60)).sum() > 20
    # nothing is drawn where Gradio lays the picture's label, and the title is below it
    assert (rgb[:chart.TITLE_CLEARANCE] == 255).all()
    assert (rgb[chart.TITLE_CLEARANCE:chart.TITLE_CLEARANCE + 20] < 128).any()


def test_a_one_step_schedule_visits_the_noisy_end_as_a_run_does(starter):
    assert starter.noise_schedule("Euler", steps=1)["visited_t"] == [999.0]


# ---------------------------------------------------------------- filmstrip

@pytest.mark.parametrize("scheduler", [None, "Euler a"])
def test_filmstrip_ends_at_the_final_picture_and_fills_in_live(starter, scheduler):
    progress, seen_at = [], []
    control = RunControl(on_progress=lambda step, total: progress.append(step))

    def on_frame(frame):
        seen_at.append((frame.step, progress[-1] if progress else 0))

    image, frames = starter.denoise_trace("a large red circle", steps=6, seed=3,
                                          scheduler=scheduler, on_frame=on_frame,
                                          control=control)
    assert [f.step for f in frames] == [1, 2, 3, 4, 5, 6]
    # each frame arrived during sampling, before the step's progress report
    assert seen_at == [(s, s - 1) for s in range(1, 7)]
    final = frames[-1]
    assert trace.pixel_difference(final.x0, image) <= 1   # VAE rounding only
    assert trace.pixel_difference(final.x_t, image) <= 1
    assert trace.pixel_difference(frames[0].x_t, image) > 40  # step 1 is still noisy
    same = starter.text_to_image("a large red circle", steps=6, seed=3, scheduler=scheduler)
    assert trace.pixel_difference(same, image) == 0
    assert settings_of(image)["seed"] == 3


def test_filmstrip_chosen_steps_and_bad_steps(starter):
    _, frames = starter.denoise_trace("a blue square", steps=5, seed=1, show_steps=[2, 5])
    assert [f.step for f in frames] == [2, 5]
    with pytest.raises(BadInput, match="1..5"):
        starter.denoise_trace("a blue square", steps=5, seed=1, show_steps=[9])


# ---------------------------------------------------------------- attention maps

def test_recording_processor_puts_each_token_where_it_matches():
    """A cross-attention layer whose left pixels match token 1 and right pixels token 2:
    the maps must find them there (catches transposed or mis-shaped maps), and the
    layer's output must equal diffusers' own processor's."""
    torch.manual_seed(0)
    layer = Attention(query_dim=4, cross_attention_dim=4, heads=1, dim_head=4)
    with torch.no_grad():
        layer.to_q.weight.copy_(torch.eye(4) * 4)
        layer.to_k.weight.copy_(torch.eye(4) * 4)
    h, w = 4, 6
    hidden = torch.zeros(1, 4, h, w)
    hidden[0, 0, :, : w // 2] = 1   # left half looks like token 1
    hidden[0, 1, :, w // 2:] = 1    # right half like token 2
    tokens = torch.zeros(1, 3, 4)
    tokens[0, 1, 0] = tokens[0, 2, 1] = 1
    collector = attention.MapCollector((h, w), [1], total=1, order=1)
    recorded = attention.RecordingCrossAttention(collector)(layer, hidden, tokens)
    plain = AttnProcessor()(layer, hidden, tokens)
    assert torch.allclose(recorded, plain, atol=1e-6)
    maps = collector.sum[:, :, :]
    assert maps[1, :, : w // 2].mean() > 3 * maps[1, :, w // 2:].mean()
    assert maps[2, :, w // 2:].mean() > 3 * maps[2, :, : w // 2].mean()


def test_attention_maps_on_the_starter(starter):
    shared_unet = starter.registry.pipeline("starter", "text_to_image").unet
    before = {name: type(p) for name, p in shared_unet.attn_processors.items()}
    result = starter.attention_maps("a large red circle in the top left", steps=6, seed=2)
    assert result.tokens == ["a", "large", "red", "circle", "in", "the", "top", "left"]
    assert len(result.maps) == len(result.overlays) == 8
    for weights in result.maps:
        assert weights.shape == (16, 16) and weights.min() >= 0
        assert weights.sum() == pytest.approx(1, abs=1e-4)
    # the shared pipeline is untouched, and the picture is text_to_image's
    assert {name: type(p) for name, p in shared_unet.attn_processors.items()} == before
    same = starter.text_to_image("a large red circle in the top left", steps=6, seed=2)
    assert trace.pixel_difference(same, result.image) <= 1


# Prompts and seeds for which the starter model draws the asked colour (checked by the
# judge in the test): the maps are measured against the object really drawn.
COLOUR_WORD_CASES = [("a large red circle in the top left", "red", 2),
                     ("a large blue square in the bottom right", "blue", 1),
                     ("a big green square in the middle", "green", 3),
                     ("a large orange triangle on the left", "orange", 3)]
# Measured 2.9-6.8 on these cases (about 1.0-1.1 before the starter's attention loss;
# python -m playground.starter.probe_attention)
COLOUR_WORD_CONCENTRATION = 2.0  # attention density in the box / the picture's mean


@pytest.mark.parametrize("prompt,colour,seed", COLOUR_WORD_CASES)
def test_the_colour_words_attention_falls_on_the_object(starter, judge, prompt, colour, seed):
    """The colour word's map, measured against the judge's box of the object drawn in
    that colour: its mass per pixel inside the box is well above its mean over the
    picture (1.0 would be a flat map)."""
    from playground.starter.probe_attention import concentration as in_box_density

    result = starter.attention_maps(prompt, steps=10, seed=seed)
    drawn = [o for o in judge.read(result.image)["objects"] if o["colour"] == colour]
    assert drawn, f"no {colour} object drawn for {prompt!r}, seed {seed}"
    weights = result.maps[result.tokens.index(colour)]
    concentration = in_box_density(weights, drawn[0]["box"])
    assert concentration >= COLOUR_WORD_CONCENTRATION, (
        f"{colour!r}: {concentration:.2f} times its mean density inside the object's box")


# ---------------------------------------------------------------- show the code

def test_show_code_script_makes_the_same_pixels(starter, tmp_path):
    """Run as a script in a fresh interpreter: only torch and diffusers, same pixels."""
    image = starter.text_to_image("a blue square on the left", steps=4, seed=11,
                                  scheduler="Euler a", guidance=5)
    script = starter.show_code(image)
    imports = [line for line in script.splitlines() if line.startswith(("import", "from"))]
    assert all("playground" not in line for line in imports)  # plain diffusers
    (tmp_path / "remake.py").write_text(script)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "remake.py"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    remade = Image.open(tmp_path / "result.png").convert("RGB")
    assert np.array_equal(pixels(remade), pixels(image))


def test_show_code_for_layout_makes_the_same_pixels(starter, tmp_path, monkeypatch):
    """The layout script, run with runpy in this process (saves an interpreter start)."""
    image = starter.layout_to_image("a red circle", ["a red circle"], [[0.1, 0.1, 0.5, 0.5]],
                                    steps=4, seed=4)
    (tmp_path / "remake.py").write_text(starter.show_code(settings_of(image)))
    monkeypatch.chdir(tmp_path)
    runpy.run_path(str(tmp_path / "remake.py"), run_name="__main__")
    remade = Image.open(tmp_path / "result.png").convert("RGB")
    assert np.array_equal(pixels(remade), pixels(image))


def test_show_code_for_one_step_makes_the_same_pixels(starter, tmp_path, monkeypatch):
    image = starter.text_to_image("a red circle", steps=1, seed=3, scheduler="Euler")
    script = starter.show_code(image)
    assert "timestep_spacing='trailing'" in script  # the one-step spacing the run used
    (tmp_path / "remake.py").write_text(script)
    monkeypatch.chdir(tmp_path)
    runpy.run_path(str(tmp_path / "remake.py"), run_name="__main__")
    remade = Image.open(tmp_path / "result.png").convert("RGB")
    assert np.array_equal(pixels(remade), pixels(image))


def test_show_code_refuses_what_is_not_a_result(starter):
    with pytest.raises(BadInput, match="settings"):
        starter.show_code({"prompt": "a red circle"})


# ---------------------------------------------------------------- HTTP endpoints

def test_endpoints_answer_through_gradio_client(tmp_path):
    from gradio_client import Client, handle_file
    from gradio_client.exceptions import AppError

    from app_server import shared_app
    from playground.ui.examples import example_picture

    client = Client(shared_app()[1], verbose=False, download_files=str(tmp_path))
    example_picture().save(tmp_path / "in.png")
    noisy, noise, info = client.predict(image=handle_file(str(tmp_path / "in.png")), t=500,
                                        seed=2, api_name="/forward_noise")
    assert info["t"] == 500 and info["snr"] == pytest.approx(
        info["alpha_bar"] / (1 - info["alpha_bar"]))
    assert pixels(Image.open(noisy)).std() > 30

    strip, settings = client.predict(prompt="a red circle", steps=4, seed=3,
                                     show_steps=[2, 4], api_name="/denoise_trace")
    assert [frame["step"] for frame in strip] == [2, 4]
    png = client.predict(prompt="a red circle", steps=4, seed=3, api_name="/text_to_image")[0]
    last_x0 = Image.open(strip[-1]["x0"]).convert("RGB")
    assert trace.pixel_difference(last_x0, Image.open(png).convert("RGB")) <= 1
    assert settings["seed"] == 3
    composed, settings = client.predict(
        prompt="a red circle in the top left and a blue square in the bottom right", steps=2,
        seed=3, compose_objects=True, api_name="/denoise_trace")
    assert [frame["step"] for frame in composed] == [1, 2, 3, 4]  # two passes of two steps
    assert [frame["part"] for frame in composed] == ["object 1 of 2"] * 2 + ["object 2 of 2"] * 2
    assert len(settings["composed"]) == 2

    maps, _ = client.predict(prompt="a red circle", steps=3, seed=1,
                             api_name="/attention_maps")
    assert [m["token"] for m in maps] == ["a", "red", "circle"]
    assert np.array(maps[1]["weights"]).sum() == pytest.approx(1, abs=1e-3)
    assert Image.open(maps[1]["map"]).size == (64, 64)

    with pytest.raises(AppError, match="t must be"):
        client.predict(image=handle_file(str(tmp_path / "in.png")), t=5000,
                       api_name="/forward_noise")
