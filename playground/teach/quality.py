"""Quality vs cost on the starter models: judge accuracy and the Frechet distance on
judge features, against steps and against seconds per picture, for several schedulers.

Held-out single-object prompts come from the starter evaluation (`starter/evaluate.py`),
so the scene each prompt describes is the ground truth; the judge reads every picture
and the evaluation's scoring says whether colour, shape, cell and background are right.
The Frechet distance compares judge features of the pictures with those of the true
renders, like FID with the judge in place of Inception.

It also finds, in its own measurement, where a lower distance does not mean a better
picture: settings A with a lower Frechet distance than settings B, and a prompt whose
picture under A gets fewer of the asked attributes right than under B.

    python -m playground.teach.quality            # the full run (see docs/quality_vs_cost.md)
    python -m playground.teach.quality --prompts 4 --steps 2,8 --schedulers DDIM,Euler
"""
from __future__ import annotations

import argparse
import itertools
import math
import os
import time
from dataclasses import dataclass, field

from PIL import Image

from ..errors import BadInput
from ..run import RunControl, settings_of
from ..starter import evaluate
from ..starter import judge as judge_mod
from ..starter.world import BASE, render
from . import chart

DEFAULT_SCHEDULERS = ("DDIM", "Euler", "Euler a", "DPM++ 2M")
DEFAULT_STEPS = (2, 4, 8, 16, 32)
DEFAULT_PROMPTS = 8
ATTRIBUTES = ("colour", "shape", "cell", "background")
MAX_PROMPTS = evaluate.SETS["single"][1]
MAX_RUNS = 2000


@dataclass
class QualityPoint:
    scheduler: str
    steps: int
    seconds: float                  # mean seconds per picture
    accuracy: float                 # share of prompts with all of ATTRIBUTES right
    attributes: dict                # per attribute: share right
    frechet: float                  # Frechet distance, judge features, pictures vs renders
    scores: list[int] = field(repr=False)             # per prompt: attributes right, 0..4
    images: list[Image.Image] = field(repr=False)
    readings: list[dict] = field(repr=False)

    @property
    def attribute_accuracy(self) -> float:
        """Share of asked attributes right, over all prompts (the plotted accuracy)."""
        return evaluate.mean(self.attributes.values())


@dataclass
class QualityResult:
    prompts: list[str]
    points: list[QualityPoint]
    judge_accuracy: dict            # the judge's own accuracy on held-out renders
    frechet_floor: float            # renders vs other renders: the distance of "perfect"
    counterexample: dict | None     # see find_counterexample
    plot: Image.Image | None = None
    counterexample_picture: Image.Image | None = None
    settings: dict = field(default_factory=dict)

    def table(self) -> list[dict]:
        return [{"scheduler": p.scheduler, "steps": p.steps, "seconds": round(p.seconds, 3),
                 "accuracy": round(p.accuracy, 3),
                 "attribute_accuracy": round(p.attribute_accuracy, 3),
                 "frechet": round(p.frechet, 3),
                 **{a: round(v, 3) for a, v in p.attributes.items()}} for p in self.points]

    def frame(self):
        import pandas as pd
        return pd.DataFrame(self.table())

    def markdown(self) -> str:
        """The figures as markdown: table, judge accuracy, the counterexample."""
        lines = ["| scheduler | steps | s / picture | all 4 right | attributes right | colour "
                 "| shape | cell | background | Frechet distance |",
                 "|---|---|---|---|---|---|---|---|---|---|"]
        for p in self.points:
            a = p.attributes
            lines.append(f"| {p.scheduler} | {p.steps} | {p.seconds:.3f} | {p.accuracy:.3f} | "
                         f"{p.attribute_accuracy:.3f} | {a['colour']:.2f} | {a['shape']:.2f} | "
                         f"{a['cell']:.2f} | {a['background']:.2f} | {p.frechet:.2f} |")
        j = self.judge_accuracy
        lines += ["", f"Judge's own accuracy on {j['renders']} held-out renders: colour "
                  f"{j['colour']:.3f}, shape {j['shape']:.3f}, object found (cell) "
                  f"{j['object found (cell)']:.3f}, background {j['background']:.3f}. "
                  f"Frechet distance of renders against other renders (the floor): "
                  f"{self.frechet_floor:.2f}.", "",
                  counterexample_text(self.counterexample, self.prompts)]
        return "\n".join(lines)


# ---------------------------------------------------------------- measuring

