"""Measure the shipped starter pipelines on a fixed held-out set (see STARTER_WORLD.md).

    python -m playground.starter.evaluate           # full set, writes MODEL_CARD.md and card/
    python -m playground.starter.evaluate --quick   # a few prompts (~1 minute), prints only
    python -m playground.starter.evaluate --tasks inpaint --guidance 3   # one task, one setting
    python -m playground.starter.evaluate --tasks layout --grounding 0.3 # boxes steer 30% of steps
    python -m playground.starter.evaluate --tasks inpaint --scheduler Euler  # another sampler
    python -m playground.starter.evaluate --tasks upscale --steps 3      # another step count
    python -m playground.starter.evaluate --tasks inpaint --cases 120    # a larger set
    python -m playground.starter.evaluate --tasks upscale --seed-offset 2000000  # a fresh set

Everything is plain diffusers: each pipeline loads from its folder under weights/ with
`from_pretrained`, runs 20 steps with its default scheduler (for one step, with the
playground's one-step "trailing" timestep spacing) at the guidance the playground
uses for the starter models by default (`registry.STARTER_OPTIONS`; layout with its boxes
steering the share of the steps the playground's default grounding says), and the judge
reads the pictures. Prompts come from the world's caption grammar, so the scene is the ground truth.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import re
import time
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw

from ..registry import STARTER_OPTIONS
from ..tasks.mask_focus import focus_on_mask
from . import judge as judge_mod
from .captions import caption, layout_phrase, parse
from .judge import Judge, iou
from .world import BASE, CELLS, COLOURS, SHAPES, SIZES, Obj, Scene, cell_bounds, random_scene, render

HERE = os.path.dirname(__file__)
WEIGHTS = os.path.join(HERE, "weights")
CARD = os.path.join(HERE, "MODEL_CARD.md")
CARD_DIR = os.path.join(HERE, "card")
TARGET_STEPS = 20  # the setting the quality targets are measured at
STEPS = TARGET_STEPS
# the share of the steps the layout model's boxes steer: the playground's default for it
TARGET_GROUNDING = STARTER_OPTIONS["grounding"]
GLIGEN_BETA = TARGET_GROUNDING
SETS = {  # name: (seed of the held-out scenes, full size, quick size)
    "single": (7_100_001, 100, 6), "two": (7_200_001, 50, 3), "layout": (7_300_001, 40, 3),
    "inpaint": (7_400_001, 40, 3), "upscale": (7_500_001, 12, 1), "vae": (7_600_001, 100, 4),
}


# ---------------------------------------------------------------- loading

def load_pipeline(task: str, weights: str = WEIGHTS):
    import diffusers

    diffusers.utils.logging.disable_progress_bar()
    folder = os.path.join(weights, task)
    with open(os.path.join(folder, "model_index.json")) as f:
        cls = getattr(diffusers, json.load(f)["_class_name"])
    pipe = cls.from_pretrained(folder, torch_dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def parameter_counts(pipe) -> dict:
    return {name: sum(p.numel() for p in getattr(pipe, name).parameters())
            for name in ("unet", "text_encoder", "vae")}


def training_steps(weights: str = WEIGHTS) -> dict:
    path = os.path.join(weights, "training.json")
    if not os.path.exists(path):
        return {}
    with open(path) as f:
        return json.load(f)


# ---------------------------------------------------------------- held-out sets

@dataclass
class Case:
    scene: Scene            # the picture wanted
    prompt: str
    seed: int
    extra: dict = field(default_factory=dict)


def text_cases(name: str, n: int, n_objects: int) -> list[Case]:
    rng = random.Random(SETS[name][0])
    cases = []
    for i in range(n):
        scene = random_scene(rng, n_objects=n_objects)
        while len(scene.objects) != n_objects:  # random_scene gives up on crowded draws
            scene = random_scene(rng, n_objects=n_objects)
        cases.append(Case(scene, caption(scene, rng, drop=0.0), seed=i))
    return cases


def layout_cases(n: int) -> list[Case]:
    rng = random.Random(SETS["layout"][0])
    cases = []
    for i in range(n):
        scene = random_scene(rng)
        phrases = [layout_phrase(o, rng) for o in scene.objects]
        cases.append(Case(scene, caption(scene, rng, drop=0.0), seed=i,
                          extra={"phrases": phrases, "boxes": [list(o.box) for o in scene.objects]}))
    return cases


def _new_object(rng: random.Random, scene: Scene, cell: str, old: Obj | None) -> Obj:
    """An object for `cell`: a different colour (and random shape) in `old`'s box, or a new box."""
    colours = [c for c in COLOURS if c != scene.background and (old is None or c != old.colour)]
    if old is not None:
        return Obj(rng.choice(colours), rng.choice(SHAPES), old.box)
    x0, y0, x1, y1 = cell_bounds(cell)
    side = rng.randint(*SIZES[rng.choice(["small", "medium"])]) / BASE
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    return Obj(rng.choice(colours), rng.choice(SHAPES), (cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2))


def mask_for(box, pad: float = 0.06, size: int = BASE) -> Image.Image:
    """White (repaint) rectangle around `box`, padded."""
    m = Image.new("L", (size, size), 0)
    x0, y0, x1, y1 = (max(0.0, box[0] - pad), max(0.0, box[1] - pad), min(1.0, box[2] + pad), min(1.0, box[3] + pad))
    ImageDraw.Draw(m).rectangle([round(x0 * size), round(y0 * size), round(x1 * size) - 1, round(y1 * size) - 1],
                                fill=255)
    return m


