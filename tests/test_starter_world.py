"""The Shapes world: renderer, caption grammar and tokenizer (see STARTER_WORLD.md)."""
import math
import random

import numpy as np
import pytest
from PIL import Image

from playground.starter.captions import caption, parse, vocabulary
from playground.starter.models import build_tokenizer
from playground.starter.world import (CELLS, COLOURS, PALETTE, SHAPES, SIZES, Obj, Scene, cell_of,
                                      random_scene, render)


def signed_distance(obj: Obj, x, y, px: int):
    """Signed distance (pixels, negative inside) from pixel centres (x, y) to the shape's outline."""
    x0, y0, x1, y1 = (v * px for v in obj.box)
    if obj.shape == "square":
        return np.maximum.reduce([x0 - x, x - x1, y0 - y, y - y1])
    if obj.shape == "circle":
        r = min(x1 - x0, y1 - y0) / 2
        return np.hypot(x - (x0 + x1) / 2, y - (y0 + y1) / 2) - r
    # upright triangle: apex top-centre, base at the bottom; outward normals of its three sides
    apex, left, right = ((x0 + x1) / 2, y0), (x0, y1), (x1, y1)
    dists = [y - y1]
    for (ax, ay), (bx, by), sign in ((apex, left, 1), (right, apex, 1)):
        nx, ny = by - ay, -(bx - ax)
        norm = math.hypot(nx, ny)
        dists.append(-((x - ax) * nx + (y - ay) * ny) / norm)
    return np.maximum.reduce(dists)


def pixel_centres(px: int):
    ys, xs = np.mgrid[0:px, 0:px] + 0.5
    return xs, ys


def single_object_scenes(n: int, seed: int = 0):
    rng = random.Random(seed)
    return [random_scene(rng, n_objects=1) for _ in range(n)]


@pytest.mark.parametrize("px", [64, 100, 256])
def test_exact_palette_inside_and_outside_antialiasing_only_at_edges(px):
    xs, ys = pixel_centres(px)
    edge = 1.5 * px / 64 if px > 64 else 1.5  # tolerance: supersampling offsets are a fraction of a pixel
    for scene in single_object_scenes(60, seed=px):
        obj = scene.objects[0]
        img = np.asarray(render(scene, px)).astype(int)
        d = signed_distance(obj, xs, ys, px)
        inside, outside = d < -edge, d > edge
        assert inside.sum() > 0
        assert (img[inside] == PALETTE[obj.colour]).all(), f"{obj} interior is not exactly {obj.colour}"
        assert (img[outside] == PALETTE[scene.background]).all(), f"{obj} exterior is not the background"
        mixed = ~((img == PALETTE[obj.colour]).all(-1) | (img == PALETTE[scene.background]).all(-1))
        assert (np.abs(d[mixed]) <= edge).all(), "anti-aliased pixels away from the outline"


def object_pixels(scene: Scene, px: int = 64):
    img = np.asarray(render(scene, px)).astype(int)
    return (np.abs(img - PALETTE[scene.background]).sum(-1) > 0)


def test_triangle_is_upright_apex_top_base_bottom():
    scene = Scene("white", [Obj("black", "triangle", (0.2, 0.2, 0.8, 0.8))])
    mask = object_pixels(scene)
    rows = np.nonzero(mask.any(1))[0]
    widths = mask[rows].sum(1)
    assert widths[0] <= 3 and widths[-1] >= 36, "narrow apex on top, full-width base at the bottom"
    assert (np.diff(widths) >= -1).all(), "the triangle widens downwards"
    cols = np.nonzero(mask[rows[0]])[0]
    assert abs(cols.mean() - 31.5) <= 1.5, "apex at the top centre"


def test_circle_is_inscribed_in_its_box():
    scene = Scene("white", [Obj("red", "circle", (0.25, 0.25, 0.75, 0.75))])
    mask = object_pixels(scene)
    ys, xs = np.nonzero(mask)
    assert (xs.min(), ys.min(), xs.max(), ys.max()) == (16, 16, 47, 47), "touches all four sides of its box"
    assert not mask[16, 16] and not mask[47, 47] and not mask[16, 47] and not mask[47, 16], "box corners stay empty"
    green = np.asarray(render(scene, 64))[..., 1].astype(float)  # white 245 -> red 40: coverage
    coverage = (245 - green) / (245 - 40)
    assert abs(coverage.sum() - math.pi * 16 ** 2) < 0.02 * math.pi * 16 ** 2, "area of the inscribed disc"


def test_rendered_extent_matches_box():
    for scene in single_object_scenes(100, seed=1):
        obj = scene.objects[0]
        ys, xs = np.nonzero(object_pixels(scene))
        found = np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
        assert np.abs(found - np.array(obj.box) * 64).max() <= 1.0, obj


def test_random_scenes_keep_the_worlds_rules():
    rng = random.Random(2)
    for _ in range(500):
        scene = random_scene(rng)
        assert 1 <= len(scene.objects) <= 3 and scene.background in COLOURS
        assert len({o.cell for o in scene.objects}) == len(scene.objects), "one object per cell"
        for o in scene.objects:
            assert o.colour != scene.background and o.shape in SHAPES
            assert all(0 <= v <= 1 for v in o.box) and o.box[0] < o.box[2] and o.box[1] < o.box[3]
            assert o.cell == cell_of(*o.centre) and o.cell in CELLS
            lo, hi = SIZES[o.size]
            side = max(o.box[2] - o.box[0], o.box[3] - o.box[1]) * 64
            assert lo - 1e-6 <= side <= hi + 1e-6, (o.size, side)


