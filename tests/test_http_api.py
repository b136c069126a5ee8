"""The HTTP API through `gradio_client`, against the real app served in this process
with the starter models: each of the four named endpoints returns a PNG of the right
size and mode and the settings used; the same seed gives the same pixels; scheduler,
steps and guidance reach the pipeline; bad input gets a clear message and the server
keeps serving."""
from __future__ import annotations

import json

import httpx
import numpy as np
import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from PIL import Image

from app_server import shared_app
from playground import Registry
from playground.ui.examples import example_picture

STEPS = 3  # mechanics, not picture quality: few steps keep the suite fast


@pytest.fixture(scope="module")
def server():
    return shared_app()


@pytest.fixture(scope="module")
def client(server):
    return Client(server[1], verbose=False, download_files=True)


@pytest.fixture(scope="module")
def pictures(tmp_path_factory):
    folder = tmp_path_factory.mktemp("inputs")
    picture = folder / "picture.png"
    example_picture().save(picture)
    mask = np.zeros((64, 64), np.uint8)
    mask[32:, 32:] = 255
    Image.fromarray(mask).save(folder / "mask.png")
    Image.fromarray(np.full((32, 32), 255, np.uint8)).save(folder / "small_mask.png")
    (folder / "not_a_picture.png").write_text("hello")
    return folder


def request_for(task: str, pictures) -> dict:
    """Keyword arguments of a small, valid request of each endpoint."""
    common = {"steps": STEPS, "seed": 7}
    if task == "text_to_image":
        return {"prompt": "a red circle", **common}
    if task == "layout_to_image":
        return {"prompt": "a red circle and a blue square",
                "phrases": ["a red circle", "a blue square"],
                "boxes": [[0.1, 0.1, 0.45, 0.45], [0.55, 0.5, 0.9, 0.85]], **common}
    if task == "inpaint":
        return {"image": handle_file(str(pictures / "picture.png")),
                "mask": handle_file(str(pictures / "mask.png")),
                "prompt": "a green triangle", "strength": 1.0, **common}
    return {"image": handle_file(str(pictures / "picture.png")), "noise_level": 20,
            "prompt": "a red circle and a blue square", **common}  # guidance needs a prompt


EXPECTED_SIZE = {"text_to_image": (64, 64), "layout_to_image": (64, 64),
                 "inpaint": (64, 64), "upscale": (256, 256)}
TASKS = list(EXPECTED_SIZE)


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def call(client, task, **kwargs) -> tuple[Image.Image, dict]:
    """One request; the answer must be a real PNG file (lossless), opened here."""
    path, settings = client.predict(api_name=f"/{task}", **kwargs)
    with open(path, "rb") as f:
        assert f.read(8) == PNG_SIGNATURE, f"{task} did not return a PNG"
    with Image.open(path) as image:
        image.load()
        return image.copy(), settings


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.int16)


@pytest.mark.parametrize("task", TASKS)
def test_endpoint_returns_png_and_settings(client, pictures, task):
    request = request_for(task, pictures)
    image, settings = call(client, task, **request)
    assert image.mode == "RGB"
    assert image.size == EXPECTED_SIZE[task]
    assert pixels(image).std() > 0, "the picture is one flat colour"
    assert settings["task"] == task and settings["model"] == "starter"
    assert settings["steps"] == STEPS and settings["seed"] == 7
    assert settings["scheduler"] and settings["seconds"] > 0
    # no guidance in the request: the model's own default is used and reported
    assert settings["guidance"] == Registry(device="cpu").defaults("starter", task)["guidance"]
    for key in ("prompt", "phrases", "boxes", "strength", "noise_level"):
        if key in request:
            assert settings[key] == request[key]
    carried = json.loads(image.info["settings"])  # the PNG carries the same settings
    assert carried["seed"] == settings["seed"] and carried["task"] == task


@pytest.mark.parametrize("task", TASKS)
def test_same_seed_same_pixels_and_settings_change_them(client, pictures, task):
    request = request_for(task, pictures)
    first, _ = call(client, task, **request)
    again, _ = call(client, task, **request)
    assert np.array_equal(pixels(first), pixels(again))
    for change in ({"scheduler": "DDIM"}, {"steps": STEPS + 1}, {"guidance": 11.0},
                   {"seed": 8}):
        other, settings = call(client, task, **{**request, **change})
        key, value = next(iter(change.items()))
        assert settings[key] == value
        assert not np.array_equal(pixels(first), pixels(other)), f"{change} changed nothing"


def test_place_objects_over_http(client):
    job = client.submit(prompt="a red circle in the top left", steps=4, seed=3,
                        place_objects=True, api_name="/text_to_image")
    _, settings = job.result()
    assert settings["place_objects"] is True and settings["placed"][0]["cell"] == "top left"
    stages = [update for picture, update in job.outputs() if picture is None and "stage" in update]
    assert stages and all(u["stage"] == "placing objects" and u["total"] == 10 for u in stages)
    _, settings = call(client, "layout_to_image", prompt="a blue square", phrases=["blue square"],
                       boxes=[[0.6, 0.6, 0.95, 0.95]], steps=4, seed=3, place_objects=True)
    assert settings["placed"] == [{"words": "blue square", "box": [0.6, 0.6, 0.95, 0.95]}]


