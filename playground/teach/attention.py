"""Where the words go: cross-attention maps per prompt token.

In every cross-attention layer of the UNet each latent pixel spreads a softmax of
weight over the prompt's tokens. Averaging those weights over heads, layers (each
resized to the latent grid) and chosen steps gives one map per token: where in the
picture that word acted. Only the conditional half of the classifier-free-guidance batch
is read.

The maps come from a custom attention processor set on a per-request copy of the UNet
whose parameters are the shared ones (no weights are copied), so the shared pipeline and
any concurrent request are never touched.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from diffusers.models.attention_processor import Attention
from PIL import Image

from ..tasks import checks, common, text_to_image
from .trace import chosen_steps

TASK = "text_to_image"
MAPS_WITH_REGIONS = ("attention maps show where each word of the prompt is read; with regional "
                     "prompts each placed cell reads only its own object's words, so there is "
                     "no one map per word. Turn regional prompts off for the maps (the "
                     "filmstrip shows runs with them)")
MAPS_WITH_COMPOSE = ("attention maps are read from one text-to-image pass; compose objects "
                     "paints each object in a pass of the inpainter of its own, reading only "
                     "that object's words. Turn compose objects off for the maps (the "
                     "filmstrip shows composed runs, pass by pass)")


@dataclass
class AttentionMaps:
    """One map per prompt token, over the final picture."""
    image: Image.Image                 # the picture made (same as text_to_image's)
    tokens: list[str]                  # the prompt's tokens, in order (no special tokens)
    maps: list[np.ndarray]             # per token: (h, w) weights on the latent grid, sum 1
    steps: list[int]                   # the steps averaged over
    overlays: list[Image.Image] = field(default_factory=list)  # per token, over the picture


class MapCollector:
    """Sums cross-attention weights per token at the chosen steps."""

    def __init__(self, latent_size: tuple[int, int], steps: list[int], total: int,
                 order: int):
        self.latent_size, self.steps, self.total, self.order = latent_size, set(steps), total, order
        self.call = 0
        self.sum: torch.Tensor | None = None  # (tokens, h, w)
        self.count = 0

    def recording(self) -> bool:
        return min(math.ceil((self.call + 1) / self.order), self.total) in self.steps

    def add(self, probs: torch.Tensor, batch: int, heads: int) -> None:
        """probs: (batch * heads, pixels, tokens) of one layer; the last batch item is
        the prompt's (conditional) half."""
        conditional = probs.view(batch, heads, *probs.shape[1:])[-1].mean(0).float()
        pixels, tokens = conditional.shape
        h, w = self.latent_size
        scale = math.sqrt(h * w / pixels)
        grid = conditional.T.reshape(tokens, 1, round(h / scale), round(w / scale))
        grid = F.interpolate(grid, size=(h, w), mode="bilinear", align_corners=False)[:, 0]
        self.sum = grid if self.sum is None else self.sum + grid
        self.count += 1

    def on_step_end(self, inner):
        def callback(pipe, i, t, kwargs):
            self.call = i + 1
            return inner(pipe, i, t, kwargs) if inner is not None else {}
        return callback


class RecordingCrossAttention:
    """Cross-attention that also hands out its weights: while the collector is `recording()`
    they are computed written out and passed to `add(probs, batch, heads)`; the output is
    always diffusers' own computation (`attended`). The starter training's attention loss
    uses the same processor (starter/attention_loss.py)."""

    def __init__(self, collector):
        self.collector = collector

    def __call__(self, attn: Attention, hidden_states, encoder_hidden_states=None,
                 attention_mask=None, temb=None, *args, **kwargs):
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        four_d = hidden_states.ndim == 4
        if four_d:
            b, c, h, w = hidden_states.shape
            hidden_states = hidden_states.view(b, c, h * w).transpose(1, 2)
        batch, tokens, _ = encoder_hidden_states.shape
        attention_mask = attn.prepare_attention_mask(attention_mask, tokens, batch)
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
        if attn.norm_cross:
            encoder_hidden_states = attn.norm_encoder_hidden_states(encoder_hidden_states)
        query, key, value = (attn.to_q(hidden_states), attn.to_k(encoder_hidden_states),
                             attn.to_v(encoder_hidden_states))
        if self.collector.recording():
            probs = attn.get_attention_scores(attn.head_to_batch_dim(query),
                                              attn.head_to_batch_dim(key), attention_mask)
            self.collector.add(probs, batch, attn.heads)
        hidden_states = attended(attn, query, key, value, attention_mask, batch)
        hidden_states = attn.to_out[1](attn.to_out[0](hidden_states))
        if four_d:
            hidden_states = hidden_states.transpose(-1, -2).reshape(b, c, h, w)
        if attn.residual_connection:
            hidden_states = hidden_states + residual
        return hidden_states / attn.rescale_output_factor


def attended(attn: Attention, query, key, value, attention_mask, batch: int):
    """The attention output computed as diffusers' default processor computes it, so that a
    recorded run draws the very picture an unrecorded one draws: at guidance 7.5 the last-bit
    differences of a written-out softmax grew into different pixels."""
    if attention_mask is not None:
        attention_mask = attention_mask.view(batch, attn.heads, -1, attention_mask.shape[-1])
    query, key, value = (attn.head_to_batch_dim(x, out_dim=4) for x in (query, key, value))
    out = F.scaled_dot_product_attention(query, key, value, attn_mask=attention_mask,
                                         dropout_p=0.0, is_causal=False)
    return out.transpose(1, 2).reshape(batch, -1, attn.heads * out.shape[-1]).to(query.dtype)


def unet_sharing_weights(unet):
    """A structural copy of `unet` (own modules, own attention processors) whose
    parameters and buffers are the original's tensors."""
    memo = {id(t): t for t in list(unet.parameters()) + list(unet.buffers())}
    return copy.deepcopy(unet, memo)