def quality_vs_cost(pg, *, schedulers=DEFAULT_SCHEDULERS, steps=DEFAULT_STEPS,
                    n_prompts: int = DEFAULT_PROMPTS, guidance: float | None = None,
                    model: str = "starter", judge_renders: int = 300,
                    control: RunControl | None = None) -> QualityResult:
    """Measure every (scheduler, steps) pair on `n_prompts` held-out single-object
    prompts (seed i for prompt i, the same in every pair). The judge reads pictures of
    the Shapes world at 64 x 64, so `model` must be a starter-like model."""
    schedulers, steps = _check(pg, model, schedulers, steps, n_prompts)
    if guidance is None:
        guidance = pg.defaults(model, "text_to_image")["guidance"]
    cases = evaluate.text_cases("single", n_prompts, 1)
    judge = judge_mod.Judge.load()
    renders = [render(c.scene) for c in cases]
    render_features = judge.features(renders)
    done, total = 0, len(schedulers) * sum(steps) * len(cases)
    points = []
    for scheduler, n_steps in itertools.product(schedulers, steps):
        images = []
        for case in cases:
            if control is not None:
                control.raise_if_cancelled()
            images.append(pg.text_to_image(case.prompt, model=model, scheduler=scheduler,
                                           steps=n_steps, guidance=guidance, seed=case.seed,
                                           width=BASE, height=BASE))
            done += n_steps
            if control is not None and control.on_progress is not None:
                control.on_progress(done, total)
        points.append(_point(scheduler, n_steps, cases, images, judge, render_features))
    floor_scenes = evaluate.text_cases("single", 2 * n_prompts, 1)[n_prompts:]
    floor = evaluate.frechet_distance(judge.features([render(c.scene) for c in floor_scenes]),
                                      render_features)
    accuracy = judge_mod.accuracy(judge, n=judge_renders)
    result = QualityResult([c.prompt for c in cases], points, accuracy, floor,
                           find_counterexample(points),
                           settings={"model": model, "schedulers": schedulers, "steps": steps,
                                     "n_prompts": n_prompts, "guidance": guidance})
    result.plot = quality_plot(result)
    result.counterexample_picture = counterexample_picture(result.counterexample, cases)
    return result


def _check(pg, model, schedulers, steps, n_prompts) -> tuple[list, list]:
    from .grid import parse_values

    schedulers = parse_values("scheduler", schedulers)
    allowed = pg.schedulers(model, "text_to_image")
    unknown = [s for s in schedulers if s not in allowed]
    if unknown:
        raise BadInput(f"unknown scheduler(s) {unknown}; choose from: {', '.join(allowed)}")
    steps = sorted(set(parse_values("steps", steps)))
    if isinstance(n_prompts, bool) or not isinstance(n_prompts, int) \
            or not 2 <= n_prompts <= MAX_PROMPTS:
        raise BadInput(f"n_prompts must be a whole number 2..{MAX_PROMPTS} (the Frechet "
                       f"distance needs at least two pictures), got {n_prompts!r}")
    if len(schedulers) * len(steps) * n_prompts > MAX_RUNS:
        raise BadInput(f"at most {MAX_RUNS} pictures per measurement; asked "
                       f"{len(schedulers)} x {len(steps)} x {n_prompts}")
    return schedulers, steps


def _point(scheduler, n_steps, cases, images, judge, render_features) -> QualityPoint:
    readings = judge.read_many(images)
    scores = [evaluate.score_single(c, r) for c, r in zip(cases, readings)]
    counts = [sum(bool(s[a]) for a in ATTRIBUTES) for s in scores]
    return QualityPoint(
        scheduler, n_steps, evaluate.mean(settings_of(i)["seconds"] for i in images),
        evaluate.mean(c == len(ATTRIBUTES) for c in counts),
        {a: evaluate.mean(s[a] for s in scores) for a in ATTRIBUTES},
        evaluate.frechet_distance(judge.features(images), render_features),
        counts, images, readings)


def find_counterexample(points: list[QualityPoint]) -> dict | None:
    """Settings A and B with frechet(A) < frechet(B), and a prompt whose picture under A
    gets fewer of the asked attributes right than under B. Preferred: the largest
    difference in attributes right, then the largest gap in distance. None when the
    measurement holds no such case."""
    best, best_key = None, None
    for a, b in itertools.permutations(points, 2):
        if not a.frechet < b.frechet:
            continue
        worse = [k for k, (sa, sb) in enumerate(zip(a.scores, b.scores)) if sa < sb]
        if not worse:
            continue
        k = max(worse, key=lambda i: b.scores[i] - a.scores[i])
        key = (b.scores[k] - a.scores[k], b.frechet - a.frechet)
        if best_key is None or key > best_key:
            best, best_key = {"lower": a, "higher": b, "prompt_index": k, "prompts": worse,
                              "gap": b.frechet - a.frechet}, key
    return best