def test_regional_prompts_and_colour_hints_over_http(client):
    _, settings = call(client, "layout_to_image", prompt="a red circle and a blue square",
                       phrases=["red circle", "blue square"],
                       boxes=[[0.05, 0.3, 0.45, 0.7], [0.55, 0.3, 0.95, 0.7]], steps=4, seed=3,
                       regional_prompts=True, colour_hints=True)
    assert settings["regional_prompts"] is True and settings["colour_hints"] is True
    assert settings["grounding"] == 1.0  # the starter layout model's default


def test_grounding_over_http(client):
    _, settings = call(client, "layout_to_image", prompt="a red circle", phrases=["red circle"],
                       boxes=[[0.05, 0.3, 0.45, 0.7]], steps=2, seed=3, grounding=0.25)
    assert settings["grounding"] == 0.25


def test_colour_hints_and_regional_prompts_for_text_to_image_over_http(client):
    _, settings = call(client, "text_to_image", prompt="a red circle in the top left", steps=2,
                       seed=3, colour_hints=True, regional_prompts=True)
    assert settings["colour_hints"] is True and settings["regional_prompts"] is True
    assert settings["warnings"] == []


def test_compose_objects_over_http(client):
    prompt = "a red circle in the top left and a blue square in the bottom right"
    image, settings = call(client, "text_to_image", prompt=prompt, steps=2, seed=3,
                           compose_objects=True)
    assert settings["compose_objects"] is True
    assert [p["cell"] for p in settings["composed"]] == ["top left", "bottom right"]
    assert image.size == (64, 64)


def test_focus_on_the_mask_over_http(client, pictures):
    """The mask is the bottom right quarter: of a prompt placing two objects, the model
    reads only the one placed there; with the focus off, the prompt as written."""
    prompt = "a red circle in the top left and a green triangle in the bottom right"
    request = dict(request_for("inpaint", pictures), prompt=prompt, steps=2)
    _, settings = call(client, "inpaint", **request)
    assert settings["focus_on_mask"] is True
    assert settings["focused_prompt"] == "a green triangle in the bottom right"
    assert any("placed where the mask is" in w for w in settings["warnings"])
    _, settings = call(client, "inpaint", **request, focus_on_mask=False)
    assert settings["focus_on_mask"] is False and "focused_prompt" not in settings
    assert settings["prompt"] == prompt


def test_random_seed_is_reported(client):
    _, settings = call(client, "text_to_image", prompt="a blue square", steps=1, seed=-1)
    assert 0 <= settings["seed"] < 2**32


@pytest.mark.parametrize("task, change, message", [
    ("text_to_image", {"steps": 0}, "steps must be between 1 and 150"),
    ("text_to_image", {"steps": 10_000}, "steps must be between 1 and 150"),
    ("text_to_image", {"scheduler": "nope"}, "unknown scheduler 'nope'"),
    ("text_to_image", {"model": "no-such-model"}, "no-such-model"),
    ("layout_to_image", {"boxes": [[0.5, 0.1, 0.2, 0.4], [0.55, 0.5, 0.9, 0.85]]}, "x0"),
    ("layout_to_image", {"grounding": 1.5}, "share of the steps the boxes steer"),
    ("inpaint", {"mask": "small_mask.png"}, "size"),
    ("inpaint", {"image": None}, "image"),
    ("upscale", {"image": "not_a_picture.png"}, "not a picture"),
])
def test_bad_input_gets_a_clear_message(client, pictures, task, change, message):
    request = request_for(task, pictures)
    for key, value in change.items():
        request[key] = handle_file(str(pictures / value)) if str(value).endswith(".png") else value
    with pytest.raises(AppError) as error:
        client.predict(api_name=f"/{task}", **request)
    assert message.lower() in str(error.value).lower()
    assert "Traceback" not in str(error.value)
    image, _ = call(client, "text_to_image", prompt="a red circle", steps=1, seed=1)
    assert image.size == (64, 64), "the server stopped serving after a bad request"


def test_server_paths_are_refused(server):
    """A FileData payload naming a server file instead of an upload is refused."""
    _, url = server
    payload = {"data": [{"path": __file__, "meta": {"_type": "gradio.FileData"}}, "", "",
                        "starter", None, 1, 7.5, 20, 1]}
    event = httpx.post(f"{url}gradio_api/call/upscale", json=payload).json()["event_id"]
    answer = httpx.get(f"{url}gradio_api/call/upscale/{event}", timeout=60).text
    assert "event: error" in answer and "import" not in answer


def test_client_example_runs_against_the_app(server, tmp_path):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "examples" / "client.py"
    spec = importlib.util.spec_from_file_location("example_client", path)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    results = example.main(["--url", server[1], "--steps", "2", "--out", str(tmp_path)])
    assert sorted(results) == sorted(TASKS)
    assert Image.open(tmp_path / "upscale.png").size == (256, 256)


def test_a_request_without_steps_takes_the_models_default(client, pictures):
    request = request_for("upscale", pictures)
    del request["steps"]
    image, settings = call(client, "upscale", **request)
    assert settings["steps"] == Registry(device="cpu").defaults("starter", "upscale")["steps"] == 4
    assert image.size == EXPECTED_SIZE["upscale"]