def with_recording_processors(unet, collector):
    """Cross-attention layers ("attn2") get the recording processor; the others keep theirs."""
    processors = {}
    for name, processor in unet.attn_processors.items():
        is_cross = name.endswith("attn2.processor")
        processors[name] = RecordingCrossAttention(collector) if is_cross else processor
    unet.set_attn_processor(processors)
    return unet


def prompt_tokens(tokenizer, prompt: str) -> list[str]:
    """The prompt's tokens as the text encoder sees them, special tokens left out; token i
    of this list is position i + 1 of the encoder's input (after the start token)."""
    ids = tokenizer(prompt, truncation=True, max_length=tokenizer.model_max_length)["input_ids"]
    special = set(tokenizer.all_special_ids)
    body = ids[1:]
    words = []
    for token_id in body:
        if token_id in special:
            break
        words.append(tokenizer.convert_ids_to_tokens(token_id))
    return words


def run(registry, *, prompt, negative_prompt="", model="starter", scheduler=None, steps=20,
        guidance=None, seed=-1, width=None, height=None, show_steps=None,
        control=None, place_objects=False, colour_hints=False,
        regional_prompts=False, compose_objects=False) -> AttentionMaps:
    """Make the picture as `text_to_image` does and collect the maps on the way."""
    if checks.flag("regional_prompts", regional_prompts):
        raise checks.BadInput(MAPS_WITH_REGIONS)
    if checks.flag("compose_objects", compose_objects):
        raise checks.BadInput(MAPS_WITH_COMPOSE)
    settings_common = common.check_common(registry, TASK, model, scheduler, steps, guidance, seed)
    prompt = checks.text("prompt", prompt, required=True)
    negative_prompt = checks.text("negative_prompt", negative_prompt)
    limits = registry.defaults(model, TASK)
    warnings: list[str] = []
    width, height = checks.size(width, height, limits["width"], limits["height"],
                                limits["size_multiple"], limits["max_side"], warnings)
    total = settings_common["steps"]
    shown = chosen_steps(show_steps, total) if show_steps is not None else list(range(1, total + 1))
    found: dict = {}
    place_objects, placed = checks.flag("place_objects", place_objects), []
    colour_hints = checks.flag("colour_hints", colour_hints)

    def call(pipe, generators, callbacks):
        factor = 2 ** (len(pipe.vae.config.block_out_channels) - 1)
        collector = MapCollector((height // factor, width // factor), shown, total,
                                 getattr(pipe.scheduler, "order", 1))
        pipe.unet = with_recording_processors(unet_sharing_weights(pipe.unet), collector)
        found.update(collector=collector, tokens=prompt_tokens(pipe.tokenizer, prompt))
        inner = callbacks.get("callback_on_step_end")
        latents = text_to_image.starting_latents(pipe, prompt, generators, 1, height, width,
                                                 total, control, place_objects, colour_hints,
                                                 placed, warnings)
        return pipe(prompt=prompt, negative_prompt=negative_prompt or None, latents=latents,
                    num_inference_steps=total, guidance_scale=settings_common["guidance"],
                    width=width, height=height, num_images_per_prompt=1,
                    generator=generators, output_type="pil",
                    callback_on_step_end=collector.on_step_end(inner)).images

    settings = text_to_image.record({"prompt": prompt, "negative_prompt": negative_prompt,
                                     "width": width, "height": height, "warnings": warnings},
                                    place_objects, colour_hints, placed)
    image = common.execute(registry, TASK, settings_common, settings, call, control, 1,
                           prompts={"prompt": prompt, "negative prompt": negative_prompt})[0]
    collector, tokens = found["collector"], found["tokens"]
    summed = collector.sum / max(collector.count, 1)
    maps = []
    for position in range(1, len(tokens) + 1):
        weights = summed[position].clamp_min(0).cpu().numpy()
        maps.append(weights / max(weights.sum(), 1e-12))
    result = AttentionMaps(image=image, tokens=tokens, maps=maps, steps=shown)
    result.overlays = [overlay(image, m) for m in maps]
    return result


def upsampled(weights: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A map resized to (width, height) pixels, bilinear, still summing to 1."""
    grid = torch.from_numpy(np.asarray(weights, np.float32))[None, None]
    big = F.interpolate(grid, size=(size[1], size[0]), mode="bilinear", align_corners=False)
    big = big[0, 0].clamp_min(0).numpy()
    return big / max(big.sum(), 1e-12)


def overlay(picture: Image.Image, weights: np.ndarray) -> Image.Image:
    """The map as red heat over a faded copy of the picture, contrast stretched from the
    map's least to its most weight (a flat map shows its small ripples too)."""
    heat = upsampled(weights, picture.size)
    heat = (heat - heat.min()) / max(heat.max() - heat.min(), 1e-12)
    base = np.asarray(picture.convert("RGB"), np.float32) * 0.45 + 255 * 0.2
    red = np.array([255, 30, 30], np.float32)
    mixed = base * (1 - heat[..., None] * 0.8) + red * heat[..., None] * 0.8
    return Image.fromarray(mixed.clip(0, 255).round().astype(np.uint8))


def peak_ratio(weights: np.ndarray) -> float:
    """Most weight on one latent pixel over the mean: 1 for a flat map."""
    return float(np.max(weights) * np.size(weights))


def mass_inside(weights: np.ndarray, box_pixels, size: tuple[int, int]) -> float:
    """Fraction of a map's weight inside a box (x0, y0, x1, y1 in pixels of `size`)."""
    heat = upsampled(weights, size)
    x0, y0, x1, y1 = (int(round(v)) for v in box_pixels)
    return float(heat[y0:y1, x0:x1].sum())
