"""Where does the text-to-image model read an object's look from: its words, or the tail?

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

Prints the one-object figures (colour, shape, cell, background, size) and the two-object
prompts fully right, as the evaluation scores them, for each setting.
"""
from __future__ import annotations

import argparse
import copy
import time

import torch

from .train import quieten_tail, tokens

SETTINGS = ("stock", "empty tail", "quiet tail")
QUIET = 1000.0


def encoded(pipe, text: str) -> tuple[torch.Tensor, torch.Tensor]:
    ids = tokens(pipe.tokenizer, [text], "cpu")
    with torch.no_grad():
        return pipe.text_encoder(ids)[0], ids[0]


def quiet_encoder(pipe):
    """A copy of the pipeline's text encoder with [SEP] and [PAD] embedded QUIET long."""
    te = copy.deepcopy(pipe.text_encoder)
    quieten_tail(te, pipe.tokenizer, QUIET)
    return te


def conditions(pipe, prompt: str, setting: str, quiet) -> tuple[torch.Tensor, torch.Tensor]:
    """(prompt embeddings, negative prompt embeddings) for `setting`."""
    if setting == "quiet tail":
        with torch.no_grad():
            both = quiet(tokens(pipe.tokenizer, [prompt, ""], "cpu"))[0]
        return both[:1], both[1:]
    cond, ids = encoded(pipe, prompt)
    empty, _ = encoded(pipe, "")
    if setting == "empty tail":
        sep = int((ids == pipe.tokenizer.sep_token_id).nonzero()[0])
        cond = cond.clone()
        cond[:, sep:] = empty[:, sep:]
    return cond, empty


def figures(pipe, judge, singles, twos, guidance: float, setting: str) -> dict:
    from . import evaluate as ev

    quiet = quiet_encoder(pipe) if setting == "quiet tail" else None
    images = []
    for case in singles + twos:
        cond, negative = conditions(pipe, case.prompt, setting, quiet)
        images.append(pipe(prompt_embeds=cond, negative_prompt_embeds=negative, height=ev.BASE, width=ev.BASE,
                           num_inference_steps=ev.STEPS, guidance_scale=guidance,
                           generator=ev.generator(case.seed)).images[0])
    readings = judge.read_many(images)
    single = [ev.score_single(c, r) for c, r in zip(singles, readings)]
    out = {k: ev.mean(s[k] for s in single) for k in ("colour", "shape", "cell", "background", "size")}
    out["two objects right"] = sum(ev.score_two(c, r) for c, r in zip(twos, readings[len(singles):]))
    return out


def main(argv=None):
    from . import evaluate as ev
    from .judge import Judge

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", default=ev.WEIGHTS)
    parser.add_argument("--single", type=int, default=100)
    parser.add_argument("--two", type=int, default=50)
    parser.add_argument("--settings", default=",".join(SETTINGS),
                        help="comma-separated subset of " + ",".join(SETTINGS))
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    settings = [s.strip() for s in args.settings.split(",")]
    if not set(settings) <= set(SETTINGS):
        parser.error("--settings takes a comma-separated subset of " + ",".join(SETTINGS))
    torch.set_num_threads(args.threads)
    pipe, judge = ev.load_pipeline("text2img", args.weights), Judge.load()
    singles, twos = ev.text_cases("single", args.single, 1), ev.text_cases("two", args.two, 2)
    guidance = ev.default_guidance("text2img")
    for setting in settings:
        start = time.time()
        got = figures(pipe, judge, singles, twos, guidance, setting)
        print(f"{setting}: " + ", ".join(f"{k} {v:.3f}" for k, v in got.items() if k != "two objects right")
              + f"; two objects right {got['two objects right']} of {len(twos)}"
              + f" ({(time.time() - start) / max(1, len(singles) + len(twos)):.2f} s per picture)", flush=True)


if __name__ == "__main__":
    main()
