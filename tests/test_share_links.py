"""Permalinks at the function level, the history zip and its manifest, and the demo
flags: --auth refuses a wrong password over HTTP, --share says clearly when no link
could be made."""
from __future__ import annotations

import io
import json
import zipfile

import httpx
import numpy as np
import pytest
from PIL import Image

import app as app_module
from app_server import free_port
from playground import BadInput
from playground.run import versions
from playground.share import link_query, read_png, read_query, restorable
from playground.share.history import Histories, History
from playground.ui import build_app
from playground.ui.serving import launch_options, login_checker

LINKED = {
    "text_to_image": {"prompt": "a red circle & a 'blue' square?", "negative_prompt": "green",
                      "model": "starter", "scheduler": "Euler a", "steps": 12,
                      "guidance": 4.5, "seed": 4294967295, "width": 64, "height": 48,
                      "num_images": 3, "colour_hints": True, "regional_prompts": True,
                      "compose_objects": True},
    "layout_to_image": {"prompt": "two shapes", "negative_prompt": "", "model": "starter",
                        "scheduler": "DDIM", "steps": 20, "guidance": 7.0, "seed": 0,
                        "phrases": ["a red circle", "odd: phrase, with commas"],
                        "boxes": [[0.1, 0.125, 0.45, 0.5], [0.5, 0.0, 1.0, 0.3333]],
                        "grounding": 0.65, "place_objects": True, "regional_prompts": True, "colour_hints": True},
    "inpaint": {"prompt": "a green triangle", "negative_prompt": "", "model": "starter",
                "scheduler": "DPM++ 2M", "steps": 30, "guidance": 1.0, "seed": 5,
                "strength": 0.35, "focus_on_mask": True},
    "upscale": {"prompt": "", "negative_prompt": "noise", "model": "starter",
                "scheduler": "DDIM", "steps": 8, "guidance": 0.0, "seed": 9,
                "noise_level": 120},
}


@pytest.mark.parametrize("task", list(LINKED))
def test_a_permalink_restores_the_same_settings(starter, task):
    query = link_query(task, LINKED[task], revision="", versions=versions())
    assert query.startswith("?tab=")
    record = read_query(query)
    recipe = restorable(record, pg=starter, origin="link")
    assert recipe.task == task
    assert recipe.settings == LINKED[task]
    assert recipe.ignored == [] and recipe.notes == []


def test_a_link_from_other_versions_restores_and_says_pixels_may_differ(starter):
    old = dict(versions(), diffusers="0.30.0")
    record = read_query(link_query("inpaint", LINKED["inpaint"], versions=old))
    recipe = restorable(record, pg=starter, origin="link")
    assert recipe.settings == LINKED["inpaint"]
    assert any("diffusers 0.30.0" in note and "may differ" in note for note in recipe.notes)


def test_a_layout_record_from_before_grounding_restores_the_share_it_was_made_with(starter):
    """Every layout picture was sampled with grounding 0.3 until the setting existed (the
    starter model's default is 1.0 since): its record or link gets 0.3 back, and says so.
    A link written by hand, with no versions, takes the model's default."""
    made = LINKED["layout_to_image"]
    old = {k: v for k, v in made.items() if k != "grounding"}
    record = read_query(link_query("layout", old, versions=versions()))
    recipe = restorable(record, pg=starter, origin="link")
    assert recipe.settings == dict(old, grounding=0.3)
    assert any("before layout recorded grounding" in note for note in recipe.notes)
    by_hand = restorable(read_query("?tab=layout&prompt=two+shapes&seed=3"), pg=starter)
    assert "grounding" not in by_hand.settings and by_hand.notes == []
    bad = restorable(read_query("?tab=layout&grounding=2&torch=2"), pg=starter)
    assert "grounding" not in bad.settings and "0 to 1" in " ".join(bad.ignored)


def test_an_inpainting_record_from_before_the_focus_restores_it_off(starter):
    """Inpainting read every prompt as written until focus_on_mask existed: its record or
    link gets the focus off, and says so; a link written by hand takes the default."""
    old = {k: v for k, v in LINKED["inpaint"].items() if k != "focus_on_mask"}
    recipe = restorable(read_query(link_query("inpaint", old, versions=versions())), pg=starter)
    assert recipe.settings == dict(old, focus_on_mask=False)
    assert any("before inpainting could focus" in note for note in recipe.notes)
    by_hand = restorable(read_query("?tab=inpaint&prompt=a+red+circle&seed=3"), pg=starter)
    assert "focus_on_mask" not in by_hand.settings and by_hand.notes == []


def test_links_that_cannot_be_used_say_why(starter):
    assert read_query("") is None and read_query("?utm=x") is None  # a plain visit
    with pytest.raises(BadInput, match="unknown tab"):
        read_query("?tab=video")
    recipe = restorable(read_query("?tab=t2i&model=sdxl&steps=many&scheduler=Karras+9000"),
                        pg=starter, origin="link")
    ignored = " ".join(recipe.ignored)
    assert "sdxl" in ignored and "steps" in ignored and "Karras 9000" in ignored
    assert recipe.settings == {}


