"""Where does the layout model read each object's look from?

Stock, the starter layout model gets about 73% of phrases fully right; with regional
prompts, where each box reads its own phrase encoded alone (tasks/regions.py), 92%. This
probe takes the held-out layouts of the evaluation and changes only what the picture's
pixels may read in the cross-attention layers, the weights and seeds the same:

- stock: the caption, everywhere;
- no caption: the boxes' phrases through the gated layers only (the prompt left empty);
- object words in their boxes: each object's words of the caption hidden from the pixels
  outside its box (what --attention-loss asks of training);
- boxes read only their object's words: as that, and inside a box also every other token
  hidden but the start token ([SEP] and the pads, which in the causal text encoder read
  every word, included) (what --own-words-loss asks of training);
- regional prompts: each box reads its phrase encoded alone, the rest the caption.

    python -m playground.starter.probe_layout_words [--weights W] [--cases 40] [--threads 1]

Prints mean box IoU and the share of phrases with every stated attribute, colour and shape
right for each setting (the evaluation's judge and scoring).
"""
from __future__ import annotations

import argparse
import dataclasses

import torch

from . import models
from .attention_loss import box_coverage, token_objects

HIDDEN = float("-inf")


class WordMaskedCrossAttention:
    """Cross-attention whose conditional rows may not read some tokens at some pixels:
    `bias(pixels, tokens)` is 0 where a pixel may read a token and -inf where not."""

    def __init__(self, objects: torch.Tensor, boxes: list, guided: bool, own_words_only: bool):
        self.objects, self.boxes, self.guided = objects, boxes, guided
        self.own_words_only = own_words_only
        self._bias: dict[tuple[int, int], torch.Tensor] = {}

    def bias(self, pixels: int, tokens: int) -> torch.Tensor:
        if (pixels, tokens) not in self._bias:
            n = round(pixels ** 0.5)
            bias = torch.zeros(pixels, tokens)
            for j, box in enumerate(self.boxes):
                inside = box_coverage(box, n).flatten() >= 0.5
                words = self.objects[:tokens] == j
                bias[~inside[:, None] & words[None, :]] = HIDDEN
                if self.own_words_only:
                    others = ~words
                    others[0] = False  # the start token stays: every row needs something to read
                    bias[inside[:, None] & others[None, :]] = HIDDEN
            self._bias[(pixels, tokens)] = bias
        return self._bias[(pixels, tokens)]

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None,
                 temb=None, *args, **kwargs):
        batch, pixels, _ = hidden_states.shape
        if attn.norm_cross:
            encoder_hidden_states = attn.norm_encoder_hidden_states(encoder_hidden_states)
        query = attn.head_to_batch_dim(attn.to_q(hidden_states))
        key = attn.head_to_batch_dim(attn.to_k(encoder_hidden_states))
        value = attn.head_to_batch_dim(attn.to_v(encoder_hidden_states))
        bias = self.bias(pixels, key.shape[1]).to(query)
        first = batch // 2 if self.guided else 0  # [negative, conditional]: only the latter
        per_row = torch.stack([torch.zeros_like(bias)] * first + [bias] * (batch - first))
        probs = attn.get_attention_scores(query, key, per_row.repeat_interleave(attn.heads, 0))
        out = attn.batch_to_head_dim(torch.bmm(probs, value))
        return attn.to_out[1](attn.to_out[0](out)) / attn.rescale_output_factor


def word_masked_unet(pipe, caption: str, boxes: list, guided: bool, own_words_only: bool):
    """A copy of `pipe.unet` sharing its weights whose cross-attention hides, per pixel, the
    words of the caption's objects whose boxes do not cover it (and, with `own_words_only`,
    inside a box every token but the start token and its object's words)."""
    from ..teach.attention import unet_sharing_weights

    objects = token_objects(pipe.tokenizer, [caption], models.MAX_TOKENS)[0]
    processor = WordMaskedCrossAttention(objects, boxes, guided, own_words_only)
    unet = unet_sharing_weights(pipe.unet)
    unet.set_attn_processor({name: processor if name.endswith("attn2.processor") else old
                             for name, old in unet.attn_processors.items()})
    return unet


def settings(pipe, guided: bool) -> dict:
    """Setting -> (how each case's prompt changes, layout_figures' options)."""
    def masked(own_words_only):
        return {"unet_for": lambda case: word_masked_unet(pipe, case.prompt, case.extra["boxes"], guided,
                                                          own_words_only)}
    same = lambda case: case.prompt  # noqa: E731
    return {"stock": (same, {}),
            "no caption (the gated layers alone)": (lambda case: "", {}),
            "object words in their boxes": (same, masked(False)),
            "boxes read only their object's words": (same, masked(True)),
            "regional prompts": (same, {"regional": True})}


def main(argv=None):
    from . import evaluate
    from .judge import Judge

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", default=evaluate.WEIGHTS)
    parser.add_argument("--cases", type=int, default=40)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    pipe, judge = evaluate.load_pipeline("layout", args.weights), Judge.load()
    guidance = evaluate.default_guidance("layout")
    cases = evaluate.layout_cases(args.cases)
    print("| setting | mean box IoU | attributes right (all stated) | colour | shape |")
    print("|---|---|---|---|---|")
    for name, (prompt, options) in settings(pipe, guidance > 1).items():
        changed = [dataclasses.replace(case, prompt=prompt(case)) for case in cases]
        figures, _ = evaluate.layout_figures(pipe, judge, changed, guidance, place_objects=False, **options)
        print(f"| {name} | " + " | ".join(f"{figures[k]:.3f}" for k in
                                         ("mean box IoU", "attributes right (all stated)", "colour", "shape"))
              + " |", flush=True)


if __name__ == "__main__":
    main()
