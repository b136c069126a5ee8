"""Where do the text-to-image and inpainting models read an object's look from: its words, or the tail?

The starter text encoder is causal: the caption's [SEP] and the pads after it read every
word, so for two objects they hold both looks mixed. This probe runs the evaluation's
held-out prompts and seeds with the same weights and changes only the text encoder's
outputs from [SEP] on:

- stock: as the pipeline makes them;
- empty tail: those of the empty caption at the same positions (they read no word);
- quiet tail: those of the same encoder with [SEP] and [PAD] embedded 1000 long
  (`train text2img --quiet-tail 1000`), which say the same for every caption.

A model that reads its looks from the words keeps its figures under the last two.

    python -m playground.starter.probe_tail [--weights W] [--single 100] [--two 50] [--threads 1]
    python -m playground.starter.probe_tail --task inpaint [--cases 40] [--threads 1]

Prints, for each setting and as the evaluation scores them, text-to-image's one-object
figures (colour, shape, cell, background, size) and two-object prompts fully right, or
inpainting's share right inside the mask with the cases' whole-picture captions (all, one
object, 2-3 objects).
"""
from __future__ import annotations

import argparse
import copy
import time

import torch

from .attention_loss import from_sep_on
from .train import quieten_tail, tokens

SETTINGS = ("stock", "empty tail", "quiet tail")
QUIET = 1000.0


def encoded(te, tok, text: str) -> tuple[torch.Tensor, torch.Tensor]:
    ids = tokens(tok, [text], "cpu")
    with torch.no_grad():
        return te(ids)[0], ids


def quiet_encoder(pipe):
    """A copy of the pipeline's text encoder with [SEP] and [PAD] embedded QUIET long."""
    te = copy.deepcopy(pipe.text_encoder)
    quieten_tail(te, pipe.tokenizer, QUIET)
    return te


def conditioner(pipe, setting: str):
    """prompt -> (prompt embeddings, negative prompt embeddings) for `setting`; the negative
    (the empty caption) is encoded once."""
    te = quiet_encoder(pipe) if setting == "quiet tail" else pipe.text_encoder
    empty, _ = encoded(te, pipe.tokenizer, "")

    def condition(prompt: str) -> tuple[torch.Tensor, torch.Tensor]:
        cond, ids = encoded(te, pipe.tokenizer, prompt)
        if setting == "empty tail":
            cond = torch.where(from_sep_on(ids, pipe.tokenizer.sep_token_id), empty, cond)
        return cond, empty

    return condition


def drawn(pipe, condition, prompt: str, seed: int, guidance: float, **task_inputs):
    from . import evaluate as ev

    cond, negative = condition(prompt)
    return pipe(prompt_embeds=cond, negative_prompt_embeds=negative, height=ev.BASE, width=ev.BASE,
                num_inference_steps=ev.STEPS, guidance_scale=guidance, generator=ev.generator(seed),
                **task_inputs).images[0]


def text2img_figures(pipe, judge, setting: str, guidance: float, n_single: int, n_two: int) -> dict:
    from . import evaluate as ev

    singles, twos = ev.text_cases("single", n_single, 1), ev.text_cases("two", n_two, 2)
    condition = conditioner(pipe, setting)
    images = [drawn(pipe, condition, case.prompt, case.seed, guidance) for case in singles + twos]
    readings = judge.read_many(images)
    single = [ev.score_single(c, r) for c, r in zip(singles, readings)]
    out = {k: f"{ev.mean(s[k] for s in single):.3f}" for k in ("colour", "shape", "cell", "background", "size")}
    out["two objects right"] = f"{sum(ev.score_two(c, r) for c, r in zip(twos, readings[len(singles):]))} of {len(twos)}"
    return out


def inpaint_figures(pipe, judge, setting: str, guidance: float, n: int) -> dict:
    """The evaluation's inpainting cases with their whole-picture captions."""
    from . import evaluate as ev

    cases = ev.inpaint_cases(n)
    condition = conditioner(pipe, setting)
    pictures = []
    for case in cases:
        original, mask = ev.render(case.extra["before"]), case.extra["mask"]
        img = drawn(pipe, condition, case.prompt, case.seed, guidance, image=original, mask_image=mask)
        pictures.append(ev.blend(img, original, mask))
    scores, _ = ev.right_in_mask(judge, cases, pictures)
    crowded = [len(c.scene.objects) > 1 for c in cases]
    share = lambda among: ev.mean(s["all stated"] for s, many in zip(scores, crowded) if among in (None, many))
    return {"right inside mask": f"{share(None):.3f}", "captions of one object": f"{share(False):.3f}",
            "captions of 2-3 objects": f"{share(True):.3f}"}


def main(argv=None):
    from . import evaluate as ev
    from .judge import Judge

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", choices=("text2img", "inpaint"), default="text2img")
    parser.add_argument("--weights", default=ev.WEIGHTS)
    parser.add_argument("--single", type=int, default=100, help="text2img: one-object prompts")
    parser.add_argument("--two", type=int, default=50, help="text2img: two-object prompts")
    parser.add_argument("--cases", type=int, default=40, help="inpaint: cases")
    parser.add_argument("--settings", default=",".join(SETTINGS),
                        help="comma-separated subset of " + ",".join(SETTINGS))
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    settings = [s.strip() for s in args.settings.split(",")]
    if not set(settings) <= set(SETTINGS):
        parser.error("--settings takes a comma-separated subset of " + ",".join(SETTINGS))
    torch.set_num_threads(args.threads)
    pipe, judge = ev.load_pipeline(args.task, args.weights), Judge.load()
    guidance = ev.default_guidance(args.task)
    if args.task == "text2img":
        figures, pictures = lambda s: text2img_figures(pipe, judge, s, guidance, args.single, args.two), args.single + args.two
    else:
        figures, pictures = lambda s: inpaint_figures(pipe, judge, s, guidance, args.cases), args.cases
    for setting in settings:
        start = time.time()
        got = figures(setting)
        print(f"{setting}: " + ", ".join(f"{k} {v}" for k, v in got.items())
              + f" ({(time.time() - start) / max(1, pictures):.2f} s per picture)", flush=True)


if __name__ == "__main__":
    main()
