"""Regional prompts: each box reads only its own phrase (layout-to-image), or each cell
the prompt places an object in reads only that object's words (text-to-image).

A small text encoder reads "a red circle and a yellow square" as one bag of words, so
the colours and shapes of several objects get mixed up (the starter layout model put a
red circle where a yellow square was asked, and the other way round). Here the prompt's
conditioning is cut by region instead: in every cross-attention layer, the pixels inside
box i attend to the embedding of phrase i alone ("a red circle"), and the pixels outside
every box to the caption. Overlapping boxes give a pixel to the smallest box that covers
it. Only the conditional half of a guided batch changes; the negative prompt stays as it
is. The pipeline's own UNet is never touched: the regional processors sit on a copy that
shares its weights (`regional_unet`).

The idea is the regional prompting that AUTOMATIC1111's Regional Prompter and
MultiDiffusion-style region control offer; the boxes decide the regions. It keeps
attributes apart but does not by itself move an object into its box (the starting noise
decides where objects land), so it is used together with place_objects.
"""
from __future__ import annotations

import torch

from ..starter.attention_loss import box_coverage
from ..starter.captions import with_article

NO_CELL_REGIONS = ("regional prompts: the prompt names no object with a position (e.g. \"a red "
                   "circle in the top left\"), so the whole picture read the prompt")
NO_REGIONS = ("regional prompts: this model's UNet has no cross-attention layers to "
              "cut by region, so the caption conditioned the whole picture")


def region_weights(boxes: list, n_rows: int, n_cols: int) -> torch.Tensor:
    """(1 + len(boxes), n_rows * n_cols): the share of each latent pixel that reads the
    caption (row 0) and each box's phrase (rows 1..). Boxes are (x0, y0, x1, y1) in 0..1;
    a pixel partly covered by a box is shared, smallest box first."""
    def area(box):
        return (box[2] - box[0]) * (box[3] - box[1])

    left = torch.ones(n_rows * n_cols)
    weights = torch.zeros(len(boxes) + 1, n_rows * n_cols)
    for i in sorted(range(len(boxes)), key=lambda i: area(boxes[i])):
        take = torch.minimum(_coverage(boxes[i], n_rows, n_cols), left)
        weights[i + 1] = take
        left = left - take
    weights[0] = left
    return weights


def _coverage(box, n_rows: int, n_cols: int) -> torch.Tensor:
    if n_rows == n_cols:
        return box_coverage(box, n_rows).flatten()
    fine = box_coverage(box, n_rows * n_cols)  # rectangular latents: average a square grid
    pooled = torch.nn.functional.adaptive_avg_pool2d(fine[None, None], (n_rows, n_cols))
    return pooled.flatten()


class RegionalCrossAttention:
    """Cross-attention whose conditional rows read, pixel by pixel, a mix of several
    prompt embeddings weighted by `region_weights`. `embeddings[0]` is the caption's,
    `embeddings[i]` box i's phrase's; `guided`: the batch is [negative, conditional]."""

    def __init__(self, embeddings: list[torch.Tensor], boxes: list, latent_size: tuple[int, int],
                 guided: bool):
        self.embeddings, self.boxes, self.guided = embeddings, boxes, guided
        self.latent_size = latent_size
        self._weights: dict[int, torch.Tensor] = {}

    def weights_for(self, pixels: int) -> torch.Tensor:
        if pixels not in self._weights:
            rows, cols = self.latent_size
            scale = round((rows * cols / pixels) ** 0.5)
            self._weights[pixels] = region_weights(self.boxes, max(1, rows // scale),
                                                   max(1, cols // scale))
        return self._weights[pixels]

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None,
                 temb=None, *args, **kwargs):
        residual = hidden_states
        four_d = hidden_states.ndim == 4
        if four_d:
            b, c, h, w = hidden_states.shape
            hidden_states = hidden_states.view(b, c, h * w).transpose(1, 2)
        batch, pixels, _ = hidden_states.shape
        out = _attend(attn, hidden_states, encoder_hidden_states)
        conditional = slice(batch // 2, batch) if self.guided else slice(0, batch)
        queries = hidden_states[conditional]
        weights = self.weights_for(pixels).to(out)
        mixed = torch.zeros_like(out[conditional])
        for share, embedding in zip(weights, self.embeddings):
            if share.any():
                keys = embedding.to(out).expand(queries.shape[0], -1, -1)
                mixed += share.view(1, pixels, 1) * _attend(attn, queries, keys)
        out = torch.cat([out[:conditional.start], mixed]) if self.guided else mixed
        out = attn.to_out[1](attn.to_out[0](out))
        if four_d:
            out = out.transpose(-1, -2).reshape(b, c, h, w)
        if attn.residual_connection:
            out = out + residual
        return out / attn.rescale_output_factor


def _attend(attn, hidden_states, encoder_hidden_states):
    """Plain multi-head attention of `hidden_states` over `encoder_hidden_states`, before
    the output projection."""
    if attn.norm_cross:
        encoder_hidden_states = attn.norm_encoder_hidden_states(encoder_hidden_states)
    query = attn.head_to_batch_dim(attn.to_q(hidden_states))
    key = attn.head_to_batch_dim(attn.to_k(encoder_hidden_states))
    value = attn.head_to_batch_dim(attn.to_v(encoder_hidden_states))
    probs = attn.get_attention_scores(query, key, None)
    return attn.batch_to_head_dim(torch.bmm(probs, value))


def regional_unet(pipe, caption: str, phrases: list[str], boxes: list, height: int,
                  width: int, guided: bool, warnings: list | None = None):
    """A copy of `pipe.unet` (sharing its weights) whose cross-attention layers cut the
    conditioning by region; hand it to the pipeline as `pipe.unet`. Phrases are encoded
    with an article ("a red circle", "an orange circle") unless they have one. Returns
    `pipe.unet` itself (and a warning) when the UNet has no cross-attention to cut."""
    from ..teach.attention import unet_sharing_weights

    names = [name for name in pipe.unet.attn_processors if name.endswith("attn2.processor")]
    if not names:
        if warnings is not None:
            warnings.append(NO_REGIONS)
        return pipe.unet
    device = pipe.unet.device
    texts = [caption] + [with_article(phrase) for phrase in phrases]
    with torch.no_grad():
        embeddings = [pipe.encode_prompt(text, device, 1, False)[0] for text in texts]
    factor = 2 ** (len(pipe.vae.config.block_out_channels) - 1)
    processor = RegionalCrossAttention(embeddings, [list(map(float, b)) for b in boxes],
                                       (height // factor, width // factor), guided)
    unet = unet_sharing_weights(pipe.unet)
    unet.set_attn_processor({name: processor if name in names else old
                             for name, old in unet.attn_processors.items()})
    return unet


def cell_regional_unet(pipe, prompt: str, height: int, width: int, guided: bool,
                       warnings: list | None = None):
    """Text-to-image: `regional_unet` with one region per object the prompt places in a
    cell ("a little blue disc in the bottom left" -> "little blue disc" in the bottom-left
    cell); `pipe.unet` itself (and a warning) when the prompt places nothing."""
    from ..teach.attention import prompt_tokens
    from .placement import POSITION_WORDS, placements

    found = placements(prompt_tokens(pipe.tokenizer, prompt))
    if not found:
        if warnings is not None:
            warnings.append(NO_CELL_REGIONS)
        return pipe.unet
    phrases = [" ".join(w for w in p.words if w not in POSITION_WORDS) for p in found]
    return regional_unet(pipe, prompt, phrases, [list(p.box) for p in found], height, width,
                         guided, warnings)