def test_cells_follow_the_grid():
    assert cell_of(0.1, 0.1) == "top left" and cell_of(0.5, 0.5) == "centre"
    assert cell_of(0.9, 0.5) == "right" and cell_of(0.5, 0.99) == "bottom" and cell_of(1.0, 1.0) == "bottom right"


def test_any_resolution_agrees_with_64px():
    rng = random.Random(3)
    for _ in range(20):
        scene = random_scene(rng)
        small, big = render(scene, 64), render(scene, 256)
        assert small.size == (64, 64) and big.size == (256, 256) and render(scene, 37).size == (37, 37)
        down = np.asarray(big.resize((64, 64), Image.BOX)).astype(int)
        small = np.asarray(small).astype(int)
        differ = np.abs(down - small).max(-1) > 0
        assert differ.mean() < 0.06, "only edge pixels may differ"
        edges = near_an_edge(small) | near_an_edge(down)
        assert (differ <= edges).all(), "a 256 px render differs from the 64 px one away from edges"


def near_an_edge(img: np.ndarray) -> np.ndarray:
    """Pixels whose 3 x 3 neighbourhood is not one colour."""
    pad = np.pad(img, ((1, 1), (1, 1), (0, 0)), mode="edge")
    h, w = img.shape[:2]
    shifted = [pad[1 + dy:1 + dy + h, 1 + dx:1 + dx + w] for dy in (-1, 0, 1) for dx in (-1, 0, 1)]
    return np.any([(s != img).any(-1) for s in shifted], axis=0)


# ---------------------------------------------------------------- grammar

def assert_parses_back(scene: Scene, text: str):
    got = parse(text)
    assert len(got["objects"]) == len(scene.objects), text
    for asked, obj in zip(got["objects"], scene.objects):
        for key in ("size", "colour", "shape", "cell"):
            assert asked[key] in (None, getattr(obj, key)), (text, key)
    assert got["background"] in (None, scene.background), text
    if got["relation"]:
        (ax, ay), (bx, by) = scene.objects[0].centre, scene.objects[1].centre
        assert {"above": ay < by, "below": ay > by, "to the left of": ax < bx,
                "to the right of": ax > bx}[got["relation"]], text


def test_every_caption_parses_back_to_its_objects():
    rng = random.Random(4)
    for _ in range(2000):
        scene = random_scene(rng)
        assert_parses_back(scene, caption(scene, rng))


def test_full_captions_state_every_attribute():
    rng = random.Random(5)
    for _ in range(500):
        scene = random_scene(rng)
        text = caption(scene, rng, drop=0.0)
        got = parse(text)
        assert_parses_back(scene, text)
        for asked in got["objects"]:
            assert asked["size"] and asked["colour"] and asked["shape"], text
            assert asked["cell"] or got["relation"], text
        if scene.background != "white":
            assert got["background"] == scene.background, text


def test_left_out_attributes_parse_as_none():
    rng = random.Random(6)
    for _ in range(200):
        scene = random_scene(rng)
        for asked in parse(caption(scene, rng, drop=1.0))["objects"]:
            assert asked["size"] is None and asked["colour"] is None and asked["cell"] is None
            assert asked["shape"] is not None


def test_articles_follow_english_an_orange_object_and_background():
    rng = random.Random(7)
    orange = Obj("orange", "circle", (0.35, 0.35, 0.7, 0.7))
    red = Obj("red", "square", (0.05, 0.05, 0.25, 0.25))
    assert caption(Scene("white", [orange]), rng, drop=0.0).startswith("a medium orange")
    bare = caption(Scene("white", [orange]), random.Random(1), drop=1.0)
    assert bare.startswith(("a circle", "a disc")), bare
    texts = [caption(Scene("blue", [orange, red]), rng) for _ in range(300)]
    with_an = [t for t in texts if "an orange circle" in t or "an orange disc" in t]
    assert with_an and not any(" a orange" in t or t.startswith("a orange") for t in texts)
    for text in with_an:
        assert parse(text)["objects"][0]["colour"] == "orange", text


def test_parse_reads_synonyms():
    got = parse("a big red disc in the middle on a blue background")
    assert got == {"objects": [{"size": "large", "colour": "red", "shape": "circle", "cell": "centre"}],
                   "background": "blue", "relation": None}


# ---------------------------------------------------------------- tokenizer

@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer()


def test_every_vocabulary_word_is_one_known_token(tokenizer):
    for word in vocabulary():
        pieces = tokenizer.tokenize(word)
        assert pieces == [word], (word, pieces)
        assert tokenizer.convert_tokens_to_ids(word) != tokenizer.unk_token_id


def test_unknown_words_become_unk(tokenizer):
    assert tokenizer.tokenize("a red zebra") == ["a", "red", "[UNK]"]
    assert tokenizer.tokenize("reddish") == ["[UNK]"], "no sub-word pieces"


@pytest.mark.parametrize("text", ["", "   ", "🦄 RED Circle!!", "über naïve", "x" * 5000, "a " * 500, "\n\t"])
def test_tokenizer_never_crashes(tokenizer, text):
    ids = tokenizer(text, padding="max_length", max_length=77, truncation=True).input_ids
    assert len(ids) == 77 and all(0 <= i < len(tokenizer) for i in ids)


def test_captions_tokenize_without_unknown_words(tokenizer):
    rng = random.Random(7)
    for _ in range(300):
        ids = tokenizer(caption(random_scene(rng), rng)).input_ids
        assert tokenizer.unk_token_id not in ids