def test_history_zip_holds_every_result_and_a_matching_manifest(starter, tmp_path):
    history = History(tmp_path / "session")
    made = [starter.text_to_image("a red circle", steps=2, seed=1),
            starter.layout_to_image("a blue square", ["a blue square"], [[0.2, 0.2, 0.8, 0.8]],
                                    steps=2, seed=2),
            starter.text_to_image("a green triangle", steps=2, seed=3)]
    for image in made:
        history.add(image)
    assert [item.settings["seed"] for item in history.items()] == [3, 2, 1]  # newest first

    archive = zipfile.ZipFile(io.BytesIO(history.zip_bytes()))
    manifest = json.loads(archive.read("manifest.json"))
    pngs = sorted(name for name in archive.namelist() if name.endswith(".png"))
    assert manifest["count"] == 3 and [r["file"] for r in manifest["results"]] == pngs
    for entry, image in zip(manifest["results"], made):
        png = archive.read(entry["file"])
        assert np.array_equal(np.asarray(Image.open(io.BytesIO(png)).convert("RGB")),
                              np.asarray(image))
        assert read_png(png).settings == restorable(entry["settings"]).settings
        assert entry["task"] == entry["settings"]["task"] == image.info["settings"]["task"]
        assert entry["settings"]["seed"] == image.info["settings"]["seed"]


def test_each_session_has_its_own_bounded_history(starter, tmp_path):
    histories = Histories(str(tmp_path), max_sessions=2)
    image = starter.text_to_image("a red circle", steps=1, seed=1)
    histories.add("alice", [image, image])
    histories.add("bob", image)
    assert len(histories.of("alice").items()) == 2 and len(histories.of("bob").items()) == 1
    alice_folder, bob_folder = histories.of("alice").folder, histories.of("bob").folder
    histories.of("alice")
    histories.add("carol", image)  # bob is now the least recently used: dropped
    assert not bob_folder.exists() and len(list(alice_folder.glob("*.png"))) == 2


# ---------------------------------------------------------------- demo flags over HTTP

@pytest.fixture(scope="module")
def app_with_login(starter):
    app = build_app(starter)
    app.launch(prevent_thread_lock=True, quiet=True,
               **launch_options(app, host="127.0.0.1", port=free_port(),
                                auth=login_checker([("ann", "right-password")])))
    yield app.local_url
    app.close()


def test_auth_refuses_a_wrong_password_over_http(app_with_login):
    with httpx.Client(base_url=app_with_login, timeout=30) as client:
        assert client.get("/config").status_code == 401  # nothing without a login
        wrong = client.post("/login", data={"username": "ann", "password": "wrong-password"})
        assert wrong.status_code == 400 and "Incorrect credentials" in wrong.text
        assert client.get("/config").status_code == 401
        assert client.post("/login", data={"username": "bob", "password": "right-password"}
                           ).status_code == 400
        right = client.post("/login", data={"username": "ann", "password": "right-password"})
        assert right.status_code == 200
        assert client.get("/config").status_code == 200


def test_share_without_network_says_so_and_keeps_serving(monkeypatch, capsys):
    import gradio.networking

    def no_network(**kwargs):
        raise ConnectionError("no route to the share server")

    monkeypatch.setattr(gradio.networking, "setup_tunnel", no_network)  # no network in tests
    served = {}
    real_build = app_module.build_app

    def build_then_stop(pg, **kwargs):
        built = real_build(pg, **kwargs)

        def instead_of_blocking():  # the server is up: check it answers, then stop
            served["status"] = httpx.get(built.local_url, timeout=30).status_code
            built.close()
        built.block_thread = instead_of_blocking
        return built

    monkeypatch.setattr(app_module, "build_app", build_then_stop)
    app_module.main(["--share", "--auth", "ann:pw", "--port", str(free_port())])
    err = capsys.readouterr().err
    assert "no public share link" in err and "still runs at http://127.0.0.1" in err
    assert served["status"] == 200


def test_boxes_restored_onto_the_layout_canvas_read_back_unchanged():
    from playground.ui import layout_to_image, sharing

    boxes = LINKED["layout_to_image"]["boxes"][:1] + [[0.08, 0.5, 0.92, 0.87]]
    phrases = ["a red circle", "a blue square"]
    canvas = layout_to_image.canvas_value(list(zip(phrases, boxes)))
    assert layout_to_image.phrases_and_boxes(canvas) == (phrases, boxes)
    odd = restorable({"task": "layout_to_image", "phrases": ["a"],
                      "boxes": [[0.123456, 0.1, 0.5, 0.5]]})
    assert "grid" in " ".join(sharing.canvas_note(odd))


def test_a_link_from_before_the_options_read_relations_says_pixels_may_differ(starter):
    settings = dict(prompt="a red circle above a blue square", seed=1, place_objects=True,
                    colour_hints=True)
    before = {k: v for k, v in versions().items() if k != "options"}
    old = restorable(read_query(link_query("text_to_image", settings, versions=before)),
                     pg=starter, origin="link")
    assert old.settings["place_objects"] is True and old.settings["colour_hints"] is True
    assert any("revision 1 of place_objects, colour_hints" in note and "may differ" in note
               for note in old.notes), old.notes
    now = restorable(read_query(link_query("text_to_image", settings, versions=versions())),
                     pg=starter, origin="link")
    assert now.notes == []
    plain = restorable(read_query(link_query("text_to_image", dict(prompt="a red circle"),
                                             versions=before)), pg=starter, origin="link")
    assert plain.notes == []
    second = restorable(read_query(link_query("text_to_image", settings,
                                              versions={**before, "options": "2"})),
                        pg=starter, origin="link")
    note = " ".join(second.notes)
    assert "revision 2 of" in note and "small object" in note and "relations" not in note
