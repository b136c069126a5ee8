"""The judge reads renders it has never seen (>= 99% per attribute) and pictures with mild damage."""
import os
import random

import torch

from playground.starter import judge as judge_mod
from playground.starter.judge import accuracy, augment, to_batch
from playground.starter.world import BASE, CELLS, COLOURS, SHAPES, SIZE_NAMES, Obj, Scene, random_scene, render

FRESH_SEED = 31_337  # neither the training seeds nor the eval seed


def test_weights_are_small_safetensors():
    assert os.path.getsize(judge_mod.WEIGHTS) < 2_000_000
    with open(judge_mod.WEIGHTS, "rb") as f:
        assert f.read(1) != b"\x80", "not a pickle"


def test_judge_reads_fresh_renders(judge):
    acc = accuracy(judge, n=200, seed=FRESH_SEED)
    for key in ("background", "cell occupancy", "object found (cell)", "colour", "shape", "size"):
        assert acc[key] >= 0.99, (key, acc)
    assert acc["box IoU"] >= 0.85, acc


def test_reading_format_and_a_known_picture(judge):
    scene = Scene("black", [Obj("yellow", "triangle", (0.05, 0.45, 0.6, 1.0)),
                            Obj("blue", "circle", (0.7, 0.05, 0.9, 0.25))])
    reading = judge.read(render(scene, 256))  # larger pictures are area-downsampled to 64 px
    assert reading["background"] == "black"
    got = {o["cell"]: o for o in reading["objects"]}
    assert set(got) == {"bottom left", "top right"}
    assert (got["bottom left"]["colour"], got["bottom left"]["shape"], got["bottom left"]["size"]) == \
        ("yellow", "triangle", "large")
    assert (got["top right"]["colour"], got["top right"]["shape"], got["top right"]["size"]) == \
        ("blue", "circle", "small")
    for o in reading["objects"]:
        assert o["cell"] in CELLS and o["colour"] in COLOURS and o["shape"] in SHAPES and o["size"] in SIZE_NAMES
        assert len(o["box"]) == 4 and all(0 <= v <= 1 for v in o["box"])


def test_judge_reads_mildly_damaged_pictures(judge):
    """Blur, noise and colour shifts of the kind a generated picture shows."""
    rng = random.Random(FRESH_SEED + 1)
    scenes = [random_scene(rng) for _ in range(100)]
    x = augment(to_batch([render(s, BASE) for s in scenes]), torch.Generator().manual_seed(0))
    readings = judge.read_tensor(x)
    objects = [(o, {f["cell"]: f for f in r["objects"]}.get(o.cell)) for s, r in zip(scenes, readings) for o in s.objects]
    for key, at_least in (("colour", 0.97), ("shape", 0.95), ("size", 0.95)):
        right = sum(got is not None and got[key] == getattr(o, key) for o, got in objects)
        assert right / len(objects) >= at_least, key


def test_an_empty_background_has_no_objects(judge):
    for colour in COLOURS:
        assert judge.read(render(Scene(colour, []), BASE)) == {"background": colour, "objects": []}
