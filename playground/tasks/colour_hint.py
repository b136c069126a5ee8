"""Colour hints: paint each object's colour faintly into the starting noise where it goes.

Even the noisiest latent the sampler starts from carries sqrt(alpha_bar_T) of a picture.
A colour hint adds that much of a flat patch of the phrase's colour (its VAE latent),
`BOX_STRENGTH` times over inside a layout phrase's box (`STRENGTH` in a text-to-image
cell), so the first steps find a red something where the red circle was asked. On the
starter layout model it raises both how well objects fit their boxes and how often they
keep their colours (model card, "colour hints" rows); stronger hints turn circles into
squares (the box's own shape). For text-to-image the boxes are the grid cells the prompt
names ("a red circle in the top left"), as for place_objects, which the hints undo the
colour losses of.

Colours are read from the phrase's words: the starter world's exact palette, and a few
common names for other models. Phrases without a colour word get no hint. A text-to-image
prompt that also names its background ("... on a blue background") gets that colour hinted
everywhere outside the placed objects, and an object with a size word ("a small red
circle") gets its hint in a square of that size at its cell's centre rather than in the
whole cell, because steering alone made objects cell-sized (model card, "Relations, sizes
and backgrounds"). A square smaller than the cell is hinted as much stronger as it is
smaller, so every object gets the same amount of colour and small ones keep theirs.
"""
from __future__ import annotations

import re

import torch

from ..starter.captions import SIZE_WORDS as WORDS_OF_SIZE
from ..starter.world import BASE, PALETTE, SIZES
from .placement import pipeline_noise, placements
from .regions import region_weights

STRENGTH = 8.0  # text-to-image's cells
# Layout's boxes, chosen again on the layout model that reads text-to-image's text encoder
# (model card, Training, "Layout and inpainting on text-to-image's own text encoder", 4):
# 12 fit the boxes better than 8 on a held-out and a fresh 40 layouts and kept the
# attributes; 16 lost attributes on the held-out 40, and 24 turned circles into squares.
BOX_STRENGTH = 12.0
COLOURS = {"grey": (128, 128, 128), "gray": (128, 128, 128), "brown": (140, 90, 40),
           "pink": (240, 130, 180), "cyan": (40, 200, 220), **PALETTE}
SIZE_WORDS = {"tiny": "small", **{w: size for size, ws in WORDS_OF_SIZE.items() for w in ws}}
NO_COLOUR = ("colour hints: no phrase names a colour this playground knows "
             f"({', '.join(sorted(COLOURS))}), so the starting noise was left as it was")
NO_CELL = ("colour hints: the prompt names no object with a position (e.g. \"a red circle in "
           "the top left\"), so there was no place to paint a colour into")


def background_colour(prompt: str) -> str | None:
    """The colour of "a <colour> background" in a prompt, or None."""
    said = re.search(r"\b([a-z]+)\s+background\b", prompt.lower())
    return said.group(1) if said and said.group(1) in COLOURS else None


def sized_box(words: list[str], box) -> tuple:
    """`box` (a grid cell), or for words with a size word a square of the starter world's
    middle side for that size (at 64 px), centred on the cell (it may reach past it)."""
    size = next((SIZE_WORDS[w] for w in words if w in SIZE_WORDS), None)
    if size is None:
        return tuple(box)
    half = sum(SIZES[size]) / 2 / BASE / 2
    x, y = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    return max(0.0, x - half), max(0.0, y - half), min(1.0, x + half), min(1.0, y + half)


def same_amount(box, cell) -> float:
    """How much stronger a hint in `box` must be to add as much colour as one over the
    whole `cell`: their area ratio, never below 1."""
    def area(b):
        return max(1e-6, (b[2] - b[0]) * (b[3] - b[1]))
    return max(1.0, area(cell) / area(box))


def phrase_colour(phrase: str) -> str | None:
    """The first colour word of a phrase ("a bright Red circle" -> "red"), or None."""
    for word in phrase.lower().replace(",", " ").split():
        if word in COLOURS:
            return word
    return None


def colour_latent(vae, colour: str) -> torch.Tensor:
    """(channels,) the VAE latent of a flat patch of `colour`, as the UNet sees latents."""
    factor = 2 ** (len(vae.config.block_out_channels) - 1)
    rgb = torch.tensor(COLOURS[colour], dtype=torch.float32) / 127.5 - 1
    patch = rgb.view(1, 3, 1, 1).expand(1, 3, 4 * factor, 4 * factor)
    with torch.no_grad():
        z = vae.encode(patch.to(vae.device, vae.dtype)).latent_dist.mean.float()
    shift = getattr(vae.config, "shift_factor", None) or 0.0
    return ((z - shift) * vae.config.scaling_factor).mean((0, 2, 3))


def hinted_latents(pipe, latents: torch.Tensor | None, phrases: list[str], boxes: list,
                   generators, height: int, width: int, warnings: list | None = None,
                   strength: float = BOX_STRENGTH, background: str | None = None,
                   scales: list[float] | None = None) -> torch.Tensor | None:
    """The starting latents (unscaled; the pipeline's own noise when `latents` is None)
    with each coloured phrase's hint added inside its box (times its entry in `scales`),
    and the `background` colour's outside every box; `latents` as they were (and a
    warning) when no colour is named."""
    colours = [phrase_colour(p) for p in phrases]
    if not any(colours) and background is None:
        if warnings is not None:
            warnings.append(NO_COLOUR)
        return latents
    if latents is None:
        latents = pipeline_noise(pipe, generators, len(generators), height, width)
    rows, cols = latents.shape[-2:]
    signal_left = pipe.scheduler.alphas_cumprod[-1].sqrt().item()
    shares = region_weights([list(map(float, b)) for b in boxes], rows, cols)
    colours = [background] + colours  # row 0 of the shares: outside every box
    scales = [1.0] + list(scales or [1.0] * len(phrases))
    latent_of = {c: colour_latent(pipe.vae, c).cpu().view(-1, 1, 1) for c in set(colours) if c}
    hint = torch.zeros(latents.shape[1:], dtype=torch.float32)
    for colour, share, scale in zip(colours, shares, scales):
        if colour is not None:
            hint += latent_of[colour] * share.view(rows, cols) * scale
    return latents + (strength * signal_left * hint).to(latents)


def cell_hinted_latents(pipe, latents: torch.Tensor | None, prompt: str, generators,
                        height: int, width: int, warnings: list | None = None,
                        strength: float = STRENGTH) -> torch.Tensor | None:
    """Text-to-image: each object the prompt places in a cell ("a red circle in the top
    left") gets its colour hinted in that cell (in a square of its size, if it has one), and
    a named background its colour outside them; `latents` as they were (and a warning) when
    the prompt places nothing."""
    from ..teach.attention import prompt_tokens

    found = placements(prompt_tokens(pipe.tokenizer, prompt))
    if not found:
        if warnings is not None:
            warnings.append(NO_CELL)
        return latents
    boxes = [list(sized_box(p.words, p.box)) for p in found]
    return hinted_latents(pipe, latents, [" ".join(p.words) for p in found], boxes, generators,
                          height, width, warnings, strength, background_colour(prompt),
                          [same_amount(box, p.box) for box, p in zip(boxes, found)])