def inpaint_cases(n: int) -> list[Case]:
    """Half replace an object (new colour and shape, same box); half add one in an empty cell."""
    rng = random.Random(SETS["inpaint"][0])
    cases = []
    for i in range(n):
        before = random_scene(rng, n_objects=rng.choice([1, 2]))
        empty = [c for c in CELLS if all(o.cell != c for o in before.objects)]
        if i % 2 == 0:
            k = rng.randrange(len(before.objects))
            new = _new_object(rng, before, before.objects[k].cell, before.objects[k])
            after = Scene(before.background, before.objects[:k] + [new] + before.objects[k + 1:])
        else:
            new = _new_object(rng, before, rng.choice(empty), None)
            after = Scene(before.background, before.objects + [new])
        cases.append(Case(after, caption(after, rng, drop=0.0), seed=i,
                          extra={"before": before, "target": new, "mask": mask_for(new.box),
                                 "alone": prompt_of_the_new_object(after.background, new, i)}))
    return cases


def prompt_of_the_new_object(background: str, new: Obj, i: int) -> str:
    """What a person prompting an inpainter writes: only what goes in the mask (drawn from its
    own generator, so the cases' captions stay as they were)."""
    return caption(Scene(background, [new]), random.Random(f"alone {SETS['inpaint'][0]} {i}"), drop=0.0)


def upscale_cases(n: int) -> list[Case]:
    rng = random.Random(SETS["upscale"][0])
    cases = []
    for i in range(n):
        scene = random_scene(rng)
        cases.append(Case(scene, caption(scene, rng, drop=0.0), seed=i))
    return cases


# ---------------------------------------------------------------- scoring

def main_object(reading: dict) -> dict | None:
    return max(reading["objects"], key=lambda o: o["score"], default=None)


def score_single(case: Case, reading: dict) -> dict:
    truth, got = case.scene.objects[0], main_object(reading)
    right = {key: got is not None and got[key] == getattr(truth, key) for key in ("colour", "shape", "size", "cell")}
    right["background"] = reading["background"] == case.scene.background
    right["one object"] = len(reading["objects"]) == 1
    return right


def _relation_holds(relation: str | None, a: dict, b: dict) -> bool:
    if relation is None:
        return True
    (ax, ay), (bx, by) = [((o["box"][0] + o["box"][2]) / 2, (o["box"][1] + o["box"][3]) / 2) for o in (a, b)]
    return {"above": ay < by, "below": ay > by, "to the left of": ax < bx, "to the right of": ax > bx}[relation]


def _matches(asked: dict, got: dict) -> bool:
    return all(asked[k] is None or asked[k] == got[k] for k in ("colour", "shape", "size", "cell"))


def score_two(case: Case, reading: dict) -> bool:
    """Exactly two objects, each with every attribute the prompt states, relation and background right."""
    asked, found = parse(case.prompt), reading["objects"]
    if len(found) != 2 or reading["background"] != case.scene.background:
        return False
    a, b = asked["objects"]
    return any(_matches(a, x) and _matches(b, y) and _relation_holds(asked["relation"], x, y)
               for x, y in (found, found[::-1]))


def best_match(box, reading: dict) -> tuple[dict | None, float]:
    scored = [(o, iou(box, o["box"])) for o in reading["objects"]]
    return max(scored, key=lambda s: s[1], default=(None, 0.0))


def score_object_in_box(obj: Obj, stated: dict, reading: dict) -> dict:
    got, overlap = best_match(obj.box, reading)
    ok = {key: got is not None and overlap > 0 and got[key] == getattr(obj, key) for key in ("colour", "shape", "size")}
    ok["all stated"] = all(ok[k] for k in ("colour", "shape", "size") if stated.get(k) is not None)
    ok["iou"] = overlap
    return ok


def blend(result: Image.Image, original: Image.Image, mask: Image.Image) -> Image.Image:
    m = np.asarray(mask, dtype=np.float32)[..., None] / 255.0
    out = np.asarray(result, dtype=np.float32) * m + np.asarray(original, dtype=np.float32) * (1 - m)
    return Image.fromarray(np.round(out).astype(np.uint8))


def largest_change_outside(a: Image.Image, b: Image.Image, mask: Image.Image) -> float:
    outside = np.asarray(mask) == 0
    diff = np.abs(np.asarray(a, dtype=np.int16) - np.asarray(b, dtype=np.int16)).max(axis=-1)
    return float(diff[outside].max()) if outside.any() else 0.0


def psnr(a: Image.Image, b: Image.Image) -> float:
    mse = np.mean((np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)) ** 2)
    return float(10 * np.log10(255 ** 2 / max(mse, 1e-10)))