def _name(p: QualityPoint) -> str:
    return f"{p.scheduler}, {p.steps} steps"


def counterexample_text(example: dict | None, prompts: list[str] | None = None) -> str:
    if example is None:
        return ("In this measurement a lower Frechet distance always came with pictures at "
                "least as right, prompt by prompt: no counterexample found.")
    a, b, k = example["lower"], example["higher"], example["prompt_index"]
    asked = f' ("{prompts[k]}")' if prompts else ""
    return (f"A lower distance is not always a better picture: **{_name(a)}** has Frechet "
            f"distance {a.frechet:.2f}, lower than **{_name(b)}** ({b.frechet:.2f}), yet for "
            f"prompt {k + 1}{asked} its picture has {a.scores[k]} of {len(ATTRIBUTES)} "
            f"attributes right (judge reads: {evaluate.describe(a.readings[k])}) while "
            f"{_name(b)} has "
            f"{b.scores[k]} right ({evaluate.describe(b.readings[k])}); "
            f"{len(example['prompts'])} of {len(a.scores)} prompts go this way. The distance "
            f"compares the two sets of pictures as a whole, not each picture with its prompt.")


# ---------------------------------------------------------------- pictures

def quality_plot(result: QualityResult) -> Image.Image:
    """Four panels: accuracy and Frechet distance, against steps and against seconds."""
    def series(y_of, x_of):
        out: dict[str, list] = {}
        for p in result.points:
            out.setdefault(p.scheduler, []).append((x_of(p), y_of(p)))
        return out

    def steps_of(p): return float(p.steps)
    def seconds_of(p): return p.seconds
    def accuracy_of(p): return p.attribute_accuracy
    def frechet_of(p): return p.frechet

    n = len(result.prompts)
    return chart.panels([
        chart.line_chart(series(accuracy_of, steps_of), title=f"Judge accuracy ({n} prompts)",
                         x_label="steps (log scale)",
                         y_label="attributes right (colour, shape, cell, bg)",
                         log_x=True),
        chart.line_chart(series(accuracy_of, seconds_of), title="Judge accuracy vs cost",
                         x_label="seconds per picture",
                         y_label="attributes right (colour, shape, cell, bg)"),
        chart.line_chart(series(frechet_of, steps_of), title="Frechet distance (judge features)",
                         x_label="steps (log scale)", y_label="distance (lower = closer)",
                         log_x=True),
        chart.line_chart(series(frechet_of, seconds_of), title="Frechet distance vs cost",
                         x_label="seconds per picture", y_label="distance (lower = closer)"),
    ])


def counterexample_picture(example: dict | None, cases) -> Image.Image | None:
    if example is None:
        return None
    a, b, k = example["lower"], example["higher"], example["prompt_index"]
    n = len(ATTRIBUTES)
    return chart.captioned_row(
        [render(cases[k].scene), a.images[k], b.images[k]],
        [["the true render"],
         [_name(a), f"Frechet {a.frechet:.2f} (lower)", f"judge: {a.scores[k]}/{n} right"],
         [_name(b), f"Frechet {b.frechet:.2f} (higher)", f"judge: {b.scores[k]}/{n} right"]],
        title=f'"{cases[k].prompt}"')


# ---------------------------------------------------------------- the full run

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prompts", type=int, default=24)
    ap.add_argument("--schedulers", default=",".join(DEFAULT_SCHEDULERS))
    ap.add_argument("--steps", default=",".join(map(str, DEFAULT_STEPS)))
    ap.add_argument("--guidance", type=float, default=None, help="default: the model's default guidance")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=None, help="folder for the plot, the counterexample "
                    "picture and figures.md (default: print only)")
    args = ap.parse_args(argv)
    import torch

    from .. import Playground

    torch.set_num_threads(args.threads)
    start = time.time()
    result = quality_vs_cost(Playground(device="cpu"), schedulers=args.schedulers,
                             steps=args.steps, n_prompts=args.prompts, guidance=args.guidance)
    text = result.markdown()
    print(text)
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        result.plot.save(os.path.join(args.out, "quality_vs_cost.png"))
        if result.counterexample_picture is not None:
            result.counterexample_picture.save(os.path.join(args.out, "lower_distance_worse.png"))
        with open(os.path.join(args.out, "figures.md"), "w") as f:
            f.write(text + "\n")
    load = os.getloadavg()[0]
    print(f"({time.time() - start:.0f} s; {args.threads} torch thread(s), load average "
          f"{load:.1f} on {os.cpu_count()} cores)")
    return 0 if all(math.isfinite(p.frechet) for p in result.points) else 1


if __name__ == "__main__":
    raise SystemExit(main())