def ssim(a: Image.Image, b: Image.Image) -> float:
    """Mean SSIM over RGB channels, 11-tap Gaussian window (sigma 1.5), as in Wang et al. 2004."""
    x, y = [torch.from_numpy(np.asarray(im, dtype=np.float64)).permute(2, 0, 1)[:, None] for im in (a, b)]
    r = torch.arange(11, dtype=torch.float64) - 5
    g = torch.exp(-r ** 2 / (2 * 1.5 ** 2))
    g = g / g.sum()
    win = (g[:, None] * g[None, :])[None, None]

    def filt(t):
        return F.conv2d(t, win)

    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    mx, my = filt(x), filt(y)
    vx, vy, cxy = filt(x * x) - mx ** 2, filt(y * y) - my ** 2, filt(x * y) - mx * my
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx ** 2 + my ** 2 + c1) * (vx + vy + c2))
    return float(s.mean())


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Frechet distance between Gaussians fitted to two feature sets (as in FID)."""
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    w, v = np.linalg.eigh(cov_a)
    root_a = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    cross = np.sqrt(np.clip(np.linalg.eigvalsh(root_a @ cov_b @ root_a), 0, None)).sum()
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a) + np.trace(cov_b) - 2 * cross)


# ---------------------------------------------------------------- running the pipelines

def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def mean(xs) -> float:
    xs = list(xs)
    return float(np.mean(xs)) if xs else float("nan")


def default_guidance(task: str) -> float:
    """The guidance the playground starts the starter model of `task` with."""
    from .. import registry
    task_key = {folder: key for key, folder in registry.STARTER_FOLDERS.items()}[task]
    return registry.default_guidance(registry.starter_entry(), task_key)


def eval_text2img(pipe, judge: Judge, n_single: int, n_two: int, guidance: float) -> tuple[dict, dict]:
    singles, twos = text_cases("single", n_single, 1), text_cases("two", n_two, 2)
    images, seconds = [], []
    for case in singles + twos:
        img, s = timed(lambda: pipe(case.prompt, height=BASE, width=BASE, num_inference_steps=STEPS,
                                    guidance_scale=guidance, generator=generator(case.seed)).images[0])
        images.append(img)
        seconds.append(s)
    readings = judge.read_many(images)
    single_scores = [score_single(c, r) for c, r in zip(singles, readings)]
    two_scores = [score_two(c, r) for c, r in zip(twos, readings[len(singles):])]
    renders = [render(c.scene) for c in singles + twos]
    floor_rng = random.Random(1)
    fresh = [render(random_scene(floor_rng, n_objects=len(c.scene.objects))) for c in singles + twos]
    feats = judge.features(images)
    figures = {f"single: {k}": mean(s[k] for s in single_scores)
               for k in ("colour", "shape", "cell", "background", "size", "one object")}
    figures["two objects: all right"] = mean(two_scores)
    figures["Frechet distance (judge features)"] = frechet_distance(feats, judge.features(renders))
    figures["Frechet distance, render vs render"] = frechet_distance(judge.features(fresh), judge.features(renders))
    figures["seconds / picture"] = mean(seconds)
    figures.update(eval_placed(pipe, judge, singles, twos, guidance))
    figures.update(eval_placed(pipe, judge, singles, twos, guidance, hints=True))
    figures.update(eval_placed(pipe, judge, singles, twos, guidance, hints=True, regional=True))
    examples = {"single": list(zip(singles, images, readings, [all(s[k] for k in ("colour", "shape", "cell", "background"))
                                                               for s in single_scores])),
                "two": list(zip(twos, images[len(singles):], readings[len(singles):], two_scores))}
    return figures, examples


def eval_placed(pipe, judge: Judge, singles, twos, guidance: float, hints: bool = False,
                regional: bool = False) -> dict:
    """The same cases with the playground's place_objects (tasks/placement.py): the
    starting noise steered toward the cells the captions name; with `hints`, also the
    colour hints (tasks/colour_hint.py) painted into those cells; with `regional`, also
    regional prompts (tasks/regions.py: each cell reads only its object's words)."""
    from ..tasks import text_to_image

    images, seconds = [], []
    stock_unet = pipe.unet
    for case in singles + twos:
        def placed():  # the calls the Text to image tab makes with these options
            g = generator(case.seed)
            latents = text_to_image.starting_latents(pipe, case.prompt, [g], 1, BASE, BASE, STEPS, None,
                                                     True, hints, [], [])
            pipe.unet = text_to_image.sampling_unet(pipe, case.prompt, BASE, BASE, guidance, regional, [])
            with torch.no_grad():
                return pipe(case.prompt, height=BASE, width=BASE, num_inference_steps=STEPS, latents=latents,
                            guidance_scale=guidance, generator=g).images[0]
        try:
            img, s = timed(placed)
        finally:
            pipe.unet = stock_unet
        images.append(img)
        seconds.append(s)
    readings = judge.read_many(images)
    single_scores = [score_single(c, r) for c, r in zip(singles, readings)]
    single, two, speed = PLACED_TEXT_ROWS[hints, regional]
    figures = {f"single, {single}: {k}": mean(s[k] for s in single_scores)
               for k in ("colour", "shape", "cell", "background", "size")}
    figures[f"two objects, {two}: all right"] = mean(
        score_two(c, r) for c, r in zip(twos, readings[len(singles):]))
    figures[f"seconds / picture, {speed}"] = mean(seconds)
    return figures


def eval_composed(inpainter, judge: Judge, n_two: int, guidance: float) -> dict:
    """The two-object cases with the playground's compose_objects (tasks/compose.py): a
    canvas of the named background, then the inpainting model paints each placed object
    into a square at its place, reading only that object's words."""
    from ..tasks import compose

    twos = text_cases("two", n_two, 2)
    images, seconds = [], []
    for case in twos:
        img, s = timed(lambda: compose.compose(
            inpainter, case.prompt, None, compose.placed_objects(case.prompt), generator(case.seed),
            BASE, BASE, STEPS, guidance, None))
        images.append(img)
        seconds.append(s)
    readings = judge.read_many(images)
    return {"two objects, composed object by object: all right": mean(
                score_two(c, r) for c, r in zip(twos, readings)),
            "seconds / picture, composed (two objects)": mean(seconds)}


# (hints, regional): how the single-object, two-object and speed rows name the setting
PLACED_TEXT_ROWS = {(False, False): ("objects placed", "placed", "placed"),
                    (True, False): ("placed + colour hints", "placed + colour hints", "placed + hints"),
                    (True, True): ("placed + hints + regional",) * 3}


def eval_layout(pipe, judge: Judge, n: int, guidance: float) -> tuple[dict, list]:
    cases = layout_cases(n)
    figures, examples = layout_figures(pipe, judge, cases, guidance, place_objects=False)
    for options, rows in LAYOUT_OPTION_ROWS:
        got, _ = layout_figures(pipe, judge, cases, guidance, **options)
        figures.update({rows[k]: v for k, v in got.items()})
    return figures, examples


def layout_rows(setting: str, short: str) -> dict:
    """How the Figures name a layout figure measured with the playground's options on."""
    return {"mean box IoU": f"{setting}: mean box IoU",
            "attributes right (all stated)": f"{setting}: attributes right (all stated)",
            "colour": f"{setting}: colour", "shape": f"{setting}: shape",
            "seconds / picture": f"seconds / picture, {short}"}


# (options, row names): each setting measured beside the stock pipeline
LAYOUT_OPTION_ROWS = (
    ({"place_objects": True}, layout_rows("objects placed", "placed")),
    ({"place_objects": True, "regional": True},
     layout_rows("placed + regional prompts", "placed + regional")),
    ({"place_objects": True, "regional": True, "hints": True},
     layout_rows("placed + regional + colour hints", "placed + regional + hints")),
    ({"place_objects": False, "regional": True, "hints": True},  # the Layout tab's start
     layout_rows("regional + colour hints", "regional + hints")),
)


def layout_figures(pipe, judge: Judge, cases, guidance: float, place_objects: bool,
                   regional: bool = False, hints: bool = False, unet_for=None) -> tuple[dict, list]:
    """The layout cases as the stock pipeline makes them, or with the playground's
    place_objects (the starting noise steered toward the boxes, tasks/placement.py) and
    regional prompts (each box reads only its phrase, tasks/regions.py) and colour hints
    (each phrase's colour in the starting noise of its box, tasks/colour_hint.py), or with
    the UNet `unet_for(case)` gives (probe_layout_words)."""
    from ..tasks import colour_hint, placement, regions

    images, seconds = [], []
    stock_unet = pipe.unet
    for case in cases:
        def made():
            g = generator(case.seed)
            latents = (placement.boxed_latents(pipe, case.extra["phrases"], case.extra["boxes"], [g],
                                               BASE, BASE, STEPS) if place_objects else None)
            if hints:
                latents = colour_hint.hinted_latents(pipe, latents, case.extra["phrases"],
                                                     case.extra["boxes"], [g], BASE, BASE)
            if regional:
                pipe.unet = regions.regional_unet(pipe, case.prompt, case.extra["phrases"],
                                                  case.extra["boxes"], BASE, BASE, guidance > 1)
            if unet_for is not None:
                pipe.unet = unet_for(case)
            with torch.no_grad():
                return pipe(case.prompt, height=BASE, width=BASE, num_inference_steps=STEPS, latents=latents,
                            gligen_phrases=case.extra["phrases"], gligen_boxes=case.extra["boxes"],
                            gligen_scheduled_sampling_beta=GLIGEN_BETA,
                            guidance_scale=guidance, generator=g).images[0]
        try:
            img, s = timed(made)
        finally:
            pipe.unet = stock_unet
        images.append(img)
        seconds.append(s)
    readings = judge.read_many(images)
    scores, ok_per_case = [], []
    for case, reading in zip(cases, readings):
        per = [score_object_in_box(o, parse("a " + p)["objects"][0], reading)
               for o, p in zip(case.scene.objects, case.extra["phrases"])]
        scores += per
        ok_per_case.append(all(s["all stated"] and s["iou"] >= 0.5 for s in per))
    figures = {"mean box IoU": mean(s["iou"] for s in scores),
               "attributes right (all stated)": mean(s["all stated"] for s in scores),
               "colour": mean(s["colour"] for s in scores), "shape": mean(s["shape"] for s in scores),
               "seconds / picture": mean(seconds)}
    return figures, list(zip(cases, images, readings, ok_per_case))


def inpainted(pipe, case: Case, prompt: str, guidance: float) -> tuple[Image.Image, Image.Image, float]:
    """The model's picture, the picture blended back outside the mask, and the seconds taken."""
    original, mask = render(case.extra["before"]), case.extra["mask"]
    img, s = timed(lambda: pipe(prompt, image=original, mask_image=mask, height=BASE, width=BASE,
                                num_inference_steps=STEPS, guidance_scale=guidance,
                                generator=generator(case.seed)).images[0])
    return img, blend(img, original, mask), s


def focused_caption(case: Case, caption_text: str | None = None) -> str:
    """The case's caption (or `caption_text`) as the Inpainting tab reads it by default
    (focus_on_mask)."""
    mask = np.asarray(case.extra["mask"].convert("L"), dtype=np.float32) / 255.0
    return focus_on_mask(caption_text or case.prompt, render(case.extra["before"]), mask).prompt


def caption_without_positions(case: Case) -> str:
    """The case's whole picture named without cells, as people often prompt: "a large red
    circle and a small blue square on a white background"."""
    named = [f"a {o.size} {o.colour} {o.shape}" for o in case.scene.objects]
    listed = ", ".join(named[:-1]) + " and " + named[-1] if len(named) > 1 else named[0]
    return f"{listed} on a {case.scene.background} background"


def right_in_mask(judge: Judge, cases: list[Case], pictures: list[Image.Image]) -> tuple[list[dict], list]:
    readings = judge.read_many(pictures)
    return [score_object_in_box(c.extra["target"], {"colour": 1, "shape": 1, "size": 1}, r)
            for c, r in zip(cases, readings)], readings


def unplaced_figures(pipe, judge: Judge, cases: list[Case], guidance: float) -> dict:
    """The 2-3 object cases with their objects named without positions, as written and as
    focus_on_mask reads them (by the colour missing outside the mask)."""
    written = [caption_without_positions(c) for c in cases]
    focused = [focused_caption(c, w) for c, w in zip(cases, written)]
    as_written = [inpainted(pipe, c, w, guidance)[1] for c, w in zip(cases, written)]
    scores, _ = right_in_mask(judge, cases, as_written)
    focused_scores, _ = right_in_mask(judge, cases, [
        picture if f == w else inpainted(pipe, c, f, guidance)[1]
        for c, w, f, picture in zip(cases, written, focused, as_written)])
    return {"right inside mask, 2-3 objects named without positions":
                mean(s["all stated"] for s in scores),
            "right inside mask, 2-3 objects named without positions, focused on the mask":
                mean(s["all stated"] for s in focused_scores)}


def eval_inpaint(pipe, judge: Judge, n: int, guidance: float) -> tuple[dict, list]:
    cases, results, seconds, raw_change, blended_change = inpaint_cases(n), [], [], [], []
    for case in cases:
        img, out, s = inpainted(pipe, case, case.prompt, guidance)
        original, mask = render(case.extra["before"]), case.extra["mask"]
        raw_change.append(largest_change_outside(img, original, mask))
        blended_change.append(largest_change_outside(out, original, mask))
        results.append(out)
        seconds.append(s)
    scores, readings = right_in_mask(judge, cases, results)
    alone_scores, _ = right_in_mask(judge, cases, [inpainted(pipe, c, c.extra["alone"], guidance)[1] for c in cases])
    focused = [focused_caption(c) for c in cases]  # where the focus keeps the caption, so is the picture
    focused_scores, _ = right_in_mask(judge, cases, [
        picture if prompt == c.prompt else inpainted(pipe, c, prompt, guidance)[1]
        for c, prompt, picture in zip(cases, focused, results)])
    crowded = [len(c.scene.objects) > 1 for c in cases]
    unplaced = unplaced_figures(pipe, judge, [c for c, many in zip(cases, crowded) if many], guidance)

    def share(scored, among=None):
        return mean(s["all stated"] for s, many in zip(scored, crowded) if among is None or many == among)

    figures = {"attributes right inside mask": share(scores),
               "right inside mask, captions of one object": share(scores, among=False),
               "right inside mask, captions of 2-3 objects": share(scores, among=True),
               "colour inside mask": mean(s["colour"] for s in scores),
               "shape inside mask": mean(s["shape"] for s in scores),
               "right inside mask, caption focused on the mask": share(focused_scores),
               "right inside mask, caption focused on the mask, 2-3 objects": share(focused_scores, among=True),
               "right inside mask, prompt of the new object alone": share(alone_scores),
               "right inside mask, prompt of the new object alone, 2-3 objects": share(alone_scores, among=True),
               **unplaced,
               "largest change outside mask, raw (/255)": max(raw_change),
               "largest change outside mask, blended (/255)": max(blended_change),
               "seconds / picture": mean(seconds)}
    return figures, list(zip(cases, results, readings, [s["all stated"] for s in scores]))


@torch.no_grad()
def vae_round_trip(vae, img: Image.Image) -> Image.Image:
    """`img` encoded and decoded by `vae`: about the best a latent upscaler decoding with this
    VAE can do (its latents are the encoder's own reading of the true picture)."""
    from ..teach.forward import unit_range_to_picture
    from .train import to_tensor

    x = to_tensor(img)[None].to(vae.device, vae.dtype)
    return unit_range_to_picture(vae.decode(vae.encode(x).latent_dist.mode()).sample[0].float().cpu())


def eval_vae(vae, n: int) -> dict:
    """The shared VAE's round trip of held-out 64 px renders: the best any 64 px model's
    pictures can be, and how far the decoder shifts colours on average."""
    rng = random.Random(SETS["vae"][0])
    truths = [render(random_scene(rng), BASE) for _ in range(n)]
    trips = [vae_round_trip(vae, t) for t in truths]
    signed = [np.mean(np.asarray(r, np.float32) - np.asarray(t, np.float32)) for r, t in zip(trips, truths)]
    return {"PSNR round trip, 64 px renders (dB)": mean(psnr(r, t) for r, t in zip(trips, truths)),
            "mean signed change (/255)": mean(signed)}


def eval_upscale(pipe, n: int, guidance: float) -> tuple[dict, list]:
    cases, rows, seconds = upscale_cases(n), [], []
    for case in cases:
        truth = render(case.scene, 4 * BASE)
        low = truth.resize((BASE, BASE), Image.BOX)  # the world's super-resolution pairs
        img, s = timed(lambda: pipe(case.prompt, image=low, num_inference_steps=STEPS,
                                    guidance_scale=guidance, generator=generator(case.seed)).images[0])
        bicubic = low.resize(truth.size, Image.BICUBIC)
        rows.append({"low": low, "truth": truth, "model": img, "bicubic": bicubic,
                     "psnr": psnr(img, truth), "ssim": ssim(img, truth),
                     "psnr_vae": psnr(vae_round_trip(pipe.vae, truth), truth),
                     "psnr_bicubic": psnr(bicubic, truth), "ssim_bicubic": ssim(bicubic, truth)})
        seconds.append(s)
    figures = {"PSNR model (dB)": mean(r["psnr"] for r in rows), "PSNR bicubic (dB)": mean(r["psnr_bicubic"] for r in rows),
               "PSNR above bicubic (dB)": mean(r["psnr"] - r["psnr_bicubic"] for r in rows),
               "PSNR VAE round trip, the model's ceiling (dB)": mean(r["psnr_vae"] for r in rows),
               "SSIM model": mean(r["ssim"] for r in rows), "SSIM bicubic": mean(r["ssim_bicubic"] for r in rows),
               "seconds / picture": mean(seconds)}
    return figures, list(zip(cases, rows))


# ---------------------------------------------------------------- example pictures

def zoom(img: Image.Image, size: int = 128) -> Image.Image:
    return img.resize((size, size), Image.NEAREST)


def with_boxes(img: Image.Image, boxes, size: int = 128) -> Image.Image:
    out = zoom(img, size)
    d = ImageDraw.Draw(out)
    for b in boxes:
        d.rectangle([b[0] * size, b[1] * size, b[2] * size - 1, b[3] * size - 1], outline=(255, 0, 255))
    return out


def side_by_side(images) -> Image.Image:
    w, h = sum(i.width for i in images), max(i.height for i in images)
    out, x = Image.new("RGB", (w + 4 * (len(images) - 1), h), (128, 128, 128)), 0
    for i in images:
        out.paste(i, (x, 0))
        x += i.width + 4
    return out


def describe(reading: dict) -> str:
    objs = ", ".join(f"{o['size']} {o['colour']} {o['shape']} ({o['cell']})" for o in reading["objects"]) or "no object"
    return f"{objs} on {reading['background']}"


def pick(rows, ok_index: int, n_ok: int = 2, n_bad: int = 2):
    ok = [r for r in rows if r[ok_index]][:n_ok]
    bad = [r for r in rows if not r[ok_index]][:n_bad]
    return [(r, True) for r in ok] + [(r, False) for r in bad]


def save_examples(examples: dict, folder: str) -> list[tuple[str, str, str]]:
    """PNG files under `folder` for the tasks evaluated; returns (file, task, caption) rows for the card."""
    os.makedirs(folder, exist_ok=True)
    for old in os.listdir(folder):
        if old.endswith(".png"):
            os.remove(os.path.join(folder, old))
    rows = []

    def put(name, img, task, text):
        img.save(os.path.join(folder, name), optimize=True)
        rows.append((name, task, text))

    for kind in ("single", "two"):
        for i, ((case, img, reading, ok), _) in enumerate(pick(examples.get(kind, []), 3)):
            put(f"text2img_{kind}_{'ok' if ok else 'fail'}_{i}.png", zoom(img), "text-to-image",
                f"{'right' if ok else 'wrong'}: \"{case.prompt}\" -> judge reads: {describe(reading)}")
    for i, ((case, img, reading, ok), _) in enumerate(pick(examples.get("layout", []), 3)):
        put(f"layout_{'ok' if ok else 'fail'}_{i}.png", with_boxes(img, case.extra["boxes"]), "layout-to-image",
            f"{'right' if ok else 'wrong'}: {list(zip(case.extra['phrases'], [[round(v, 2) for v in b] for b in case.extra['boxes']]))}"
            f" -> judge reads: {describe(reading)}")
    for i, ((case, img, reading, ok), _) in enumerate(pick(examples.get("inpaint", []), 3)):
        pic = side_by_side([zoom(render(case.extra["before"])), zoom(case.extra["mask"].convert("RGB")), zoom(img)])
        put(f"inpaint_{'ok' if ok else 'fail'}_{i}.png", pic, "inpainting",
            f"{'right' if ok else 'wrong'}: before | mask | after, \"{case.prompt}\" -> judge reads: {describe(reading)}")
    for i, (case, row) in enumerate(examples.get("upscale", [])[:2]):
        pic = side_by_side([row["low"].resize((256, 256), Image.NEAREST), row["bicubic"], row["model"], row["truth"]])
        put(f"upscale_{i}.png", pic, "super-resolution",
            f"64 px input | bicubic ({row['psnr_bicubic']:.1f} dB) | model ({row['psnr']:.1f} dB) | true 256 px render")
    return rows


# ---------------------------------------------------------------- the card

def fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 10 else f"{value:.1f}"
    return str(value)


def figures_table(results: dict) -> str:
    lines = ["| task | figure | value |", "|---|---|---|"]
    for task, figures in results.items():
        for name, value in figures.items():
            lines.append(f"| {task} | {name} | {fmt(value)} |")
    return "\n".join(lines)


def replace_section(text: str, name: str, body: str) -> str:
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    pattern = re.compile(re.escape(start) + ".*?" + re.escape(end), re.S)
    if not pattern.search(text):
        raise ValueError(f"the card has no {start} ... {end} section")
    return pattern.sub(lambda _: f"{start}\n{body}\n{end}", text)


def architecture_table(pipes: dict, weights: str = WEIGHTS) -> str:
    lines = ["| pipeline | class | UNet | text encoder | VAE |", "|---|---|---|---|---|"]
    for task, pipe in pipes.items():
        c = parameter_counts(pipe)
        lines.append(f"| {task} | `{type(pipe).__name__}` | {c['unet'] / 1e6:.2f} M | "
                     f"{c['text_encoder'] / 1e6:.2f} M | {c['vae'] / 1e6:.2f} M |")
    return "\n".join(lines) + "\n\n" + sharing_note(weights)


WHY_OWN = {("upscale", "vae"): "an exactly rescaled copy (see Training)",
           ("text2img", "text_encoder"): "trained on with the cell-word attention loss, which "
                                         "the other models were not trained against (Training, \"Cell words\")"}


def sharing_note(weights: str = WEIGHTS) -> str:
    """Which pipelines share which stored part, read from where the folders' links lead."""
    users = {}
    for task in ("text2img", "layout", "inpaint", "upscale"):
        for part in ("tokenizer", "text_encoder", "vae"):
            real = os.path.realpath(os.path.join(weights, task, part))
            users.setdefault((part, real), []).append(task)
    said = []
    for (part, real), tasks in users.items():
        name, home = {"vae": "VAE"}.get(part, part.replace("_", " ")), os.path.basename(os.path.dirname(real))
        if len(tasks) == 1:
            why = WHY_OWN.get((tasks[0], part))
            said.append(f"{tasks[0]} has a {name} of its own" + (f", {why}" if why else ""))
        elif part == "text_encoder" and "text2img" in tasks and len(tasks) < 4:
            said.append(f"text2img's own {name}, trained on with the cell-word attention loss "
                        f"(Training, \"Cell words\"), is shared by {', '.join(tasks)} "
                        f"(stored once, in `weights/{home}/`)")
        else:
            who = "all four" if len(tasks) == 4 else ", ".join(tasks)
            said.append(f"the {name} is shared by {who} (stored once, in `weights/{home}/`)")
    return "Stored parts: " + "; ".join(said) + "."


def training_table(weights: str = WEIGHTS) -> str:
    info = training_steps(weights)
    if not info:
        return "No `weights/training.json` found."
    lines = ["| model | steps | minutes (logged) |", "|---|---|---|"]
    times = info.get("minutes", info.get("times", {}))
    for task, steps in info.get("steps", {}).items():
        lines.append(f"| {task} | {steps} | {times.get(task, 'n/a')} |")
    return "\n".join(lines)


TARGETS = [  # (task, figure, comparison, target) from the starter-models issue
    ("text-to-image", "single: colour", ">=", 0.95), ("text-to-image", "single: shape", ">=", 0.90),
    ("text-to-image", "single: cell", ">=", 0.85), ("text-to-image", "single: background", ">=", 0.95),
    ("text-to-image", "two objects: all right", ">=", 0.60),
    ("layout-to-image", "mean box IoU", ">=", 0.6), ("layout-to-image", "attributes right (all stated)", ">=", 0.85),
    ("inpainting", "attributes right inside mask", ">=", 0.85),
    ("inpainting", "largest change outside mask, blended (/255)", "<=", 2),
    ("super-resolution", "PSNR model - bicubic (dB)", ">=", 2.0),
    ("text-to-image", "seconds / picture", "<", 1.0),
    # the same targets met by the playground's options around the models (not the models alone)
    ("text-to-image", "two objects, composed object by object: all right", ">=", 0.60),
    ("layout-to-image", "regional + colour hints: attributes right (all stated)", ">=", 0.85),
    ("inpainting", "right inside mask, caption focused on the mask", ">=", 0.85),
]


def targets_table(results: dict) -> str:
    lines = ["| task | figure | target | measured | met |", "|---|---|---|---|---|"]
    for task, name, op, target in TARGETS:
        figures = dict(results.get(task, {}))
        if task == "super-resolution" and task in results:
            figures[name] = figures["PSNR model (dB)"] - figures["PSNR bicubic (dB)"]
        value = figures.get(name, float("nan"))
        met = {">=": value >= target, "<=": value <= target, "<": value < target}[op]
        lines.append(f"| {task} | {name} | {op} {target} | {fmt(value)} | {'yes' if met else '**no**'} |")
    return "\n".join(lines)


def examples_section(rows) -> str:
    lines = []
    for name, task, text in rows:
        lines.append(f"- {task}: {text}\n\n  ![{task}](card/{name})")
    return "\n".join(lines)


def write_card(path: str, results: dict, pipes: dict, example_rows, meta: str, weights: str = WEIGHTS):
    """Fill the card's generated sections; a card that does not exist yet starts as a copy of ours."""
    with open(path if os.path.exists(path) else CARD) as f:
        text = f.read()
    text = replace_section(text, "figures", meta + "\n\n" + figures_table(results))
    text = replace_section(text, "targets", targets_table(results))
    text = replace_section(text, "architecture", architecture_table(pipes, weights))
    text = replace_section(text, "training", training_table(weights))
    text = replace_section(text, "examples", examples_section(example_rows))
    with open(path, "w") as f:
        f.write(text)


# ---------------------------------------------------------------- main

TASKS = ("text2img", "layout", "inpaint", "upscale")
SECTIONS = {"text2img": "text-to-image", "layout": "layout-to-image", "inpaint": "inpainting",
            "upscale": "super-resolution"}


def evaluate(quick: bool, weights: str = WEIGHTS, tasks=TASKS,
             guidance: float | None = None, scheduler: str | None = None) -> tuple[dict, dict, dict]:
    """Figures, example rows and pipelines of `tasks`; guidance None = each task's default,
    scheduler None = each model's own (else a name from the playground's catalogue)."""
    size = {name: spec[2 if quick else 1] for name, spec in SETS.items()}
    judge = Judge.load()
    pipes = {task: load_pipeline(task, weights) for task in tasks}
    # another sampler, or one step as the playground runs it (schedulers.one_step_spacing)
    if STEPS == 1 or scheduler:
        from ..schedulers import build as build_scheduler

        for pipe in pipes.values():
            pipe.scheduler = build_scheduler(scheduler, pipe.scheduler, 0, STEPS)
    scale = {task: default_guidance(task) if guidance is None else guidance for task in tasks}
    results, examples = {}, {}
    results["judge (renders)"] = {k: v for k, v in judge_mod.accuracy(judge, n=300 if quick else 2000).items()
                                  if k in ("renders", "background", "colour", "shape", "size", "object found (cell)", "box IoU")}
    if "text2img" in tasks:
        results["VAE (renders)"] = eval_vae(pipes["text2img"].vae, size["vae"])
        results["text-to-image"], ex = eval_text2img(pipes["text2img"], judge, size["single"], size["two"],
                                                     scale["text2img"])
        inpainter = pipes.get("inpaint") or load_pipeline("inpaint", weights)
        results["text-to-image"].update(eval_composed(inpainter, judge, size["two"], scale["text2img"]))
        examples.update(ex)
    if "layout" in tasks:
        results["layout-to-image"], examples["layout"] = eval_layout(pipes["layout"], judge, size["layout"],
                                                                     scale["layout"])
    if "inpaint" in tasks:
        results["inpainting"], examples["inpaint"] = eval_inpaint(pipes["inpaint"], judge, size["inpaint"],
                                                                  scale["inpaint"])
    if "upscale" in tasks:
        results["super-resolution"], examples["upscale"] = eval_upscale(pipes["upscale"], size["upscale"],
                                                                        scale["upscale"])
    for task in tasks:
        results[SECTIONS[task]]["guidance"] = scale[task]
    if "layout" in tasks:
        results["layout-to-image"]["grounding (share of the steps the boxes steer)"] = GLIGEN_BETA
    return results, examples, pipes


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="a few prompts; prints only unless --card is given")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--weights", default=WEIGHTS)
    ap.add_argument("--card", default=None,
                    help=f"card to update (default: {CARD} unless --quick, --tasks, --guidance, --scheduler, "
                         "--steps, --grounding, --cases or --seed-offset)")
    ap.add_argument("--tasks", default=",".join(TASKS), help="comma-separated subset of " + ",".join(TASKS))
    ap.add_argument("--guidance", type=float, default=None,
                    help="one guidance scale for every task (default: each task's playground default)")
    ap.add_argument("--scheduler", default=None,
                    help="one scheduler of the playground's catalogue for every task, e.g. Euler "
                         "(default: each model's own; any other prints only)")
    ap.add_argument("--steps", type=int, default=TARGET_STEPS,
                    help=f"denoising steps for every task (default {TARGET_STEPS}, the targets' "
                         "setting; any other count prints only)")
    ap.add_argument("--grounding", type=float, default=TARGET_GROUNDING,
                    help=f"share of the steps the layout boxes steer (default {TARGET_GROUNDING}, the "
                         "starter layout model's playground default; any other prints only)")
    ap.add_argument("--cases", type=int, default=None,
                    help="cases in every held-out set (default: each set's own size; the first "
                         "cases are the usual ones; prints only)")
    ap.add_argument("--seed-offset", type=int, default=0,
                    help="added to every held-out set's seed: a fresh set drawn the same way "
                         "(prints only)")
    args = ap.parse_args(argv)
    if args.steps < 1:
        ap.error(f"--steps takes a whole number of at least 1; got {args.steps}")
    from ..schedulers import all_names
    if args.scheduler is not None and args.scheduler not in all_names():
        ap.error(f"--scheduler takes one of: {', '.join(all_names())}; got {args.scheduler!r}")
    if not 0 <= args.grounding <= 1:
        ap.error(f"--grounding takes a share of the steps from 0 to 1; got {args.grounding}")
    if args.cases is not None and args.cases < 1:
        ap.error(f"--cases takes a whole number of at least 1; got {args.cases}")
    tasks = tuple(t.strip() for t in args.tasks.split(",") if t.strip())
    if not tasks or any(t not in TASKS for t in tasks):
        ap.error(f"--tasks takes a comma-separated subset of {','.join(TASKS)}; got {args.tasks!r}")
    torch.set_num_threads(args.threads)
    global STEPS, GLIGEN_BETA
    STEPS, usual_sets = args.steps, dict(SETS)
    GLIGEN_BETA = args.grounding
    SETS.update({name: (seed + args.seed_offset, args.cases or full, args.cases or quick)
                 for name, (seed, full, quick) in usual_sets.items()})
    try:
        run(args, tasks)
    finally:
        STEPS, GLIGEN_BETA = TARGET_STEPS, TARGET_GROUNDING
        SETS.clear()
        SETS.update(usual_sets)


def run(args, tasks: tuple[str, ...]) -> None:
    t0 = time.time()
    results, examples, pipes = evaluate(args.quick, args.weights, tasks, args.guidance, args.scheduler)
    print(figures_table(results))
    if tasks == TASKS:
        print(targets_table(results))
    partial = (args.quick or tasks != TASKS or args.guidance is not None or args.scheduler
               or STEPS != TARGET_STEPS
               or GLIGEN_BETA != TARGET_GROUNDING or args.cases is not None
               or args.seed_offset != 0)
    card = args.card or (None if partial else CARD)
    if card:
        rows = save_examples(examples, os.path.join(os.path.dirname(os.path.abspath(card)), "card"))
        sizes = ", ".join(f"{k} {v[2 if args.quick else 1]}" for k, v in SETS.items())
        meta = (f"Measured by `python -m playground.starter.evaluate{' --quick' if args.quick else ''}` on "
                f"{time.strftime('%Y-%m-%d')}: {STEPS} steps, default scheduler, each model's default guidance "
                f"(the `guidance` rows), fp32 on CPU with "
                f"{args.threads} torch thread(s) (load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores); "
                f"held-out set sizes: {sizes}; "
                f"text2img steps trained: {training_steps(args.weights).get('steps', {}).get('text2img', 'n/a')}.")
        write_card(card, results, pipes, rows, meta, args.weights)
        print("updated", card)
    sets = ", ".join(f"{k} seed {v[0]}" for k, v in SETS.items())
    print(f"({STEPS} steps; {time.time() - t0:.0f} s; held-out sets: {sets})")


if __name__ == "__main__":
    main()
